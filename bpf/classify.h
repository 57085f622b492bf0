/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Off-CPU stack classification, shared by the BPF program (which runs it at every switch-out of a
 * traced operation) and the unit test (which runs the very same code on recorded stacks).
 *
 * The table holds up to MAX_KRANGES kernel text ranges sorted by start, each tagged with a component; the
 * table of function names behind them is tools/offcpu.h. Among all frames of a stack the
 * component with the strongest priority wins, so a sleep in io_schedule() under
 * jbd2_log_wait_commit() is journal time, and one under balance_dirty_pages() is throttling.
 */
#ifndef __AOF_CLASSIFY_H
#define __AOF_CLASSIFY_H

#include "aoftrace.h"

/* Lower wins. Locks first: a sleep on a lock is about the lock, whatever called it. */
static const __u8 comp_prio[COMP_MAX] = {
	[COMP_INODE_LOCK] = 0,
	[COMP_OTHER_LOCK] = 1,
	[COMP_THROTTLE] = 2,
	[COMP_RECLAIM] = 3,
	[COMP_IOWQ_QUEUE] = 4,
	[COMP_JOURNAL] = 5,
	[COMP_BLOCK] = 6,
	[COMP_OTHER_OFFCPU] = 7,
	[COMP_RUNQ] = 8,
	[COMP_ONCPU] = 9,
};

/*
 * Component of the range holding ip, or -1. The table has exactly MAX_KRANGES entries, the unused
 * ones padded with start = end = ~0, and is searched without bounds (Shar's branch-free binary
 * search): 8 halvings over 256 entries. Ranges are read through krange_at(tbl, i), which the includer
 * defines: in BPF a lookup in an array map, with the index starting from KRANGE_ZERO, a zero the
 * verifier cannot see. The index then never becomes a constant it must track exactly, and the
 * search's 2^8 paths prune to one (a lo/hi search over a .rodata table cost 50k verified
 * instructions and 60 ms of load time).
 */
#ifndef KRANGE_ZERO
#define KRANGE_ZERO 0
#endif
_Static_assert(MAX_KRANGES == 256, "krange_comp() halves 256 entries");

static __always_inline int krange_comp(const void *tbl, __u64 ip)
{
	const struct aof_krange *k;
	__u32 idx = KRANGE_ZERO;

#ifdef __bpf__
#pragma unroll
#endif
	for (__u32 step = MAX_KRANGES / 2; step; step /= 2) {
		k = krange_at(tbl, idx + step - 1);
		if (k && k->start <= ip)
			idx += step;
	}
	/* idx entries start at or below ip; idx - 1 wraps to an invalid index when it is 0. */
	k = krange_at(tbl, idx - 1);
	if (k && ip < k->end && k->comp < COMP_MAX)
		return k->comp;
	return -1;
}

/*
 * A component and its priority in one number, the lower the stronger. Carrying this rather than the
 * component keeps the running best out of array indexes, so the verifier need not track it exactly.
 */
static __always_inline __u32 comp_key(__u32 c)
{
	return (__u32)comp_prio[c] << 8 | c;
}

#define CLASSIFY_INIT	comp_key(COMP_OTHER_OFFCPU)
#define CLASSIFY_COMP(key) ((key) & 0xff)

/* One frame: the stronger of `best` and the frame's own component (both as comp_key()). */
static __always_inline __u32 classify_step(const void *r, __u64 ip, __u32 best)
{
	int c = krange_comp(r, ip);

	if (c >= 0 && c < COMP_MAX && comp_key(c) < best)
		return comp_key(c);
	return best;
}

static __always_inline __u32 classify_stack(const void *r, const __u64 *ips, __u32 nframes)
{
	__u32 best = CLASSIFY_INIT;

	for (__u32 i = 0; i < nframes && i < MAX_FRAMES; i++)
		best = classify_step(r, ips[i], best);
	return CLASSIFY_COMP(best);
}

#endif /* __AOF_CLASSIFY_H */

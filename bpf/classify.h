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
 * Component of the range holding ip, or -1. The table has exactly MAX_KRANGES entries sorted by start, the
 * unused ones padded with start = end = ~0, and is searched without a branch (Shar's binary search, each
 * halving an add under a mask): 8 halvings over 256 entries, one path for the verifier whatever the table
 * holds. With a branch per halving it walked 2^8 of them at every frame of every stack once the array map's
 * index was tracked exactly (6.18: 200 000 instructions, 0.55 s of start-up). Kernel text addresses all have
 * the top bit set and lie within 2^63 of each other, so start <= ip is the sign of start - ip - 1.
 */
_Static_assert(MAX_KRANGES == 256, "krange_comp() halves 256 entries");

/*
 * An index into the table. In BPF the mask is applied in asm: clang folds a C mask into the arithmetic
 * around it, which 6.1's verifier then cannot bound (later ones can).
 */
#ifdef __bpf__
#define KR_INDEX(n) ({ __u64 __x = (n); asm volatile("%[x] &= %[m]" : [x] "+r"(__x) : [m] "i"(MAX_KRANGES - 1)); __x; })
#else
#define KR_INDEX(n) ((n) & (MAX_KRANGES - 1))
#endif

static __always_inline __u32 at_or_below(__u64 start, __u64 ip)
{
	return (__u32)((__s64)(start - ip - 1) >> 63);	/* all ones if start <= ip, else 0 */
}

static __always_inline int krange_comp(const struct aof_krange *tbl, __u64 ip)
{
	const struct aof_krange *k;
	__u32 idx = 0;

#ifdef __bpf__
#pragma unroll
#endif
	for (__u32 step = MAX_KRANGES / 2; step; step /= 2)
		idx += step & at_or_below(tbl[KR_INDEX(idx + step - 1)].start, ip);
	/* idx entries start at or below ip: the last of them is the only one that can hold it */
	k = &tbl[KR_INDEX(idx - 1)];
	if (idx && ip < k->end && k->comp < COMP_MAX)
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
static __always_inline __u32 classify_step(const struct aof_krange *r, __u64 ip, __u32 best)
{
	int c = krange_comp(r, ip);

	if (c >= 0 && c < COMP_MAX && comp_key(c) < best)
		return comp_key(c);
	return best;
}

static __always_inline __u32 classify_stack(const struct aof_krange *r, const __u64 *ips, __u32 nframes)
{
	__u32 best = CLASSIFY_INIT;

	for (__u32 i = 0; i < nframes && i < MAX_FRAMES; i++)
		best = classify_step(r, ips[i], best);
	return CLASSIFY_COMP(best);
}

#endif /* __AOF_CLASSIFY_H */

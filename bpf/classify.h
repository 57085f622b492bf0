/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Off-CPU stack classification, shared by the BPF program (which runs it at every switch-out of a
 * traced operation) and the unit test (which runs the very same code on recorded stacks).
 *
 * `r` holds up to MAX_KRANGES kernel text ranges sorted by start, each tagged with a component; the
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

/* Component of the range holding ip, or -1. A binary search: 9 steps cover 512 ranges. */
static __always_inline int krange_comp(const struct aof_krange *r, __u32 n, __u64 ip)
{
	__u32 lo = 0, hi = n, mid;

	if (hi > MAX_KRANGES)
		hi = MAX_KRANGES;
	for (int i = 0; i < 9 && lo < hi; i++) {
		mid = (lo + hi) / 2;
		if (mid >= MAX_KRANGES)
			return -1;
		if (r[mid].start <= ip)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || lo > MAX_KRANGES)
		return -1;
	if (ip < r[lo - 1].end && r[lo - 1].comp < COMP_MAX)
		return r[lo - 1].comp;
	return -1;
}

/* One frame: the stronger of `best` and the frame's own component. */
static __always_inline __u32 classify_step(const struct aof_krange *r, __u32 n, __u64 ip, __u32 best)
{
	int c = krange_comp(r, n, ip);

	if (best >= COMP_MAX)
		best = COMP_OTHER_OFFCPU;
	if (c >= 0 && c < COMP_MAX && comp_prio[c] < comp_prio[best])
		return c;
	return best;
}

static __always_inline __u32 classify_stack(const struct aof_krange *r, __u32 n, const __u64 *ips,
					    __u32 nframes)
{
	__u32 best = COMP_OTHER_OFFCPU;

	for (__u32 i = 0; i < nframes && i < MAX_FRAMES; i++)
		best = classify_step(r, n, ips[i], best);
	return best;
}

#endif /* __AOF_CLASSIFY_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Per-thread state: the operations (spans) a thread has open, and how an interval of its time is
 * charged to them (docs/attribution.md, "The model").
 */
#ifndef __AOF_TSTATE_BPF_H
#define __AOF_TSTATE_BPF_H

enum tstate_run { RUN_ONCPU, RUN_RUNQ, RUN_OFFCPU };

struct tstate {
	__u64 span_start[SPAN_MAX];	/* 0 when the span is not open */
	__u64 last_ts;			/* start of the interval not yet charged */
	__u8 run;			/* enum tstate_run */
	__u8 off_comp;			/* component of the current sleep */
	__u8 lock_comp;			/* COMP_*_LOCK while in lock contention, else 0 */
	__u8 commit;			/* the open sync forced a journal/log commit */
	__u8 hint;			/* enum aof_hint the kernel announced the next sleep with, 0 if none */
	__s32 sys_nr;			/* the traced syscall in flight, -1 if none */
	__s32 sys_fd;
	__s32 off_kstack;
	__s32 waker_kstack;
	__u32 waker_pid;
	__u64 off_start;
	__u64 wake_ts;
	__u64 sys_start;		/* a fork or a child's write: timed, not attributed */
	char waker_comm[TASK_COMM_LEN];
	/* flush totals */
	__u32 writes, write_errors, syncs, commits;
	__u32 urings;
	__u8 uring_in_flush;
	__u8 open;			/* bit per open span: span_start[s] != 0 */
	__u8 sync_aof;			/* the sync in flight is of the AOF */
	__u8 first_known;		/* first_off and isize_before are set for the open flush */
	__u64 uring_ns;
	__u64 reap_n, reap_sum;		/* completions of its requests not yet reaped, sum of their times */
	__u64 write_ns, write_bytes, sync_ns;
	__u64 first_off, isize_before, ino;
	__u64 inode;			/* the AOF inode of the last write in this flush */
	__u64 inode0, isize0;		/* the AOF and its size when the flush began */
	__u64 uring_bytes;		/* its io_uring AOF writes that completed */
	__u32 uring_syncs;		/* its io_uring FSYNCs of the AOF that completed */
	__u32 uring_writes;		/* its io_uring writes to the AOF that completed */
	__u64 w_off, w_isize;		/* the AOF write in flight: where it starts, i_size then */
	__u64 sync_snap;		/* dur_wseq when the sync in flight began */
	__u32 children_at_start;
	__u32 pad;
	__u64 comp[SPAN_MAX][COMP_MAX];	/* the open spans */
	/* io_uring: an io-wq worker's request, a submitter's wait for its requests */
	__u64 cur_req;			/* struct io_kiocb * the worker runs, 0 if none */
	__u64 last_in;			/* last switch-in */
	__u64 last_done;		/* last request the worker completed */
	__u64 pend[COMP_MAX];		/* parts of requests that completed while the submitter slept */
	__u32 hint_n[HINT_SLOTS];	/* sleeps named by each hint */
	__s32 hint_kstack[HINT_SLOTS];	/* the stack last unwound for a sleep of each hint */
	__u64 write_tot[COMP_MAX];	/* all writes of the open flush */
	__u64 sync_tot[COMP_MAX];	/* all syncs of the open flush */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);	/* threads of one server and its children: ~3 MB preallocated */
	__type(key, __u32);		/* tid */
	__type(value, struct tstate);
} threads SEC(".maps");

static __always_inline struct tstate *tstate_get(__u32 tid)
{
	static const struct tstate zero = { .sys_nr = -1 };
	struct tstate *st;

	st = bpf_map_lookup_elem(&threads, &tid);
	if (st)
		return st;
	bpf_map_update_elem(&threads, &tid, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&threads, &tid);
}

static __always_inline bool any_span(const struct tstate *st)
{
	return st->span_start[SPAN_FLUSH] | st->span_start[SPAN_WRITE] | st->span_start[SPAN_SYNC] |
	       st->span_start[SPAN_IOWQ];
}

/*
 * All ones if span s is open, else 0. The charge loops add `x & span_mask()` to every span rather than
 * branching per span: the verifier walks one path instead of one per combination of open spans.
 */
static __always_inline __u64 span_mask(const struct tstate *st, int s)
{
	return -(__u64)((st->open >> s) & 1);
}

/* Charge [last_ts, now) to the component the thread was in, in every open span. */
static __always_inline void charge(struct tstate *st, __u64 now)
{
	__u64 delta = now - st->last_ts;
	__u32 c;

	if (st->run == RUN_ONCPU)
		c = st->lock_comp ? st->lock_comp : COMP_ONCPU;
	else if (st->run == RUN_RUNQ)
		c = COMP_RUNQ;
	else
		c = st->off_comp;
	if (c >= COMP_MAX)
		c = COMP_OTHER_OFFCPU;
	for (int s = 0; s < SPAN_MAX; s++)
		st->comp[s][c] += delta & span_mask(st, s);
	st->last_ts = now;
}

/* Charge [last_ts, now) as a sleep, `rq_ns` of it as run-queue time (the waker's own wait). */
static __always_inline void charge_sleep(struct tstate *st, __u64 now, __u64 rq_ns)
{
	__u64 delta = now - st->last_ts;
	__u32 c = st->off_comp;

	if (rq_ns > delta)
		rq_ns = delta;
	if (c >= COMP_MAX)
		c = COMP_OTHER_OFFCPU;
	for (int s = 0; s < SPAN_MAX; s++) {
		st->comp[s][c] += (delta - rq_ns) & span_mask(st, s);
		st->comp[s][COMP_RUNQ] += rq_ns & span_mask(st, s);
	}
	st->last_ts = now;
}

/*
 * A submitter woken from its wait for io_uring completions: split the sleep in proportion to where
 * the requests that completed meanwhile spent their time (io-wq queue, the worker's parts).
 */
static __always_inline void charge_sleep_pend(struct tstate *st, __u64 now)
{
	__u64 delta = now - st->last_ts, total = 0, used = 0, part;
	__u32 c0 = st->off_comp;

	for (int c = 0; c < COMP_MAX; c++)
		total += st->pend[c];
	if (c0 >= COMP_MAX)
		c0 = COMP_OTHER_OFFCPU;
	for (int c = 0; c < COMP_MAX; c++) {
		part = total > delta ? st->pend[c] * delta / total : st->pend[c];
		used += part;
		for (int s = 0; s < SPAN_MAX; s++)
			st->comp[s][c] += part & span_mask(st, s);
		st->pend[c] = 0;
	}
	if (used > delta)
		used = delta;
	for (int s = 0; s < SPAN_MAX; s++)
		st->comp[s][c0] += (delta - used) & span_mask(st, s);
	st->last_ts = now;
}

static __always_inline bool has_pend(const struct tstate *st)
{
	__u64 sum = 0;

	for (int c = 0; c < COMP_MAX; c++)
		sum |= st->pend[c];
	return sum != 0;
}

/* Open a span on a running thread. */
static __always_inline void span_open(struct tstate *st, int span, __u64 now)
{
	if (any_span(st))
		charge(st, now);
	else
		st->last_ts = now;
	st->run = RUN_ONCPU;
	st->span_start[span] = now;
	st->open |= 1 << span;
	for (int c = 0; c < COMP_MAX; c++)
		st->comp[span][c] = 0;
}

static __always_inline void span_close(struct tstate *st, int span, __u64 now)
{
	charge(st, now);
	st->hint = HINT_NONE;	/* announced a sleep that did not come */
	st->span_start[span] = 0;
	st->open &= ~(1 << span);
}

static __always_inline __u32 innermost_span(const struct tstate *st)
{
	if (st->span_start[SPAN_IOWQ])
		return SPAN_IOWQ;
	if (st->span_start[SPAN_SYNC])
		return SPAN_SYNC;
	if (st->span_start[SPAN_WRITE])
		return SPAN_WRITE;
	return SPAN_FLUSH;
}

#endif /* __AOF_TSTATE_BPF_H */

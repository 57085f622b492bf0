/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Per-thread state: the operations (spans) a thread has open, and how an interval of its time is
 * charged to them (docs/attribution.md, "The model").
 */
#ifndef __AOF_TSTATE_BPF_H
#define __AOF_TSTATE_BPF_H

enum tstate_run { RUN_ONCPU, RUN_RUNQ, RUN_OFFCPU };

/*
 * A thread's state is one value of the `threads` map, made of a part per concern. Each part is
 * written by its concern's header and read by the others through it.
 */

/* The operations open in the thread and their split so far (here: charge() and friends). */
struct ts_spans {
	__u64 start[SPAN_MAX];		/* 0 when the span is not open */
	__u64 last_ts;			/* start of the interval not yet charged */
	__u64 comp[SPAN_MAX][COMP_MAX];	/* the open spans, by component */
	__u8 open;			/* bit per open span: start[s] != 0 */
};

/* Where the thread is for the scheduler, and the sleep in progress (sched.bpf.h). */
struct ts_sched {
	__u8 run;			/* enum tstate_run */
	__u8 off_comp;			/* component of the current sleep */
	__u8 lock_comp;			/* COMP_*_LOCK while in lock contention, else 0 */
	__s32 off_kstack;
	__u64 off_start;
	/* the wake-up that ended it */
	__u64 wake_ts;
	__s32 waker_kstack;
	__u32 waker_pid;
	char waker_comm[TASK_COMM_LEN];
};

/* Sleep hints: a sleep the kernel announced, named without an unwind (sched.bpf.h). */
struct ts_hints {
	__u8 next;			/* enum aof_hint the kernel announced the next sleep with, 0 if none */
	__u32 n[HINT_SLOTS];		/* sleeps named by each hint */
	__s32 kstack[HINT_SLOTS];	/* the stack last unwound for a sleep of each hint */
};

/* The traced syscall in flight (flush.bpf.h). */
struct ts_sys {
	__s32 nr;			/* its number, -1 if none */
	__s32 fd;
	__u64 start;			/* a fork or a child's write: timed, not attributed */
	__u8 commit;			/* the open sync forced a journal/log commit (journal.bpf.h, sched.bpf.h) */
	__u8 sync_aof;			/* the sync in flight is of the AOF */
	/* the work of the sync in flight (its record's file, block_rqs, ...): block.bpf.h adds to them */
	__u16 sync_flush_rqs;
	__u32 sync_blk_rqs;
	__u64 sync_blk_bytes;
	__u64 sync_file;		/* struct file * of its fd at entry */
};

/* What durability checks of the write or sync in flight (durability.bpf.h). */
struct ts_dur {
	__u64 w_off, w_isize;		/* the AOF write in flight: where it starts, i_size then */
	__u64 sync_snap;		/* dur_wseq when the sync in flight began */
};

/* The open flush's totals, for its record (flush.bpf.h). */
struct ts_flush {
	__u32 writes, write_errors, syncs, commits;
	__u32 urings;			/* io_uring_enter() calls */
	__u8 uring_in_flush;		/* the io_uring_enter() in flight began inside the flush */
	__u8 first_known;		/* first_off and isize_before are set for the open flush */
	__u32 children_at_start;
	__u64 uring_ns;
	__u64 write_ns, write_bytes, sync_ns;
	__u64 first_off, isize_before, ino;
	__u64 inode;			/* the AOF inode of the last write in this flush */
	__u64 inode0, isize0;		/* the AOF and its size when the flush began */
	__u64 uring_bytes;		/* its io_uring AOF writes that completed */
	__u32 uring_syncs;		/* its io_uring FSYNCs of the AOF that completed */
	__u32 uring_writes;		/* its io_uring writes to the AOF that completed */
	__u64 write_tot[COMP_MAX];	/* all writes of the open flush */
	__u64 sync_tot[COMP_MAX];	/* all syncs of the open flush */
};

/* io_uring: an io-wq worker's request, a submitter's wait for its requests (uring.bpf.h). */
struct ts_uring {
	__u64 cur_req;			/* struct io_kiocb * the worker runs, 0 if none */
	__u64 last_in;			/* last switch-in */
	__u64 last_done;		/* last request the worker completed */
	__u64 reap_n, reap_sum;		/* completions of its requests not yet reaped, sum of their times */
	__u64 pend[COMP_MAX];		/* parts of requests that completed while the submitter slept */
};

struct tstate {
	struct ts_spans span;
	struct ts_sched sched;
	struct ts_hints hints;
	struct ts_sys sys;
	struct ts_dur dur;
	struct ts_flush flush;
	struct ts_uring uring;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);	/* threads of one server and its children: ~3 MB preallocated */
	__type(key, __u32);		/* tid */
	__type(value, struct tstate);
} threads SEC(".maps");

/* The thread's state, created (nothing open, no syscall in flight) if it has none. */
static __always_inline struct tstate *tstate_get(__u32 tid)
{
	static const struct tstate zero = { .sys.nr = -1 };

	return bpf_map_lookup_or_try_init(&threads, &tid, &zero);
}

static __always_inline bool any_span(const struct tstate *st)
{
	return st->span.start[SPAN_FLUSH] | st->span.start[SPAN_WRITE] | st->span.start[SPAN_SYNC] |
	       st->span.start[SPAN_IOWQ];
}

/*
 * All ones if span s is open, else 0. The charge loops add `x & span_mask()` to every span rather than
 * branching per span: the verifier walks one path instead of one per combination of open spans.
 */
static __always_inline __u64 span_mask(const struct tstate *st, int s)
{
	return -(__u64)((st->span.open >> s) & 1);
}

/* Charge [last_ts, now) to the component the thread was in, in every open span. */
static __always_inline void charge(struct tstate *st, __u64 now)
{
	__u64 delta = now - st->span.last_ts;
	__u32 c;

	if (st->sched.run == RUN_ONCPU)
		c = st->sched.lock_comp ? st->sched.lock_comp : COMP_ONCPU;
	else if (st->sched.run == RUN_RUNQ)
		c = COMP_RUNQ;
	else
		c = st->sched.off_comp;
	if (c >= COMP_MAX)
		c = COMP_OTHER_OFFCPU;
	#pragma unroll
	for (int s = 0; s < SPAN_MAX; s++)
		st->span.comp[s][c] += delta & span_mask(st, s);
	st->span.last_ts = now;
}

/* Charge [last_ts, now) as a sleep, `rq_ns` of it as run-queue time (the waker's own wait). */
static __always_inline void charge_sleep(struct tstate *st, __u64 now, __u64 rq_ns)
{
	__u64 delta = now - st->span.last_ts;
	__u32 c = st->sched.off_comp;

	if (rq_ns > delta)
		rq_ns = delta;
	if (c >= COMP_MAX)
		c = COMP_OTHER_OFFCPU;
	#pragma unroll
	for (int s = 0; s < SPAN_MAX; s++) {
		st->span.comp[s][c] += (delta - rq_ns) & span_mask(st, s);
		st->span.comp[s][COMP_RUNQ] += rq_ns & span_mask(st, s);
	}
	st->span.last_ts = now;
}

/*
 * A submitter woken from its wait for io_uring completions: split the sleep in proportion to where
 * the requests that completed meanwhile spent their time (io-wq queue, the worker's parts).
 */
static __always_inline void charge_sleep_pend(struct tstate *st, __u64 now)
{
	__u64 delta = now - st->span.last_ts, total = 0, used = 0, part;
	__u32 c0 = st->sched.off_comp;

	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++)
		total += st->uring.pend[c];
	if (c0 >= COMP_MAX)
		c0 = COMP_OTHER_OFFCPU;
	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++) {
		part = total > delta ? st->uring.pend[c] * delta / total : st->uring.pend[c];
		used += part;
		#pragma unroll
		for (int s = 0; s < SPAN_MAX; s++)
			st->span.comp[s][c] += part & span_mask(st, s);
		st->uring.pend[c] = 0;
	}
	if (used > delta)
		used = delta;
	#pragma unroll
	for (int s = 0; s < SPAN_MAX; s++)
		st->span.comp[s][c0] += (delta - used) & span_mask(st, s);
	st->span.last_ts = now;
}

static __always_inline bool has_pend(const struct tstate *st)
{
	__u64 sum = 0;

	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++)
		sum |= st->uring.pend[c];
	return sum != 0;
}

/* Span `span` opens at `now` with nothing charged to it yet. */
static __always_inline void span_start(struct tstate *st, int span, __u64 now)
{
	st->span.start[span] = now;
	st->span.open |= 1 << span;
	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++)
		st->span.comp[span][c] = 0;
}

/* Open a span on a running thread. */
static __always_inline void span_open(struct tstate *st, int span, __u64 now)
{
	if (any_span(st))
		charge(st, now);
	else
		st->span.last_ts = now;
	st->sched.run = RUN_ONCPU;
	span_start(st, span, now);
}

static __always_inline void span_close(struct tstate *st, int span, __u64 now)
{
	charge(st, now);
	st->hints.next = HINT_NONE;	/* announced a sleep that did not come */
	st->span.start[span] = 0;
	st->span.open &= ~(1 << span);
}

static __always_inline __u32 innermost_span(const struct tstate *st)
{
	if (st->span.start[SPAN_IOWQ])
		return SPAN_IOWQ;
	if (st->span.start[SPAN_SYNC])
		return SPAN_SYNC;
	if (st->span.start[SPAN_WRITE])
		return SPAN_WRITE;
	return SPAN_FLUSH;
}

#endif /* __AOF_TSTATE_BPF_H */

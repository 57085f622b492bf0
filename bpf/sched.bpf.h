/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Scheduler attribution: on CPU, run queue, and why each sleep happened (sched_switch, sched_waking,
 * lock contention, sleep hints, off-CPU stacks, kernel threads' run-queue chains).
 */
#ifndef __AOF_SCHED_BPF_H
#define __AOF_SCHED_BPF_H

/*
 * The classifier's kernel text ranges, filled by user space after load and before attach (so that
 * /proc/kallsyms is read while the verifier works): one value, the whole table.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aof_kranges);
} kranges SEC(".maps");

#include "classify.h"

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__uint(value_size, MAX_FRAMES * sizeof(__u64));
} stacks SEC(".maps");

/*
 * The component of each stack id seen at a switch-out. A stack id names one stack for good (no
 * BPF_F_REUSE_STACKID), and a server sleeps on a few stacks over and over: after the first time,
 * a switch-out costs one unwind (bpf_get_stackid) and a lookup, not a second unwind and a search.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __s32);
	__type(value, __u8);
} stack_comp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct aof_offkey);
	__type(value, __u64);		/* ns asleep */
} offstacks SEC(".maps");

/*
 * Run-queue waits of kernel threads (kworkers, jbd2, loop workers), so that a sleep can be charged
 * to the CPU contention that delayed the threads it waited on. A traced fdatasync sleeps while a
 * chain of kernel threads works for it (CIL push -> log I/O -> completion worker -> wake-up); when
 * the last of them wakes it, the run-queue time of the chain, passed from waker to wakee at each
 * wake-up by a kernel thread, is run-queue time of the sleep, not journal or block time. A wake-up
 * by anything else starts a new chain. Limit: this kernel exports no preempt count to BPF, so an
 * interrupt that lands on a running kernel thread passes that thread's chain on (only chains begun
 * inside the operation count, which bounds the error).
 */
#define RQ_HIST 8

struct kthread_rq {
	__u64 tag;			/* the thread's start_time and pid: whose slot this is */
	__u64 wake_ts;			/* runnable since, 0 if running or asleep */
	__u64 rq_since_wake;		/* its own run-queue time since its last wake-up */
	__u64 inherited;		/* run-queue time of the chain that woke it */
	__u64 chain_start;		/* when that chain began */
	__u64 start[RQ_HIST];
	__u64 end[RQ_HIST];
	__u32 idx;
};

/*
 * A chain crosses the device: a block request carries the chain of the thread that issued it, and
 * its completion hands that chain to the next kernel thread woken on the same CPU right after (the
 * completion work that will wake the traced thread), since that wake-up runs in interrupt context.
 */
struct chain {
	__u64 inherited;
	__u64 chain_start;
	__u64 ts;			/* when the request completed */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chain);
} completed_chain SEC(".maps");

#define CHAIN_HANDOFF_NS 200000	/* completion -> wake-up of its worker, same CPU */

/*
 * Kernel threads' run-queue state, in a table indexed by pid rather than in task storage: the verifier
 * inlines an array lookup, while bpf_task_storage_get() is a helper call, and these run at every switch
 * and wake-up of a kernel thread. A slot belongs to one thread at a time, named by its start time and
 * pid (a pid is reused, a start time with it is not); a thread whose pid maps onto a taken slot takes it
 * over, which only starts its history afresh.
 */
#define KRQ_SLOTS 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KRQ_SLOTS);
	__type(key, __u32);
	__type(value, struct kthread_rq);
} kthread_rqs SEC(".maps");

static __always_inline struct kthread_rq *krq(struct task_struct *t, bool create)
{
	__u32 pid = t->pid, slot = pid & (KRQ_SLOTS - 1);
	__u64 tag = t->start_time << 22 ^ pid;	/* PID_MAX_LIMIT is 2^22 */
	struct kthread_rq *kr = bpf_map_lookup_elem(&kthread_rqs, &slot);

	if (!kr || kr->tag == tag)
		return kr;
	if (!create)
		return NULL;
	kr->tag = tag;
	kr->wake_ts = kr->rq_since_wake = kr->inherited = kr->chain_start = 0;
	#pragma unroll
	for (int i = 0; i < ARRAY_SIZE(kr->start); i++)
		kr->start[i] = kr->end[i] = 0;
	return kr;
}

struct frames {
	__u64 ips[MAX_FRAMES];
	/*
	 * The running best of classify_current(), kept here rather than on the stack: read back from map
	 * memory it is an unknown number to the verifier, which since 6.7 walks a bpf_loop callback until
	 * its states repeat; with the best on the stack each of its values was a new state (sched_switch:
	 * 200 000 verified instructions, 0.55 s of start-up).
	 */
	__u32 best;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frames);
} scratch SEC(".maps");

/* How long kernel thread `w` waited on a run queue within [from, to). */
static __always_inline __u64 waker_rq_overlap(struct task_struct *w, __u64 from, __u64 to)
{
	struct kthread_rq *kr;
	__u64 sum = 0;

	kr = krq(w, false);
	if (!kr)
		return 0;
	#pragma unroll
	for (int i = 0; i < ARRAY_SIZE(kr->start); i++) {
		__u64 a = kr->start[i] > from ? kr->start[i] : from;
		__u64 b = kr->end[i] < to ? kr->end[i] : to;

		if (b > a)
			sum += b - a;
	}
	return sum;
}

/* ---- the scheduler: on-CPU, run queue, and why each sleep happened -------------------------- */

/*
 * Why a traced thread goes to sleep: sets off_comp and off_kstack. Its kernel stack tells, but an unwind
 * (bpf_get_stackid) costs ~0.6 to 0.8 us of program time on this VM, three sleeps a flush. So a sleep the
 * kernel announced with a hint tracepoint is named by the hint when the thread's in_iowait agrees (block
 * I/O and throttling sleep in io_schedule*(), journal waits do not). The first of each hint's sleeps and
 * 1 in HINT_CHECK after are unwound anyway and the two answers compared: the stack found stands for the
 * hint's sleeps in the off-CPU stacks, and after a mismatch the hint is checked at every sleep until the
 * two agree again. --folded unwinds every sleep.
 */
#define HINT_CHECK 16

/* A function, not a static table: clang 14 gave such a table a .rodata BTF offset the kernel refuses. */
static __always_inline __u8 hint_comp(__u32 h)
{
	if (h == HINT_WRITEBACK)
		return COMP_BLOCK;
	if (h == HINT_DIRTY_THROTTLE)
		return COMP_THROTTLE;
	return h ? COMP_JOURNAL : COMP_OTHER_OFFCPU;
}

/* bpf_loop's context must be on the stack: the scratch value (where the best is kept) and the table. */
struct classify_ctx {
	struct frames *fr;
	const struct aof_kranges *tbl;
};

static long classify_frame(__u64 i, struct classify_ctx *cx)
{
	struct frames *fr = cx->fr;

	/* Mask in asm: clang would drop a C bound it can prove, and the verifier needs to see one. */
	asm volatile("%[i] &= %[mask]" : [i] "+r"(i) : [mask] "i"(MAX_FRAMES - 1));
	fr->best = classify_step(cx->tbl->r, fr->ips[i], fr->best);
	return 0;
}

/* bpf_loop (5.17+) keeps the verifier from walking frames x search steps as one unrolled tree. */
static __always_inline __u8 classify_current(void *ctx)
{
	struct classify_ctx cx;
	__u32 zero = 0;
	long n;

	cx.fr = bpf_map_lookup_elem(&scratch, &zero);
	cx.tbl = bpf_map_lookup_elem(&kranges, &zero);
	if (!cx.fr || !cx.tbl)
		return COMP_OTHER_OFFCPU;
	n = bpf_get_stack(ctx, cx.fr->ips, sizeof(cx.fr->ips), 0);
	if (n <= 0)
		return COMP_OTHER_OFFCPU;
	cx.fr->best = CLASSIFY_INIT;
	bpf_loop(n / sizeof(cx.fr->ips[0]), classify_frame, &cx, 0);
	return CLASSIFY_COMP(cx.fr->best);
}

static __always_inline void sleep_reason(void *ctx, struct tstate *st, struct task_struct *prev)
{
	__u32 h = st->hints.next & (HINT_SLOTS - 1), check = HINT_NONE;
	__u8 *c;

	st->hints.next = HINT_NONE;
	if (h > HINT_NONE && !st->sched.lock_comp &&
	    BPF_CORE_READ_BITFIELD(prev, in_iowait) == (hint_comp(h) != COMP_JOURNAL)) {
		if (st->hints.n[h]++ % HINT_CHECK) {
			st->sched.off_comp = hint_comp(h);
			st->sched.off_kstack = st->hints.kstack[h];
			count(CNT_SLEEPS_HINTED, 1);
			return;
		}
		check = h;
	}
	count(CNT_SLEEPS_UNWOUND, 1);
	st->sched.off_kstack = bpf_get_stackid(ctx, &stacks, 0);
	if (st->sched.lock_comp) {
		st->sched.off_comp = st->sched.lock_comp;
		return;
	}
	c = st->sched.off_kstack >= 0 ? bpf_map_lookup_elem(&stack_comp, &st->sched.off_kstack) : NULL;
	st->sched.off_comp = c ? *c : classify_current(ctx);
	if (!c && st->sched.off_kstack >= 0)
		bpf_map_update_elem(&stack_comp, &st->sched.off_kstack, &st->sched.off_comp, BPF_NOEXIST);
	if (check > HINT_NONE) {
		count(CNT_HINT_CHECKS, 1);
		if (st->sched.off_comp == hint_comp(check)) {
			st->hints.kstack[check] = st->sched.off_kstack;
		} else {
			count(CNT_HINT_MISMATCHES, 1);
			st->hints.n[check] = 0;
		}
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 prev_pid = prev->pid, next_pid = next->pid;
	struct kthread_rq *kr;
	struct tstate *st;
	__u64 now = 0;

	if (prev->flags & PF_KTHREAD && prev_pid && (preempt || prev_state == TASK_RUNNING)) {
		kr = krq(prev, true);
		if (kr && !kr->wake_ts)
			kr->wake_ts = now = bpf_ktime_get_ns();
	}
	if (next->flags & PF_KTHREAD && next_pid) {
		kr = krq(next, false);
		if (kr && kr->wake_ts) {
			__u32 i = kr->idx++ & (RQ_HIST - 1);

			if (!now)
				now = bpf_ktime_get_ns();
			kr->start[i] = kr->wake_ts;
			kr->end[i] = now;
			kr->rq_since_wake += now - kr->wake_ts;
			kr->wake_ts = 0;
		}
	}

	if (is_target_worker(prev) && (st = tstate_get(prev_pid))) {
		__u64 *ns = bpf_map_lookup_elem(&iowq_oncpu, &(__u32){ 0 });

		worker_detect(st, prev);
		if (!now)
			now = bpf_ktime_get_ns();
		if (ns && st->uring.last_in)
			*ns += now - st->uring.last_in;
	}
	if (tracked(prev->tgid) && (st = bpf_map_lookup_elem(&threads, &prev_pid)) && any_span(st)) {
		if (!now)
			now = bpf_ktime_get_ns();
		charge(st, now);
		if (preempt || prev_state == TASK_RUNNING) {
			st->sched.run = RUN_RUNQ;
		} else {
			st->sched.run = RUN_OFFCPU;
			sleep_reason(ctx, st, prev);
			st->sched.off_start = now;
			st->sched.wake_ts = 0;
			st->sched.waker_pid = 0;
			st->sched.waker_kstack = -1;
			st->sched.waker_comm[0] = 0;
			#pragma unroll
			for (int c = 0; c < COMP_MAX; c++)
				st->uring.pend[c] = 0;
		}
	}
	if (is_target_worker(next) && (st = tstate_get(next_pid))) {
		if (!now)
			now = bpf_ktime_get_ns();
		st->uring.last_in = now;
	}
	if (tracked(next->tgid) && (st = bpf_map_lookup_elem(&threads, &next_pid)) && any_span(st)) {
		if (!now)
			now = bpf_ktime_get_ns();
		charge(st, now);
		if (st->sched.run == RUN_OFFCPU || st->sched.wake_ts) {
			/* The sleep ends at the wake-up, or here if the wake-up went unseen. */
			struct aof_offkey key = {
				.kstack = st->sched.off_kstack,
				.waker_kstack = st->sched.waker_kstack,
				.comp = st->sched.off_comp,
				.role = role_of(next_pid, next->tgid, next->comm),
				.span = innermost_span(st),
				.waker_pid = st->sched.waker_pid,
			};
			__u64 slept = (st->sched.wake_ts ? st->sched.wake_ts : now) - st->sched.off_start, *v;

			__builtin_memcpy(key.waker_comm, st->sched.waker_comm, sizeof(key.waker_comm));
			v = bpf_map_lookup_elem(&offstacks, &key);
			if (v)
				__sync_fetch_and_add(v, slept);
			else
				bpf_map_update_elem(&offstacks, &key, &slept, BPF_NOEXIST);
			st->sched.wake_ts = 0;
		}
		st->sched.run = RUN_ONCPU;
	}
	return 0;
}

SEC("tp_btf/sched_waking")
int BPF_PROG(sched_waking, struct task_struct *p)
{
	struct task_struct *waker = bpf_get_current_task_btf();
	__u32 pid = p->pid;
	struct kthread_rq *kr;
	struct tstate *st;
	__u64 id, now;

	bool kwaker = waker->flags & PF_KTHREAD && waker->pid;

	if (p->flags & PF_KTHREAD) {
		/* The target waking the jbd2 thread during an fdatasync: that sync forced a commit. */
		if (waker->tgid == targ_tgid && p->comm[0] == 'j' && p->comm[1] == 'b' && p->comm[2] == 'd' &&
		    p->comm[3] == '2' && p->comm[4] == '/') {
			st = bpf_map_lookup_elem(&threads, &(__u32){ waker->pid });
			if (st && st->span.start[SPAN_SYNC]) {
				st->sys.commit = 1;
				st->hints.next = folded ? HINT_NONE : HINT_JBD2_COMMIT;
			}
		}
		kr = krq(p, true);
		if (!kr)
			return 0;
		now = bpf_ktime_get_ns();
		if (!kr->wake_ts)
			kr->wake_ts = now;
		kr->rq_since_wake = 0;
		kr->inherited = 0;
		kr->chain_start = now;
		{
			struct chain *cc = bpf_map_lookup_elem(&completed_chain, &(__u32){ 0 });

			if (cc && cc->ts && now - cc->ts < CHAIN_HANDOFF_NS) {
				kr->inherited = cc->inherited;
				kr->chain_start = cc->chain_start;
				cc->ts = 0;
				if (kwaker) {
					/* completion run by a kernel thread (ksoftirqd): its own wait too */
					struct kthread_rq *wk = krq(waker, false);

					if (wk)
						kr->inherited += wk->rq_since_wake;
				}
				return 0;
			}
		}
		if (kwaker) {
			struct kthread_rq *wk = krq(waker, false);

			if (wk) {
				kr->inherited = wk->inherited + wk->rq_since_wake;
				kr->chain_start = wk->chain_start;
			}
		}
		return 0;
	}
	if (tracked(p->tgid)) {
		__u64 rq_ns = 0;

		st = bpf_map_lookup_elem(&threads, &pid);
		if (!st || !any_span(st) || st->sched.run != RUN_OFFCPU)
			return 0;
		now = bpf_ktime_get_ns();
		{
			struct chain *cc = bpf_map_lookup_elem(&completed_chain, &(__u32){ 0 });
			__u32 sp = innermost_span(st);
			__u64 from = sp < SPAN_MAX ? st->span.start[sp] : now;

			if (kwaker) {
				struct kthread_rq *wk = krq(waker, false);

				rq_ns = waker_rq_overlap(waker, st->span.last_ts, now);
				/* Only a chain this operation started: not the leftovers of older work. */
				if (wk && wk->chain_start >= from)
					rq_ns += wk->inherited;
			} else if (cc && cc->ts && now - cc->ts < CHAIN_HANDOFF_NS && cc->chain_start >= from) {
				/* woken straight from an I/O completion (interrupt context) */
				rq_ns = cc->inherited;
			}
		}
		if (has_pend(st))
			charge_sleep_pend(st, now);
		else
			charge_sleep(st, now, rq_ns);
		st->sched.run = RUN_RUNQ;
		st->sched.wake_ts = now;
		id = bpf_get_current_pid_tgid();
		st->sched.waker_pid = id >> 32;
		bpf_get_current_comm(st->sched.waker_comm, sizeof(st->sched.waker_comm));
		st->sched.waker_kstack = folded ? bpf_get_stackid(ctx, &stacks, 0) : -1;
		return 0;
	}
	return 0;
}

/* ---- locks: exact inode-lock waits -------------------------------------------------------- */

SEC("tp_btf/contention_begin")
int BPF_PROG(contention_begin, void *lock, unsigned int flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if (!tracked(id >> 32))
		return 0;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (!st || !any_span(st))
		return 0;
	charge(st, bpf_ktime_get_ns());
	st->sched.lock_comp = (__u64)lock == aof_rwsem || ((__u64)lock == aof_ilock && aof_ilock) ?
			COMP_INODE_LOCK : COMP_OTHER_LOCK;
	return 0;
}

SEC("tp_btf/contention_end")
int BPF_PROG(contention_end, void *lock, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if (!tracked(id >> 32))
		return 0;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (!st || !st->sched.lock_comp)
		return 0;
	if (any_span(st))
		charge(st, bpf_ktime_get_ns());
	st->sched.lock_comp = 0;
	return 0;
}

/* ---- sleep hints: the kernel is about to put the thread to sleep, and says why -------------- */

static __always_inline void hint(__u8 h)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if (folded || !tracked(id >> 32))
		return;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (st && any_span(st))
		st->hints.next = h;
}

/* Fired only when the folio is under writeback, just before folio_wait_bit() (5.15+). */
SEC("tp_btf/folio_wait_writeback")
int BPF_PROG(folio_wait_writeback)
{
	hint(HINT_WRITEBACK);
	return 0;
}

/* xlog_cil_force_seq(): about to wait for the CIL push to commit. */
SEC("tp_btf/xfs_log_cil_wait")
int BPF_PROG(xfs_log_cil_wait)
{
	hint(HINT_XFS_CIL_WAIT);
	return 0;
}

/* xlog_wait_on_iclog(): about to wait for the iclog's write (5.14+). */
SEC("tp_btf/xlog_iclog_wait_on")
int BPF_PROG(xlog_iclog_wait_on)
{
	hint(HINT_XLOG_ICLOG_WAIT);
	return 0;
}

/* balance_dirty_pages(): about to pause the writer, in io_schedule_timeout(). */
SEC("tp_btf/balance_dirty_pages")
int BPF_PROG(balance_dirty_pages)
{
	hint(HINT_DIRTY_THROTTLE);
	return 0;
}

#endif /* __AOF_SCHED_BPF_H */

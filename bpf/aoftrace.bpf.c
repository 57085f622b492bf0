// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * aoftrace: where the time of a Valkey/Redis server's AOF flushes and fdatasyncs goes.
 *
 * Stands on tp_btf (raw tracepoints with BTF: no tracefs needed) and uprobes only, because the
 * kernels we target have no kprobes and refuse fentry. Per-thread state follows each
 * flushAppendOnlyFile() call and the write and fdatasync calls inside it; every scheduler, lock
 * and wake-up event of such a thread closes an interval and charges it to one component, so the
 * components of an operation add up to its wall time. One record leaves per flush that did work
 * and one per fsync-family call; everything else is aggregated here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "aoftrace.h"

/*
 * make bench's `floor` mode (build/floor/aoftrace, -DAOF_FLOOR): every program returns at its first
 * instruction, attached where the real ones are. What such a run costs the server is the price of the
 * hooks themselves (tracepoint, syscall-tracepoint and uprobe entry paths), whatever the programs do.
 */
#ifdef AOF_FLOOR
#undef BPF_PROG
#undef BPF_KPROBE
#undef BPF_KRETPROBE
#define FLOOR_PROG(name, ctx_t, args...)					\
name(ctx_t ctx) { return 0; }							\
static __always_inline __attribute__((unused)) int ____##name(ctx_t ctx, ##args)
#define BPF_PROG(name, args...)		FLOOR_PROG(name, unsigned long long *, ##args)
#define BPF_KPROBE(name, args...)	FLOOR_PROG(name, struct pt_regs *, ##args)
#define BPF_KRETPROBE(name, args...)	FLOOR_PROG(name, struct pt_regs *, ##args)
#define FLOOR_RETURN()			return 0
#else
#define FLOOR_RETURN()			do { } while (0)
#endif

#if defined(__TARGET_ARCH_x86)
#define NR_write		1
#define NR_pwrite64		18
#define NR_writev		20
#define NR_clone		56
#define NR_fork			57
#define NR_vfork		58
#define NR_fsync		74
#define NR_fdatasync		75
#define NR_sync_file_range	277
#define NR_pwritev		296
#define NR_pwritev2		328
#define NR_clone3		435
#define NR_io_uring_enter	426
#define NR_sendto		44
#define NR_sendmsg		46
#elif defined(__TARGET_ARCH_arm64)
#define NR_write		64
#define NR_pwrite64		68
#define NR_writev		66
#define NR_clone		220
#define NR_fork			-1
#define NR_vfork		-1
#define NR_fsync		82
#define NR_fdatasync		83
#define NR_sync_file_range	84
#define NR_pwritev		70
#define NR_pwritev2		287
#define NR_clone3		435
#define NR_io_uring_enter	426
#define NR_sendto		206
#define NR_sendmsg		211
#else
#error "syscall numbers: add this architecture"
#endif

#define PF_KTHREAD	0x00200000
#define PF_IO_WORKER	0x00000010
#define CLONE_VM	0x00000100
#define CLONE_THREAD	0x00010000

const volatile __u32 targ_tgid = 0;
const volatile bool timeline = false;	/* also send one record per block request (--timeline) */
/*
 * --folded: unwind every traced sleep (no hints, below) and take the waker's stack at each wake-up too.
 */
const volatile bool folded = false;
const volatile __u64 ring_size = 1 << 20;	/* the events ring buffer's size */
/*
 * The classifier's kernel text ranges, filled by user space after load and before attach (so that
 * /proc/kallsyms is read while the verifier works).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_KRANGES);
	__type(key, __u32);
	__type(value, struct aof_krange);
} kranges SEC(".maps");


__u32 krange_zero = 0;	/* never written: KRANGE_ZERO in classify.h */
#define KRANGE_ZERO krange_zero

static __always_inline const struct aof_krange *krange_at(const void *tbl, __u32 i)
{
	return bpf_map_lookup_elem(&kranges, &i);
}

#include "classify.h"

/* Children alive; read without a lock, it only gates a map lookup and tags records. */
__u64 nr_children = 0;
/* The AOF file as last seen written by a flush: its inode's i_rwsem, device and inode number. */
__u64 aof_rwsem = 0;
__u64 aof_ilock = 0;		/* on XFS, its xfs_inode's i_lock (the ILOCK) too */
__u32 aof_dev = 0;
/*
 * What the AOF's device was last recognised by, so that the block, jbd2 and XFS log programs compare a
 * pointer instead of following three or four (each read a helper call): the AOF device's request queue,
 * the last other one seen, its jbd2 journal, its XFS log. Reset when aof_dev changes.
 */
__u64 aof_queue = 0, other_queue = 0, aof_journal_ptr = 0, aof_xlog = 0;
__u64 aof_inode = 0;
/*
 * Durability (docs/durability.md). dur_wseq counts AOF bytes whose write completed, dur_synced how
 * many of them a completed sync covers: a sync covers what was written before it began.
 */
__u64 dur_wseq = 0;
__u64 dur_synced = 0;
__u64 dur_unsynced_since = 0;	/* when wseq went past synced, 0 while all is covered */
__u64 dur_sync_snap = ~0ULL;	/* wseq when the file system began an io_uring FSYNC of the AOF */
__u64 dur_max_window_ns = 0;	/* the longest a reply found AOF bytes unsynced */
__u32 dur_err_pending = 0;	/* a sync error not yet followed by a sync (retried) or a reply */
__u32 flush_open = 0;		/* a thread (flush_tid) is inside flushAppendOnlyFile() */
__u32 flush_tid = 0;
__u32 vio_sent[VIO_MAX] = {};	/* records sent per kind, up to VIO_EXAMPLES */
/* io-wq workers of the target alive (user space sets the count found at start) and the most seen */
__s64 iowq_alive = 0;
__s64 iowq_max_alive = 0;

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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);		/* tgid of a child the target forked */
	__type(value, __u64);		/* fork time */
} children SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);	/* user space sets it: RING_SIZE, or more for --timeline */
} events SEC(".maps");

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
	for (int i = 0; i < RQ_HIST; i++)
		kr->start[i] = kr->end[i] = 0;
	return kr;
}

struct frames {
	__u64 ips[MAX_FRAMES];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frames);
} scratch SEC(".maps");

struct rqinfo {
	__u64 rq;			/* struct request * in flight in this slot, 0 if none */
	__u64 issue_ns;
	__u64 sector;
	__u32 tid;
	__u64 inherited;		/* the issuing kernel thread's chain */
	__u64 chain_start;
	__u8 issuer;
	__u8 kind;
};

/*
 * Requests in flight, by tag: a request holds its tag from before block_rq_issue until after
 * block_rq_complete, so within one hardware queue no two share a slot. An array, because the verifier
 * inlines its lookups: with a hash map, its update and delete were most of the block programs' time
 * (block_rq_issue 1.3 to 1.4 us a run here, 0.5 to 0.6 us with the array; 0.1 us for an empty program).
 * The AOF device's requests and the others' (its backing disk) have a half each. A device with several
 * hardware queues may give two requests one tag: the second takes the slot, the first is not counted.
 */
#define RQ_TAGS 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * RQ_TAGS);
	__type(key, __u32);
	__type(value, struct rqinfo);
} inflight SEC(".maps");

static __always_inline struct rqinfo *rq_slot(struct request *rq, bool aof)
{
	__u32 slot = ((__u32)rq->tag & (RQ_TAGS - 1)) | (aof ? 0 : RQ_TAGS);

	return bpf_map_lookup_elem(&inflight, &slot);
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ISS_MAX * RQ_MAX);
	__type(key, __u32);
	__type(value, struct aof_blkstat);
} blkstats SEC(".maps");

/*
 * Records are read by user space every 100 ms: waking it at each one would cost the traced thread an
 * extra wake-up (measured here as ~15 us added to the fdatasync it just made). Wake it only when the
 * ring is a quarter full.
 */
static __always_inline __u64 rb_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > ring_size / 4 ? 0 : BPF_RB_NO_WAKEUP;
}

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += n;
}

/* 1 for the target, 2 for one of its forked children, 0 for anybody else: the cheap test first. */
static __always_inline int tracked(__u32 tgid)
{
	if (tgid == targ_tgid)
		return 1;
	if (nr_children && bpf_map_lookup_elem(&children, &tgid))
		return 2;
	return 0;
}

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

static __always_inline bool prefix(const char *s, const char *p, int n)
{
	for (int i = 0; i < n; i++)
		if (s[i] != p[i])
			return false;
	return true;
}

static __always_inline __u8 role_of(__u32 tid, __u32 tgid, const char *comm)
{
	if (tgid != targ_tgid)
		return ROLE_CHILD;
	if (tid == tgid)
		return ROLE_MAIN;
	/* io_uring workers are threads of the submitter (create_io_thread, 5.12+), named by the kernel. */
	if (prefix(comm, "iou-wrk-", 8))
		return ROLE_IOWQ;
	if (prefix(comm, "iou-sqp-", 8))
		return ROLE_SQPOLL;
	if (prefix(comm, "bio_", 4))
		return ROLE_BIO;
	return ROLE_OTHER;
}

static __always_inline bool is_write(long nr)
{
	return nr == NR_write || nr == NR_pwrite64 || nr == NR_writev ||
	       nr == NR_pwritev || nr == NR_pwritev2;
}

static __always_inline bool is_fork(long nr)
{
	return nr == NR_clone || nr == NR_clone3 || nr == NR_fork || nr == NR_vfork;
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

/* How long kernel thread `w` waited on a run queue within [from, to). */
static __always_inline __u64 waker_rq_overlap(struct task_struct *w, __u64 from, __u64 to)
{
	struct kthread_rq *kr;
	__u64 sum = 0;

	kr = krq(w, false);
	if (!kr)
		return 0;
	for (int i = 0; i < RQ_HIST; i++) {
		__u64 a = kr->start[i] > from ? kr->start[i] : from;
		__u64 b = kr->end[i] < to ? kr->end[i] : to;

		if (b > a)
			sum += b - a;
	}
	return sum;
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

static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds, *f = NULL;
	unsigned int max;

	max = BPF_CORE_READ(task, files, fdt, max_fds);
	if (fd < 0 || (unsigned int)fd >= max)
		return NULL;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* ---- durability: the invariants of appendfsync always (docs/durability.md) ------------------ */

static __always_inline __u64 ino_of(__u64 inode)
{
	return inode ? BPF_CORE_READ((struct inode *)inode, i_ino) : 0;
}

/*
 * The __noinline non-static functions below are BPF global functions: the verifier checks each once
 * per program, not along every path that reaches it (start-up verification 43 -> 28 ms). Their
 * arguments are scalars or checked pointers, as global functions require.
 *
 * Count a violation; send the first VIO_EXAMPLES of each kind to user space, which warns at once.
 */
__noinline int violation(__u64 kind, __u64 ino, __u64 off, __u64 isize, __s64 bytes)
{
	struct aof_violation_event *e;

	if (kind >= VIO_MAX)
		return 0;
	count(CNT_VIO_OVERWRITE + kind, 1);
	if (vio_sent[kind] >= VIO_EXAMPLES)	/* racy: a few more may go, never fewer */
		return 0;
	vio_sent[kind]++;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST, 1);
		return 0;
	}
	e->type = EV_VIOLATION;
	e->kind = kind;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->pad = 0;
	e->ts_ns = bpf_ktime_get_ns();
	e->ino = ino;
	e->off = off;
	e->isize = isize;
	e->bytes = bytes;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, rb_flags());
	return 0;
}

/* `bytes` more of the AOF written (the write completed). */
static __always_inline void aof_written(__u64 bytes, __u64 now)
{
	if (dur_wseq <= dur_synced)
		dur_unsynced_since = now;
	__sync_fetch_and_add(&dur_wseq, bytes);
}

/* A sync that began when dur_wseq was `snap` completed: everything written before is on disk. */
static __always_inline void aof_covered(__u64 snap)
{
	if (snap > dur_synced)
		dur_synced = snap;
	if (dur_synced >= dur_wseq)
		dur_unsynced_since = 0;
}

static __always_inline void sync_failed(__u64 inode, __s64 err)
{
	dur_err_pending = 1;
	violation(VIO_SYNC_ERROR, ino_of(inode), 0, 0, err);
}

/*
 * A write to a socket by the target: a reply (or any message) leaving. With AOF bytes unsynced it
 * left too early, if the policy is appendfsync always (user space decides: see docs/durability.md).
 */
__noinline int check_reply(int fd)
{
	struct file *f;
	__u64 window, now;

	if (!dur_err_pending && dur_wseq <= dur_synced)
		return 0;		/* the common case, also decided by reply() before the call */
	now = bpf_ktime_get_ns();
	f = fd_file(fd);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & 0170000) != 0140000 /* S_IFSOCK */)
		return 0;
	if (dur_err_pending) {
		dur_err_pending = 0;
		count(CNT_SYNC_CARRIED_ON, 1);
	}
	if (dur_wseq <= dur_synced)
		return 0;
	window = dur_unsynced_since ? now - dur_unsynced_since : 0;
	if (window > dur_max_window_ns)
		dur_max_window_ns = window;
	violation(VIO_REPLY_EARLY, ino_of(aof_inode), dur_wseq - dur_synced, window, 0);
	return 0;
}

/* The common case decided inline: a global function costs a BPF-to-BPF call and its return (thunked here). */
static __always_inline void reply(int fd)
{
	if (dur_err_pending || dur_wseq > dur_synced)
		check_reply(fd);
}

/* A write to the AOF by the target, seen by the file system: [pos, pos + len) with i_size now. */
static __always_inline void check_aof_write(__u64 inode, __u64 pos, __u64 len, __u64 isize)
{
	if (pos < isize) {
		__u64 over = isize - pos < len ? isize - pos : len;

		count(CNT_OVERWRITE_BYTES, over);
		violation(VIO_OVERWRITE, ino_of(inode), pos, isize, over);
	}
	if (!BPF_CORE_READ((struct inode *)inode, __i_nlink))
		violation(VIO_UNLINKED, ino_of(inode), pos, isize, len);
}

/*
 * io_uring writes do not pass through write(2): check them where the file system begins them. A
 * write(2) of the target is checked at sys_enter instead, for every file system.
 */
static __always_inline void fs_write(struct inode *inode, __u64 pos, __u64 len)
{
	__u64 id = bpf_get_current_pid_tgid(), isize;
	struct tstate *st;

	if ((__u32)(id >> 32) != targ_tgid || ((__u64)inode != aof_inode && !flush_open))
		return;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (st && st->sys_nr >= 0 && is_write(st->sys_nr))
		return;
	isize = BPF_CORE_READ(inode, i_size);
	check_aof_write((__u64)inode, pos, len, isize);
	if (!flush_open)
		return;
	/*
	 * The first io_uring write of the open flush, run inline by the flushing thread or by an io-wq
	 * worker: where it starts and i_size then, as note_aof_write() takes them for a write(2), so that
	 * fs.* and the offset and growth checks count both paths alike.
	 */
	if ((__u32)id != flush_tid)
		st = bpf_map_lookup_elem(&threads, &flush_tid);
	if (!st || !st->span_start[SPAN_FLUSH] || st->first_known)
		return;
	st->first_known = 1;
	st->first_off = pos;
	st->isize_before = isize;
	st->inode = (__u64)inode;
	st->ino = ino_of((__u64)inode);
}

/* An io_uring FSYNC of the AOF begins in the file system: what it will cover is written by now. */
static __always_inline void fs_sync_begin(struct inode *inode)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if ((__u32)(id >> 32) != targ_tgid || (__u64)inode != aof_inode)
		return;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (st && (st->sys_nr == NR_fsync || st->sys_nr == NR_fdatasync))
		return;		/* fdatasync(2): its snapshot is taken at sys_enter */
	if (dur_sync_snap == ~0ULL || dur_wseq < dur_sync_snap)
		dur_sync_snap = dur_wseq;
	if (dur_err_pending) {
		dur_err_pending = 0;
		count(CNT_SYNC_RETRIED, 1);
	}
}

/* Every write and fsync of these file systems comes here: the target test first, before reading a pointer. */
static __always_inline bool from_target(void)
{
	return (__u32)(bpf_get_current_pid_tgid() >> 32) == targ_tgid;
}

/*
 * Pointers are read with BPF_CORE_READ, not followed through BTF: each BTF pointer load makes the 6.18
 * verifier look up "<struct>__safe_*" names in a linear scan of the kernel's BTF, ~1 ms of start-up.
 */
SEC("tp_btf/xfs_file_buffered_write")
int BPF_PROG(xfs_file_buffered_write, struct kiocb *iocb, struct iov_iter *from)
{
	if (!from_target())
		return 0;
	fs_write(BPF_CORE_READ(iocb, ki_filp, f_inode), iocb->ki_pos, from->count);
	return 0;
}

SEC("tp_btf/xfs_file_direct_write")
int BPF_PROG(xfs_file_direct_write, struct kiocb *iocb, struct iov_iter *from)
{
	if (!from_target())
		return 0;
	fs_write(BPF_CORE_READ(iocb, ki_filp, f_inode), iocb->ki_pos, from->count);
	return 0;
}

/* ext4 traces each folio of a buffered write; the first one starts where the write does. */
SEC("tp_btf/ext4_da_write_begin")
int BPF_PROG(ext4_da_write_begin, struct inode *inode, loff_t pos, unsigned int len)
{
	if (!from_target())
		return 0;
	fs_write(inode, pos, len);
	return 0;
}

SEC("tp_btf/ext4_write_begin")
int BPF_PROG(ext4_write_begin, struct inode *inode, loff_t pos, unsigned int len)
{
	if (!from_target())
		return 0;
	fs_write(inode, pos, len);
	return 0;
}

SEC("tp_btf/xfs_file_fsync")
int BPF_PROG(xfs_file_fsync, struct xfs_inode *ip)
{
	if (!from_target())
		return 0;
	fs_sync_begin((struct inode *)((void *)ip + bpf_core_field_offset(struct xfs_inode, i_vnode)));
	return 0;
}

SEC("tp_btf/ext4_sync_file_enter")
int BPF_PROG(ext4_sync_file_enter, struct file *file, int datasync)
{
	if (!from_target())
		return 0;
	fs_sync_begin(BPF_CORE_READ(file, f_inode));
	return 0;
}

/* ---- the flush: flushAppendOnlyFile() ----------------------------------------------------- */

/* BPF_KPROBE works for uprobes; libbpf 1.1 (Debian 12) has no BPF_UPROBE yet. */
SEC("uprobe")
int BPF_KPROBE(flush_enter)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();
	struct tstate *st;

	if ((__u32)(id >> 32) != targ_tgid)
		return 0;
	st = tstate_get((__u32)id);
	if (!st)
		return 0;
	span_open(st, SPAN_FLUSH, now);
	st->writes = st->write_errors = st->syncs = st->commits = st->urings = 0;
	st->uring_ns = 0;
	st->write_ns = st->write_bytes = st->sync_ns = 0;
	st->first_off = st->isize_before = st->ino = st->inode = 0;
	st->uring_bytes = st->uring_syncs = st->uring_writes = 0;
	st->first_known = 0;
	st->inode0 = aof_inode;
	if (aof_inode) {
		struct inode *in = (struct inode *)aof_inode;

		st->isize0 = BPF_CORE_READ(in, i_size);
	} else {
		st->isize0 = 0;
	}
	flush_open = 1;
	flush_tid = (__u32)id;
	st->children_at_start = nr_children;
	for (int c = 0; c < COMP_MAX; c++)
		st->write_tot[c] = st->sync_tot[c] = 0;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(flush_exit)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns(), start;
	__u32 tid = (__u32)id;
	struct aof_flush_event *e;
	struct inode *inode;
	struct tstate *st;

	if ((__u32)(id >> 32) != targ_tgid)
		return 0;
	st = bpf_map_lookup_elem(&threads, &tid);
	if (!st || !st->span_start[SPAN_FLUSH])
		return 0;
	start = st->span_start[SPAN_FLUSH];
	span_close(st, SPAN_FLUSH, now);
	flush_open = 0;
	count(CNT_FLUSH_CALLS, 1);
	/* Growth: the file grew by what the flush wrote, unless it moved to a new file (rewrite). */
	if (st->inode && st->inode == st->inode0 && st->write_bytes + st->uring_bytes) {
		struct inode *in = (struct inode *)st->inode;	/* not inside BPF_CORE_READ: tstate is ours */
		__s64 grew = BPF_CORE_READ(in, i_size) - st->isize0;
		__s64 diff = grew - (__s64)(st->write_bytes + st->uring_bytes);

		if (diff) {
			count(CNT_GROWTH_DIFF_BYTES, diff < 0 ? -diff : diff);
			violation(VIO_GROWTH, st->ino, st->isize0, st->isize0 + grew, diff);
		}
	}
	if (!st->writes && !st->syncs && !st->urings) {
		/* Called on every event-loop turn; an empty buffer returns at once. Count, don't emit. */
		count(CNT_FLUSH_EMPTY, 1);
		count(CNT_FLUSH_EMPTY_NS, now - start);
		return 0;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST, 1);
		return 0;
	}
	e->type = EV_FLUSH;
	e->tid = tid;
	e->start_ns = start;
	e->dur_ns = now - start;
	e->write_ns = st->write_ns;
	e->write_bytes = st->write_bytes;
	e->sync_ns = st->sync_ns;
	e->writes = st->writes;
	e->write_errors = st->write_errors;
	e->syncs = st->syncs;
	e->children = st->children_at_start > nr_children ? st->children_at_start : nr_children;
	e->first_off = st->first_off;
	e->isize_before = st->isize_before;
	inode = (struct inode *)st->inode;
	e->isize_after = inode ? BPF_CORE_READ(inode, i_size) : 0;
	e->ino = st->ino;
	e->commits = st->commits;
	e->uring_enters = st->urings;
	e->uring_bytes = st->uring_bytes;
	e->uring_syncs = st->uring_syncs;
	e->uring_writes = st->uring_writes;
	e->first_known = st->first_known;
	e->pad = 0;
	e->uring_ns = st->uring_ns;
	for (int c = 0; c < COMP_MAX; c++) {
		e->comp[c] = st->comp[SPAN_FLUSH][c];
		e->write_comp[c] = st->write_tot[c];
		e->sync_comp[c] = st->sync_tot[c];
	}
	bpf_ringbuf_submit(e, rb_flags());
	return 0;
}

/* ---- syscalls: write inside a flush, fdatasync/fsync anywhere, fork, the child's I/O ------- */

__noinline int note_aof_inode(__u64 inode_addr)
{
	struct inode *inode = (struct inode *)inode_addr;
	__u32 dev;

	aof_inode = (__u64)inode;
	aof_rwsem = (__u64)inode + bpf_core_field_offset(struct inode, i_rwsem);
	/*
	 * XFS's IOLOCK is the VFS i_rwsem (since 4.7); its ILOCK is xfs_inode.i_lock, a rw_semaphore
	 * since 6.1 (mrlock_t before), taken for block mapping and size updates: also this inode's lock.
	 */
	if (BPF_CORE_READ(inode, i_sb, s_magic) == 0x58465342 /* XFS_SB_MAGIC */ &&
	    bpf_core_field_exists(struct xfs_inode, i_lock))
		aof_ilock = (__u64)inode - bpf_core_field_offset(struct xfs_inode, i_vnode) +
			    bpf_core_field_offset(struct xfs_inode, i_lock);
	else
		aof_ilock = 0;
	dev = BPF_CORE_READ(inode, i_sb, s_dev);
	if (dev != aof_dev) {
		aof_queue = other_queue = aof_journal_ptr = aof_xlog = 0;
		aof_dev = dev;
	}
	return 0;
}

/*
 * Remember the AOF file of a write inside a flush: i_rwsem for lock matching, size and offset.
 * Returns false for a write that is not to a regular file (a tracer's pipe, say): not an AOF write.
 */
__noinline int note_aof_write(struct tstate *st, long nr, int fd, __u64 arg3)
{
	struct file *f = fd_file(fd);
	struct inode *inode;
	__u64 off, isize;

	if (!st)
		return 0;

	if (!f)
		return 0;
	inode = BPF_CORE_READ(f, f_inode);
	if (!inode || (BPF_CORE_READ(inode, i_mode) & 0170000) != 0100000 /* S_ISREG */)
		return 0;
	note_aof_inode((__u64)inode);
	/* Where the kernel will write: pwrite's offset or the file position, i_size with O_APPEND. */
	isize = BPF_CORE_READ(inode, i_size);
	if (nr == NR_pwrite64 || nr == NR_pwritev || nr == NR_pwritev2)
		off = arg3;
	else
		off = BPF_CORE_READ(f, f_pos);
	if (BPF_CORE_READ(f, f_flags) & 02000 /* O_APPEND */)
		off = isize;
	st->w_off = off;
	st->w_isize = isize;
	if (!BPF_CORE_READ(inode, __i_nlink))
		violation(VIO_UNLINKED, BPF_CORE_READ(inode, i_ino), off, isize, 0);
	if (st->first_known)
		return 1;
	st->first_known = 1;
	st->inode = (__u64)inode;
	st->ino = BPF_CORE_READ(inode, i_ino);
	st->isize_before = isize;
	st->first_off = off;
	return 1;
}

/*
 * A syscall of interest begins: arg0 and arg3 are its first and fourth arguments. Called from the
 * syscalls:sys_enter_<name> tracepoints when aoftrace could attach them (they fire only for the
 * syscalls asked for), else from raw_syscalls:sys_enter, which fires for every syscall of the system.
 */
static __always_inline int on_sys_enter(long nr, __u64 arg0, __u64 arg3)
{
	__u64 id, now;
	struct tstate *st;
	int who;

	if (!is_write(nr) && nr != NR_fsync && nr != NR_fdatasync && !is_fork(nr) &&
	    nr != NR_sync_file_range && nr != NR_io_uring_enter && nr != NR_sendto && nr != NR_sendmsg)
		return 0;
	id = bpf_get_current_pid_tgid();
	who = tracked(id >> 32);
	if (!who)
		return 0;
	if (nr == NR_sendto || nr == NR_sendmsg) {
		if (who == 1)
			reply((int)arg0);
		return 0;
	}
	if (who == 2) {
		if (nr == NR_sync_file_range)
			count(CNT_CHILD_SFR, 1);
		if (nr == NR_sync_file_range || is_fork(nr) || nr == NR_io_uring_enter)
			return 0;
	}
	if (who == 1 && (is_write(nr) || is_fork(nr) || nr == NR_sync_file_range ||
			 nr == NR_io_uring_enter)) {
		/*
		 * No flush open: no AOF write, a reply maybe (~30 a flush under redis-benchmark). Decided
		 * before any map lookup: this and its sys_exit are most of the programs' runs.
		 */
		if (is_write(nr) && !flush_open) {
			reply((int)arg0);
			return 0;
		}
		st = nr == NR_io_uring_enter ? tstate_get((__u32)id) :
					       bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
		/* Only writes inside a flush are AOF writes: replies to clients are writes too, from any
		 * thread (Valkey's I/O threads have no state here). */
		if (is_write(nr) && (!st || !st->span_start[SPAN_FLUSH])) {
			reply((int)arg0);
			return 0;
		}
		if (!st)
			return 0;
		if (is_fork(nr)) {
			/* A new process, not a thread: clone3 keeps its flags in user memory. */
			__u64 flags = 0;

			if ((__u32)id != targ_tgid)
				return 0;
			if (nr == NR_clone3)
				bpf_probe_read_user(&flags, sizeof(flags),
						    (void *)arg0);
			else if (nr == NR_clone)
				flags = arg0;
			if (flags & (CLONE_THREAD | CLONE_VM))
				return 0;
		} else if (!is_write(nr) && nr != NR_io_uring_enter) {
			return 0;	/* sync_file_range: only a child's is counted */
		}
	} else {
		/* a child's write (counted) or anybody's fsync-family call (attributed) */
		st = tstate_get((__u32)id);
		if (!st)
			return 0;
	}
	now = bpf_ktime_get_ns();
	if (who == 1 && is_write(nr) && !note_aof_write(st, nr, (int)arg0, arg3)) {
		/* Not the AOF: a reply sent from inside the flush, maybe. */
		reply((int)arg0);
		return 0;
	}
	st->sys_nr = nr;
	st->sys_fd = (int)arg0;
	if (who == 1 && is_write(nr)) {
		span_open(st, SPAN_WRITE, now);
	} else if (nr == NR_fsync || nr == NR_fdatasync) {
		st->commit = 0;
		span_open(st, SPAN_SYNC, now);
		st->sync_aof = 0;
		if (who == 1) {
			struct file *f = fd_file(st->sys_fd);

			st->sync_aof = f && (__u64)BPF_CORE_READ(f, f_inode) == aof_inode;
			st->sync_snap = dur_wseq;
			if (st->sync_aof && dur_err_pending) {
				dur_err_pending = 0;
				count(CNT_SYNC_RETRIED, 1);
			}
		}
	} else if (nr == NR_io_uring_enter) {
		st->sys_start = now;
		st->uring_in_flush = st->span_start[SPAN_FLUSH] != 0;
	} else {
		st->sys_start = now;
	}
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long nr)
{
	return on_sys_enter(nr, PT_REGS_PARM1_CORE_SYSCALL(regs), PT_REGS_PARM4_CORE_SYSCALL(regs));
}

/* The record of every syscalls:sys_enter_<name> tracepoint: __syscall_nr, then each argument in a long. */
struct syscall_enter_rec {
	__u64 common;
	int nr;
	int pad;
	__u64 args[6];
};

struct syscall_exit_rec {
	__u64 common;
	int nr;
	int pad;
	long ret;
};

/*
 * Attached by user space to each syscalls:sys_enter_<name> of interest (see attach_syscalls()). A
 * record holds only its syscall's arguments and the kernel refuses a program that loads past it
 * (perf_event_set_bpf_prog(): -EACCES), so pwrite64's offset, its fourth, is copied with
 * bpf_probe_read_kernel() rather than loaded: one program fits every record (two copies of the
 * handler cost ~6 ms more of verification at start-up).
 */
SEC("tracepoint")
int sys_enter_tp(struct syscall_enter_rec *ctx)
{
	__u64 arg3 = 0;

	FLOOR_RETURN();
	if (ctx->nr == NR_pwrite64 || ctx->nr == NR_pwritev || ctx->nr == NR_pwritev2)
		bpf_probe_read_kernel(&arg3, sizeof(arg3), (void *)ctx + offsetof(struct syscall_enter_rec, args[3]));
	return on_sys_enter(ctx->nr, ctx->args[0], arg3);
}

static __always_inline void emit_sync(struct tstate *st, __u32 tid, __u32 tgid, long ret, __u64 start,
				      __u64 now)
{
	struct aof_sync_event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST, 1);
		return;
	}
	e->type = EV_SYNC;
	e->tid = tid;
	e->pid = tgid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->role = role_of(tid, tgid, e->comm);
	e->kind = st->sys_nr == NR_fsync ? SYNC_FSYNC : SYNC_FDATASYNC;
	e->in_flush = st->span_start[SPAN_FLUSH] != 0;
	e->commit = st->commit;
	e->start_ns = start;
	e->dur_ns = now - start;
	e->ret = ret;
	e->children = nr_children;
	e->fd = st->sys_fd;
	for (int c = 0; c < COMP_MAX; c++)
		e->comp[c] = st->comp[SPAN_SYNC][c];
	bpf_ringbuf_submit(e, rb_flags());
}

/* A syscall returns `ret`; `sys_nr` is its number when the tracepoint tells it, else -1. */
static __always_inline int on_sys_exit(long sys_nr, long ret)
{
	__u64 id = bpf_get_current_pid_tgid(), now, start;
	__u32 tid = (__u32)id, tgid = id >> 32;
	struct tstate *st;
	int who = tracked(tgid);
	long nr;

	if (!who || (who == 1 && sys_nr >= 0 && is_write(sys_nr) && !flush_open))
		return 0;	/* a write of the target outside flushes: on_sys_enter kept no state */
	st = bpf_map_lookup_elem(&threads, &tid);
	if (!st || st->sys_nr < 0)
		return 0;
	nr = st->sys_nr;
	st->sys_nr = -1;
	now = bpf_ktime_get_ns();

	if (is_fork(nr)) {
		if (ret > 0) {
			count(CNT_FORKS, 1);
			count(CNT_FORK_NS, now - st->sys_start);
		}
		return 0;
	}
	if (nr == NR_io_uring_enter) {
		/* Completions are reaped, at the latest, when the submitter returns from here. */
		if (st->reap_n) {
			count(CNT_REAP_N, st->reap_n);
			count(CNT_REAP_NS, st->reap_n * now - st->reap_sum);
			st->reap_n = 0;
			st->reap_sum = 0;
		}
		if (st->uring_in_flush && st->span_start[SPAN_FLUSH]) {
			st->urings++;
			st->uring_ns += now - st->sys_start;
		}
		return 0;
	}
	if (is_write(nr) && who == 2) {
		if (ret > 0)
			count(CNT_CHILD_WRITE_BYTES, ret);
		return 0;
	}
	if (is_write(nr)) {
		start = st->span_start[SPAN_WRITE];
		if (!start)
			return 0;
		span_close(st, SPAN_WRITE, now);
		st->writes++;
		st->write_ns += now - start;
		if (ret < 0) {
			st->write_errors++;
			sync_failed(st->inode, ret);
		} else {
			st->write_bytes += ret;
			aof_written(ret, now);
			if (st->w_off < st->w_isize) {
				__u64 over = st->w_isize - st->w_off < (__u64)ret ? st->w_isize - st->w_off : ret;

				count(CNT_OVERWRITE_BYTES, over);
				violation(VIO_OVERWRITE, ino_of(st->inode), st->w_off, st->w_isize, over);
			}
		}
		for (int c = 0; c < COMP_MAX; c++)
			st->write_tot[c] += st->comp[SPAN_WRITE][c];
		return 0;
	}
	/* fdatasync / fsync */
	start = st->span_start[SPAN_SYNC];
	if (!start)
		return 0;
	span_close(st, SPAN_SYNC, now);
	if (st->sync_aof) {
		if (ret == 0)
			aof_covered(st->sync_snap);
		else
			sync_failed(aof_inode, ret);
	}
	if (st->span_start[SPAN_FLUSH]) {
		st->syncs++;
		st->sync_ns += now - start;
		st->commits += st->commit;
		for (int c = 0; c < COMP_MAX; c++)
			st->sync_tot[c] += st->comp[SPAN_SYNC][c];
	}
	emit_sync(st, tid, tgid, ret, start, now);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	return on_sys_exit(-1, ret);
}

SEC("tracepoint")
int sys_exit_tp(struct syscall_exit_rec *ctx)
{
	FLOOR_RETURN();
	return on_sys_exit(ctx->nr, ctx->ret);
}

/* ---- io_uring requests and the io-wq workers that run them ---------------------------------- */

struct ureq {
	__u64 submit_ns;
	__u64 punt_ns;
	__u64 start_ns;
	__u64 inode;
	__u32 submitter;
	__u32 worker;
	__u8 opcode;
	__u8 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);		/* struct io_kiocb * */
	__type(value, struct ureq);
} ureqs SEC(".maps");

/* On-CPU time of the target's io-wq workers, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} iowq_oncpu SEC(".maps");

/*
 * A worker begins a request when it is free to: not before the punt, nor before it was last switched
 * in or finished its previous request. io-wq has no tracepoint for it, so it is read from the
 * worker's io_worker->cur_work at its next event and dated back to that bound.
 */
static __always_inline void worker_start(struct tstate *st, struct ureq *u, __u64 req, __u32 tid)
{
	__u64 start = u->punt_ns ? u->punt_ns : u->submit_ns;

	if (st->last_in > start)
		start = st->last_in;
	if (st->last_done > start)
		start = st->last_done;
	u->worker = tid;
	u->start_ns = start;
	u->flags |= UF_WORKER;
	st->cur_req = req;
	if (!any_span(st)) {
		st->last_ts = start;
		st->run = RUN_ONCPU;
	}
	st->span_start[SPAN_IOWQ] = start;
	st->open |= 1 << SPAN_IOWQ;
	for (int c = 0; c < COMP_MAX; c++)
		st->comp[SPAN_IOWQ][c] = 0;
}

static __always_inline bool is_target_worker(struct task_struct *t)
{
	return t->tgid == targ_tgid && t->flags & PF_IO_WORKER;
}

/* The request an io-wq worker is running now, if it is one of ours and not yet seen started. */
static __always_inline void worker_detect(struct tstate *st, struct task_struct *t)
{
	struct io_worker *w = (struct io_worker *)BPF_CORE_READ(t, worker_private);
	struct io_wq_work *work = BPF_CORE_READ(w, cur_work);
	struct ureq *u;
	__u64 req;

	if (!work)
		return;
	req = (__u64)work - bpf_core_field_offset(struct io_kiocb, work);
	if (req == st->cur_req)
		return;
	u = bpf_map_lookup_elem(&ureqs, &req);
	if (u && !u->worker)
		worker_start(st, u, req, t->pid);
}

/* ---- the scheduler: on-CPU, run queue, and why each sleep happened -------------------------- */

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

struct classify_ctx {
	struct frames *fr;
	__u32 best;
};

static long classify_frame(__u64 i, struct classify_ctx *cx)
{
	/* Mask in asm: clang would drop a C bound it can prove, and the verifier needs to see one. */
	asm volatile("%[i] &= %[mask]" : [i] "+r"(i) : [mask] "i"(MAX_FRAMES - 1));
	cx->best = classify_step(NULL, cx->fr->ips[i], cx->best);
	return 0;
}

/* bpf_loop (5.17+) keeps the verifier from walking frames x search steps as one unrolled tree. */
static __always_inline __u8 classify_current(void *ctx)
{
	struct classify_ctx cx = { .best = CLASSIFY_INIT };
	__u32 zero = 0;
	long n;

	cx.fr = bpf_map_lookup_elem(&scratch, &zero);
	if (!cx.fr)
		return COMP_OTHER_OFFCPU;
	n = bpf_get_stack(ctx, cx.fr->ips, sizeof(cx.fr->ips), 0);
	if (n <= 0)
		return COMP_OTHER_OFFCPU;
	bpf_loop(n / sizeof(__u64), classify_frame, &cx, 0);
	return CLASSIFY_COMP(cx.best);
}

static __always_inline void sleep_reason(void *ctx, struct tstate *st, struct task_struct *prev)
{
	__u32 h = st->hint & (HINT_SLOTS - 1), check = HINT_NONE;
	__u8 *c;

	st->hint = HINT_NONE;
	if (h > HINT_NONE && !st->lock_comp &&
	    BPF_CORE_READ_BITFIELD(prev, in_iowait) == (hint_comp(h) != COMP_JOURNAL)) {
		if (st->hint_n[h]++ % HINT_CHECK) {
			st->off_comp = hint_comp(h);
			st->off_kstack = st->hint_kstack[h];
			count(CNT_SLEEPS_HINTED, 1);
			return;
		}
		check = h;
	}
	count(CNT_SLEEPS_UNWOUND, 1);
	st->off_kstack = bpf_get_stackid(ctx, &stacks, 0);
	if (st->lock_comp) {
		st->off_comp = st->lock_comp;
		return;
	}
	c = st->off_kstack >= 0 ? bpf_map_lookup_elem(&stack_comp, &st->off_kstack) : NULL;
	st->off_comp = c ? *c : classify_current(ctx);
	if (!c && st->off_kstack >= 0)
		bpf_map_update_elem(&stack_comp, &st->off_kstack, &st->off_comp, BPF_NOEXIST);
	if (check > HINT_NONE) {
		count(CNT_HINT_CHECKS, 1);
		if (st->off_comp == hint_comp(check)) {
			st->hint_kstack[check] = st->off_kstack;
		} else {
			count(CNT_HINT_MISMATCHES, 1);
			st->hint_n[check] = 0;
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

	if (prev->flags & PF_KTHREAD && prev_pid && (preempt || prev_state == 0)) {
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
		if (ns && st->last_in)
			*ns += now - st->last_in;
	}
	if (tracked(prev->tgid) && (st = bpf_map_lookup_elem(&threads, &prev_pid)) && any_span(st)) {
		if (!now)
			now = bpf_ktime_get_ns();
		charge(st, now);
		if (preempt || prev_state == 0 /* TASK_RUNNING */) {
			st->run = RUN_RUNQ;
		} else {
			st->run = RUN_OFFCPU;
			sleep_reason(ctx, st, prev);
			st->off_start = now;
			st->wake_ts = 0;
			st->waker_pid = 0;
			st->waker_kstack = -1;
			st->waker_comm[0] = 0;
			for (int c = 0; c < COMP_MAX; c++)
				st->pend[c] = 0;
		}
	}
	if (is_target_worker(next) && (st = tstate_get(next_pid))) {
		if (!now)
			now = bpf_ktime_get_ns();
		st->last_in = now;
	}
	if (tracked(next->tgid) && (st = bpf_map_lookup_elem(&threads, &next_pid)) && any_span(st)) {
		if (!now)
			now = bpf_ktime_get_ns();
		charge(st, now);
		if (st->run == RUN_OFFCPU || st->wake_ts) {
			/* The sleep ends at the wake-up, or here if the wake-up went unseen. */
			struct aof_offkey key = {
				.kstack = st->off_kstack,
				.waker_kstack = st->waker_kstack,
				.comp = st->off_comp,
				.role = role_of(next_pid, next->tgid, next->comm),
				.span = innermost_span(st),
				.waker_pid = st->waker_pid,
			};
			__u64 slept = (st->wake_ts ? st->wake_ts : now) - st->off_start, *v;

			__builtin_memcpy(key.waker_comm, st->waker_comm, sizeof(key.waker_comm));
			v = bpf_map_lookup_elem(&offstacks, &key);
			if (v)
				__sync_fetch_and_add(v, slept);
			else
				bpf_map_update_elem(&offstacks, &key, &slept, BPF_NOEXIST);
			st->wake_ts = 0;
		}
		st->run = RUN_ONCPU;
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
			if (st && st->span_start[SPAN_SYNC]) {
				st->commit = 1;
				st->hint = folded ? HINT_NONE : HINT_JBD2_COMMIT;
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
		if (!st || !any_span(st) || st->run != RUN_OFFCPU)
			return 0;
		now = bpf_ktime_get_ns();
		{
			struct chain *cc = bpf_map_lookup_elem(&completed_chain, &(__u32){ 0 });
			__u32 sp = innermost_span(st);
			__u64 from = sp < SPAN_MAX ? st->span_start[sp] : now;

			if (kwaker) {
				struct kthread_rq *wk = krq(waker, false);

				rq_ns = waker_rq_overlap(waker, st->last_ts, now);
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
		st->run = RUN_RUNQ;
		st->wake_ts = now;
		id = bpf_get_current_pid_tgid();
		st->waker_pid = id >> 32;
		bpf_get_current_comm(st->waker_comm, sizeof(st->waker_comm));
		st->waker_kstack = folded ? bpf_get_stackid(ctx, &stacks, 0) : -1;
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
	st->lock_comp = (__u64)lock == aof_rwsem || ((__u64)lock == aof_ilock && aof_ilock) ?
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
	if (!st || !st->lock_comp)
		return 0;
	if (any_span(st))
		charge(st, bpf_ktime_get_ns());
	st->lock_comp = 0;
	return 0;
}

/* ---- the file systems: forced journal/log commits ------------------------------------------ */

SEC("tp_btf/xfs_log_force")
int BPF_PROG(xfs_log_force, struct xfs_mount *mp, __s64 lsn, unsigned long caller_ip)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if (!tracked(id >> 32))
		return 0;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (st && any_span(st) && !folded)
		st->hint = HINT_XFS_LOG_FORCE;
	/* One force per sync: xfs_file_fsync() may trace more than one on its way. */
	if (st && st->span_start[SPAN_SYNC] && !st->commit) {
		st->commit = 1;
		count(CNT_JOURNAL_COMMITS, 1);
	}
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
		st->hint = h;
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

/*
 * jbd2 commit phases and XFS iclog writes on the AOF's device: what a journal/log wait was made
 * of. Timestamps between the phase tracepoints, keyed by transaction id / iclog.
 */
struct jbd2_phases {
	__u64 ts[4];		/* start_commit, commit_locking, commit_flushing, commit_logging */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);		/* t_tid */
	__type(value, struct jbd2_phases);
} jbd2_commits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);		/* struct xlog_in_core * */
	__type(value, __u64);		/* xlog_iclog_sync time */
} iclog_writes SEC(".maps");

static __always_inline bool aof_journal(journal_t *journal)
{
	if (!aof_dev)
		return false;
	if ((__u64)journal == aof_journal_ptr)
		return true;
	if (BPF_CORE_READ(journal, j_fs_dev, bd_dev) != aof_dev)
		return false;
	aof_journal_ptr = (__u64)journal;
	return true;
}

static __always_inline void jbd2_phase(journal_t *journal, transaction_t *commit, int phase)
{
	struct jbd2_phases *ph, zero = {};
	__u32 tid;

	if (!aof_journal(journal))
		return;
	tid = BPF_CORE_READ(commit, t_tid);
	if (phase == 0)
		bpf_map_update_elem(&jbd2_commits, &tid, &zero, BPF_ANY);
	ph = bpf_map_lookup_elem(&jbd2_commits, &tid);
	if (ph && phase >= 0 && phase < 4)
		ph->ts[phase] = bpf_ktime_get_ns();
}

SEC("tp_btf/jbd2_start_commit")
int BPF_PROG(jbd2_start_commit, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, 0);
	return 0;
}

SEC("tp_btf/jbd2_commit_locking")
int BPF_PROG(jbd2_commit_locking, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, 1);
	return 0;
}

SEC("tp_btf/jbd2_commit_flushing")
int BPF_PROG(jbd2_commit_flushing, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, 2);
	return 0;
}

SEC("tp_btf/jbd2_commit_logging")
int BPF_PROG(jbd2_commit_logging, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, 3);
	return 0;
}

SEC("tp_btf/jbd2_end_commit")
int BPF_PROG(jbd2_end_commit, journal_t *journal, transaction_t *commit)
{
	struct jbd2_phases *ph;
	__u64 now;
	__u32 tid;

	if (!aof_journal(journal))
		return 0;
	count(CNT_JOURNAL_COMMITS, 1);
	tid = BPF_CORE_READ(commit, t_tid);
	ph = bpf_map_lookup_elem(&jbd2_commits, &tid);
	if (!ph)
		return 0;
	now = bpf_ktime_get_ns();
	/* all four phases seen, in order: otherwise the commit began before we attached */
	if (ph->ts[0] && ph->ts[1] >= ph->ts[0] && ph->ts[2] >= ph->ts[1] && ph->ts[3] >= ph->ts[2]) {
		count(CNT_JBD2_COMMITS, 1);
		count(CNT_JBD2_START_NS, ph->ts[1] - ph->ts[0]);
		count(CNT_JBD2_LOCKED_NS, ph->ts[2] - ph->ts[1]);
		count(CNT_JBD2_FLUSHING_NS, ph->ts[3] - ph->ts[2]);
		count(CNT_JBD2_LOGGING_NS, now - ph->ts[3]);
	}
	bpf_map_delete_elem(&jbd2_commits, &tid);
	return 0;
}

static __always_inline bool aof_iclog(struct xlog_in_core *iclog)
{
	__u64 log;

	if (!aof_dev)
		return false;
	log = (__u64)BPF_CORE_READ(iclog, ic_log);
	if (log == aof_xlog)
		return true;
	if (BPF_CORE_READ((struct xlog *)log, l_mp, m_super, s_dev) != aof_dev)
		return false;
	aof_xlog = log;
	return true;
}

SEC("tp_btf/xlog_iclog_sync")
int BPF_PROG(xlog_iclog_sync, struct xlog_in_core *iclog, unsigned long caller_ip)
{
	__u64 key = (__u64)iclog, now;

	if (!aof_iclog(iclog))
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&iclog_writes, &key, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/xlog_iclog_sync_done")
int BPF_PROG(xlog_iclog_sync_done, struct xlog_in_core *iclog, unsigned long caller_ip)
{
	__u64 key = (__u64)iclog, *start;

	start = bpf_map_lookup_elem(&iclog_writes, &key);
	if (!start)
		return 0;
	count(CNT_XLOG_WRITES, 1);
	count(CNT_XLOG_WRITE_NS, bpf_ktime_get_ns() - *start);
	bpf_map_delete_elem(&iclog_writes, &key);
	return 0;
}

/* ---- the block layer on the AOF device ------------------------------------------------------ */

/* Is the request for the AOF's device? One read when its queue was seen before, four the first time. */
static __always_inline bool rq_on_aof_dev(struct request *rq)
{
	__u64 q = (__u64)BPF_CORE_READ(rq, q);
	struct gendisk *disk;

	if (q == aof_queue)
		return true;
	if (q == other_queue)
		return false;
	disk = BPF_CORE_READ((struct request_queue *)q, disk);
	if (disk && ((BPF_CORE_READ(disk, major) << 20) | BPF_CORE_READ(disk, first_minor)) == aof_dev) {
		aof_queue = q;
		return true;
	}
	other_queue = q;
	return false;
}

/* The chain of the kernel thread issuing a request, if it has one worth carrying. */
static __always_inline bool issuer_chain(struct rqinfo *ri)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct kthread_rq *kr;

	if (!(cur->flags & PF_KTHREAD))
		return false;
	kr = krq(cur, false);
	if (!kr)
		return false;
	ri->inherited = kr->inherited + kr->rq_since_wake;
	ri->chain_start = kr->chain_start;
	return ri->inherited != 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(block_rq_issue, struct request *rq)
{
	struct rqinfo ri = {}, *slot;
	struct task_struct *cur;
	const char *comm;
	__u32 flags, op;
	int who;

	if (!aof_dev || rq->tag < 0)
		return 0;
	if (!rq_on_aof_dev(rq)) {
		/*
		 * Another device (a loop device's backing disk): keep only a delayed chain, whose
		 * completion may be what finishes an AOF request.
		 */
		if (!issuer_chain(&ri) || !(slot = rq_slot(rq, false)))
			return 0;
		ri.rq = (__u64)rq;
		ri.issuer = ISS_MAX;
		ri.issue_ns = bpf_ktime_get_ns();
		*slot = ri;
		return 0;
	}
	cur = bpf_get_current_task_btf();
	who = tracked(cur->tgid);
	comm = cur->comm;
	if (who == 1)
		ri.issuer = ISS_TARGET;
	else if (who == 2)
		ri.issuer = ISS_CHILD;
	else if (prefix(comm, "jbd2/", 5))
		ri.issuer = ISS_JBD2;
	else if (prefix(comm, "kworker/", 8))
		ri.issuer = ISS_KWORKER;
	else
		ri.issuer = ISS_OTHER;
	flags = rq->cmd_flags;
	op = flags & 0xff;	/* REQ_OP_MASK, unchanged since 4.10 */
	if (op == 0 /* REQ_OP_READ */)
		ri.kind = RQ_READ;
	else if (op == 2 /* REQ_OP_FLUSH */)
		ri.kind = RQ_FLUSH;
	else if (op == 1 /* REQ_OP_WRITE */)
		ri.kind = flags & (1u << bpf_core_enum_value(enum req_flag_bits, __REQ_FUA)) ?
			  RQ_WRITE_FUA : RQ_WRITE;
	else
		ri.kind = RQ_OTHER;
	issuer_chain(&ri);
	ri.issue_ns = bpf_ktime_get_ns();
	ri.tid = cur->pid;
	ri.sector = rq->__sector;
	ri.rq = (__u64)rq;
	slot = rq_slot(rq, true);
	if (slot)
		*slot = ri;
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(block_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	__u64 now, lat;
	struct aof_blkstat *bs;
	struct rqinfo *ri;
	struct chain *cc;
	__u32 idx;

	if (!aof_dev || rq->tag < 0)
		return 0;
	ri = rq_slot(rq, (__u64)BPF_CORE_READ(rq, q) == aof_queue);
	if (!ri || ri->rq != (__u64)rq)
		return 0;
	now = bpf_ktime_get_ns();
	lat = now - ri->issue_ns;
	cc = bpf_map_lookup_elem(&completed_chain, &(__u32){ 0 });
	/*
	 * A loop device completes its request from inside the completion of the backing disk's: keep
	 * the longer of the two chains, the backing request's includes the loop worker's wait.
	 */
	if (cc && ri->chain_start) {
		struct rqinfo done = { .inherited = ri->inherited, .chain_start = ri->chain_start };
		struct rqinfo here = {};

		/*
		 * Completed by a worker (iomap_dio_complete_work for a loop device's backing file): the
		 * worker's chain holds the backing request's and its own wait for a CPU.
		 */
		if (issuer_chain(&here) && here.inherited > done.inherited)
			done = here;
		if (!(cc->ts && now - cc->ts < CHAIN_HANDOFF_NS && cc->inherited >= done.inherited)) {
			cc->inherited = done.inherited;
			cc->chain_start = done.chain_start;
			cc->ts = now;
		}
	}
	idx = ri->issuer * RQ_MAX + ri->kind;
	if (timeline && idx < ISS_MAX * RQ_MAX) {
		struct aof_block_event *be = bpf_ringbuf_reserve(&events, sizeof(*be), 0);

		if (be) {
			be->type = EV_BLOCK;
			be->issuer_tid = ri->tid;
			be->issuer = ri->issuer;
			be->kind = ri->kind;
			be->pad = 0;
			be->bytes = nr_bytes;
			be->sector = ri->sector;
			be->issue_ns = ri->issue_ns;
			be->complete_ns = now;
			bpf_ringbuf_submit(be, rb_flags());
		} else {
			count(CNT_LOST, 1);
		}
	}
	ri->rq = 0;
	if (idx >= ISS_MAX * RQ_MAX)
		return 0;
	bs = bpf_map_lookup_elem(&blkstats, &idx);
	if (!bs)
		return 0;
	__sync_fetch_and_add(&bs->count, 1);
	__sync_fetch_and_add(&bs->bytes, nr_bytes);
	__sync_fetch_and_add(&bs->lat_ns, lat);
	if (lat > bs->max_ns)
		bs->max_ns = lat;
	return 0;
}

static __always_inline bool is_write_op(__u8 op)
{
	return op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITE) ||
	       op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITEV) ||
	       op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITE_FIXED);
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(io_uring_submit_req, struct io_kiocb *req)
{
	__u64 id = bpf_get_current_pid_tgid(), key = (__u64)req;
	struct ureq u = {};

	if ((__u32)(id >> 32) != targ_tgid)
		return 0;
	u.submit_ns = bpf_ktime_get_ns();
	u.submitter = (__u32)id;
	u.opcode = req->opcode;
	/* With SQPOLL the submitter is the SQ thread, while the flush waits: any submission counts. */
	if (flush_open)
		u.flags |= UF_INFLUSH;
	bpf_map_update_elem(&ureqs, &key, &u, BPF_ANY);
	return 0;
}

SEC("tp_btf/io_uring_queue_async_work")
int BPF_PROG(io_uring_queue_async_work, struct io_kiocb *req, int rw)
{
	__u64 key = (__u64)req;
	struct ureq *u = bpf_map_lookup_elem(&ureqs, &key);

	if (!u)
		return 0;
	u->punt_ns = bpf_ktime_get_ns();
	u->flags |= UF_PUNTED;
	if (BPF_CORE_READ(req, work.flags.counter) & 2 /* IO_WQ_WORK_HASHED */)
		u->flags |= UF_HASHED;
	return 0;
}

SEC("tp_btf/io_uring_req_failed")
int BPF_PROG(io_uring_req_failed, const struct io_uring_sqe *sqe, struct io_kiocb *req, int error)
{
	__u64 key = (__u64)req;
	struct ureq *u = bpf_map_lookup_elem(&ureqs, &key);

	if (u)
		u->flags |= UF_FAILED;
	return 0;
}

SEC("tp_btf/io_uring_short_write")
int BPF_PROG(io_uring_short_write, void *ctx_, __u64 fpos, __u64 wanted, __u64 got)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	struct tstate *st;
	struct ureq *u;

	if (cur->tgid != targ_tgid)
		return 0;
	count(CNT_URING_SHORT, 1);
	st = bpf_map_lookup_elem(&threads, &(__u32){ cur->pid });
	if (st && st->cur_req && (u = bpf_map_lookup_elem(&ureqs, &st->cur_req)))
		u->flags |= UF_SHORT;
	return 0;
}

SEC("tp_btf/io_uring_link")
int BPF_PROG(io_uring_link, struct io_kiocb *req, struct io_kiocb *target_req)
{
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == targ_tgid)
		count(CNT_URING_LINKS, 1);
	return 0;
}

SEC("tp_btf/io_uring_fail_link")
int BPF_PROG(io_uring_fail_link, struct io_kiocb *req, struct io_kiocb *link)
{
	if ((__u32)(bpf_get_current_pid_tgid() >> 32) == targ_tgid)
		count(CNT_URING_FAIL_LINKS, 1);
	return 0;
}

/* An io_uring request on the AOF completed: bytes written, a sync covering them, or an error. */
static __always_inline void uring_durability(struct ureq *u, struct inode *inode, __s32 res, __u64 now)
{
	struct tstate *sub = bpf_map_lookup_elem(&threads, &(__u32){ flush_tid });	/* the flushing thread */
	bool in_flush = u->flags & UF_INFLUSH && flush_open && sub && sub->span_start[SPAN_FLUSH];

	if (is_write_op(u->opcode)) {
		if (res < 0 || u->flags & UF_SHORT)
			sync_failed((__u64)inode, res < 0 ? res : 0);
		if (res <= 0)
			return;
		aof_written(res, now);
		if (!in_flush && u->flags & UF_INFLUSH)
			count(CNT_URING_LATE_BYTES, res);
		if (in_flush) {
			sub->uring_bytes += res;
			sub->uring_writes++;
			if (!sub->inode) {
				sub->inode = (__u64)inode;
				sub->ino = BPF_CORE_READ(inode, i_ino);
			}
		}
	} else if (u->opcode == bpf_core_enum_value(enum io_uring_op, IORING_OP_FSYNC)) {
		__u64 snap = dur_sync_snap != ~0ULL ? dur_sync_snap : dur_wseq;

		dur_sync_snap = ~0ULL;
		if (res < 0) {
			sync_failed((__u64)inode, res);
			return;
		}
		aof_covered(snap);
		if (in_flush)
			sub->uring_syncs++;
	}
}

/* Since 5.18 (d5ec1dfaf59a) the tracepoint passes the CQE; `req` is the request completed. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(io_uring_complete, struct io_ring_ctx *ctx_, void *req, struct io_uring_cqe *cqe)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	__u64 key = (__u64)req, now;
	struct aof_ureq_event *e;
	struct tstate *st = NULL, *sub;
	struct inode *inode;
	struct ureq *u;

	u = bpf_map_lookup_elem(&ureqs, &key);
	if (!u)
		return 0;
	now = bpf_ktime_get_ns();
	/*
	 * The file is assigned at issue, after io_uring_submit_req (since 5.19): read it here. A write
	 * submitted inside a flush is an AOF write, which names the AOF file for io_uring writers.
	 */
	inode = BPF_CORE_READ((struct io_kiocb *)req, file, f_inode);
	u->inode = (__u64)inode;
	if (inode && u->flags & UF_INFLUSH && is_write_op(u->opcode))
		note_aof_inode((__u64)inode);
	if (inode && (__u64)inode == aof_inode)
		u->flags |= UF_AOF;
	if (is_target_worker(cur) && (st = tstate_get(cur->pid))) {
		if (!u->worker)
			worker_start(st, u, key, cur->pid);
		if (st->span_start[SPAN_IOWQ])
			span_close(st, SPAN_IOWQ, now);
		st->last_done = now;
		st->cur_req = 0;
	}
	if (u->flags & UF_AOF)
		uring_durability(u, inode, BPF_CORE_READ(cqe, res), now);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST, 1);
		bpf_map_delete_elem(&ureqs, &key);
		return 0;
	}
	e->type = EV_UREQ;
	e->submitter = u->submitter;
	e->worker = u->worker;
	e->opcode = u->opcode;
	e->res = BPF_CORE_READ(cqe, res);
	e->flags = u->flags | (e->res < 0 ? UF_FAILED : 0);
	e->pad = 0;
	e->cpu = bpf_get_smp_processor_id();
	e->inode = u->inode;
	e->submit_ns = u->submit_ns;
	e->punt_ns = u->punt_ns;
	e->start_ns = u->worker ? u->start_ns : u->submit_ns;
	e->complete_ns = now;
	for (int c = 0; c < COMP_MAX; c++)
		e->comp[c] = st && u->worker ? st->comp[SPAN_IOWQ][c] : 0;

	/* The submitter asleep waiting for it: what this request did is what it waited for. */
	sub = bpf_map_lookup_elem(&threads, &u->submitter);
	if (sub) {
		sub->reap_n++;
		sub->reap_sum += now;
	}
	if (sub && sub->run == RUN_OFFCPU && any_span(sub) && u->worker) {
		__u64 q = u->start_ns > u->punt_ns && u->punt_ns ? u->start_ns - u->punt_ns : 0;

		sub->pend[COMP_IOWQ_QUEUE] += q;
		for (int c = 0; c < COMP_MAX; c++)
			sub->pend[c] += e->comp[c];
	}
	bpf_ringbuf_submit(e, rb_flags());
	bpf_map_delete_elem(&ureqs, &key);
	return 0;
}

SEC("tp_btf/task_newtask")
int BPF_PROG(task_newtask, struct task_struct *task, __u64 clone_flags)
{
	__s64 alive;

	if (task->tgid != targ_tgid || !(task->flags & PF_IO_WORKER))
		return 0;
	count(CNT_IOWQ_CREATED, 1);
	alive = __sync_add_and_fetch(&iowq_alive, 1);
	if (alive > iowq_max_alive)
		iowq_max_alive = alive;
	return 0;
}

/* ---- processes: forked children and exits ------------------------------------------------- */

static __always_inline void emit_proc(__u32 type, __u32 pid, __u32 ppid, const char *comm)
{
	struct aof_proc_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(CNT_LOST, 1);
		return;
	}
	e->type = type;
	e->pid = pid;
	e->ppid = ppid;
	e->children = nr_children;
	e->ts_ns = bpf_ktime_get_ns();
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), comm);
	bpf_ringbuf_submit(e, rb_flags());
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 pid = child->pid;
	__u64 ts = bpf_ktime_get_ns();

	/* New processes only: a thread (CLONE_THREAD) shares the parent's tgid. */
	if (parent->tgid != targ_tgid || child->tgid != pid)
		return 0;
	if (bpf_map_update_elem(&children, &pid, &ts, BPF_NOEXIST))
		return 0;
	__sync_fetch_and_add(&nr_children, 1);
	emit_proc(EV_FORK, pid, targ_tgid, child->comm);
	return 0;
}

/* Since 6.15 the tracepoint also passes group_dead; the first argument is all we read. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p)
{
	__u32 pid = p->pid, tgid = p->tgid;
	int who = tracked(tgid);

	if (!who)
		return 0;
	bpf_map_delete_elem(&threads, &pid);
	if (p->flags & PF_IO_WORKER && tgid == targ_tgid) {
		count(CNT_IOWQ_EXITED, 1);
		__sync_fetch_and_add(&iowq_alive, -1);
	}
	if (pid != tgid)
		return 0;
	if (who == 2) {
		if (bpf_map_delete_elem(&children, &pid))
			return 0;
		__sync_fetch_and_add(&nr_children, -1);
	}
	emit_proc(EV_EXIT, pid, who == 2 ? targ_tgid : 0, p->comm);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

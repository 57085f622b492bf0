/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Types shared by aoftrace.bpf.c and tools/aoftrace.c: fixed-size, no kernel headers. */
#ifndef __AOFTRACE_H
#define __AOFTRACE_H

#define TASK_COMM_LEN	16
#define MAX_KRANGES	256	/* kernel function ranges the off-CPU classifier knows */
#define MAX_FRAMES	32	/* kernel frames the classifier walks; a power of two (index masks) */

/* Who made a syscall, decided in the kernel at the event. */
enum aof_role {
	ROLE_MAIN,	/* the server's main thread (tid == tgid): the event loop */
	ROLE_BIO,	/* background threads named bio_* (bio_aof, bio_aof_fsync, ...) */
	ROLE_IOWQ,	/* io_uring io-wq workers, iou-wrk-<pid> */
	ROLE_SQPOLL,	/* io_uring SQPOLL thread, iou-sqp-<pid> */
	ROLE_CHILD,	/* a forked child (AOF rewrite, RDB save) */
	ROLE_OTHER,	/* any other thread of the server */
	ROLE_MAX,
};

/*
 * The named parts a flush, a write or an fdatasync is split into. Every nanosecond of an operation
 * goes to exactly one: on-CPU, waiting on a run queue, or asleep for a reason read from the lock
 * tracepoints or, failing that, from the kernel stack at switch-out.
 */
enum aof_comp {
	COMP_ONCPU,		/* running */
	COMP_RUNQ,		/* runnable, waiting for a CPU (woken or preempted) */
	COMP_BLOCK,		/* waiting for block I/O: writeback, device cache flush */
	COMP_JOURNAL,		/* waiting for a jbd2 commit / XFS log force */
	COMP_INODE_LOCK,	/* contending for the AOF inode's i_rwsem */
	COMP_OTHER_LOCK,	/* contending for any other sleeping lock or spinning on it */
	COMP_THROTTLE,		/* dirty-page throttling (balance_dirty_pages) */
	COMP_RECLAIM,		/* page allocation / memory reclaim */
	COMP_IOWQ_QUEUE,	/* io_uring work queued for an io-wq worker (io_uring issue) */
	COMP_OTHER_OFFCPU,	/* asleep for any other reason */
	COMP_MAX,
};

/* Spans followed per thread; a write and a sync nest inside a flush. */
enum aof_span {
	SPAN_FLUSH,
	SPAN_WRITE,
	SPAN_SYNC,
	SPAN_IOWQ,	/* an io-wq worker running one io_uring request */
	SPAN_MAX,
};

/*
 * Sleep hints: tracepoints the kernel fires right before a thread sleeps for a known reason. A traced
 * sleep they announce is named without a stack unwind (docs/attribution.md, "Hints").
 */
enum aof_hint {
	HINT_NONE,
	HINT_WRITEBACK,		/* folio_wait_writeback: block I/O */
	HINT_XFS_LOG_FORCE,	/* xfs_log_force: journal (waiting for the CIL push) */
	HINT_XFS_CIL_WAIT,	/* xfs_log_cil_wait: journal */
	HINT_XLOG_ICLOG_WAIT,	/* xlog_iclog_wait_on: journal */
	HINT_JBD2_COMMIT,	/* the thread woke jbd2 to commit for it: journal (jbd2_log_wait_commit) */
	HINT_DIRTY_THROTTLE,	/* balance_dirty_pages: throttling */
	HINT_MAX,
};
#define HINT_SLOTS 8	/* a power of two above HINT_MAX: index masks */

enum aof_sync_kind {
	SYNC_FDATASYNC,
	SYNC_FSYNC,
	SYNC_MAX,
};

enum aof_event_type {
	EV_FLUSH = 1,	/* one flushAppendOnlyFile() call that wrote or synced */
	EV_SYNC,	/* one fdatasync()/fsync() syscall of the target or its children */
	EV_FORK,	/* the target forked a child process */
	EV_EXIT,	/* a tracked child, or the target itself, exited */
	EV_UREQ,	/* one io_uring request of the target completed */
	EV_BLOCK,	/* one block request on the AOF device completed (timeline mode only) */
	EV_VIOLATION,	/* a durability invariant broke (the first few of each kind) */
};

/* The invariants appendfsync always promises, checked in the kernel (docs/durability.md). */
enum aof_violation {
	VIO_OVERWRITE,		/* a write to the AOF started below its end */
	VIO_GROWTH,		/* a flush grew the file by other than the bytes it wrote */
	VIO_REPLY_EARLY,	/* a reply left while AOF bytes written before it were not synced */
	VIO_SYNC_ERROR,		/* a sync or write of the AOF failed or wrote short */
	VIO_UNLINKED,		/* a write to an AOF file that has no name any more */
	VIO_MAX,
};

#define VIO_EXAMPLES	8	/* records sent per kind; the counters count them all */

struct aof_violation_event {
	__u32 type;		/* EV_VIOLATION */
	__u32 kind;		/* enum aof_violation */
	__u32 tid;
	__u32 pad;
	__u64 ts_ns;
	__u64 ino;
	__u64 off;		/* OVERWRITE: where the write started; REPLY_EARLY: unsynced bytes */
	__u64 isize;		/* OVERWRITE, GROWTH: i_size then; REPLY_EARLY: unsynced for (ns) */
	__s64 bytes;		/* OVERWRITE: bytes overwritten; GROWTH: growth - written; SYNC_ERROR: the error */
	char comm[TASK_COMM_LEN];
};

/* What happened to an io_uring request. */
enum aof_ureq_flags {
	UF_PUNTED = 1,	/* queued to io-wq (io_uring_queue_async_work) */
	UF_HASHED = 2,	/* ... as hashed work: serialized with other work on the same inode */
	UF_AOF = 4,	/* on the AOF file */
	UF_FAILED = 8,	/* res < 0, or io_uring_req_failed */
	UF_SHORT = 16,	/* io_uring_short_write seen while a worker ran it */
	UF_WORKER = 32,	/* an io-wq worker was seen running it */
	UF_INFLUSH = 64,	/* submitted inside flushAppendOnlyFile() */
};

struct aof_ureq_event {
	__u32 type;		/* EV_UREQ */
	__u32 submitter;	/* tid that submitted it */
	__u32 worker;		/* io-wq worker tid that ran it, 0 if inline */
	__u8 opcode;		/* enum io_uring_op */
	__u8 flags;		/* enum aof_ureq_flags */
	__u16 pad;
	__s32 res;
	__u32 cpu;		/* CPU it completed on */
	__u64 inode;		/* struct inode * of its file, 0 if none */
	__u64 submit_ns;
	__u64 punt_ns;		/* 0 if never punted */
	__u64 start_ns;		/* when the worker began it (estimated: see docs/io_uring.md) */
	__u64 complete_ns;
	__u64 comp[COMP_MAX];	/* the worker's time on it, by component */
};

/* A kernel text range [start, end) whose presence on an off-CPU stack means component `comp`. */
struct aof_krange {
	__u64 start;
	__u64 end;
	__u32 comp;
	__u32 pad;
};

/* The classifier's table: one map value, looked up once per stack (bpf/classify.h). */
struct aof_kranges {
	struct aof_krange r[MAX_KRANGES];
};

struct aof_flush_event {
	__u32 type;		/* EV_FLUSH */
	__u32 tid;
	__u64 start_ns;		/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 dur_ns;
	__u64 write_ns;		/* time in write-family syscalls inside the flush */
	__u64 write_bytes;	/* bytes those syscalls returned */
	__u64 sync_ns;		/* time in fdatasync/fsync inside the flush */
	__u32 writes;		/* write-family syscalls inside the flush */
	__u32 write_errors;	/* ... that returned < 0 */
	__u32 syncs;		/* fdatasync/fsync inside the flush */
	__u32 children;		/* forked children alive at the flush's start or end (max) */
	__u64 first_off;	/* file offset the first write started at */
	__u64 isize_before;	/* AOF i_size at the first write */
	__u64 isize_after;	/* ... at the flush's end */
	__u64 ino;		/* AOF inode written */
	__u32 commits;		/* journal/log commits this flush's syncs forced */
	__u32 uring_enters;	/* io_uring_enter() calls inside the flush (submit and/or wait) */
	__u64 uring_ns;		/* time in them */
	__u64 uring_bytes;	/* bytes its io_uring writes to the AOF completed */
	__u32 uring_syncs;	/* its io_uring FSYNCs of the AOF that completed */
	__u32 uring_writes;	/* its io_uring writes to the AOF that completed */
	__u32 first_known;	/* first_off and isize_before were seen (a write(2), or the file system) */
	__u32 pad;
	__u64 comp[COMP_MAX];		/* the whole flush */
	__u64 write_comp[COMP_MAX];	/* its write calls */
	__u64 sync_comp[COMP_MAX];	/* its fdatasync/fsync calls */
};

/*
 * Which file a sync was on. The kernel tells the AOF (the inode the flushes write), a directory, or other,
 * and sends the file's name; user space names the others from it (tools/agg.c).
 */
enum aof_file {
	FILE_AOF,	/* the AOF's current file: the one the flushes write (Valkey/Redis 7+: the incr file) */
	FILE_REWRITE,	/* a rewrite's temp or base file, or any file a forked child syncs */
	FILE_MANIFEST,	/* the AOF manifest or its temp file (Valkey/Redis 7+) */
	FILE_DIR,	/* a directory: after a rename */
	FILE_OTHER,
	FILE_MAX,
};

#define SYNC_NAME_LEN	32

struct aof_sync_event {
	__u32 type;		/* EV_SYNC */
	__u32 tid;
	__u32 pid;		/* tgid: the target's, or a child's */
	__u8 role;		/* enum aof_role */
	__u8 kind;		/* enum aof_sync_kind */
	__u8 in_flush;		/* made inside flushAppendOnlyFile() */
	__u8 commit;		/* forced a journal/log commit */
	__u64 start_ns;
	__u64 dur_ns;
	__s64 ret;
	__u32 children;
	__s32 fd;
	char comm[TASK_COMM_LEN];
	__u64 comp[COMP_MAX];
	/* the work it did (issue 19): which file, whether it had a size change to commit, what it issued */
	__u64 ino;		/* the file's inode number, 0 if unknown */
	__u64 isize;		/* its i_size when the sync began */
	__u8 file;		/* enum aof_file: FILE_AOF, FILE_DIR or FILE_OTHER from the kernel */
	__u8 size_changed;	/* i_size differs from the last sync of the same file, or none was seen */
	__u16 flush_rqs;	/* FLUSH or FUA block requests it issued */
	__u32 block_rqs;	/* block requests its thread issued on the AOF's device while inside */
	__u64 block_bytes;
	char name[SYNC_NAME_LEN];	/* the file's name (its dentry), "" if unknown */
};

struct aof_proc_event {
	__u32 type;		/* EV_FORK or EV_EXIT */
	__u32 pid;		/* the child, or the target on its exit */
	__u32 ppid;
	__u32 children;		/* alive after this event */
	__u64 ts_ns;
	char comm[TASK_COMM_LEN];
};

/* Off-CPU time aggregated in the kernel by stack and waker, for the top list and --folded. */
struct aof_offkey {
	__s32 kstack;		/* stack id at switch-out, or < 0 */
	__s32 waker_kstack;	/* the waker's stack id at sched_waking, or < 0 */
	__u8 comp;
	__u8 role;
	__u8 span;		/* innermost span: SPAN_WRITE, SPAN_SYNC or SPAN_FLUSH */
	__u8 pad;
	__u32 waker_pid;
	char waker_comm[TASK_COMM_LEN];
};

/* Block requests on the AOF file's device, by who issued them and what they were. */
enum aof_issuer { ISS_TARGET, ISS_CHILD, ISS_JBD2, ISS_KWORKER, ISS_OTHER, ISS_MAX };
enum aof_rqkind { RQ_WRITE, RQ_WRITE_FUA, RQ_FLUSH, RQ_READ, RQ_OTHER, RQ_MAX };

struct aof_block_event {
	__u32 type;		/* EV_BLOCK */
	__u32 issuer_tid;
	__u8 issuer;		/* enum aof_issuer */
	__u8 kind;		/* enum aof_rqkind */
	__u16 pad;
	__u32 bytes;
	__u64 sector;
	__u64 issue_ns;
	__u64 complete_ns;
};

struct aof_blkstat {
	__u64 count;
	__u64 bytes;
	__u64 lat_ns;
	__u64 max_ns;
};

/* Counters kept in a per-CPU array and summed by user space. */
enum aof_counter {
	CNT_FLUSH_CALLS,	/* every flushAppendOnlyFile() return */
	CNT_FLUSH_EMPTY,	/* ... that neither wrote nor synced (idle event-loop turns) */
	CNT_FLUSH_EMPTY_NS,	/* time spent in those */
	CNT_LOST,		/* records the ring buffer had no room for */
	CNT_FORKS,		/* fork()/clone() of a new process by the target's main thread */
	CNT_FORK_NS,		/* time the main thread spent in them */
	CNT_CHILD_WRITE_BYTES,	/* bytes written by forked children */
	CNT_CHILD_SFR,		/* sync_file_range() calls by forked children */
	CNT_JOURNAL_COMMITS,	/* jbd2 commits on the AOF device, XFS log forces by the target */
	CNT_URING_SHORT,	/* io_uring_short_write events of the target */
	CNT_URING_LINKS,	/* io_uring_link: requests linked to another */
	CNT_URING_FAIL_LINKS,	/* io_uring_fail_link: links broken by a failure */
	CNT_IOWQ_CREATED,	/* io-wq workers the target created */
	CNT_IOWQ_EXITED,	/* ... and that exited */
	CNT_REAP_N,		/* io_uring completions reaped by a return from io_uring_enter() */
	CNT_REAP_NS,		/* their complete-to-reap delays */
	/* jbd2 commits on the AOF device, by phase (tracepoint to tracepoint) */
	CNT_JBD2_COMMITS,
	CNT_JBD2_START_NS,	/* start_commit -> commit_locking */
	CNT_JBD2_LOCKED_NS,	/* commit_locking -> commit_flushing: waiting for running handles */
	CNT_JBD2_FLUSHING_NS,	/* commit_flushing -> commit_logging: ordered data writeback */
	CNT_JBD2_LOGGING_NS,	/* commit_logging -> end_commit: journal blocks, commit block, cache flush */
	/* XFS iclog writes on the AOF device: xlog_iclog_sync -> xlog_iclog_sync_done */
	CNT_XLOG_WRITES,
	CNT_XLOG_WRITE_NS,
	/* durability: violations by kind (enum aof_violation order), then details */
	CNT_VIO_OVERWRITE,
	CNT_VIO_GROWTH,
	CNT_VIO_REPLY_EARLY,
	CNT_VIO_SYNC_ERROR,
	CNT_VIO_UNLINKED,
	CNT_OVERWRITE_BYTES,
	CNT_GROWTH_DIFF_BYTES,	/* |growth - bytes written| summed over flushes */
	CNT_SYNC_RETRIED,	/* after a sync error the next thing was another sync */
	CNT_SYNC_CARRIED_ON,	/* ... was a reply */
	/* why traced sleeps were named: by a stack unwind, or by a hint (some of them checked by an unwind) */
	CNT_SLEEPS_UNWOUND,
	CNT_SLEEPS_HINTED,
	CNT_HINT_CHECKS,
	CNT_HINT_MISMATCHES,	/* checks whose unwind named another component than the hint */
	CNT_URING_LATE_BYTES,	/* AOF bytes of io_uring writes submitted in a flush that completed after it */
	CNT_MAX,
};

#endif /* __AOFTRACE_H */

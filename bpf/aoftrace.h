/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Types shared by aoftrace.bpf.c and tools/aoftrace.c: fixed-size, no kernel headers. */
#ifndef __AOFTRACE_H
#define __AOFTRACE_H

#define TASK_COMM_LEN	16

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
	__u32 children;		/* forked children alive at the flush's end */
};

struct aof_sync_event {
	__u32 type;		/* EV_SYNC */
	__u32 tid;
	__u32 pid;		/* tgid: the target's, or a child's */
	__u8 role;		/* enum aof_role */
	__u8 kind;		/* enum aof_sync_kind */
	__u8 in_flush;		/* made inside flushAppendOnlyFile() */
	__u8 pad;
	__u64 start_ns;
	__u64 dur_ns;
	__s64 ret;
	__u32 children;
	__s32 fd;
	char comm[TASK_COMM_LEN];
};

struct aof_proc_event {
	__u32 type;		/* EV_FORK or EV_EXIT */
	__u32 pid;		/* the child, or the target on its exit */
	__u32 ppid;
	__u32 children;		/* alive after this event */
	__u64 ts_ns;
	char comm[TASK_COMM_LEN];
};

/* Counters kept in a per-CPU array and summed by user space. */
enum aof_counter {
	CNT_FLUSH_CALLS,	/* every flushAppendOnlyFile() return */
	CNT_FLUSH_EMPTY,	/* ... that neither wrote nor synced (idle event-loop turns) */
	CNT_FLUSH_EMPTY_NS,	/* time spent in those */
	CNT_LOST,		/* records the ring buffer had no room for */
	CNT_MAX,
};

#endif /* __AOFTRACE_H */

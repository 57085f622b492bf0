// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * aoftrace: latency of a Valkey/Redis server's AOF flushes and fdatasyncs.
 *
 * Stands on tp_btf (raw tracepoints with BTF: no tracefs needed) and uprobes only, because the
 * kernels we target have no kprobes and refuse fentry. Per-thread state follows each
 * flushAppendOnlyFile() call; one record leaves per flush that did work, one per fsync-family call.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "aoftrace.h"

#if defined(__TARGET_ARCH_x86)
#define NR_write	1
#define NR_pwrite64	18
#define NR_writev	20
#define NR_fsync	74
#define NR_fdatasync	75
#define NR_pwritev	296
#define NR_pwritev2	328
#elif defined(__TARGET_ARCH_arm64)
#define NR_write	64
#define NR_pwrite64	68
#define NR_writev	66
#define NR_fsync	82
#define NR_fdatasync	83
#define NR_pwritev	70
#define NR_pwritev2	287
#else
#error "syscall numbers: add this architecture"
#endif

const volatile __u32 targ_tgid = 0;

/* Children alive; read without a lock, it only gates a map lookup and tags records. */
__u32 nr_children = 0;

struct tstate {
	__u64 flush_start;	/* 0 when not inside flushAppendOnlyFile() */
	__u64 sys_start;	/* 0 when no traced syscall is in flight */
	__s32 sys_nr;
	__s32 sys_fd;
	__u32 writes;
	__u32 write_errors;
	__u32 syncs;
	__u32 pad;
	__u64 write_ns;
	__u64 write_bytes;
	__u64 sync_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
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
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

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
	static const struct tstate zero;
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

/* BPF_KPROBE works for uprobes; libbpf 1.1 (Debian 12) has no BPF_UPROBE yet. */
SEC("uprobe")
int BPF_KPROBE(flush_enter)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if ((__u32)(id >> 32) != targ_tgid)
		return 0;
	st = tstate_get((__u32)id);
	if (!st)
		return 0;
	st->flush_start = bpf_ktime_get_ns();
	st->writes = st->write_errors = st->syncs = 0;
	st->write_ns = st->write_bytes = st->sync_ns = 0;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(flush_exit)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();
	__u32 tid = (__u32)id;
	struct aof_flush_event *e;
	struct tstate *st;
	__u64 dur;

	if ((__u32)(id >> 32) != targ_tgid)
		return 0;
	st = bpf_map_lookup_elem(&threads, &tid);
	if (!st || !st->flush_start)
		return 0;
	dur = now - st->flush_start;
	count(CNT_FLUSH_CALLS, 1);
	if (!st->writes && !st->syncs) {
		/* Called on every event-loop turn; an empty buffer returns at once. Count, don't emit. */
		count(CNT_FLUSH_EMPTY, 1);
		count(CNT_FLUSH_EMPTY_NS, dur);
		st->flush_start = 0;
		return 0;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST, 1);
		st->flush_start = 0;
		return 0;
	}
	e->type = EV_FLUSH;
	e->tid = tid;
	e->start_ns = st->flush_start;
	e->dur_ns = dur;
	e->write_ns = st->write_ns;
	e->write_bytes = st->write_bytes;
	e->sync_ns = st->sync_ns;
	e->writes = st->writes;
	e->write_errors = st->write_errors;
	e->syncs = st->syncs;
	e->children = nr_children;
	bpf_ringbuf_submit(e, 0);
	st->flush_start = 0;
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long nr)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;
	int who;

	if (!is_write(nr) && nr != NR_fsync && nr != NR_fdatasync)
		return 0;
	who = tracked(id >> 32);
	if (!who)
		return 0;
	if (who == 1 && is_write(nr)) {
		/* Only writes inside a flush are AOF writes; replies to clients are writes too. */
		st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
		if (!st || !st->flush_start)
			return 0;
	} else if (is_write(nr)) {
		return 0;
	} else {
		st = tstate_get((__u32)id);
		if (!st)
			return 0;
	}
	st->sys_nr = nr;
	st->sys_fd = (int)PT_REGS_PARM1_CORE_SYSCALL(regs);
	st->sys_start = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_pid_tgid(), now, dur;
	__u32 tid = (__u32)id, tgid = id >> 32;
	struct aof_sync_event *e;
	struct tstate *st;

	if (!tracked(tgid))
		return 0;
	st = bpf_map_lookup_elem(&threads, &tid);
	if (!st || !st->sys_start)
		return 0;
	now = bpf_ktime_get_ns();
	dur = now - st->sys_start;
	st->sys_start = 0;

	if (is_write(st->sys_nr)) {
		st->writes++;
		st->write_ns += dur;
		if (ret < 0)
			st->write_errors++;
		else
			st->write_bytes += ret;
		return 0;
	}
	if (st->flush_start) {
		st->syncs++;
		st->sync_ns += dur;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST, 1);
		return 0;
	}
	e->type = EV_SYNC;
	e->tid = tid;
	e->pid = tgid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->role = role_of(tid, tgid, e->comm);
	e->kind = st->sys_nr == NR_fsync ? SYNC_FSYNC : SYNC_FDATASYNC;
	e->in_flush = st->flush_start != 0;
	e->pad = 0;
	e->start_ns = now - dur;
	e->dur_ns = dur;
	e->ret = ret;
	e->children = nr_children;
	e->fd = st->sys_fd;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

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
	bpf_ringbuf_submit(e, 0);
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

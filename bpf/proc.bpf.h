/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Which processes are traced: the target and the children it forked (an AOF rewrite, an RDB save);
 * fork and exit events.
 */
#ifndef __AOF_PROC_BPF_H
#define __AOF_PROC_BPF_H

/* Children alive; read without a lock, it only gates a map lookup and tags records. */
__u64 nr_children = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);		/* tgid of a child the target forked */
	__type(value, __u64);		/* fork time */
} children SEC(".maps");

/* Whose event it is. */
enum aof_who {
	WHO_NONE,	/* anybody else: not traced */
	WHO_TARGET,	/* the target process (any of its threads) */
	WHO_CHILD,	/* a process it forked (AOF rewrite, RDB save) */
};

/* The cheap test first: most events are the target's or nobody's. */
static __always_inline enum aof_who tracked(__u32 tgid)
{
	if (tgid == targ_tgid)
		return WHO_TARGET;
	if (nr_children && bpf_map_lookup_elem(&children, &tgid))
		return WHO_CHILD;
	return WHO_NONE;
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

/* io-wq workers are threads of the target, created by the kernel: counted as they come and go. */
/* io-wq workers of the target alive (user space sets the count found at start) and the most seen */
__s64 iowq_alive = 0;
__s64 iowq_max_alive = 0;

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
	enum aof_who who = tracked(tgid);

	if (!who)
		return 0;
	bpf_map_delete_elem(&threads, &pid);
	if (p->flags & PF_IO_WORKER && tgid == targ_tgid) {
		count(CNT_IOWQ_EXITED, 1);
		__sync_fetch_and_add(&iowq_alive, -1);
	}
	if (pid != tgid)
		return 0;
	if (who == WHO_CHILD) {
		if (bpf_map_delete_elem(&children, &pid))
			return 0;
		__sync_fetch_and_add(&nr_children, -1);
	}
	emit_proc(EV_EXIT, pid, who == WHO_CHILD ? targ_tgid : 0, p->comm);
	return 0;
}

#endif /* __AOF_PROC_BPF_H */

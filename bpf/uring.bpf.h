/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * io_uring requests of the target, from submission through io-wq to completion (docs/io_uring.md).
 */
#ifndef __AOF_URING_BPF_H
#define __AOF_URING_BPF_H


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

	if (st->uring.last_in > start)
		start = st->uring.last_in;
	if (st->uring.last_done > start)
		start = st->uring.last_done;
	u->worker = tid;
	u->start_ns = start;
	u->flags |= UF_WORKER;
	st->uring.cur_req = req;
	if (!any_span(st)) {
		st->span.last_ts = start;
		st->sched.run = RUN_ONCPU;
	}
	span_start(st, SPAN_IOWQ, start);
}

static __always_inline bool is_target_worker(struct task_struct *t)
{
	return t->tgid == targ_tgid && t->flags & PF_IO_WORKER;
}

/* The request an io-wq worker is running now, if it is one of ours and not yet seen started. */
/* The request (struct io_kiocb *) io-wq worker `t` is running: its io_worker's cur_work; 0 if none (fs.bpf.h). */
static __always_inline __u64 worker_cur_req(struct task_struct *t)
{
	struct io_worker *w = (struct io_worker *)BPF_CORE_READ(t, worker_private);
	struct io_wq_work *work = BPF_CORE_READ(w, cur_work);

	return work ? (__u64)work - bpf_core_field_offset(struct io_kiocb, work) : 0;
}

static __always_inline void worker_detect(struct tstate *st, struct task_struct *t)
{
	struct io_worker *w = (struct io_worker *)BPF_CORE_READ(t, worker_private);
	struct io_wq_work *work = BPF_CORE_READ(w, cur_work);
	struct ureq *u;
	__u64 req;

	if (!work)
		return;
	req = (__u64)work - bpf_core_field_offset(struct io_kiocb, work);
	if (req == st->uring.cur_req)
		return;
	u = bpf_map_lookup_elem(&ureqs, &req);
	if (u && !u->worker)
		worker_start(st, u, req, t->pid);
}

static __always_inline bool is_write_op(__u8 op)
{
	return op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITE) ||
	       op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITEV) ||
	       op == bpf_core_enum_value(enum io_uring_op, IORING_OP_WRITE_FIXED);
}

static __always_inline int submitted(struct io_kiocb *req)
{
	__u64 id = bpf_get_current_pid_tgid(), key = (__u64)req;
	struct ureq u = {};

	if ((__u32)(id >> 32) != targ_tgid)
		return 0;
	u.submit_ns = bpf_ktime_get_ns();
	u.submitter = (__u32)id;
	u.opcode = BPF_CORE_READ(req, opcode);
	/* With SQPOLL the submitter is the SQ thread, while the flush waits: any submission counts. */
	if (flush_open)
		u.flags |= UF_INFLUSH;
	bpf_map_update_elem(&ureqs, &key, &u, BPF_ANY);
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(io_uring_submit_req, struct io_kiocb *req)
{
	return submitted(req);
}

/*
 * The same tracepoint before 6.3, when it was called io_uring_submit_sqe (6.1: req, force_nonblock);
 * kfeatures.c loads whichever of the two the kernel has.
 */
SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(io_uring_submit_sqe, struct io_kiocb *req)
{
	return submitted(req);
}

/* io_wq_work.flags: an unsigned int until 6.4 made it an atomic_t; CO-RE takes the one the kernel has. */
struct io_wq_work___u32 {
	unsigned int flags;
} __attribute__((preserve_access_index));

struct io_kiocb___u32 {
	struct io_wq_work___u32 work;
} __attribute__((preserve_access_index));

static __always_inline unsigned int work_flags(struct io_kiocb *req)
{
	struct io_kiocb___u32 *old = (void *)req;

	if (bpf_core_field_exists(old->work.flags))
		return BPF_CORE_READ(old, work.flags);
	return BPF_CORE_READ(req, work.flags.counter);
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
	if (work_flags(req) & IO_WQ_WORK_HASHED)
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
	if (st && st->uring.cur_req && (u = bpf_map_lookup_elem(&ureqs, &st->uring.cur_req)))
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
	bool in_flush = u->flags & UF_INFLUSH && flush_open && sub && sub->span.start[SPAN_FLUSH];

	if (is_write_op(u->opcode)) {
		if (res < 0 || u->flags & UF_SHORT)
			sync_failed((__u64)inode, res < 0 ? res : 0);
		if (res <= 0)
			return;
		aof_written(res, now);
		if (!in_flush && u->flags & UF_INFLUSH)
			count(CNT_URING_LATE_BYTES, res);
		if (in_flush) {
			sub->flush.uring_bytes += res;
			sub->flush.uring_writes++;
			if (!sub->flush.inode) {
				sub->flush.inode = (__u64)inode;
				sub->flush.ino = BPF_CORE_READ(inode, i_ino);
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
			sub->flush.uring_syncs++;
	}
}

/*
 * The request's result. Since 6.13 ("io_uring: clean up cqe trace points") the tracepoint passes the CQE
 * (ctx, req, cqe); before, its fields one by one (ctx, req, user_data, res, cflags, extra1, extra2).
 * The branch not taken is dead code to the verifier: LINUX_KERNEL_VERSION is a constant to it.
 */
static __always_inline __s32 complete_res(unsigned long long *args)
{
	if (LINUX_KERNEL_VERSION >= KERNEL_VERSION(6, 13, 0))
		return BPF_CORE_READ((struct io_uring_cqe *)args[2], res);
	return (__s32)args[3];
}

/* `req` is the request completed (NULL for a CQE posted without one). */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(io_uring_complete, void *ctx_, void *req)
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
		if (st->span.start[SPAN_IOWQ])
			span_close(st, SPAN_IOWQ, now);
		st->uring.last_done = now;
		st->uring.cur_req = 0;
	}
	if (u->flags & UF_AOF)
		uring_durability(u, inode, complete_res(ctx), now);
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
	e->res = complete_res(ctx);
	e->flags = u->flags | (e->res < 0 ? UF_FAILED : 0);
	e->pad = 0;
	e->cpu = bpf_get_smp_processor_id();
	e->inode = u->inode;
	e->submit_ns = u->submit_ns;
	e->punt_ns = u->punt_ns;
	e->start_ns = u->worker ? u->start_ns : u->submit_ns;
	e->complete_ns = now;
	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++)
		e->comp[c] = st && u->worker ? st->span.comp[SPAN_IOWQ][c] : 0;

	/* The submitter asleep waiting for it: what this request did is what it waited for. */
	sub = bpf_map_lookup_elem(&threads, &u->submitter);
	if (sub) {
		sub->uring.reap_n++;
		sub->uring.reap_sum += now;
	}
	if (sub && sub->sched.run == RUN_OFFCPU && any_span(sub) && u->worker) {
		__u64 q = u->start_ns > u->punt_ns && u->punt_ns ? u->start_ns - u->punt_ns : 0;

		sub->uring.pend[COMP_IOWQ_QUEUE] += q;
		#pragma unroll
		for (int c = 0; c < COMP_MAX; c++)
			sub->uring.pend[c] += e->comp[c];
	}
	bpf_ringbuf_submit(e, rb_flags());
	bpf_map_delete_elem(&ureqs, &key);
	return 0;
}


#endif /* __AOF_URING_BPF_H */

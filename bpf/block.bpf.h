/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Block requests on the AOF's device: by issuer and kind, with latency; chains across the device.
 */
#ifndef __AOF_BLOCK_BPF_H
#define __AOF_BLOCK_BPF_H

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

/* A request issued by a traced thread inside an fdatasync/fsync: the sync's own work (its record). */
static __always_inline void sync_issued(__u32 tid, struct request *rq, __u8 kind)
{
	struct tstate *st = bpf_map_lookup_elem(&threads, &tid);

	if (!st || !st->span.start[SPAN_SYNC])
		return;
	st->sys.sync_blk_rqs++;
	st->sys.sync_blk_bytes += rq->__data_len;
	st->sys.sync_flush_rqs += kind == RQ_FLUSH || kind == RQ_WRITE_FUA;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(block_rq_issue, struct request *rq)
{
	struct rqinfo ri = {}, *slot;
	struct task_struct *cur;
	const char *comm;
	__u32 flags, op;
	enum aof_who who;

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
	if (who == WHO_TARGET)
		ri.issuer = ISS_TARGET;
	else if (who == WHO_CHILD)
		ri.issuer = ISS_CHILD;
	else if (prefix(comm, "jbd2/", 5))
		ri.issuer = ISS_JBD2;
	else if (prefix(comm, "kworker/", 8))
		ri.issuer = ISS_KWORKER;
	else
		ri.issuer = ISS_OTHER;
	flags = rq->cmd_flags;
	op = flags & REQ_OP_MASK;
	if (op == REQ_OP_READ)
		ri.kind = RQ_READ;
	else if (op == REQ_OP_FLUSH)
		ri.kind = RQ_FLUSH;
	else if (op == REQ_OP_WRITE)
		ri.kind = flags & (1u << bpf_core_enum_value(enum req_flag_bits, __REQ_FUA)) ?
			  RQ_WRITE_FUA : RQ_WRITE;
	else
		ri.kind = RQ_OTHER;
	issuer_chain(&ri);
	if (who != WHO_NONE)
		sync_issued(cur->pid, rq, ri.kind);
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

#endif /* __AOF_BLOCK_BPF_H */

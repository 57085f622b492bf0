/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The flush (flushAppendOnlyFile() uprobes) and the syscalls of the target and its children: write inside
 * a flush, fdatasync/fsync anywhere, fork, a child's I/O.
 */
#ifndef __AOF_FLUSH_BPF_H
#define __AOF_FLUSH_BPF_H

__u32 flush_open = 0;		/* a thread (flush_tid) is inside flushAppendOnlyFile() */
__u32 flush_tid = 0;

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
	st->flush.writes = st->flush.write_errors = st->flush.syncs = st->flush.commits = st->flush.urings = 0;
	st->flush.uring_ns = 0;
	st->flush.write_ns = st->flush.write_bytes = st->flush.sync_ns = 0;
	st->flush.first_off = st->flush.isize_before = st->flush.ino = st->flush.inode = 0;
	st->flush.uring_bytes = st->flush.uring_syncs = st->flush.uring_writes = 0;
	st->flush.first_known = 0;
	st->flush.inode0 = aof_inode;
	if (aof_inode) {
		struct inode *in = (struct inode *)aof_inode;

		st->flush.isize0 = BPF_CORE_READ(in, i_size);
	} else {
		st->flush.isize0 = 0;
	}
	flush_open = 1;
	flush_tid = (__u32)id;
	st->flush.children_at_start = nr_children;
	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++)
		st->flush.write_tot[c] = st->flush.sync_tot[c] = 0;
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
	if (!st || !st->span.start[SPAN_FLUSH])
		return 0;
	start = st->span.start[SPAN_FLUSH];
	span_close(st, SPAN_FLUSH, now);
	flush_open = 0;
	count(CNT_FLUSH_CALLS, 1);
	/* Growth: the file grew by what the flush wrote, unless it moved to a new file (rewrite). */
	if (st->flush.inode && st->flush.inode == st->flush.inode0 && st->flush.write_bytes + st->flush.uring_bytes) {
		struct inode *in = (struct inode *)st->flush.inode;	/* not inside BPF_CORE_READ: tstate is ours */
		__s64 grew = BPF_CORE_READ(in, i_size) - st->flush.isize0;
		__s64 diff = grew - (__s64)(st->flush.write_bytes + st->flush.uring_bytes);

		if (diff) {
			count(CNT_GROWTH_DIFF_BYTES, diff < 0 ? -diff : diff);
			violation(VIO_GROWTH, st->flush.ino, st->flush.isize0, st->flush.isize0 + grew, diff);
		}
	}
	if (!st->flush.writes && !st->flush.syncs && !st->flush.urings) {
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
	e->write_ns = st->flush.write_ns;
	e->write_bytes = st->flush.write_bytes;
	e->sync_ns = st->flush.sync_ns;
	e->writes = st->flush.writes;
	e->write_errors = st->flush.write_errors;
	e->syncs = st->flush.syncs;
	e->children = st->flush.children_at_start > nr_children ? st->flush.children_at_start : nr_children;
	e->first_off = st->flush.first_off;
	e->isize_before = st->flush.isize_before;
	inode = (struct inode *)st->flush.inode;
	e->isize_after = inode ? BPF_CORE_READ(inode, i_size) : 0;
	e->ino = st->flush.ino;
	e->commits = st->flush.commits;
	e->uring_enters = st->flush.urings;
	e->uring_bytes = st->flush.uring_bytes;
	e->uring_syncs = st->flush.uring_syncs;
	e->uring_writes = st->flush.uring_writes;
	e->first_known = st->flush.first_known;
	e->pad = 0;
	e->uring_ns = st->flush.uring_ns;
	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++) {
		e->comp[c] = st->span.comp[SPAN_FLUSH][c];
		e->write_comp[c] = st->flush.write_tot[c];
		e->sync_comp[c] = st->flush.sync_tot[c];
	}
	bpf_ringbuf_submit(e, rb_flags());
	return 0;
}

/* ---- syscalls: write inside a flush, fdatasync/fsync anywhere, fork, the child's I/O ------- */

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
	if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFREG)
		return 0;
	note_aof_inode((__u64)inode);
	/* Where the kernel will write: pwrite's offset or the file position, i_size with O_APPEND. */
	isize = BPF_CORE_READ(inode, i_size);
	if (nr == NR_pwrite64 || nr == NR_pwritev || nr == NR_pwritev2)
		off = arg3;
	else
		off = BPF_CORE_READ(f, f_pos);
	if (BPF_CORE_READ(f, f_flags) & O_APPEND)
		off = isize;
	st->dur.w_off = off;
	st->dur.w_isize = isize;
	if (!BPF_CORE_READ(inode, __i_nlink))
		violation(VIO_UNLINKED, BPF_CORE_READ(inode, i_ino), off, isize, 0);
	if (st->flush.first_known)
		return 1;
	st->flush.first_known = 1;
	st->flush.inode = (__u64)inode;
	st->flush.ino = BPF_CORE_READ(inode, i_ino);
	st->flush.isize_before = isize;
	st->flush.first_off = off;
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
	enum aof_who who;

	if (!is_write(nr) && nr != NR_fsync && nr != NR_fdatasync && !is_fork(nr) &&
	    nr != NR_sync_file_range && nr != NR_io_uring_enter && nr != NR_sendto && nr != NR_sendmsg)
		return 0;
	id = bpf_get_current_pid_tgid();
	who = tracked(id >> 32);
	if (!who)
		return 0;
	if (nr == NR_sendto || nr == NR_sendmsg) {
		if (who == WHO_TARGET)
			reply((int)arg0);
		return 0;
	}
	if (who == WHO_CHILD) {
		if (nr == NR_sync_file_range)
			count(CNT_CHILD_SFR, 1);
		if (nr == NR_sync_file_range || is_fork(nr) || nr == NR_io_uring_enter)
			return 0;
	}
	if (who == WHO_TARGET && (is_write(nr) || is_fork(nr) || nr == NR_sync_file_range ||
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
		if (is_write(nr) && (!st || !st->span.start[SPAN_FLUSH])) {
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
	if (who == WHO_TARGET && is_write(nr) && !note_aof_write(st, nr, (int)arg0, arg3)) {
		/* Not the AOF: a reply sent from inside the flush, maybe. */
		reply((int)arg0);
		return 0;
	}
	st->sys.nr = nr;
	st->sys.fd = (int)arg0;
	if (who == WHO_TARGET && is_write(nr)) {
		span_open(st, SPAN_WRITE, now);
	} else if (nr == NR_fsync || nr == NR_fdatasync) {
		struct file *f = fd_file(st->sys.fd);

		st->sys.commit = 0;
		span_open(st, SPAN_SYNC, now);
		st->sys.sync_file = (__u64)f;
		st->sys.sync_blk_rqs = st->sys.sync_flush_rqs = 0;
		st->sys.sync_blk_bytes = 0;
		st->sys.sync_aof = 0;
		if (who == WHO_TARGET) {
			st->sys.sync_aof = f && (__u64)BPF_CORE_READ(f, f_inode) == aof_inode;
			st->dur.sync_snap = dur_wseq;
			if (st->sys.sync_aof && dur_err_pending) {
				dur_err_pending = 0;
				count(CNT_SYNC_RETRIED, 1);
			}
		}
	} else if (nr == NR_io_uring_enter) {
		st->sys.start = now;
		st->flush.uring_in_flush = st->span.start[SPAN_FLUSH] != 0;
	} else {
		st->sys.start = now;
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

/*
 * i_size at each file's last sync: a sync whose file did not change size has no inode size update to
 * log, which is what makes XFS and ext4 force a journal/log commit for an fdatasync (issue 19: a run
 * whose writes stopped growing the file gets fast syncs for doing less work).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);	/* struct inode * */
	__type(value, __u64);	/* i_size */
} synced_size SEC(".maps");

/* Which file the sync was on, its name and whether its size changed since its last sync. */
static __always_inline void sync_work(struct aof_sync_event *e, const struct tstate *st)
{
	struct file *f = (struct file *)st->sys.sync_file;
	struct inode *inode = f ? BPF_CORE_READ(f, f_inode) : NULL;
	__u64 key = (__u64)inode, *last, isize;
	__u16 mode;

	e->name[0] = 0;
	e->ino = e->isize = 0;
	e->file = FILE_OTHER;
	e->size_changed = 0;
	e->block_rqs = st->sys.sync_blk_rqs;
	e->block_bytes = st->sys.sync_blk_bytes;
	e->flush_rqs = st->sys.sync_flush_rqs;
	if (!inode)
		return;
	e->ino = BPF_CORE_READ(inode, i_ino);
	e->isize = isize = BPF_CORE_READ(inode, i_size);
	mode = BPF_CORE_READ(inode, i_mode);
	if (key == aof_inode)
		e->file = FILE_AOF;
	else if ((mode & S_IFMT) == S_IFDIR)
		e->file = FILE_DIR;
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), BPF_CORE_READ(f, f_path.dentry, d_name.name));
	last = bpf_map_lookup_elem(&synced_size, &key);
	e->size_changed = !last || *last != isize;
	/* from the stack: 6.1 takes no ring-buffer memory as a map value */
	bpf_map_update_elem(&synced_size, &key, &isize, BPF_ANY);
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
	e->kind = st->sys.nr == NR_fsync ? SYNC_FSYNC : SYNC_FDATASYNC;
	e->in_flush = st->span.start[SPAN_FLUSH] != 0;
	e->commit = st->sys.commit;
	e->start_ns = start;
	e->dur_ns = now - start;
	e->ret = ret;
	e->children = nr_children;
	e->fd = st->sys.fd;
	#pragma unroll
	for (int c = 0; c < COMP_MAX; c++)
		e->comp[c] = st->span.comp[SPAN_SYNC][c];
	sync_work(e, st);
	bpf_ringbuf_submit(e, rb_flags());
}

/* A syscall returns `ret`; `sys_nr` is its number when the tracepoint tells it, else -1. */
static __always_inline int on_sys_exit(long sys_nr, long ret)
{
	__u64 id = bpf_get_current_pid_tgid(), now, start;
	__u32 tid = (__u32)id, tgid = id >> 32;
	struct tstate *st;
	enum aof_who who = tracked(tgid);
	long nr;

	if (!who || (who == WHO_TARGET && sys_nr >= 0 && is_write(sys_nr) && !flush_open))
		return 0;	/* a write of the target outside flushes: on_sys_enter kept no state */
	st = bpf_map_lookup_elem(&threads, &tid);
	if (!st || st->sys.nr < 0)
		return 0;
	nr = st->sys.nr;
	st->sys.nr = -1;
	now = bpf_ktime_get_ns();

	if (is_fork(nr)) {
		if (ret > 0) {
			count(CNT_FORKS, 1);
			count(CNT_FORK_NS, now - st->sys.start);
		}
		return 0;
	}
	if (nr == NR_io_uring_enter) {
		/* Completions are reaped, at the latest, when the submitter returns from here. */
		if (st->uring.reap_n) {
			count(CNT_REAP_N, st->uring.reap_n);
			count(CNT_REAP_NS, st->uring.reap_n * now - st->uring.reap_sum);
			st->uring.reap_n = 0;
			st->uring.reap_sum = 0;
		}
		if (st->flush.uring_in_flush && st->span.start[SPAN_FLUSH]) {
			st->flush.urings++;
			st->flush.uring_ns += now - st->sys.start;
		}
		return 0;
	}
	if (is_write(nr) && who == WHO_CHILD) {
		if (ret > 0)
			count(CNT_CHILD_WRITE_BYTES, ret);
		return 0;
	}
	if (is_write(nr)) {
		start = st->span.start[SPAN_WRITE];
		if (!start)
			return 0;
		span_close(st, SPAN_WRITE, now);
		st->flush.writes++;
		st->flush.write_ns += now - start;
		if (ret < 0) {
			st->flush.write_errors++;
			sync_failed(st->flush.inode, ret);
		} else {
			st->flush.write_bytes += ret;
			aof_written(ret, now);
			if (st->dur.w_off < st->dur.w_isize) {
				__u64 over = st->dur.w_isize - st->dur.w_off < (__u64)ret ? st->dur.w_isize - st->dur.w_off : ret;

				count(CNT_OVERWRITE_BYTES, over);
				violation(VIO_OVERWRITE, ino_of(st->flush.inode), st->dur.w_off, st->dur.w_isize, over);
			}
		}
		#pragma unroll
		for (int c = 0; c < COMP_MAX; c++)
			st->flush.write_tot[c] += st->span.comp[SPAN_WRITE][c];
		return 0;
	}
	/* fdatasync / fsync */
	start = st->span.start[SPAN_SYNC];
	if (!start)
		return 0;
	span_close(st, SPAN_SYNC, now);
	if (st->sys.sync_aof) {
		if (ret == 0)
			aof_covered(st->dur.sync_snap);
		else
			sync_failed(aof_inode, ret);
	}
	if (st->span.start[SPAN_FLUSH]) {
		st->flush.syncs++;
		st->flush.sync_ns += now - start;
		st->flush.commits += st->sys.commit;
		#pragma unroll
		for (int c = 0; c < COMP_MAX; c++)
			st->flush.sync_tot[c] += st->span.comp[SPAN_SYNC][c];
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

#endif /* __AOF_FLUSH_BPF_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * File-system tracepoints (XFS, ext4): io_uring writes and syncs of the AOF, which pass no syscall.
 */
#ifndef __AOF_FS_BPF_H
#define __AOF_FS_BPF_H

/*
 * io_uring writes do not pass through write(2): check them where the file system begins them. A
 * write(2) of the target is checked at sys_enter instead, for every file system.
 */
/*
 * ext4 traces each folio of a buffered write: generic_perform_write() calls write_begin once per folio,
 * with `len` what is left of the write from `pos` (up to the next boundary of the largest folio), not the
 * folio's part. So only a write's first call tells where it starts and how long it is, and the others
 * must not be checked again: a 6 048-byte overwrite at 0 was counted as 6 048 bytes, then 1 952 at 4 096.
 *
 * An io_uring write reaches ext4 in an io-wq worker (ext4 refuses IOCB_NOWAIT buffered writes, so io_uring
 * punts them), whose request keeps the write's start in its kiocb until the write ends, and what is left
 * of it in its iov_iter: the call at that start is the first, and the iterator says the whole length.
 * Any other thread (a write(2) of the target outside a flush: the ones inside are checked at the syscall)
 * is followed by the range its last checked call covered: a call inside it, past its start, is the same
 * write going on. That guess would take a new write starting inside the previous one's range for the
 * same write; it is the fallback only.
 */
__u32 fsw_tid = 0;		/* the thread, inode and range of the last ext4 write checked (fallback) */
__u64 fsw_inode = 0, fsw_pos = 0, fsw_end = 0;

/* Is this write_begin call the first of its write? Then *len becomes the write's length if known. */
static __always_inline bool ext4_write_first(struct inode *inode, __u32 tid, __u64 pos, __u64 *len)
{
	struct task_struct *cur = bpf_get_current_task_btf();
	__u64 req = cur->flags & PF_IO_WORKER ? worker_cur_req(cur) : 0;

	if (req) {
		struct io_rw *rw = (void *)req + bpf_core_field_offset(struct io_kiocb, cmd);
		struct io_async_rw *io;
		__u64 left;

		if (BPF_CORE_READ(rw, kiocb.ki_pos) != pos)
			return false;	/* a later folio of the request's write */
		if (bpf_core_field_exists(struct io_async_rw, iter)) {
			io = BPF_CORE_READ((struct io_kiocb *)req, async_data);
			left = io ? BPF_CORE_READ(io, iter.count) : 0;
			if (left > *len)
				*len = left;
		}
		return true;
	}
	if (tid == fsw_tid && (__u64)inode == fsw_inode && pos > fsw_pos && pos < fsw_end) {
		fsw_pos = pos;
		return false;
	}
	fsw_tid = tid;
	fsw_inode = (__u64)inode;
	fsw_pos = pos;
	fsw_end = pos + *len;
	return true;
}

/* `per_folio`: ext4's write_begin, called for each folio of a write (above); XFS traces a write once. */
static __always_inline void fs_write(struct inode *inode, __u64 pos, __u64 len, bool per_folio)
{
	__u64 id = bpf_get_current_pid_tgid(), isize;
	struct tstate *st;

	if ((__u32)(id >> 32) != targ_tgid || ((__u64)inode != aof_inode && !flush_open))
		return;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (st && st->sys.nr >= 0 && is_write(st->sys.nr))
		return;
	if (per_folio && !ext4_write_first(inode, (__u32)id, pos, &len))
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
	if (!st || !st->span.start[SPAN_FLUSH] || st->flush.first_known)
		return;
	st->flush.first_known = 1;
	st->flush.first_off = pos;
	st->flush.isize_before = isize;
	st->flush.inode = (__u64)inode;
	st->flush.ino = ino_of((__u64)inode);
}

/* An io_uring FSYNC of the AOF begins in the file system: what it will cover is written by now. */
static __always_inline void fs_sync_begin(struct inode *inode)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if ((__u32)(id >> 32) != targ_tgid || (__u64)inode != aof_inode)
		return;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (st && (st->sys.nr == NR_fsync || st->sys.nr == NR_fdatasync))
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
	fs_write(BPF_CORE_READ(iocb, ki_filp, f_inode), iocb->ki_pos, from->count, false);
	return 0;
}

SEC("tp_btf/xfs_file_direct_write")
int BPF_PROG(xfs_file_direct_write, struct kiocb *iocb, struct iov_iter *from)
{
	if (!from_target())
		return 0;
	fs_write(BPF_CORE_READ(iocb, ki_filp, f_inode), iocb->ki_pos, from->count, false);
	return 0;
}

/* Each folio of a buffered write (fs_write(), ext4_write_first()). */
SEC("tp_btf/ext4_da_write_begin")
int BPF_PROG(ext4_da_write_begin, struct inode *inode, loff_t pos, unsigned int len)
{
	if (!from_target())
		return 0;
	fs_write(inode, pos, len, true);
	return 0;
}

SEC("tp_btf/ext4_write_begin")
int BPF_PROG(ext4_write_begin, struct inode *inode, loff_t pos, unsigned int len)
{
	if (!from_target())
		return 0;
	fs_write(inode, pos, len, true);
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

#endif /* __AOF_FS_BPF_H */

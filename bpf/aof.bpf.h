/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Which file is the AOF: the inode a flush writes, its locks and its device.
 */
#ifndef __AOF_AOF_BPF_H
#define __AOF_AOF_BPF_H

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

static __always_inline __u64 ino_of(__u64 inode)
{
	return inode ? BPF_CORE_READ((struct inode *)inode, i_ino) : 0;
}

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
	if (BPF_CORE_READ(inode, i_sb, s_magic) == XFS_SB_MAGIC &&
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

#endif /* __AOF_AOF_BPF_H */

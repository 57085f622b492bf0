/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel constants vmlinux.h cannot carry: they are #defines in the kernel's headers, not enum values,
 * so BTF has no trace of them. All are ABI or have not changed in the kernels aoftrace runs on.
 */
#ifndef __AOF_LIB_KERNEL_DEFS_BPF_H
#define __AOF_LIB_KERNEL_DEFS_BPF_H

/* task_struct->flags (include/linux/sched.h) */
#define PF_KTHREAD	0x00200000
#define PF_IO_WORKER	0x00000010

/* clone(2) flags (uapi/linux/sched.h) */
#define CLONE_VM	0x00000100
#define CLONE_THREAD	0x00010000

/* The file type bits of i_mode (uapi/linux/stat.h; octal, as there). */
#define S_IFMT		00170000
#define S_IFSOCK	0140000
#define S_IFREG		0100000
#define S_IFDIR		0040000

/* f_flags (uapi/asm-generic/fcntl.h; octal) */
#define O_APPEND	00002000

/* sched_switch's prev_state of a task switched out while runnable (include/linux/sched.h) */
#define TASK_RUNNING	0x00000000

#define XFS_SB_MAGIC	0x58465342	/* 'XFSB', fs/xfs/libxfs/xfs_format.h */

/* request->cmd_flags: the low bits are the operation (enum req_op, whose values vmlinux.h has). */
#define REQ_OP_BITS	8
#define REQ_OP_MASK	((1u << REQ_OP_BITS) - 1)	/* unchanged since 4.10 */

/* The running kernel's version (libbpf fills it in at load): for tracepoints whose arguments changed. */
extern int LINUX_KERNEL_VERSION __kconfig;

#endif /* __AOF_LIB_KERNEL_DEFS_BPF_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The numbers of the syscalls aoftrace follows, by architecture (uapi: they never change).
 */
#ifndef __AOF_LIB_SYSCALLS_BPF_H
#define __AOF_LIB_SYSCALLS_BPF_H

#if defined(__TARGET_ARCH_x86)
#define NR_write		1
#define NR_pwrite64		18
#define NR_writev		20
#define NR_clone		56
#define NR_fork			57
#define NR_vfork		58
#define NR_fsync		74
#define NR_fdatasync		75
#define NR_sync_file_range	277
#define NR_pwritev		296
#define NR_pwritev2		328
#define NR_clone3		435
#define NR_io_uring_enter	426
#define NR_sendto		44
#define NR_sendmsg		46
#elif defined(__TARGET_ARCH_arm64)
#define NR_write		64
#define NR_pwrite64		68
#define NR_writev		66
#define NR_clone		220
#define NR_fork			-1
#define NR_vfork		-1
#define NR_fsync		82
#define NR_fdatasync		83
#define NR_sync_file_range	84
#define NR_pwritev		70
#define NR_pwritev2		287
#define NR_clone3		435
#define NR_io_uring_enter	426
#define NR_sendto		206
#define NR_sendmsg		211
#else
#error "syscall numbers: add this architecture"
#endif

static __always_inline bool is_write(long nr)
{
	return nr == NR_write || nr == NR_pwrite64 || nr == NR_writev ||
	       nr == NR_pwritev || nr == NR_pwritev2;
}

static __always_inline bool is_fork(long nr)
{
	return nr == NR_clone || nr == NR_clone3 || nr == NR_fork || nr == NR_vfork;
}

#endif /* __AOF_LIB_SYSCALLS_BPF_H */

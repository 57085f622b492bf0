/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Durability: the invariants of appendfsync always, checked live (docs/durability.md).
 */
#ifndef __AOF_DURABILITY_BPF_H
#define __AOF_DURABILITY_BPF_H

/*
 * Durability (docs/durability.md). dur_wseq counts AOF bytes whose write completed, dur_synced how
 * many of them a completed sync covers: a sync covers what was written before it began.
 */
__u64 dur_wseq = 0;
__u64 dur_synced = 0;
__u64 dur_unsynced_since = 0;	/* when wseq went past synced, 0 while all is covered */
__u64 dur_sync_snap = ~0ULL;	/* wseq when the file system began an io_uring FSYNC of the AOF */
__u64 dur_max_window_ns = 0;	/* the longest a reply found AOF bytes unsynced */
__u32 dur_err_pending = 0;	/* a sync error not yet followed by a sync (retried) or a reply */

__u32 vio_sent[VIO_MAX] = {};	/* records sent per kind, up to VIO_EXAMPLES */

/*
 * The __noinline non-static functions below are BPF global functions: the verifier checks each once
 * per program, not along every path that reaches it (start-up verification 43 -> 28 ms). Their
 * arguments are scalars or checked pointers, as global functions require.
 *
 * Count a violation; send the first VIO_EXAMPLES of each kind to user space, which warns at once.
 */
__noinline int violation(__u64 kind, __u64 ino, __u64 off, __u64 isize, __s64 bytes)
{
	struct aof_violation_event *e;

	if (kind >= VIO_MAX)
		return 0;
	count(CNT_VIO_OVERWRITE + kind, 1);
	if (vio_sent[kind] >= VIO_EXAMPLES)	/* racy: a few more may go, never fewer */
		return 0;
	vio_sent[kind]++;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(CNT_LOST, 1);
		return 0;
	}
	e->type = EV_VIOLATION;
	e->kind = kind;
	e->tid = (__u32)bpf_get_current_pid_tgid();
	e->pad = 0;
	e->ts_ns = bpf_ktime_get_ns();
	e->ino = ino;
	e->off = off;
	e->isize = isize;
	e->bytes = bytes;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, rb_flags());
	return 0;
}

/* `bytes` more of the AOF written (the write completed). */
static __always_inline void aof_written(__u64 bytes, __u64 now)
{
	if (dur_wseq <= dur_synced)
		dur_unsynced_since = now;
	__sync_fetch_and_add(&dur_wseq, bytes);
}

/* A sync that began when dur_wseq was `snap` completed: everything written before is on disk. */
static __always_inline void aof_covered(__u64 snap)
{
	if (snap > dur_synced)
		dur_synced = snap;
	if (dur_synced >= dur_wseq)
		dur_unsynced_since = 0;
}

static __always_inline void sync_failed(__u64 inode, __s64 err)
{
	dur_err_pending = 1;
	violation(VIO_SYNC_ERROR, ino_of(inode), 0, 0, err);
}

/*
 * A write to a socket by the target: a reply (or any message) leaving. With AOF bytes unsynced it
 * left too early, if the policy is appendfsync always (user space decides: see docs/durability.md).
 */
__noinline int check_reply(int fd)
{
	struct file *f;
	__u64 window, now;

	if (!dur_err_pending && dur_wseq <= dur_synced)
		return 0;		/* the common case, also decided by reply() before the call */
	now = bpf_ktime_get_ns();
	f = fd_file(fd);
	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	if (dur_err_pending) {
		dur_err_pending = 0;
		count(CNT_SYNC_CARRIED_ON, 1);
	}
	if (dur_wseq <= dur_synced)
		return 0;
	window = dur_unsynced_since ? now - dur_unsynced_since : 0;
	if (window > dur_max_window_ns)
		dur_max_window_ns = window;
	violation(VIO_REPLY_EARLY, ino_of(aof_inode), dur_wseq - dur_synced, window, 0);
	return 0;
}

/* The common case decided inline: a global function costs a BPF-to-BPF call and its return (thunked here). */
static __always_inline void reply(int fd)
{
	if (dur_err_pending || dur_wseq > dur_synced)
		check_reply(fd);
}

/* A write to the AOF by the target, seen by the file system: [pos, pos + len) with i_size now. */
static __always_inline void check_aof_write(__u64 inode, __u64 pos, __u64 len, __u64 isize)
{
	if (pos < isize) {
		__u64 over = isize - pos < len ? isize - pos : len;

		count(CNT_OVERWRITE_BYTES, over);
		violation(VIO_OVERWRITE, ino_of(inode), pos, isize, over);
	}
	if (!BPF_CORE_READ((struct inode *)inode, __i_nlink))
		violation(VIO_UNLINKED, ino_of(inode), pos, isize, len);
}

#endif /* __AOF_DURABILITY_BPF_H */

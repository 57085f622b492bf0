// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include "names.h"

const char *const role_names[ROLE_MAX] = {
	[ROLE_MAIN] = "main", [ROLE_BIO] = "bio", [ROLE_IOWQ] = "iowq",
	[ROLE_SQPOLL] = "sqpoll", [ROLE_CHILD] = "child", [ROLE_OTHER] = "other",
};
const char *const role_labels[ROLE_MAX] = {
	[ROLE_MAIN] = "the main thread", [ROLE_BIO] = "bio threads", [ROLE_IOWQ] = "io-wq workers",
	[ROLE_SQPOLL] = "the SQPOLL thread", [ROLE_CHILD] = "forked children", [ROLE_OTHER] = "other threads",
};

const char *const comp_names[COMP_MAX] = {
	[COMP_ONCPU] = "oncpu", [COMP_RUNQ] = "runqueue", [COMP_BLOCK] = "block",
	[COMP_JOURNAL] = "journal", [COMP_INODE_LOCK] = "inode_lock", [COMP_OTHER_LOCK] = "other_lock",
	[COMP_THROTTLE] = "throttle", [COMP_RECLAIM] = "reclaim", [COMP_IOWQ_QUEUE] = "iowq_queue",
	[COMP_OTHER_OFFCPU] = "other_offcpu",
};
const char *const comp_labels[COMP_MAX] = {
	[COMP_ONCPU] = "on-CPU", [COMP_RUNQ] = "run-queue wait", [COMP_BLOCK] = "block I/O",
	[COMP_JOURNAL] = "journal/log commit", [COMP_INODE_LOCK] = "inode lock",
	[COMP_OTHER_LOCK] = "other locks", [COMP_THROTTLE] = "dirty throttling",
	[COMP_RECLAIM] = "reclaim", [COMP_IOWQ_QUEUE] = "io-wq queueing",
	[COMP_OTHER_OFFCPU] = "other off-CPU",
};

/* SPAN_IOWQ had no name until 2026-12: folded stacks of io-wq workers read "iowq;(null);..." */
const char *const span_names[SPAN_MAX] = {
	[SPAN_FLUSH] = "flush", [SPAN_WRITE] = "write", [SPAN_SYNC] = "fdatasync", [SPAN_IOWQ] = "request",
};
const char *const span_labels[SPAN_MAX] = {
	[SPAN_FLUSH] = "flush", [SPAN_WRITE] = "write", [SPAN_SYNC] = "fdatasync",
	[SPAN_IOWQ] = "an io_uring request on an io-wq worker",
};

const char *const hint_names[HINT_MAX] = {
	[HINT_NONE] = "none", [HINT_WRITEBACK] = "folio_wait_writeback", [HINT_XFS_LOG_FORCE] = "xfs_log_force",
	[HINT_XFS_CIL_WAIT] = "xfs_log_cil_wait", [HINT_XLOG_ICLOG_WAIT] = "xlog_iclog_wait_on",
	[HINT_JBD2_COMMIT] = "jbd2_commit", [HINT_DIRTY_THROTTLE] = "balance_dirty_pages",
};
const char *const hint_labels[HINT_MAX] = {
	[HINT_NONE] = "no hint", [HINT_WRITEBACK] = "waiting for page writeback",
	[HINT_XFS_LOG_FORCE] = "XFS log force", [HINT_XFS_CIL_WAIT] = "XFS CIL push",
	[HINT_XLOG_ICLOG_WAIT] = "XFS iclog write", [HINT_JBD2_COMMIT] = "jbd2 commit",
	[HINT_DIRTY_THROTTLE] = "dirty-page throttling",
};

const char *const sync_names[SYNC_MAX] = { [SYNC_FDATASYNC] = "fdatasync", [SYNC_FSYNC] = "fsync" };
const char *const sync_labels[SYNC_MAX] = { [SYNC_FDATASYNC] = "fdatasync()", [SYNC_FSYNC] = "fsync()" };

const char *const vio_names[VIO_MAX] = {
	[VIO_OVERWRITE] = "overwrites", [VIO_GROWTH] = "growth_mismatches",
	[VIO_REPLY_EARLY] = "replies_before_sync", [VIO_SYNC_ERROR] = "sync_errors",
	[VIO_UNLINKED] = "writes_to_unlinked",
};
const char *const vio_labels[VIO_MAX] = {
	[VIO_OVERWRITE] = "write below the end of the AOF (overwrites data)",
	[VIO_GROWTH] = "flush grew the AOF by other than the bytes it wrote",
	[VIO_REPLY_EARLY] = "reply sent before the AOF bytes written were synced",
	[VIO_SYNC_ERROR] = "AOF sync or write failed or wrote short",
	[VIO_UNLINKED] = "write to an AOF file that was unlinked or renamed away",
};

const char *const issuer_names[ISS_MAX] = {
	[ISS_TARGET] = "target", [ISS_CHILD] = "child", [ISS_JBD2] = "jbd2", [ISS_KWORKER] = "kworker",
	[ISS_OTHER] = "other",
};
const char *const issuer_labels[ISS_MAX] = {
	[ISS_TARGET] = "server", [ISS_CHILD] = "child", [ISS_JBD2] = "jbd2", [ISS_KWORKER] = "kworker",
	[ISS_OTHER] = "other",
};

const char *const rqkind_names[RQ_MAX] = {
	[RQ_WRITE] = "write", [RQ_WRITE_FUA] = "write_fua", [RQ_FLUSH] = "flush", [RQ_READ] = "read",
	[RQ_OTHER] = "other",
};
const char *const rqkind_labels[RQ_MAX] = {
	[RQ_WRITE] = "write", [RQ_WRITE_FUA] = "write FUA", [RQ_FLUSH] = "flush", [RQ_READ] = "read",
	[RQ_OTHER] = "other",
};

const char *const op_names[OP_MAX] = { [OP_FLUSH] = "flush", [OP_WRITE] = "write", [OP_SYNC] = "fdatasync" };
const char *const op_labels[OP_MAX] = { [OP_FLUSH] = "flush", [OP_WRITE] = "write", [OP_SYNC] = "fdatasync" };

const char *const rw_names[RW_MAX] = { [RW_IDLE] = "idle", [RW_ACTIVE] = "active" };
const char *const rw_labels[RW_MAX] = { [RW_IDLE] = "without a forked child", [RW_ACTIVE] = "with a forked child" };

const char *const file_names[FILE_MAX] = {
	[FILE_AOF] = "aof", [FILE_REWRITE] = "rewrite", [FILE_MANIFEST] = "manifest", [FILE_DIR] = "dir",
	[FILE_OTHER] = "other",
};
const char *const file_labels[FILE_MAX] = {
	[FILE_AOF] = "the AOF file", [FILE_REWRITE] = "rewrite files", [FILE_MANIFEST] = "the manifest",
	[FILE_DIR] = "directories", [FILE_OTHER] = "other files",
};

#define TABLE(what, prefix) { what, prefix##_names, prefix##_labels, ARRAY_SIZE(prefix##_names) }

const struct name_table name_tables[] = {
	TABLE("enum aof_role", role), TABLE("enum aof_comp", comp), TABLE("enum aof_span", span),
	TABLE("enum aof_hint", hint), TABLE("enum aof_sync_kind", sync), TABLE("enum aof_violation", vio),
	TABLE("enum aof_issuer", issuer), TABLE("enum aof_rqkind", rqkind), TABLE("enum aof_op", op),
	TABLE("enum aof_rw", rw), TABLE("enum aof_file", file),
};
const size_t n_name_tables = ARRAY_SIZE(name_tables);

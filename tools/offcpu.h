/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The off-CPU classification table: kernel functions whose presence on the stack of a sleeping
 * operation names the component its sleep is charged to. The one place to edit; aoftrace turns it
 * into address ranges from /proc/kallsyms at start-up, bpf/classify.h applies it in the kernel, and
 * tests/test_classify.c checks it on stacks recorded on 6.18 (XFS and ext4 fdatasync, throttling).
 * Names match with or without a compiler suffix (.isra.0, .constprop.0, .part.0).
 * Inode-lock time is not in here: it is measured exactly from lock:contention_begin/end.
 */
#ifndef __OFFCPU_H
#define __OFFCPU_H

#include <linux/types.h>
#include "aoftrace.h"
#include "trace_helpers.h"

struct offcpu_class {
	const char *func;
	enum aof_comp comp;
};

static const struct offcpu_class offcpu_classes[] = {
	/* sleeping locks (the lock tracepoints normally decide first) */
	{ "rwsem_down_write_slowpath", COMP_OTHER_LOCK },
	{ "rwsem_down_read_slowpath", COMP_OTHER_LOCK },
	{ "__mutex_lock", COMP_OTHER_LOCK },
	{ "__mutex_lock_slowpath", COMP_OTHER_LOCK },
	{ "percpu_rwsem_wait", COMP_OTHER_LOCK },
	{ "rt_mutex_slowlock", COMP_OTHER_LOCK },
	/* dirty-page throttling: sleeps in io_schedule_timeout() but is not waiting for any I/O */
	{ "balance_dirty_pages", COMP_THROTTLE },
	/* page allocation and reclaim */
	{ "__alloc_pages_slowpath", COMP_RECLAIM },
	{ "__alloc_pages_direct_reclaim", COMP_RECLAIM },
	{ "__alloc_pages_direct_compact", COMP_RECLAIM },
	{ "try_to_free_pages", COMP_RECLAIM },
	{ "try_to_free_mem_cgroup_pages", COMP_RECLAIM },
	{ "mem_cgroup_handle_over_high", COMP_RECLAIM },
	{ "throttle_direct_reclaim", COMP_RECLAIM },
	{ "reclaim_throttle", COMP_RECLAIM },
	/* ext4: waiting for jbd2 to commit, or for journal space (checkpointing) */
	{ "jbd2_log_wait_commit", COMP_JOURNAL },
	{ "jbd2_complete_transaction", COMP_JOURNAL },
	{ "__jbd2_log_wait_for_space", COMP_JOURNAL },
	{ "jbd2_log_do_checkpoint", COMP_JOURNAL },
	{ "wait_transaction_locked", COMP_JOURNAL },
	{ "wait_transaction_switching", COMP_JOURNAL },
	{ "add_transaction_credits", COMP_JOURNAL },
	{ "start_this_handle", COMP_JOURNAL },
	{ "jbd2_journal_stop", COMP_JOURNAL },
	/* XFS: log forces, iclog waits, log space grants */
	{ "xfs_log_force_seq", COMP_JOURNAL },
	{ "xfs_log_force", COMP_JOURNAL },
	{ "xlog_wait_on_iclog", COMP_JOURNAL },
	{ "xlog_wait", COMP_JOURNAL },
	{ "xlog_cil_force_seq", COMP_JOURNAL },
	{ "xlog_cil_push_now", COMP_JOURNAL },
	{ "xlog_state_get_iclog_space", COMP_JOURNAL },
	{ "xlog_grant_head_wait", COMP_JOURNAL },
	{ "xlog_grant_head_check", COMP_JOURNAL },
	{ "xfs_log_reserve", COMP_JOURNAL },
	/* block I/O: writeback waits, device cache flushes, request allocation */
	{ "io_schedule", COMP_BLOCK },
	{ "io_schedule_timeout", COMP_BLOCK },
	{ "submit_bio_wait", COMP_BLOCK },
	{ "blkdev_issue_flush", COMP_BLOCK },
	{ "folio_wait_writeback", COMP_BLOCK },
	{ "folio_wait_bit", COMP_BLOCK },
	{ "folio_wait_bit_common", COMP_BLOCK },
	{ "__filemap_fdatawait_range", COMP_BLOCK },
	{ "bit_wait_io", COMP_BLOCK },
	{ "wait_for_completion_io", COMP_BLOCK },
	{ "wait_for_completion_io_timeout", COMP_BLOCK },
	{ "__wait_on_buffer", COMP_BLOCK },
	{ "blk_mq_get_tag", COMP_BLOCK },
	{ "rq_qos_wait", COMP_BLOCK },
	{ "wbt_wait", COMP_BLOCK },
};

#define OFFCPU_NCLASSES (sizeof(offcpu_classes) / sizeof(offcpu_classes[0]))

bool offcpu_wanted(const char *name);

/* Ranges for every table function found in `ks`, sorted by start; returns how many (<= max). */
int build_kranges(const struct ksyms *ks, struct aof_krange *out, int max);

#endif /* __OFFCPU_H */

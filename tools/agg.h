/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Aggregation of the ring buffer's records (one per flush, per sync, per io_uring request, per fork
 * and exit) into histograms and sums: the only state user space builds while tracing.
 */
#ifndef __AGG_H
#define __AGG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/types.h>
#include "aoftrace.h"
#include "names.h"
#include "trace_helpers.h"

/* Figures summed over the whole run and, separately, over one -i interval. */
struct totals {
	struct lhist flush;		/* flushes that wrote or synced */
	struct lhist flush_write;	/* write() time per such flush */
	uint64_t writes, write_bytes, write_errors;
	uint64_t uring_enters, uring_ns, uring_bytes, uring_writes, uring_syncs;
	struct lhist sync[ROLE_MAX];	/* fdatasync+fsync per role, of any file */
	struct lhist aof_sync;		/* the main thread's of the AOF file: the headline */
	uint64_t aof_sync_calls[SYNC_MAX], aof_sync_errors;
	uint64_t sync_calls[ROLE_MAX][SYNC_MAX];
	uint64_t sync_errors[ROLE_MAX];
	uint64_t forks, child_exits;
	uint32_t children_max;		/* forked children alive at any moment of the period */
};

/* An operation's wall time and its split into components. */
struct opstat {
	struct lhist wall;
	uint64_t comp[COMP_MAX];
	struct lhist comp_h[COMP_MAX];
};

/* The AOF file's side: bytes handed to it against its growth. */
struct fs_totals {
	uint64_t bytes_written, uring_bytes, size_growth, offset_mismatches, growth_mismatches;
	uint64_t syncs_with_commit;
	uint64_t uring_late;	/* of bytes_written, io_uring writes that completed after their flush returned */
};

/* Syncs by the file they were on, all threads: the work each did. */
struct filesync {
	struct lhist lat;
	uint64_t in_flush, size_changed, commits, errors;
	uint64_t block_rqs, block_bytes, flush_rqs;
};

struct agg {
	pid_t pid;		/* the target */
	bool lite;		/* --lite: no components */
	bool target_exited;
	uint32_t children;	/* forked children alive now, from the fork and exit records */
	uint64_t start_ns;	/* CLOCK_MONOTONIC at the start of tracing */
	struct totals all, ival;
	struct opstat ops[OP_MAX][RW_MAX];
	struct fs_totals fs;
	struct filesync by_file[FILE_MAX];
};

void agg_init(struct agg *a, pid_t pid, bool lite);
/* One ring buffer record; records of an unknown type or size are skipped. */
void agg_event(struct agg *a, const void *data, size_t len);
/* The interval's figures start again (after its line is printed). */
void agg_interval_reset(struct agg *a);
/* Both rewrite states of `op` together. */
void op_total(const struct agg *a, int op, struct opstat *out);
uint64_t comp_sum(const struct opstat *o);
/* enum aof_file of a sync record: the kernel's AOF and directory, the rest named by the file's name. */
int sync_file(const struct aof_sync_event *s);

#endif /* __AGG_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Everything a report says, read once: the BPF maps and globals copied into plain structs when
 * tracing ends (as perf's lock_contention reads its maps), beside what the ring buffer's records
 * added up to. The reports (report*.c) are written from this alone and never touch libbpf, so
 * tests/test_report.c renders them from snapshots it builds, without root or a kernel.
 */
#ifndef __SNAPSHOT_H
#define __SNAPSHOT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/types.h>
#include "aoftrace.h"
#include "agg.h"
#include "durability.h"
#include "trace_helpers.h"
#include "uring_stats.h"

#define SNAP_MAX_FEATURES_OFF	16

/* Off-CPU time by stack and waker, with both stacks' frames. */
struct offrow {
	struct aof_offkey key;
	uint64_t ns;
	int nframes, nwframes;
	uint64_t ips[MAX_FRAMES], wips[MAX_FRAMES];
};

struct snapshot {
	/* the run */
	pid_t pid;
	char exe[PATH_MAX];
	char comm[TASK_COMM_LEN + 1];
	bool exited;
	bool lite;
	double window_s;
	char features_off[512];		/* one line, "" if none */
	const char *features_off_groups[SNAP_MAX_FEATURES_OFF];
	size_t n_features_off;
	int top;			/* off-CPU stacks to print */

	/* read from the BPF side */
	uint64_t counters[CNT_MAX];
	struct aof_blkstat blk[ISS_MAX][RQ_MAX];
	uint32_t aof_dev;
	char fstype[64];		/* the AOF device's file system, from mountinfo */
	struct dur_counts dur;
	struct uring_workers uring;
	struct offrow *rows;		/* longest first */
	size_t nrows;
	const struct ksyms *ksyms;	/* names the frames; NULL: "[unknown]" */

	/* from the ring buffer */
	const struct agg *agg;
	struct fs_totals fs;		/* agg's, with io_uring bytes that completed after their flush */
};

struct aoftrace_bpf;
struct target;

/*
 * Reads the BPF side once into s (tools/snapshot.c, the one reader of the maps for the reports);
 * stacks are read only when `stacks` (the top list or -f) and named with /proc/kallsyms.
 */
int snapshot_take(struct snapshot *s, struct aoftrace_bpf *obj, const struct agg *a, const struct target *t,
		  uint64_t iowq_at_start, double window_s, bool stacks);
void snapshot_free(struct snapshot *s);

#endif /* __SNAPSHOT_H */

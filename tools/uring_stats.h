/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* io_uring requests of the target, aggregated from the per-request records aoftrace.bpf.c sends. */
#ifndef __URING_STATS_H
#define __URING_STATS_H

#include <stdbool.h>
#include <stdint.h>
#include <linux/types.h>
#include "aoftrace.h"
#include "trace_helpers.h"

struct uring_workers {
	uint64_t alive_at_start, created, exited, max_alive;
	uint64_t short_writes, links, fail_links;
	uint64_t reaped, reap_ns;
	int ncpus;
	uint64_t oncpu_ns[64];	/* workers' on-CPU time per CPU */
};

/*
 * counts_only (--lite): requests, their outcome, latency and workers, but no queue, run or parallelism
 * figures: those need the scheduler programs, which --lite does not load.
 */
void uring_init(bool counts_only);
void uring_add(const struct aof_ureq_event *e);
const char *uring_op_name(int op);	/* "WRITE", "FSYNC", ... or "OP_<n>"; not reentrant for unknown ops */
bool uring_any(void);
void uring_print(FILE *f, const struct uring_workers *w);
void uring_json(struct jw *w, const struct uring_workers *wk);
void uring_free(void);

#endif /* __URING_STATS_H */

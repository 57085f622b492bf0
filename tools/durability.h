/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The durability verdict: violations the BPF side found, and whether the policy makes them count. */
#ifndef __DURABILITY_H
#define __DURABILITY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <linux/types.h>
#include "aoftrace.h"
#include "trace_helpers.h"

/* The BPF counters this module reads, CNT_VIO_OVERWRITE .. CNT_SYNC_CARRIED_ON, and the longest window. */
struct dur_counts {
	uint64_t vio[VIO_MAX];
	uint64_t overwrite_bytes, growth_diff_bytes, sync_retried, sync_carried_on;
	uint64_t max_window_ns;
	bool exited_after_error;	/* the target exited with a sync error not followed by anything */
};

void dur_flush(const struct aof_flush_event *f);
void dur_violation(const struct aof_violation_event *e, uint64_t start_ns);
bool dur_ok(const struct dur_counts *c);
void dur_print(FILE *out, const struct dur_counts *c);
void dur_json(struct jw *w, const struct dur_counts *c);

#endif /* __DURABILITY_H */

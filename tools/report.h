/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The reports, written from a snapshot alone (snapshot.h): the text report and the JSON, each
 * section by the module that owns its concern — operations and attribution (report_ops.c), the
 * file, journal and block view (report_fs.c), off-CPU stacks (report_offcpu.c), io_uring
 * (uring_stats.c), durability (durability.c). None of them touches libbpf.
 */
#ifndef __REPORT_H
#define __REPORT_H

#include <stdio.h>
#include "agg.h"
#include "snapshot.h"
#include "trace_helpers.h"

void report_print(FILE *f, const struct snapshot *s);
/* 0, or -EIO when the file could not be written. */
int report_json(FILE *f, const struct snapshot *s);
/* -i: the header, then a line per interval (the interval's figures are reset after). */
void report_interval_header(FILE *f);
void report_interval(FILE *f, struct agg *a);

/* report_ops.c: flushes, writes, syncs by role, and their split into components */
void ops_print(FILE *f, const struct snapshot *s);
void ops_json(struct jw *w, const struct snapshot *s);
/* report_fs.c: the AOF file, its journal/log commits and the block requests on its device */
void fs_print(FILE *f, const struct snapshot *s);
void fs_json(struct jw *w, const struct snapshot *s);
/* report_offcpu.c: the longest off-CPU stacks; all of them folded (0, or -EIO) */
void offcpu_print_top(FILE *f, const struct snapshot *s);
int offcpu_write_folded(FILE *f, const struct snapshot *s);

/* shared by the sections */
static inline double us(uint64_t ns)
{
	return ns / 1000.0;
}

static inline double mean_us(uint64_t total_ns, uint64_t count)
{
	return count ? total_ns / 1000.0 / count : 0.0;
}

void print_quantiles(FILE *f, const struct lhist *h);

#endif /* __REPORT_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __TRACE_HELPERS_H
#define __TRACE_HELPERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Log-linear histogram of nanosecond values: exact below 32, then 32 linear sub-buckets per power
 * of two, so a percentile read from it is within 1/32 (3.1%) of the true value. Constant memory
 * however long the trace runs; printed as a libbpf-tools style log2 histogram.
 */
#define LH_SUB_BITS	5
#define LH_SUB		(1u << LH_SUB_BITS)
#define LH_BUCKETS	((64 - LH_SUB_BITS + 1) * LH_SUB)

struct lhist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint32_t slots[LH_BUCKETS];
};

void lhist_add(struct lhist *h, uint64_t v);
void lhist_merge(struct lhist *dst, const struct lhist *src);
/* The value below which a fraction q (0..1) of the samples lie: the bucket's upper bound, capped by max. */
uint64_t lhist_quantile(const struct lhist *h, double q);
/* libbpf-tools print_log2_hist() layout, values divided by `div` and labelled `unit`. */
void lhist_print_log2(FILE *f, const struct lhist *h, uint64_t div, const char *unit);

/* Kernel text symbols from /proc/kallsyms, sorted, for symbolizing stacks. */
struct ksym {
	uint64_t addr;
	char *name;
};

struct ksyms {
	struct ksym *syms;
	size_t n;
	char *strs;
	uint64_t *addrs;	/* ksyms_load_filter(): every text symbol's address, sorted */
	size_t naddrs;
};

struct ksyms *ksyms_load(const char *path);
/* Only the symbols keep() accepts, and in `addrs` every text symbol's address (where functions end). */
struct ksyms *ksyms_load_filter(const char *path, bool (*keep)(const char *name));
const struct ksym *ksyms_find(const struct ksyms *ks, uint64_t addr);
void ksyms_free(struct ksyms *ks);

/* A small JSON writer: enough for flat objects and arrays of numbers and strings. */
struct jw {
	FILE *f;
	int depth;
	bool first[16];
};

void jw_begin(struct jw *w, FILE *f);
void jw_end(struct jw *w);
void jw_obj(struct jw *w, const char *key);	/* key NULL inside arrays or at top */
void jw_obj_end(struct jw *w);
void jw_arr(struct jw *w, const char *key);	/* elements: the other calls with key NULL */
void jw_arr_end(struct jw *w);
void jw_u64(struct jw *w, const char *key, uint64_t v);
void jw_i64(struct jw *w, const char *key, int64_t v);
void jw_dbl(struct jw *w, const char *key, double v);
void jw_str(struct jw *w, const char *key, const char *s);
void jw_bool(struct jw *w, const char *key, bool v);
/* count, then total, avg, p50, p90, p99, p999, min and max in microseconds, each key + `suffix`. */
void jw_lhist_us(struct jw *w, const struct lhist *h, const char *suffix);

/*
 * Call fn() for each string of a raw BTF file's string section shorter than BTF_STR_MAX. Every
 * named type's name is one of them: a single pass over them (about 2 ms for vmlinux) answers "is
 * there a type called X" without btf__parse() (about 40 ms, and libbpf parses it again to load).
 * Returns 0, or -errno (-EINVAL: not native-endian raw BTF, or cut short).
 */
#define BTF_STR_MAX	256
int btf_for_each_string(const char *path, void (*fn)(const char *s, void *ctx), void *ctx);

#endif /* __TRACE_HELPERS_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every enum's names in one place: a name (JSON keys, folded stacks, timeline) and a label (the text
 * report) for each value, as designated initialisers, so that a value added to an enum without a name
 * is a NULL that tests/test_names.c finds.
 */
#ifndef __NAMES_H
#define __NAMES_H

#include <stddef.h>
#include <linux/types.h>
#include "aoftrace.h"

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

/* The operations a client waits on, split by whether a forked child (a rewrite) was alive. */
enum aof_op { OP_FLUSH, OP_WRITE, OP_SYNC, OP_MAX };
enum aof_rw { RW_IDLE, RW_ACTIVE, RW_MAX };

extern const char *const role_names[ROLE_MAX], *const role_labels[ROLE_MAX];
extern const char *const comp_names[COMP_MAX], *const comp_labels[COMP_MAX];
extern const char *const span_names[SPAN_MAX], *const span_labels[SPAN_MAX];
extern const char *const hint_names[HINT_MAX], *const hint_labels[HINT_MAX];
extern const char *const sync_names[SYNC_MAX], *const sync_labels[SYNC_MAX];
extern const char *const vio_names[VIO_MAX], *const vio_labels[VIO_MAX];
extern const char *const issuer_names[ISS_MAX], *const issuer_labels[ISS_MAX];
extern const char *const rqkind_names[RQ_MAX], *const rqkind_labels[RQ_MAX];
extern const char *const op_names[OP_MAX], *const op_labels[OP_MAX];
extern const char *const rw_names[RW_MAX], *const rw_labels[RW_MAX];
extern const char *const file_names[FILE_MAX], *const file_labels[FILE_MAX];

/* tbl[v], or "?" for a value out of range (a record from a newer BPF object). */
static inline const char *name_of(const char *const *tbl, size_t n, unsigned int v)
{
	return v < n && tbl[v] ? tbl[v] : "?";
}

#define NAME(tbl, v) name_of((tbl), ARRAY_SIZE(tbl), (v))

/* For tests/test_names.c: every table, with the enum it names. */
struct name_table {
	const char *what;
	const char *const *names;
	const char *const *labels;
	size_t n;
};

extern const struct name_table name_tables[];
extern const size_t n_name_tables;

#endif /* __NAMES_H */

// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Flushes, writes and syncs: their latency, and the split of each into components (docs/attribution.md). */
#include <string.h>
#include "cli.h"
#include "names.h"
#include "report.h"

void print_quantiles(FILE *f, const struct lhist *h)
{
	fprintf(f, "  count %llu  avg %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f (usecs)\n",
		(unsigned long long)h->count, h->count ? us(h->sum) / h->count : 0.0,
		us(lhist_quantile(h, 0.5)), us(lhist_quantile(h, 0.9)), us(lhist_quantile(h, 0.99)),
		us(lhist_quantile(h, 0.999)), us(h->max));
}

/* The table's columns: each operation without, then with, a forked child alive. */
static const int cols[][2] = {
	{ OP_FLUSH, RW_IDLE }, { OP_FLUSH, RW_ACTIVE }, { OP_WRITE, RW_IDLE },
	{ OP_WRITE, RW_ACTIVE }, { OP_SYNC, RW_IDLE }, { OP_SYNC, RW_ACTIVE },
};
#define NCOLS ((int)ARRAY_SIZE(cols))

static const struct opstat *col(const struct agg *a, int i)
{
	return &a->ops[cols[i][0]][cols[i][1]];
}

static void print_components(FILE *f, const struct agg *a, const struct opstat tot[OP_MAX])
{
	for (int c = 0; c < COMP_MAX; c++) {
		bool any = false;

		for (int op = 0; op < OP_MAX; op++)
			any |= tot[op].comp[c] != 0;
		if (!any)
			continue;
		fprintf(f, "%-20s", comp_labels[c]);
		for (int i = 0; i < NCOLS; i++)
			fprintf(f, " %11.1f", mean_us(col(a, i)->comp[c], col(a, i)->wall.count));
		fprintf(f, "\n");
	}
	fprintf(f, "%-20s", "unattributed");
	for (int i = 0; i < NCOLS; i++) {
		const struct opstat *o = col(a, i);

		fprintf(f, " %11.1f", o->wall.count ? ((double)o->wall.sum - comp_sum(o)) / 1000.0 / o->wall.count : 0);
	}
	fprintf(f, "\n");
}

/* "closure (components / wall): flush 99.80%, fdatasync 99.91%": operations that happened only. */
static void print_closure(FILE *f, const struct opstat tot[OP_MAX])
{
	bool first = true;

	fprintf(f, "closure (components / wall):");
	for (int op = 0; op < OP_MAX; op++) {
		if (!tot[op].wall.count)
			continue;
		fprintf(f, "%s %s %.2f%%", first ? "" : ",", op_labels[op],
			tot[op].wall.sum ? 100.0 * comp_sum(&tot[op]) / tot[op].wall.sum : 0);
		first = false;
	}
	fprintf(f, "%s\n", first ? " no operation" : "");
}

/* What a live child changes, component by component, for the operations a client waits on. */
static void print_child_effect(FILE *f, const struct agg *a, int op)
{
	const struct opstat *x = &a->ops[op][RW_IDLE], *y = &a->ops[op][RW_ACTIVE];
	double d[COMP_MAX], wa, wb;
	int order[COMP_MAX], shown = 0;

	if (!x->wall.count || !y->wall.count)
		return;
	wa = mean_us(x->wall.sum, x->wall.count);
	wb = mean_us(y->wall.sum, y->wall.count);
	for (int c = 0; c < COMP_MAX; c++) {
		d[c] = mean_us(y->comp[c], y->wall.count) - mean_us(x->comp[c], x->wall.count);
		order[c] = c;
	}
	for (int i = 0; i < COMP_MAX; i++)
		for (int j = i + 1; j < COMP_MAX; j++)
			if (d[order[j]] > d[order[i]]) {
				int t = order[i];

				order[i] = order[j];
				order[j] = t;
			}
	fprintf(f, "With a child alive, %s took %+.1f us on average (%.1f -> %.1f us, %+.0f%%)", op_labels[op],
		wb - wa, wa, wb, wa > 0 ? 100.0 * (wb - wa) / wa : 0.0);
	for (int i = 0; i < COMP_MAX && shown < 3 && !a->lite; i++) {
		if (d[order[i]] <= 0.05 * (wb > wa ? wb - wa : 1))
			break;
		fprintf(f, "%s %s %+.1f us", shown ? "," : "; grew most:", comp_labels[order[i]], d[order[i]]);
		shown++;
	}
	fprintf(f, "\n");
}

static void print_attribution(FILE *f, const struct agg *a)
{
	struct opstat tot[OP_MAX];

	for (int op = 0; op < OP_MAX; op++)
		op_total(a, op, &tot[op]);
	if (!tot[OP_FLUSH].wall.count && !tot[OP_SYNC].wall.count)
		return;
	if (a->lite)
		fprintf(f, "\nFlushes and fdatasyncs, without | with a forked child alive (--lite: not split into parts)\n");
	else
		fprintf(f, "\nWhere the time went: mean usecs per operation, without | with a forked child alive\n");
	fprintf(f, "%-20s %11s %11s %11s %11s %11s %11s\n", "", "flush", "flush+child", "write",
		"write+child", "fdatasync", "fdsync+child");
	fprintf(f, "%-20s", "operations");
	for (int i = 0; i < NCOLS; i++)
		fprintf(f, " %11llu", (unsigned long long)col(a, i)->wall.count);
	fprintf(f, "\n");
	if (!a->lite)
		print_components(f, a, tot);
	fprintf(f, "%-20s", a->lite ? "mean usecs" : "wall (measured)");
	for (int i = 0; i < NCOLS; i++)
		fprintf(f, " %11.1f", mean_us(col(a, i)->wall.sum, col(a, i)->wall.count));
	fprintf(f, "\n");
	if (a->lite) {
		fprintf(f, "%-20s", "p99 usecs");
		for (int i = 0; i < NCOLS; i++)
			fprintf(f, " %11.1f", us(lhist_quantile(&col(a, i)->wall, 0.99)));
		fprintf(f, "\n");
	} else {
		print_closure(f, tot);
	}
	print_child_effect(f, a, OP_FLUSH);
	print_child_effect(f, a, OP_SYNC);
}

/* write(2) inside the flushes; an io_uring writer's flushes write through its ring instead. */
static void print_writes(FILE *f, const struct totals *all)
{
	if (all->writes || !all->uring_writes) {
		fprintf(f, "\nwrite() inside those flushes: %llu calls, %llu bytes, %llu errors; time per flush:\n",
			(unsigned long long)all->writes, (unsigned long long)all->write_bytes,
			(unsigned long long)all->write_errors);
		print_quantiles(f, &all->flush_write);
	}
	if (all->uring_writes || all->uring_enters)
		fprintf(f, "\nio_uring inside those flushes: %llu AOF writes completed (%llu bytes), %llu AOF fsyncs; "
			"io_uring_enter() %llu calls, %.1f us on average per flush\n",
			(unsigned long long)all->uring_writes, (unsigned long long)all->uring_bytes,
			(unsigned long long)all->uring_syncs, (unsigned long long)all->uring_enters,
			mean_us(all->uring_ns, all->flush.count));
}

/* Every sync by the file it was on, all threads: the AOF's own apart from a rewrite's and the manifest's. */
static void print_by_file(FILE *f, const struct agg *a)
{
	bool any = false;

	for (int k = 0; k < FILE_MAX; k++) {
		const struct filesync *fs = &a->by_file[k];

		if (!fs->lat.count)
			continue;
		if (!any)
			fprintf(f, "\nsyncs by file (all threads): %-14s %7s %9s %9s %8s %12s %7s %9s %7s\n", "", "count",
				"p50_us", "p99_us", "in_flush", "size_changed", "commits", "block_KB", "flushes");
		any = true;
		fprintf(f, "%29s%-14s %7llu %9.1f %9.1f %8llu %12llu %7llu %9.1f %7llu\n", "", file_labels[k],
			(unsigned long long)fs->lat.count, us(lhist_quantile(&fs->lat, 0.5)),
			us(lhist_quantile(&fs->lat, 0.99)), (unsigned long long)fs->in_flush,
			(unsigned long long)fs->size_changed, (unsigned long long)fs->commits, fs->block_bytes / 1024.0,
			(unsigned long long)fs->flush_rqs);
	}
}

void ops_print(FILE *f, const struct snapshot *s)
{
	const struct totals *all = &s->agg->all;
	const uint64_t *cnt = s->counters;

	fprintf(f, "\n" FLUSH_FUNC "() that wrote or synced: %llu (plus %llu empty calls of %llu)\n",
		(unsigned long long)all->flush.count, (unsigned long long)cnt[CNT_FLUSH_EMPTY],
		(unsigned long long)cnt[CNT_FLUSH_CALLS]);
	lhist_print_log2(f, &all->flush, 1000, "usecs");
	print_quantiles(f, &all->flush);
	print_writes(f, all);
	for (int r = 0; r < ROLE_MAX; r++) {
		if (!all->sync[r].count)
			continue;
		fprintf(f, "\nfdatasync/fsync by %s: %llu fdatasync, %llu fsync, %llu errors\n", role_labels[r],
			(unsigned long long)all->sync_calls[r][SYNC_FDATASYNC],
			(unsigned long long)all->sync_calls[r][SYNC_FSYNC], (unsigned long long)all->sync_errors[r]);
		lhist_print_log2(f, &all->sync[r], 1000, "usecs");
		print_quantiles(f, &all->sync[r]);
	}
	print_by_file(f, s->agg);
	if (!all->sync[ROLE_MAIN].count && !all->flush.count)
		fprintf(f, "\nno AOF flush seen — is appendonly on? (and did the server get writes?)\n");
	print_attribution(f, s->agg);
	if (cnt[CNT_SLEEPS_UNWOUND] + cnt[CNT_SLEEPS_HINTED])
		fprintf(f, "sleeps named by a stack unwind: %llu, by a hint: %llu (%llu hints checked by an unwind, "
			"%llu disagreed)\n", (unsigned long long)cnt[CNT_SLEEPS_UNWOUND],
			(unsigned long long)cnt[CNT_SLEEPS_HINTED], (unsigned long long)cnt[CNT_HINT_CHECKS],
			(unsigned long long)cnt[CNT_HINT_MISMATCHES]);
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static void json_comps(struct jw *w, const char *key, const struct opstat *o)
{
	jw_obj(w, key);
	for (int c = 0; c < COMP_MAX; c++)
		jw_dbl(w, comp_names[c], us(o->comp[c]));
	jw_dbl(w, "unattributed", ((double)o->wall.sum - comp_sum(o)) / 1000.0);
	jw_obj_end(w);
}

/* Per-operation distribution of each component: how often a part is large, not just its total. */
static void json_comp_quantile(struct jw *w, const char *key, const struct opstat *o, double q)
{
	jw_obj(w, key);
	for (int c = 0; c < COMP_MAX; c++)
		jw_dbl(w, comp_names[c], us(lhist_quantile(&o->comp_h[c], q)));
	jw_obj_end(w);
}

/* The split of an operation into components; --lite has none (docs/reliability.md, "Modes"). */
static void json_split(struct jw *w, const struct opstat *o, bool lite)
{
	if (lite)
		return;
	json_comps(w, "components_us", o);
	json_comp_quantile(w, "components_p50_us", o, 0.5);
	json_comp_quantile(w, "components_p99_us", o, 0.99);
	jw_dbl(w, "closure_pct", o->wall.sum ? 100.0 * comp_sum(o) / o->wall.sum : 100.0);
}

static void json_op(struct jw *w, const char *key, const struct opstat *o, bool lite)
{
	jw_obj(w, key);
	jw_lhist_us(w, &o->wall, "_us");
	json_split(w, o, lite);
	jw_obj_end(w);
}

static void json_flush(struct jw *w, const struct snapshot *s, const struct opstat tot[OP_MAX])
{
	const struct totals *all = &s->agg->all;

	jw_obj(w, "flush");
	jw_lhist_us(w, &all->flush, "_us");
	jw_u64(w, "calls", s->counters[CNT_FLUSH_CALLS]);
	jw_u64(w, "empty_calls", s->counters[CNT_FLUSH_EMPTY]);
	jw_dbl(w, "empty_total_us", us(s->counters[CNT_FLUSH_EMPTY_NS]));
	jw_u64(w, "writes", all->writes);
	jw_u64(w, "write_bytes", all->write_bytes);
	jw_u64(w, "write_errors", all->write_errors);
	jw_dbl(w, "write_total_us", us(all->flush_write.sum));
	jw_u64(w, "uring_enters", all->uring_enters);
	jw_dbl(w, "uring_enter_total_us", us(all->uring_ns));
	jw_u64(w, "uring_write_bytes", all->uring_bytes);
	jw_u64(w, "uring_writes", all->uring_writes);
	jw_u64(w, "uring_syncs", all->uring_syncs);
	json_split(w, &tot[OP_FLUSH], s->lite);
	if (!s->lite)
		json_comps(w, "write_components_us", &tot[OP_WRITE]);
	jw_obj_end(w);
}

static void json_sync_counts(struct jw *w, const struct totals *all, int role)
{
	jw_u64(w, "fdatasync_calls", all->sync_calls[role][SYNC_FDATASYNC]);
	jw_u64(w, "fsync_calls", all->sync_calls[role][SYNC_FSYNC]);
	jw_u64(w, "errors", all->sync_errors[role]);
}

static void json_by_file(struct jw *w, const struct agg *a)
{
	jw_obj(w, "sync_by_file");
	for (int k = 0; k < FILE_MAX; k++) {
		const struct filesync *fs = &a->by_file[k];

		jw_obj(w, file_names[k]);
		jw_lhist_us(w, &fs->lat, "_us");
		jw_u64(w, "in_flush", fs->in_flush);
		jw_u64(w, "size_changed", fs->size_changed);
		jw_u64(w, "forced_commits", fs->commits);
		jw_u64(w, "errors", fs->errors);
		jw_u64(w, "block_requests", fs->block_rqs);
		jw_u64(w, "block_bytes", fs->block_bytes);
		jw_u64(w, "flush_requests", fs->flush_rqs);
		jw_obj_end(w);
	}
	jw_obj_end(w);
}

void ops_json(struct jw *w, const struct snapshot *s)
{
	const struct agg *a = s->agg;
	struct opstat tot[OP_MAX];

	for (int op = 0; op < OP_MAX; op++)
		op_total(a, op, &tot[op]);
	json_flush(w, s, tot);
	/* fdatasync: the main thread's fdatasync+fsync of the AOF, the ones a client waits for. */
	jw_obj(w, "fdatasync");
	jw_lhist_us(w, &a->all.aof_sync, "_us");
	jw_u64(w, "fdatasync_calls", a->all.aof_sync_calls[SYNC_FDATASYNC]);
	jw_u64(w, "fsync_calls", a->all.aof_sync_calls[SYNC_FSYNC]);
	jw_u64(w, "errors", a->all.aof_sync_errors);
	/* the main thread's syncs of other files (a rewrite's manifest, directory): in sync_by_file */
	jw_u64(w, "other_files_syncs", a->all.sync[ROLE_MAIN].count - a->all.aof_sync.count);
	if (!s->lite)
		jw_u64(w, "forced_commits", s->fs.syncs_with_commit);
	json_split(w, &tot[OP_SYNC], s->lite);
	jw_obj_end(w);
	jw_obj(w, "by_rewrite");
	for (int rw = 0; rw < RW_MAX; rw++) {
		jw_obj(w, rw_names[rw]);
		for (int op = 0; op < OP_MAX; op++)
			json_op(w, op_names[op], &a->ops[op][rw], s->lite);
		jw_obj_end(w);
	}
	jw_obj_end(w);
	json_by_file(w, a);
	jw_obj(w, "sync_by_role");
	for (int r = 0; r < ROLE_MAX; r++) {
		jw_obj(w, role_names[r]);
		jw_lhist_us(w, &a->all.sync[r], "_us");
		json_sync_counts(w, &a->all, r);
		jw_obj_end(w);
	}
	jw_obj_end(w);
	if (!s->lite) {
		jw_obj(w, "sleeps");
		jw_u64(w, "unwound", s->counters[CNT_SLEEPS_UNWOUND]);
		jw_u64(w, "hinted", s->counters[CNT_SLEEPS_HINTED]);
		jw_u64(w, "hint_checks", s->counters[CNT_HINT_CHECKS]);
		jw_u64(w, "hint_mismatches", s->counters[CNT_HINT_MISMATCHES]);
		jw_obj_end(w);
	}
}

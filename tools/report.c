// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The text report and the JSON (schema aoftrace/1, docs/json.md), section by section, from a snapshot. */
#include <errno.h>
#include <string.h>
#include <time.h>
#include "cli.h"
#include "durability.h"
#include "names.h"
#include "report.h"
#include "uring_stats.h"

void report_interval_header(FILE *f)
{
	fprintf(f, "%-8s %8s %9s %9s %9s %8s %9s %9s %10s %5s\n", "TIME", "FLUSHES", "F_P50us", "F_P99us",
		"F_MAXus", "FDSYNCS", "S_P50us", "S_P99us", "WRITE_MB", "CHILD");
}

/* CHILD: the most forked children alive at any moment of the interval, not only at its end. */
void report_interval(FILE *f, struct agg *a)
{
	const struct totals *iv = &a->ival;
	const struct lhist *main_sync = &iv->aof_sync;	/* the main thread's syncs of the AOF */
	time_t t = time(NULL);
	char ts[16];

	strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&t));
	fprintf(f, "%-8s %8llu %9.1f %9.1f %9.1f %8llu %9.1f %9.1f %10.2f %5u\n", ts,
		(unsigned long long)iv->flush.count, us(lhist_quantile(&iv->flush, 0.5)),
		us(lhist_quantile(&iv->flush, 0.99)), us(iv->flush.max), (unsigned long long)main_sync->count,
		us(lhist_quantile(main_sync, 0.5)), us(lhist_quantile(main_sync, 0.99)),
		(iv->write_bytes + iv->uring_bytes) / 1048576.0, iv->children_max);
	fflush(f);
	agg_interval_reset(a);
}

static void print_children(FILE *f, const struct snapshot *s)
{
	const struct totals *all = &s->agg->all;
	const uint64_t *cnt = s->counters;

	fprintf(f, "\nchildren forked: %llu (fork() took %.1f us on average), exited: %llu; they wrote %llu bytes, "
		"called sync_file_range %llu times\n", (unsigned long long)all->forks,
		mean_us(cnt[CNT_FORK_NS], cnt[CNT_FORKS]), (unsigned long long)all->child_exits,
		(unsigned long long)cnt[CNT_CHILD_WRITE_BYTES], (unsigned long long)cnt[CNT_CHILD_SFR]);
	fprintf(f, "lost events: %llu\n", (unsigned long long)cnt[CNT_LOST]);
}

void report_print(FILE *f, const struct snapshot *s)
{
	fprintf(f, "\n%s pid %d: %.1f s traced%s\n", s->comm, s->pid, s->window_s,
		s->lite ? " (--lite: latency, counts, io_uring requests, durability; no components)" : "");
	if (s->features_off[0])
		fprintf(f, "Features off: %s\n", s->features_off);
	ops_print(f, s);
	if (!s->lite)
		offcpu_print_top(f, s);
	fs_print(f, s);
	dur_print(f, &s->dur);
	uring_print(f, &s->uring);
	print_children(f, s);
}

static void json_head(struct jw *w, const struct snapshot *s)
{
	jw_str(w, "schema", "aoftrace/1");
	jw_str(w, "version", AOFTRACE_VERSION);
	jw_str(w, "mode", s->lite ? "lite" : "full");
	jw_obj(w, "target");
	jw_i64(w, "pid", s->pid);
	jw_str(w, "exe", s->exe);
	jw_str(w, "comm", s->comm);
	jw_bool(w, "exited", s->exited);
	jw_obj_end(w);
	jw_dbl(w, "window_s", s->window_s);
	jw_arr(w, "features_off");
	for (size_t i = 0; i < s->n_features_off; i++)
		jw_str(w, NULL, s->features_off_groups[i]);
	jw_arr_end(w);
}

static void json_children(struct jw *w, const struct snapshot *s)
{
	const struct totals *all = &s->agg->all;

	jw_obj(w, "children");
	jw_u64(w, "forked", all->forks);
	jw_u64(w, "exited", all->child_exits);
	jw_obj_end(w);
	jw_obj(w, "rewrite");
	jw_u64(w, "count", all->forks);
	jw_u64(w, "forks_timed", s->counters[CNT_FORKS]);
	jw_dbl(w, "fork_us", us(s->counters[CNT_FORK_NS]));
	jw_u64(w, "child_write_bytes", s->counters[CNT_CHILD_WRITE_BYTES]);
	jw_u64(w, "child_sync_file_range", s->counters[CNT_CHILD_SFR]);
	jw_u64(w, "child_syncs", all->sync[ROLE_CHILD].count);
	jw_obj_end(w);
}

int report_json(FILE *f, const struct snapshot *s)
{
	struct jw w;

	jw_begin(&w, f);
	json_head(&w, s);
	ops_json(&w, s);
	json_children(&w, s);
	uring_json(&w, &s->uring);
	fs_json(&w, s);
	dur_json(&w, &s->dur);
	jw_u64(&w, "lost_events", s->counters[CNT_LOST]);
	jw_end(&w);
	return ferror(f) ? -EIO : 0;
}

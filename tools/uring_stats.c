// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * io_uring requests by opcode: inline vs punted to io-wq, hashed, failed, short; latency from
 * submission to completion, io-wq queue wait, worker run time and the worker's time by component;
 * and how many workers ran requests on the same file at once (hashed work on one inode: one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "names.h"
#include "uring_stats.h"

#define MAX_OPS		256
#define MAX_SPANS	(1 << 18)	/* worker runs kept to measure overlap; beyond, counted only */
#define MAX_WORKERS	64

struct opstats {
	uint64_t requests, inline_, punted, queued, hashed, failed, short_, aof;
	struct lhist lat, queue, run;
	uint64_t comp[COMP_MAX];
	uint32_t workers[MAX_WORKERS];
	int nworkers;
};

struct span {
	uint64_t inode, start, end;
	uint32_t submitter;	/* io-wq is per submitting task (5.12+): one io-wq per submitter */
	uint8_t op;
};

static struct opstats *ops[MAX_OPS];
/* Names as the kernel's tracepoints print them (enum io_uring_op less IORING_OP_), generated from vmlinux.h. */
static const char *const uring_op_names[MAX_OPS] = {
#include "io_uring_ops.h"
};
static struct span *spans;
static size_t nspans, spans_dropped;

static bool counts_only;

void uring_init(bool counts_only_)
{
	counts_only = counts_only_;
}

const char *uring_op_name(int op)
{
	static char buf[16];

	if (op >= 0 && op < MAX_OPS && uring_op_names[op])
		return uring_op_names[op];
	snprintf(buf, sizeof(buf), "OP_%d", op);
	return buf;
}

void uring_add(const struct aof_ureq_event *e)
{
	struct opstats *o = ops[e->opcode];
	int i;

	if (!o && !(o = ops[e->opcode] = calloc(1, sizeof(*o))))
		return;
	o->requests++;
	/*
	 * Punted: ran in an io-wq worker, whether queued there by io_uring_queue_async_work or run
	 * by the worker that completed the request it was linked behind (no queueing event then).
	 */
	if (e->flags & (UF_PUNTED | UF_WORKER))
		o->punted++;
	else
		o->inline_++;
	o->queued += !!(e->flags & UF_PUNTED);
	o->hashed += !!(e->flags & UF_HASHED);
	o->failed += !!(e->flags & UF_FAILED);
	o->short_ += !!(e->flags & UF_SHORT);
	o->aof += !!(e->flags & UF_AOF);
	lhist_add(&o->lat, e->complete_ns - e->submit_ns);
	if (!e->worker)
		return;
	for (i = 0; i < o->nworkers && o->workers[i] != e->worker; i++)
		;
	if (i == o->nworkers && i < MAX_WORKERS)
		o->workers[o->nworkers++] = e->worker;
	/* when a worker began a request is read at its scheduler events: not loaded by --lite */
	if (counts_only)
		return;
	if (e->punt_ns && e->start_ns >= e->punt_ns)
		lhist_add(&o->queue, e->start_ns - e->punt_ns);
	lhist_add(&o->run, e->complete_ns - e->start_ns);
	for (int c = 0; c < COMP_MAX; c++)
		o->comp[c] += e->comp[c];
	if (!spans)
		spans = malloc(MAX_SPANS * sizeof(*spans));
	if (spans && nspans < MAX_SPANS)
		spans[nspans++] = (struct span){ e->inode, e->start_ns, e->complete_ns, e->submitter, e->opcode };
	else
		spans_dropped++;
}

bool uring_any(void)
{
	for (int i = 0; i < MAX_OPS; i++)
		if (ops[i])
			return true;
	return false;
}

struct edge {
	uint64_t inode, t;
	uint32_t wq;	/* the submitter, or 0 when counting across io-wqs */
	int delta;
};

static int cmp_edge(const void *a, const void *b)
{
	const struct edge *x = a, *y = b;

	if (x->inode != y->inode)
		return x->inode < y->inode ? -1 : 1;
	if (x->wq != y->wq)
		return x->wq < y->wq ? -1 : 1;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return x->delta - y->delta;	/* an end before a start at the same instant */
}

/*
 * Most io-wq workers that ran requests of `op` on one file at the same time, and on average (time spent
 * running them / time at least one ran); with per_wq, within one io-wq (one submitting task), where
 * hashed work on an inode runs one at a time. Start times are inferred (docs/io_uring.md), so a
 * serialized stream can show a brief overlap: the average says how much.
 */
static int parallel(int op, bool per_wq, double *avg)
{
	uint64_t busy = 0, covered = 0, since = 0;
	struct edge *ev;
	size_t n = 0;
	int cur = 0, best = 0;

	*avg = 0;
	ev = malloc(2 * (nspans ? nspans : 1) * sizeof(*ev));
	if (!ev)
		return -1;
	for (size_t i = 0; i < nspans; i++) {
		if (spans[i].op != op)
			continue;
		uint32_t wq = per_wq ? spans[i].submitter : 0;

		ev[n++] = (struct edge){ spans[i].inode, spans[i].start, wq, +1 };
		ev[n++] = (struct edge){ spans[i].inode, spans[i].end, wq, -1 };
	}
	qsort(ev, n, sizeof(*ev), cmp_edge);
	for (size_t i = 0; i < n; i++) {
		if (i && (ev[i].inode != ev[i - 1].inode || ev[i].wq != ev[i - 1].wq))
			cur = 0;
		if (cur > 0) {
			busy += (ev[i].t - since) * cur;
			covered += ev[i].t - since;
		}
		since = ev[i].t;
		cur += ev[i].delta;
		if (cur > best)
			best = cur;
	}
	free(ev);
	*avg = covered ? (double)busy / covered : 0;
	return best;
}

static int max_parallel(int op, bool per_wq)
{
	double avg;

	return parallel(op, per_wq, &avg);
}

static double avg_parallel(int op, bool per_wq)
{
	double avg;

	parallel(op, per_wq, &avg);
	return avg;
}

static double us(uint64_t ns)
{
	return ns / 1000.0;
}

void uring_print(FILE *f, const struct uring_workers *w)
{
	if (!uring_any())
		return;
	fprintf(f, "\nio_uring requests (latency: submit to complete; queue: punt to worker start; run: worker)\n");
	fprintf(f, "%-12s %8s %7s %7s %7s %6s %5s %9s %9s %9s %9s %8s %4s\n", "op", "requests", "inline", "punted",
		"hashed", "failed", "short", "lat_p50us", "lat_p99us", "queue_avg", "run_avg", "par/wq", "wrk");
	for (int op = 0; op < MAX_OPS; op++) {
		const struct opstats *o = ops[op];

		if (!o)
			continue;
		if (counts_only) {
			fprintf(f, "%-12s %8llu %7llu %7llu %7llu %6llu %5llu %9.1f %9.1f %9s %9s %8s %4d\n",
				uring_op_name(op), (unsigned long long)o->requests, (unsigned long long)o->inline_,
				(unsigned long long)o->punted, (unsigned long long)o->hashed,
				(unsigned long long)o->failed, (unsigned long long)o->short_,
				us(lhist_quantile(&o->lat, 0.5)), us(lhist_quantile(&o->lat, 0.99)), "-", "-", "-",
				o->nworkers);
			continue;
		}
		fprintf(f, "%-12s %8llu %7llu %7llu %7llu %6llu %5llu %9.1f %9.1f %9.1f %9.1f %8d %4d\n", uring_op_name(op),
			(unsigned long long)o->requests, (unsigned long long)o->inline_,
			(unsigned long long)o->punted, (unsigned long long)o->hashed,
			(unsigned long long)o->failed, (unsigned long long)o->short_,
			us(lhist_quantile(&o->lat, 0.5)), us(lhist_quantile(&o->lat, 0.99)),
			o->queue.count ? us(o->queue.sum) / o->queue.count : 0.0,
			o->run.count ? us(o->run.sum) / o->run.count : 0.0, max_parallel(op, true), o->nworkers);
		if (o->run.count) {
			fprintf(f, "%-12s worker time per request:", "");
			for (int c = 0; c < COMP_MAX; c++)
				if (o->comp[c] / o->run.count >= 1000)
					fprintf(f, " %s %.1f us,", comp_labels[c], us(o->comp[c]) / o->run.count);
			fprintf(f, "\n");
		}
	}
	fprintf(f, "io-wq workers: %llu alive at start, %llu created, %llu exited, at most %llu alive; "
		"short writes %llu, links %llu, failed links %llu\n", (unsigned long long)w->alive_at_start,
		(unsigned long long)w->created, (unsigned long long)w->exited, (unsigned long long)w->max_alive,
		(unsigned long long)w->short_writes, (unsigned long long)w->links, (unsigned long long)w->fail_links);
	if (w->reaped)
		fprintf(f, "complete to reap (the submitter's return from io_uring_enter): %.1f us on average, "
			"%llu completions\n", us(w->reap_ns) / w->reaped, (unsigned long long)w->reaped);
	if (w->ncpus && !counts_only) {
		fprintf(f, "io-wq workers on CPU:");
		for (int c = 0; c < w->ncpus; c++)
			fprintf(f, " cpu%d %.1f ms", c, w->oncpu_ns[c] / 1e6);
		fprintf(f, "\n");
	}
	if (spans_dropped)
		fprintf(f, "(overlap measured on the first %zu worker runs; %zu more not kept)\n", nspans, spans_dropped);
}

static void json_q(struct jw *w, const char *key, const struct lhist *h)
{
	jw_obj(w, key);
	jw_lhist_us(w, h, "");
	jw_obj_end(w);
}

void uring_json(struct jw *w, const struct uring_workers *wk)
{
	jw_obj(w, "uring");
	jw_obj(w, "ops");
	for (int op = 0; op < MAX_OPS; op++) {
		const struct opstats *o = ops[op];

		if (!o)
			continue;
		jw_obj(w, uring_op_name(op));
		jw_u64(w, "requests", o->requests);
		jw_u64(w, "inline", o->inline_);
		jw_u64(w, "punted", o->punted);
		jw_u64(w, "queued", o->queued);
		jw_u64(w, "hashed", o->hashed);
		jw_u64(w, "failed", o->failed);
		jw_u64(w, "short", o->short_);
		jw_u64(w, "aof", o->aof);
		json_q(w, "latency_us", &o->lat);
		if (counts_only) {
			jw_u64(w, "workers_used", o->nworkers);
			jw_obj_end(w);
			continue;
		}
		json_q(w, "queue_us", &o->queue);
		json_q(w, "run_us", &o->run);
		jw_obj(w, "worker_components_us");
		for (int c = 0; c < COMP_MAX; c++)
			jw_dbl(w, comp_names[c], us(o->comp[c]));
		jw_obj_end(w);
		jw_i64(w, "max_parallel", max_parallel(op, false));
		jw_i64(w, "max_parallel_per_wq", max_parallel(op, true));
		jw_dbl(w, "avg_parallel", avg_parallel(op, false));
		jw_dbl(w, "avg_parallel_per_wq", avg_parallel(op, true));
		jw_u64(w, "workers_used", o->nworkers);
		jw_obj_end(w);
	}
	jw_obj_end(w);
	jw_obj(w, "workers");
	jw_u64(w, "alive_at_start", wk->alive_at_start);
	jw_u64(w, "created", wk->created);
	jw_u64(w, "exited", wk->exited);
	jw_u64(w, "max_alive", wk->max_alive);
	jw_obj(w, "oncpu_us_by_cpu");	/* from sched_switch: empty with --lite */
	for (int c = 0; c < wk->ncpus && !counts_only; c++) {
		char key[16];

		snprintf(key, sizeof(key), "%d", c);
		jw_dbl(w, key, us(wk->oncpu_ns[c]));
	}
	jw_obj_end(w);
	jw_obj_end(w);
	jw_u64(w, "short_writes", wk->short_writes);
	jw_u64(w, "links", wk->links);
	jw_u64(w, "fail_links", wk->fail_links);
	jw_obj(w, "reap_us");
	jw_u64(w, "count", wk->reaped);
	jw_dbl(w, "avg", wk->reaped ? us(wk->reap_ns) / wk->reaped : 0);
	jw_obj_end(w);
	jw_u64(w, "overlap_spans_dropped", spans_dropped);
	jw_obj_end(w);
}

void uring_free(void)
{
	for (int i = 0; i < MAX_OPS; i++) {
		free(ops[i]);
		ops[i] = NULL;
	}
	free(spans);
	spans = NULL;
}

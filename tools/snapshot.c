// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The one place the reports' figures are read from the BPF maps and globals (snapshot.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "aoftrace.skel.h"
#include "attach.h"
#include "cli.h"
#include "kfeatures.h"
#include "names.h"
#include "snapshot.h"

/* Every per-CPU counter summed, in one lookup each. */
static void read_counters(struct aoftrace_bpf *obj, uint64_t out[CNT_MAX])
{
	int fd = bpf_map__fd(obj->maps.counters), ncpu = libbpf_num_possible_cpus();
	uint64_t vals[ncpu > 0 ? ncpu : 1];

	for (uint32_t idx = 0; idx < CNT_MAX; idx++) {
		out[idx] = 0;
		if (ncpu <= 0 || bpf_map_lookup_elem(fd, &idx, vals))
			continue;
		for (int i = 0; i < ncpu; i++)
			out[idx] += vals[i];
	}
}

static void read_blkstats(struct aoftrace_bpf *obj, struct aof_blkstat out[ISS_MAX][RQ_MAX])
{
	for (uint32_t i = 0; i < ISS_MAX * RQ_MAX; i++)
		if (bpf_map_lookup_elem(bpf_map__fd(obj->maps.blkstats), &i, &out[i / RQ_MAX][i % RQ_MAX]))
			memset(&out[i / RQ_MAX][i % RQ_MAX], 0, sizeof(struct aof_blkstat));
}

/* File system type of the AOF's device, from mountinfo ("major:minor" in field 3). */
static void aof_fstype(uint32_t dev, char *out, size_t len)
{
	char line[1024], mm[32], fstype[64];
	FILE *f;

	snprintf(out, len, "unknown");
	if (!dev)
		return;
	snprintf(mm, sizeof(mm), "%u:%u", dev >> 20, dev & 0xfffff);
	f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *sep = strstr(line, " - "), devfield[32];

		if (sscanf(line, "%*s %*s %31s", devfield) != 1 || strcmp(devfield, mm) || !sep)
			continue;
		if (sscanf(sep, " - %63s", fstype) == 1) {
			snprintf(out, len, "%s", fstype);
			break;
		}
	}
	fclose(f);
}

static void read_uring_workers(struct aoftrace_bpf *obj, const uint64_t *cnt, uint64_t iowq_at_start,
			       struct uring_workers *w)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t vals[ncpu > 0 ? ncpu : 1];
	uint32_t zero = 0;
	bool any = false;

	memset(w, 0, sizeof(*w));
	w->alive_at_start = iowq_at_start;
	w->created = cnt[CNT_IOWQ_CREATED];
	w->exited = cnt[CNT_IOWQ_EXITED];
	w->max_alive = obj->bss->iowq_max_alive > 0 ? obj->bss->iowq_max_alive : 0;
	w->short_writes = cnt[CNT_URING_SHORT];
	w->links = cnt[CNT_URING_LINKS];
	w->fail_links = cnt[CNT_URING_FAIL_LINKS];
	w->reaped = cnt[CNT_REAP_N];
	w->reap_ns = cnt[CNT_REAP_NS];
	if (ncpu > 0 && !bpf_map_lookup_elem(bpf_map__fd(obj->maps.iowq_oncpu), &zero, vals)) {
		w->ncpus = ncpu < 64 ? ncpu : 64;
		for (int c = 0; c < w->ncpus; c++) {
			w->oncpu_ns[c] = vals[c];
			any |= vals[c] != 0;
		}
	}
	if (!any)
		w->ncpus = 0;
}

static void read_dur(struct aoftrace_bpf *obj, const uint64_t *cnt, bool exited, struct dur_counts *c)
{
	for (int k = 0; k < VIO_MAX; k++)
		c->vio[k] = cnt[CNT_VIO_OVERWRITE + k];
	c->overwrite_bytes = cnt[CNT_OVERWRITE_BYTES];
	c->growth_diff_bytes = cnt[CNT_GROWTH_DIFF_BYTES];
	c->sync_retried = cnt[CNT_SYNC_RETRIED];
	c->sync_carried_on = cnt[CNT_SYNC_CARRIED_ON];
	c->max_window_ns = obj->bss->dur_max_window_ns;
	c->exited_after_error = exited && obj->bss->dur_err_pending;
}

static int read_stack(int fd, int id, uint64_t *ips)
{
	int n = 0;

	if (id < 0 || bpf_map_lookup_elem(fd, &id, ips))
		return 0;
	while (n < MAX_FRAMES && ips[n])
		n++;
	return n;
}

static int cmp_offrow(const void *a, const void *b)
{
	const struct offrow *x = a, *y = b;

	return x->ns < y->ns ? 1 : x->ns > y->ns ? -1 : 0;
}

/* All off-CPU rows with their stacks, longest first. */
static int read_offrows(struct aoftrace_bpf *obj, struct snapshot *s)
{
	int fd = bpf_map__fd(obj->maps.offstacks), sfd = bpf_map__fd(obj->maps.stacks);
	struct aof_offkey key, next, *prev = NULL;
	size_t cap = 0;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		struct offrow *r;
		uint64_t ns;

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &ns))
			continue;
		if (s->nrows == cap) {
			struct offrow *p = realloc(s->rows, (cap = cap ? cap * 2 : 256) * sizeof(*p));

			if (!p)
				return -ENOMEM;
			s->rows = p;
		}
		r = &s->rows[s->nrows++];
		r->key = key;
		r->ns = ns;
		r->nframes = read_stack(sfd, key.kstack, r->ips);
		r->nwframes = read_stack(sfd, key.waker_kstack, r->wips);
	}
	if (s->rows)
		qsort(s->rows, s->nrows, sizeof(*s->rows), cmp_offrow);
	return 0;
}

int snapshot_take(struct snapshot *s, struct aoftrace_bpf *obj, const struct agg *a, const struct target *t,
		  uint64_t iowq_at_start, double window_s, bool stacks)
{
	uint64_t late;

	memset(s, 0, sizeof(*s));
	s->pid = t->pid;
	snprintf(s->exe, sizeof(s->exe), "%s", t->exe);
	snprintf(s->comm, sizeof(s->comm), "%s", t->comm);
	s->exited = a->target_exited;
	s->lite = env.lite;
	s->window_s = window_s;
	s->top = env.top;
	features_off(s->features_off, sizeof(s->features_off), false);
	s->n_features_off = features_off_groups(s->features_off_groups, SNAP_MAX_FEATURES_OFF);

	read_counters(obj, s->counters);
	read_blkstats(obj, s->blk);
	s->aof_dev = obj->bss->aof_dev;
	aof_fstype(s->aof_dev, s->fstype, sizeof(s->fstype));
	read_dur(obj, s->counters, a->target_exited, &s->dur);
	read_uring_workers(obj, s->counters, iowq_at_start, &s->uring);
	s->agg = a;
	/* Writes that completed after their flush are in no flush record: counted here, once. */
	s->fs = a->fs;
	late = s->counters[CNT_URING_LATE_BYTES];
	s->fs.uring_late = late;
	s->fs.bytes_written += late;
	s->fs.uring_bytes += late;
	if (!stacks || env.lite)
		return 0;
	if (read_offrows(obj, s))
		return -ENOMEM;
	/* All kernel symbols, read only when there are frames to name: not on the start-up path. */
	if (s->nrows && !(s->ksyms = ksyms_load(NULL)))
		fprintf(stderr, "aoftrace: cannot read /proc/kallsyms: stacks without names\n");
	return 0;
}

void snapshot_free(struct snapshot *s)
{
	free(s->rows);
	ksyms_free((struct ksyms *)s->ksyms);
	s->rows = NULL;
	s->ksyms = NULL;
}

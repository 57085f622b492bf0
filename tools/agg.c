// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <string.h>
#include "agg.h"
#include "durability.h"
#include "uring_stats.h"

void agg_init(struct agg *a, pid_t pid, bool lite)
{
	memset(a, 0, sizeof(*a));
	a->pid = pid;
	a->lite = lite;
}

static void op_add(struct agg *a, int op, int rw, uint64_t wall, const __u64 *comp)
{
	struct opstat *o = &a->ops[op][rw];

	lhist_add(&o->wall, wall);
	for (int c = 0; c < COMP_MAX && !a->lite; c++) {	/* --lite reports no component */
		o->comp[c] += comp[c];
		lhist_add(&o->comp_h[c], comp[c]);
	}
}

void op_total(const struct agg *a, int op, struct opstat *out)
{
	memset(out, 0, sizeof(*out));
	for (int rw = 0; rw < RW_MAX; rw++) {
		lhist_merge(&out->wall, &a->ops[op][rw].wall);
		for (int c = 0; c < COMP_MAX; c++) {
			out->comp[c] += a->ops[op][rw].comp[c];
			lhist_merge(&out->comp_h[c], &a->ops[op][rw].comp_h[c]);
		}
	}
}

uint64_t comp_sum(const struct opstat *o)
{
	uint64_t sum = 0;

	for (int c = 0; c < COMP_MAX; c++)
		sum += o->comp[c];
	return sum;
}

static void children_seen(struct totals *t, uint32_t n)
{
	if (n > t->children_max)
		t->children_max = n;
}

static void totals_flush(struct totals *t, const struct aof_flush_event *f)
{
	lhist_add(&t->flush, f->dur_ns);
	lhist_add(&t->flush_write, f->write_ns);
	t->writes += f->writes;
	t->write_bytes += f->write_bytes;
	t->uring_bytes += f->uring_bytes;
	t->uring_writes += f->uring_writes;
	t->uring_syncs += f->uring_syncs;
	t->write_errors += f->write_errors;
	t->uring_enters += f->uring_enters;
	t->uring_ns += f->uring_ns;
	children_seen(t, f->children);
}

static void fs_flush(struct fs_totals *fs, const struct aof_flush_event *f)
{
	uint64_t grew;

	/* write(2) and io_uring alike: bytes that completed inside the flush */
	fs->bytes_written += f->write_bytes + f->uring_bytes;
	fs->uring_bytes += f->uring_bytes;
	if (!(f->writes || f->uring_writes) || !f->first_known || !f->ino)
		return;
	grew = f->isize_after > f->isize_before ? f->isize_after - f->isize_before : 0;
	fs->size_growth += grew;
	if (f->first_off != f->isize_before)
		fs->offset_mismatches++;
	if (grew != f->write_bytes + f->uring_bytes)
		fs->growth_mismatches++;
}

static void on_flush(struct agg *a, const struct aof_flush_event *f)
{
	int rw = f->children ? RW_ACTIVE : RW_IDLE;

	op_add(a, OP_FLUSH, rw, f->dur_ns, f->comp);
	if (f->writes)
		op_add(a, OP_WRITE, rw, f->write_ns, f->write_comp);
	fs_flush(&a->fs, f);
	dur_flush(f);
	totals_flush(&a->all, f);
	totals_flush(&a->ival, f);
}

static void totals_sync(struct totals *t, const struct aof_sync_event *s, bool aof)
{
	if (aof) {
		lhist_add(&t->aof_sync, s->dur_ns);
		t->aof_sync_calls[s->kind]++;
		t->aof_sync_errors += s->ret < 0;
	}
	lhist_add(&t->sync[s->role], s->dur_ns);
	t->sync_calls[s->role][s->kind]++;
	if (s->ret < 0)
		t->sync_errors[s->role]++;
	children_seen(t, s->children);
}

/*
 * Valkey and Redis 7+ name them appendonly.aof.N.incr.aof, .base.aof/.base.rdb, appendonly.aof.manifest, and
 * temp-rewriteaof-bg-PID.aof / temp-appendonly.aof.manifest while a rewrite runs (aof.c); aofwriter the same.
 */
int sync_file(const struct aof_sync_event *s)
{
	char name[SYNC_NAME_LEN + 1];

	if (s->file == FILE_AOF || s->file == FILE_DIR)
		return s->file;
	memcpy(name, s->name, SYNC_NAME_LEN);
	name[SYNC_NAME_LEN] = 0;
	if (strstr(name, "manifest"))
		return FILE_MANIFEST;
	if (s->role == ROLE_CHILD || strstr(name, "temp-") || strstr(name, "rewrite") || strstr(name, ".base."))
		return FILE_REWRITE;
	return FILE_OTHER;
}

static void by_file(struct agg *a, const struct aof_sync_event *s, int file)
{
	struct filesync *fs = &a->by_file[file];

	lhist_add(&fs->lat, s->dur_ns);
	fs->in_flush += s->in_flush;
	fs->size_changed += s->size_changed;
	fs->commits += s->commit;
	fs->errors += s->ret < 0;
	fs->block_rqs += s->block_rqs;
	fs->block_bytes += s->block_bytes;
	fs->flush_rqs += s->flush_rqs;
}

static void on_sync(struct agg *a, const struct aof_sync_event *s)
{
	bool aof;
	int file;

	if (s->role >= ROLE_MAX || s->kind >= SYNC_MAX)
		return;
	file = sync_file(s);
	by_file(a, s, file);
	/* the headline: the main thread's syncs of the AOF, the ones a client waits for (not the rewrite's) */
	aof = s->role == ROLE_MAIN && file == FILE_AOF;
	if (aof) {
		op_add(a, OP_SYNC, s->children ? RW_ACTIVE : RW_IDLE, s->dur_ns, s->comp);
		a->fs.syncs_with_commit += s->commit;
	}
	totals_sync(&a->all, s, aof);
	totals_sync(&a->ival, s, aof);
}

static void totals_proc(struct totals *t, const struct aof_proc_event *p)
{
	if (p->type == EV_FORK) {
		t->forks++;
		/* alive after the fork: a child that lives less than an interval still shows in it */
		children_seen(t, p->children);
	} else {
		t->child_exits++;
	}
}

static void on_proc(struct agg *a, const struct aof_proc_event *p)
{
	if (p->type == EV_EXIT && p->pid == (uint32_t)a->pid) {
		a->target_exited = true;
		return;
	}
	a->children = p->children;
	totals_proc(&a->all, p);
	totals_proc(&a->ival, p);
}

/* The smallest size of each record type: a shorter one is from another build and is skipped. */
static size_t min_len(uint32_t type)
{
	switch (type) {
	case EV_FLUSH: return sizeof(struct aof_flush_event);
	case EV_SYNC: return sizeof(struct aof_sync_event);
	case EV_FORK: case EV_EXIT: return sizeof(struct aof_proc_event);
	case EV_UREQ: return sizeof(struct aof_ureq_event);
	case EV_VIOLATION: return sizeof(struct aof_violation_event);
	default: return SIZE_MAX;
	}
}

void agg_event(struct agg *a, const void *data, size_t len)
{
	uint32_t type;

	if (len < sizeof(type))
		return;
	memcpy(&type, data, sizeof(type));
	if (len < min_len(type))
		return;
	switch (type) {
	case EV_FLUSH:
		on_flush(a, data);
		break;
	case EV_SYNC:
		on_sync(a, data);
		break;
	case EV_FORK:
	case EV_EXIT:
		on_proc(a, data);
		break;
	case EV_UREQ:
		uring_add(data);
		break;
	case EV_VIOLATION:
		dur_violation(data, a->start_ns);
		break;
	}
}

void agg_interval_reset(struct agg *a)
{
	memset(&a->ival, 0, sizeof(a->ival));
	a->ival.children_max = a->children;	/* still alive when the interval starts */
}

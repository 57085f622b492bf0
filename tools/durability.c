// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Durability: the BPF side checks, at every AOF write, sync and reply of the target, the invariants
 * appendfsync always promises (docs/durability.md) and counts violations, sending the first few of
 * each kind. Here they are printed as one-line warnings as soon as they arrive, and summed up.
 *
 * A reply that leaves with AOF bytes unsynced breaks "always" but is how everysec and no work, and
 * the kernel side cannot know the policy: it is inferred from the flushes (with always, every flush
 * that writes also syncs), and replies count only under always.
 */
#include <string.h>
#include "durability.h"
#include "names.h"

#define POLICY_MIN_FLUSHES 5	/* writing flushes seen before the policy is called */

static struct {
	uint64_t wflushes, sflushes;	/* flushes that wrote; ... and synced inside the flush */
	struct aof_violation_event ex[VIO_MAX][VIO_EXAMPLES];
	int nex[VIO_MAX];
	int warned[VIO_MAX];		/* examples printed so far */
	uint64_t start_ns;
} d;

/* 1: appendfsync always, 0: not always, -1: not known yet. */
static int policy_always(void)
{
	if (d.wflushes < POLICY_MIN_FLUSHES)
		return -1;
	return d.sflushes * 2 >= d.wflushes;
}

/* "tid 12 (valkey-server), inode 131, 720 bytes at offset 8528 below the end 9248" */
static void describe(FILE *out, const struct aof_violation_event *e)
{
	fprintf(out, "tid %u (%s), inode %llu", e->tid, e->comm, (unsigned long long)e->ino);
	switch (e->kind) {
	case VIO_OVERWRITE:
		fprintf(out, ", %lld bytes at offset %llu below the end %llu\n", (long long)e->bytes,
			(unsigned long long)e->off, (unsigned long long)e->isize);
		break;
	case VIO_GROWTH:
		fprintf(out, ", size %llu -> %llu, %+lld bytes against what was written\n",
			(unsigned long long)e->off, (unsigned long long)e->isize, (long long)e->bytes);
		break;
	case VIO_REPLY_EARLY:
		fprintf(out, ", %llu bytes unsynced for %.0f us\n", (unsigned long long)e->off, e->isize / 1e3);
		break;
	case VIO_SYNC_ERROR:
		fprintf(out, ", %s (%lld)\n", e->bytes < 0 ? strerror(-e->bytes) : "short write",
			(long long)e->bytes);
		break;
	default:
		fprintf(out, ", offset %llu\n", (unsigned long long)e->off);
	}
}

static double rel_s(const struct aof_violation_event *e)
{
	return e->ts_ns > d.start_ns ? (e->ts_ns - d.start_ns) / 1e9 : 0;
}

static void warn(const struct aof_violation_event *e)
{
	fprintf(stderr, "aoftrace: DURABILITY at %.3f s: %s: ", rel_s(e), vio_labels[e->kind]);
	describe(stderr, e);
}

/* Print what is due: everything but early replies at once, those once the policy is known. */
static void warn_due(void)
{
	int always = policy_always();

	for (int k = 0; k < VIO_MAX; k++) {
		if (k == VIO_REPLY_EARLY && always != 1)
			continue;
		for (; d.warned[k] < d.nex[k]; d.warned[k]++)
			warn(&d.ex[k][d.warned[k]]);
	}
}

void dur_flush(const struct aof_flush_event *f)
{
	if (!f->write_bytes && !f->uring_bytes)
		return;
	d.wflushes++;
	if (f->syncs || f->uring_syncs)
		d.sflushes++;
	if (d.wflushes == POLICY_MIN_FLUSHES)
		warn_due();
}

void dur_violation(const struct aof_violation_event *e, uint64_t start_ns)
{
	if (e->kind >= VIO_MAX || d.nex[e->kind] >= VIO_EXAMPLES)
		return;
	if (!d.start_ns)
		d.start_ns = start_ns;
	d.ex[e->kind][d.nex[e->kind]++] = *e;
	warn_due();
}

static uint64_t counted(const struct dur_counts *c, int k)
{
	return k == VIO_REPLY_EARLY && policy_always() != 1 ? 0 : c->vio[k];
}

bool dur_ok(const struct dur_counts *c)
{
	for (int k = 0; k < VIO_MAX; k++)
		if (counted(c, k))
			return false;
	return true;
}

static const char *policy_name(void)
{
	int always = policy_always();

	return always < 0 ? "unknown" : always ? "always" : "not always";
}

void dur_print(FILE *out, const struct dur_counts *c)
{
	fprintf(out, "\nDurability (appendfsync %s: %llu of %llu writing flushes synced): %s\n", policy_name(),
		(unsigned long long)d.sflushes, (unsigned long long)d.wflushes, dur_ok(c) ? "OK" : "VIOLATED");
	for (int k = 0; k < VIO_MAX; k++) {
		if (!counted(c, k))
			continue;
		fprintf(out, "  %-22s %8llu  %s", vio_names[k], (unsigned long long)c->vio[k], vio_labels[k]);
		if (k == VIO_OVERWRITE)
			fprintf(out, ", %llu bytes", (unsigned long long)c->overwrite_bytes);
		if (k == VIO_GROWTH)
			fprintf(out, ", %llu bytes off", (unsigned long long)c->growth_diff_bytes);
		if (k == VIO_REPLY_EARLY)
			fprintf(out, ", longest window %.0f us", c->max_window_ns / 1e3);
		if (k == VIO_SYNC_ERROR)
			fprintf(out, "; then retried %llu, carried on %llu%s", (unsigned long long)c->sync_retried,
				(unsigned long long)c->sync_carried_on, c->exited_after_error ? ", exited" : "");
		fputc('\n', out);
		for (int i = 0; i < d.nex[k] && i < 3; i++) {
			fprintf(out, "    at %.3f s: ", rel_s(&d.ex[k][i]));
			describe(out, &d.ex[k][i]);
		}
	}
	if (policy_always() == 0 && c->vio[VIO_REPLY_EARLY])
		fprintf(out, "  (%llu replies left with AOF bytes unsynced: expected with everysec or no)\n",
			(unsigned long long)c->vio[VIO_REPLY_EARLY]);
}

void dur_json(struct jw *w, const struct dur_counts *c)
{
	jw_obj(w, "durability");
	jw_bool(w, "ok", dur_ok(c));
	jw_str(w, "appendfsync", policy_name());
	jw_u64(w, "writing_flushes", d.wflushes);
	jw_u64(w, "syncing_flushes", d.sflushes);
	jw_u64(w, "overwrites", counted(c, VIO_OVERWRITE));
	jw_u64(w, "overwrite_bytes", c->overwrite_bytes);
	jw_u64(w, "growth_mismatches", counted(c, VIO_GROWTH));
	jw_u64(w, "growth_mismatch_bytes", c->growth_diff_bytes);
	jw_u64(w, "replies_before_sync", counted(c, VIO_REPLY_EARLY));
	jw_u64(w, "replies_unsynced_any_policy", c->vio[VIO_REPLY_EARLY]);
	jw_dbl(w, "max_unsynced_window_us", c->max_window_ns / 1e3);
	jw_u64(w, "sync_errors", counted(c, VIO_SYNC_ERROR));
	jw_u64(w, "sync_errors_retried", c->sync_retried);
	jw_u64(w, "sync_errors_carried_on", c->sync_carried_on);
	jw_bool(w, "exited_after_sync_error", c->exited_after_error);
	jw_u64(w, "writes_to_unlinked", counted(c, VIO_UNLINKED));
	jw_arr(w, "examples");
	for (int k = 0; k < VIO_MAX; k++) {
		for (int i = 0; i < d.nex[k]; i++) {
			const struct aof_violation_event *e = &d.ex[k][i];

			jw_obj(w, NULL);
			jw_str(w, "kind", vio_names[k]);
			jw_dbl(w, "t_s", rel_s(e));
			jw_u64(w, "tid", e->tid);
			jw_str(w, "comm", e->comm);
			jw_u64(w, "inode", e->ino);
			jw_u64(w, "offset", e->off);
			jw_u64(w, "size", e->isize);
			jw_i64(w, "bytes", e->bytes);
			jw_obj_end(w);
		}
	}
	jw_arr_end(w);
	jw_obj_end(w);
}

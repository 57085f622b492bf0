// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The file-system side: the AOF file's bytes and growth, journal/log commits, block requests on its device. */
#include "names.h"
#include "report.h"

static void print_journal(FILE *f, const struct snapshot *s)
{
	const uint64_t *cnt = s->counters;
	uint64_t n = cnt[CNT_JBD2_COMMITS], x = cnt[CNT_XLOG_WRITES];

	/* ext4's forced commits are seen at the jbd2 wake-up (sched_waking): not loaded by --lite */
	if (s->lite)
		fprintf(f, "journal/log commits on it: %llu\n", (unsigned long long)cnt[CNT_JOURNAL_COMMITS]);
	else
		fprintf(f, "journal/log commits on it: %llu; main-thread fdatasyncs that forced one: %llu\n",
			(unsigned long long)cnt[CNT_JOURNAL_COMMITS], (unsigned long long)s->fs.syncs_with_commit);
	if (n)
		fprintf(f, "jbd2 commits: %llu, on average %.1f us: start %.1f, locked (handles) %.1f, "
			"flushing (ordered data) %.1f, logging (journal + commit block) %.1f\n",
			(unsigned long long)n,
			mean_us(cnt[CNT_JBD2_START_NS] + cnt[CNT_JBD2_LOCKED_NS] + cnt[CNT_JBD2_FLUSHING_NS] +
				cnt[CNT_JBD2_LOGGING_NS], n),
			mean_us(cnt[CNT_JBD2_START_NS], n), mean_us(cnt[CNT_JBD2_LOCKED_NS], n),
			mean_us(cnt[CNT_JBD2_FLUSHING_NS], n), mean_us(cnt[CNT_JBD2_LOGGING_NS], n));
	if (x)
		fprintf(f, "XFS iclog writes: %llu, %.1f us on average from submission to completion\n",
			(unsigned long long)x, mean_us(cnt[CNT_XLOG_WRITE_NS], x));
}

static void print_block(FILE *f, const struct snapshot *s)
{
	bool any = false;

	for (int i = 0; i < ISS_MAX; i++)
		for (int k = 0; k < RQ_MAX; k++) {
			const struct aof_blkstat *b = &s->blk[i][k];

			if (!b->count)
				continue;
			if (!any)
				fprintf(f, "block requests on it:  %-8s %-10s %8s %10s %9s %9s\n", "issuer", "kind",
					"count", "KB", "avg_us", "max_us");
			any = true;
			fprintf(f, "                       %-8s %-10s %8llu %10.1f %9.1f %9.1f\n", issuer_names[i],
				rqkind_names[k], (unsigned long long)b->count, b->bytes / 1024.0,
				us(b->lat_ns) / b->count, us(b->max_ns));
		}
}

void fs_print(FILE *f, const struct snapshot *s)
{
	const struct fs_totals *fs = &s->fs;

	fprintf(f, "\nAOF file: %s on device %u:%u; %llu bytes written (%llu through io_uring), i_size grew %llu "
		"bytes; %llu flushes started below end of file, %llu grew by other than they wrote\n", s->fstype,
		s->aof_dev >> 20, s->aof_dev & 0xfffff, (unsigned long long)fs->bytes_written,
		(unsigned long long)fs->uring_bytes, (unsigned long long)fs->size_growth,
		(unsigned long long)fs->offset_mismatches, (unsigned long long)fs->growth_mismatches);
	if (fs->uring_late)
		fprintf(f, "io_uring writes submitted in a flush completed after it returned: %llu bytes\n",
			(unsigned long long)fs->uring_late);
	print_journal(f, s);
	print_block(f, s);
}

static void json_journal(struct jw *w, const uint64_t *cnt)
{
	jw_obj(w, "jbd2");
	jw_u64(w, "commits", cnt[CNT_JBD2_COMMITS]);
	jw_dbl(w, "start_us", us(cnt[CNT_JBD2_START_NS]));
	jw_dbl(w, "locked_us", us(cnt[CNT_JBD2_LOCKED_NS]));
	jw_dbl(w, "flushing_us", us(cnt[CNT_JBD2_FLUSHING_NS]));
	jw_dbl(w, "logging_us", us(cnt[CNT_JBD2_LOGGING_NS]));
	jw_obj_end(w);
	jw_obj(w, "xfs_log");
	jw_u64(w, "iclog_writes", cnt[CNT_XLOG_WRITES]);
	jw_dbl(w, "iclog_write_us", us(cnt[CNT_XLOG_WRITE_NS]));
	jw_obj_end(w);
}

static void json_block(struct jw *w, const struct snapshot *s)
{
	jw_obj(w, "block");
	for (int i = 0; i < ISS_MAX; i++) {
		jw_obj(w, issuer_names[i]);
		for (int k = 0; k < RQ_MAX; k++) {
			const struct aof_blkstat *b = &s->blk[i][k];

			jw_obj(w, rqkind_names[k]);
			jw_u64(w, "count", b->count);
			jw_u64(w, "bytes", b->bytes);
			jw_dbl(w, "avg_us", b->count ? us(b->lat_ns) / b->count : 0);
			jw_dbl(w, "max_us", us(b->max_ns));
			jw_obj_end(w);
		}
		jw_obj_end(w);
	}
	jw_obj_end(w);
}

void fs_json(struct jw *w, const struct snapshot *s)
{
	const struct fs_totals *fs = &s->fs;

	jw_obj(w, "fs");
	jw_str(w, "type", s->fstype);
	jw_u64(w, "dev_major", s->aof_dev >> 20);
	jw_u64(w, "dev_minor", s->aof_dev & 0xfffff);
	jw_u64(w, "bytes_written", fs->bytes_written);
	jw_u64(w, "uring_bytes", fs->uring_bytes);
	jw_u64(w, "uring_bytes_after_flush", fs->uring_late);
	jw_u64(w, "size_growth_bytes", fs->size_growth);
	jw_u64(w, "journal_commits", s->counters[CNT_JOURNAL_COMMITS]);
	if (!s->lite)	/* the phases come from programs --lite does not load */
		json_journal(w, s->counters);
	jw_u64(w, "offset_mismatches", fs->offset_mismatches);
	jw_u64(w, "growth_mismatches", fs->growth_mismatches);
	jw_obj_end(w);
	if (!s->lite)
		json_block(w, s);
}

// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Unit test of the off-CPU classifier: the table (tools/offcpu.h), its translation into kernel text
 * ranges (tools/offcpu.c) and the search the BPF program runs (bpf/classify.h), on stacks recorded
 * on Linux 6.18 with bpftrace while redis-server ran appendfsync always on XFS and ext4.
 * Exits T_EXIT_FAIL if any check fails (tests/helpers.h).
 */
#include <linux/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "offcpu.h"
#include "helpers.h"

#include "classify.h"

/* A fake kallsyms: every function named in the stacks below, plus its neighbours. */
static const char *funcs[] = {
	"__schedule", "schedule", "schedule_timeout", "io_schedule", "io_schedule_timeout",
	"wait_for_completion", "wait_for_completion_io_timeout", "__flush_workqueue",
	"xlog_cil_push_now.isra.0", "xlog_cil_force_seq", "xfs_log_force_seq", "xlog_wait_on_iclog",
	"xfs_file_fsync", "do_fsync", "__x64_sys_fdatasync", "do_syscall_64",
	"entry_SYSCALL_64_after_hwframe", "folio_wait_bit", "folio_wait_writeback",
	"__filemap_fdatawait_range", "file_write_and_wait_range", "jbd2_log_wait_commit",
	"ext4_sync_file", "submit_bio_wait", "blkdev_issue_flush", "jbd2_cleanup_journal_tail",
	"jbd2_log_do_checkpoint", "__jbd2_log_wait_for_space", "add_transaction_credits",
	"start_this_handle", "jbd2__journal_start", "ext4_da_write_end", "generic_perform_write",
	"ext4_buffered_write_iter", "vfs_write", "ksys_write", "balance_dirty_pages",
	"balance_dirty_pages_ratelimited_flags", "rwsem_down_write_slowpath", "down_write",
	"schedule_hrtimeout_range_clock", "do_epoll_wait", "__x64_sys_epoll_wait",
	"exit_to_user_mode_loop", "xfs_file_buffered_write", "xfs_ilock",
};

#define BASE 0xffffffff81000000ULL
#define STEP 0x400ULL

static unsigned long long addr_of(const char *name)
{
	for (size_t i = 0; i < T_ARRAY_SIZE(funcs); i++) {
		size_t len = strcspn(funcs[i], ".");

		if (!strcmp(funcs[i], name) || (strlen(name) == len && !strncmp(funcs[i], name, len)))
			return BASE + i * STEP + 0x2a;	/* a return address inside the function */
	}
	fprintf(stderr, "test bug: %s is not in funcs[]\n", name);
	exit(T_EXIT_FAIL);
}

struct tcase {
	const char *what;
	enum aof_comp want;
	const char *frames[20];	/* innermost first, as the kernel records them */
};

static const struct tcase cases[] = {
	{ "XFS fdatasync waits for the iclog write", COMP_JOURNAL,
	  { "__schedule", "schedule", "xlog_wait_on_iclog", "xfs_log_force_seq", "xfs_file_fsync",
	    "do_fsync", "__x64_sys_fdatasync", "do_syscall_64", "entry_SYSCALL_64_after_hwframe" } },
	{ "XFS fdatasync pushes the CIL (clone name .isra.0)", COMP_JOURNAL,
	  { "__schedule", "schedule", "schedule_timeout", "wait_for_completion", "__flush_workqueue",
	    "xlog_cil_push_now", "xlog_cil_force_seq", "xfs_log_force_seq", "xfs_file_fsync", "do_fsync",
	    "__x64_sys_fdatasync", "do_syscall_64" } },
	{ "XFS fdatasync waits for its data writeback", COMP_BLOCK,
	  { "__schedule", "schedule", "io_schedule", "folio_wait_bit", "folio_wait_writeback",
	    "__filemap_fdatawait_range", "file_write_and_wait_range", "xfs_file_fsync", "do_fsync",
	    "__x64_sys_fdatasync", "do_syscall_64" } },
	{ "ext4 fdatasync waits for the jbd2 commit", COMP_JOURNAL,
	  { "__schedule", "schedule", "jbd2_log_wait_commit", "ext4_sync_file", "do_fsync",
	    "__x64_sys_fdatasync", "do_syscall_64", "entry_SYSCALL_64_after_hwframe" } },
	{ "ext4 write checkpoints the journal, flushing the device", COMP_JOURNAL,
	  { "__schedule", "schedule", "schedule_timeout", "io_schedule_timeout",
	    "wait_for_completion_io_timeout", "submit_bio_wait", "blkdev_issue_flush",
	    "jbd2_cleanup_journal_tail", "jbd2_log_do_checkpoint", "__jbd2_log_wait_for_space",
	    "add_transaction_credits", "start_this_handle", "jbd2__journal_start", "ext4_da_write_end",
	    "generic_perform_write", "ext4_buffered_write_iter", "vfs_write", "ksys_write" } },
	{ "a buffered write throttled by balance_dirty_pages", COMP_THROTTLE,
	  { "__schedule", "schedule", "schedule_timeout", "io_schedule_timeout", "balance_dirty_pages",
	    "balance_dirty_pages_ratelimited_flags", "generic_perform_write", "ext4_buffered_write_iter",
	    "vfs_write", "ksys_write", "do_syscall_64" } },
	{ "a write sleeping on an rwsem (no lock tracepoint seen)", COMP_OTHER_LOCK,
	  { "__schedule", "schedule", "rwsem_down_write_slowpath", "down_write", "xfs_ilock",
	    "xfs_file_buffered_write", "vfs_write", "ksys_write", "do_syscall_64" } },
	{ "the event loop idle in epoll_wait", COMP_OTHER_OFFCPU,
	  { "__schedule", "schedule", "schedule_hrtimeout_range_clock", "do_epoll_wait",
	    "__x64_sys_epoll_wait", "do_syscall_64", "entry_SYSCALL_64_after_hwframe" } },
	{ "preempted on the way back to user space", COMP_OTHER_OFFCPU,
	  { "__schedule", "schedule", "exit_to_user_mode_loop", "do_syscall_64" } },
};

static const char *comp_name(int c)
{
	static const char *names[COMP_MAX] = {
		"oncpu", "runqueue", "block", "journal", "inode_lock", "other_lock", "throttle",
		"reclaim", "iowq_queue", "other_offcpu",
	};

	return c >= 0 && c < COMP_MAX ? names[c] : "?";
}

int main(void)
{
	char path[] = "/tmp/test_classify.XXXXXX";
	struct aof_krange r[MAX_KRANGES], fr[MAX_KRANGES];
	int fd, n;
	struct ksyms *ks, *fks;
	FILE *f;

	fd = mkstemp(path);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		perror("mkstemp");
		return T_EXIT_FAIL;
	}
	for (size_t i = 0; i < T_ARRAY_SIZE(funcs); i++)
		fprintf(f, "%llx %c %s\n", BASE + i * STEP, i % 2 ? 't' : 'T', funcs[i]);
	fprintf(f, "%llx T _etext\n", BASE + T_ARRAY_SIZE(funcs) * STEP);
	fclose(f);
	ks = ksyms_load(path);
	fks = ksyms_load_filter(path, offcpu_wanted);
	unlink(path);
	if (!ks || !fks) {
		fprintf(stderr, "ksyms_load failed\n");
		return T_EXIT_FAIL;
	}
	n = build_kranges(ks, r, MAX_KRANGES);

	/* aoftrace reads only the table's names (and every address): the same ranges must come out. */
	CHECK(build_kranges(fks, fr, MAX_KRANGES) == n && !memcmp(r, fr, sizeof(r)),
	      "ranges from the filtered symbols differ");
	ksyms_free(fks);

	/* Every range is sorted, non-empty and ends at the next symbol. */
	for (int i = 0; i < n; i++)
		CHECK(r[i].end - r[i].start == STEP && !(i && r[i].start <= r[i - 1].start), "range %d: %llx-%llx", i,
		      (unsigned long long)r[i].start, (unsigned long long)r[i].end);
	/* An address between two table functions' ranges, or outside any, classifies as nothing. */
	CHECK(krange_comp(r, BASE - 1) == -1 && krange_comp(r, addr_of("do_fsync")) == -1,
	      "an address outside the table matched");
	/* The branch-free search agrees with a linear scan at every range's edges and between them. */
	for (int i = 0; i < n; i++) {
		__u64 probe[] = { r[i].start - 1, r[i].start, r[i].start + 1, r[i].end - 1, r[i].end };

		for (size_t j = 0; j < T_ARRAY_SIZE(probe); j++) {
			int want = -1;

			for (int k = 0; k < n; k++)
				if (r[k].start <= probe[j] && probe[j] < r[k].end)
					want = r[k].comp;
			CHECK(krange_comp(r, probe[j]) == want, "%llx: search %d, scan %d", (unsigned long long)probe[j],
			      krange_comp(r, probe[j]), want);
		}
	}
	CHECK(r[n].start == ~0ULL && r[MAX_KRANGES - 1].start == ~0ULL, "the table is not padded");
	for (size_t i = 0; i < T_ARRAY_SIZE(cases); i++) {
		__u64 ips[MAX_FRAMES] = {};
		__u32 nf = 0, got;

		for (; nf < 20 && cases[i].frames[nf]; nf++)
			ips[nf] = addr_of(cases[i].frames[nf]);
		got = classify_stack(r, ips, nf);
		printf("%s %-60s %s\n", got == cases[i].want ? "ok  " : "FAIL", cases[i].what, comp_name(got));
		CHECK(got == cases[i].want, "%s: want %s, got %s", cases[i].what, comp_name(cases[i].want),
		      comp_name(got));
	}
	ksyms_free(ks);
	printf("test_classify: %d ranges, %zu stacks\n", n, T_ARRAY_SIZE(cases));
	return t_result("test_classify");
}

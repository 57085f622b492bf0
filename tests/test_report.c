// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The reports, rendered from snapshots built here: no root, no kernel, no libbpf (the binary does not
 * link it). Records go through the real aggregation (agg_event), as the ring buffer hands them over.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include "helpers.h"
#include "report.h"
#include "uring_stats.h"

/* What f() wrote, as a string to free. */
#define CAPTURE(out, call)						\
	do {								\
		size_t _len;						\
		FILE *f = open_memstream(&(out), &_len);		\
		call;							\
		fclose(f);						\
	} while (0)

static struct agg agg;

static void flush_rec(uint32_t writes, uint64_t write_bytes, uint32_t uring_writes, uint64_t uring_bytes,
		      uint32_t children)
{
	struct aof_flush_event e = {
		.type = EV_FLUSH, .tid = 100, .dur_ns = 500000, .write_ns = 20000, .writes = writes,
		.write_bytes = write_bytes, .uring_writes = uring_writes, .uring_bytes = uring_bytes,
		.uring_enters = uring_writes ? 1 : 0, .uring_ns = uring_writes ? 30000 : 0, .syncs = 1,
		.children = children,
	};

	e.comp[COMP_ONCPU] = 100000;
	e.comp[COMP_JOURNAL] = 400000;
	e.write_comp[COMP_ONCPU] = 20000;
	agg_event(&agg, &e, sizeof(e));
}

static void proc_rec(uint32_t type, uint32_t pid, uint32_t children)
{
	struct aof_proc_event e = { .type = type, .pid = pid, .ppid = 100, .children = children };

	agg_event(&agg, &e, sizeof(e));
}

static void sync_rec(uint8_t role, uint8_t file, const char *name, uint8_t size_changed)
{
	struct aof_sync_event e = {
		.type = EV_SYNC, .tid = role == ROLE_MAIN ? 100 : 101, .pid = 100, .role = role, .dur_ns = 400000,
		.file = file, .size_changed = size_changed, .commit = size_changed, .block_rqs = 2, .block_bytes = 8192,
	};

	snprintf(e.name, sizeof(e.name), "%s", name);
	agg_event(&agg, &e, sizeof(e));
}

static void snap_init(struct snapshot *s, bool lite)
{
	memset(s, 0, sizeof(*s));
	s->pid = 100;
	strcpy(s->comm, "valkey-server");
	strcpy(s->exe, "/usr/bin/valkey-server");
	strcpy(s->fstype, "xfs");
	s->lite = lite;
	s->window_s = 1.0;
	s->top = 5;
	s->agg = &agg;
	s->fs = agg.fs;
}

/* The folded stacks name every span: an io-wq worker's rows read "iowq;request;...", never "(null)". */
static void test_folded_spans(void)
{
	struct offrow rows[SPAN_MAX] = {};
	struct snapshot s;
	char *out;

	agg_init(&agg, 100, false);
	snap_init(&s, false);
	for (int i = 0; i < SPAN_MAX; i++) {
		rows[i].key = (struct aof_offkey){ .kstack = -1, .waker_kstack = -1, .comp = COMP_BLOCK,
						   .role = i == SPAN_IOWQ ? ROLE_IOWQ : ROLE_MAIN, .span = i };
		rows[i].ns = 5000000 - i;
		strcpy(rows[i].key.waker_comm, "kworker/0:1H");
	}
	s.rows = rows;
	s.nrows = SPAN_MAX;
	CAPTURE(out, CHECK(!offcpu_write_folded(f, &s), "folded written"));
	CHECK(strstr(out, "iowq;request;block;--;kworker/0:1H 4999\n"), "io-wq row folded: %s", out);
	CHECK(strstr(out, "main;fdatasync;block;"), "fdatasync row folded: %s", out);
	CHECK(!strstr(out, "(null)") && !strstr(out, ";?;"), "every span named: %s", out);
	free(out);
	CAPTURE(out, offcpu_print_top(f, &s));
	CHECK(strstr(out, "block I/O, in an io_uring request on an io-wq worker, iowq thread"), "top list: %s", out);
	free(out);
}

/* The text and the JSON of one snapshot say the same: both read its counters, once. */
static void test_text_and_json_agree(void)
{
	struct snapshot s;
	char *text, *json, want[128];

	agg_init(&agg, 100, false);
	for (int i = 0; i < 3; i++)
		flush_rec(1, 100, 0, 0, 0);
	snap_init(&s, false);
	s.counters[CNT_FLUSH_CALLS] = 3843;
	s.counters[CNT_FLUSH_EMPTY] = 91;
	CAPTURE(text, report_print(f, &s));
	CAPTURE(json, CHECK(!report_json(f, &s), "json written"));
	snprintf(want, sizeof(want), "flushAppendOnlyFile() that wrote or synced: 3 (plus 91 empty calls of 3843)");
	CHECK(strstr(text, want), "text: %s", text);
	CHECK(strstr(json, "\"calls\": 3843") && strstr(json, "\"empty_calls\": 91"), "json: %.400s", json);
	CHECK(strstr(text, "closure (components / wall): flush 100.00%, write 100.00%\n"), "closure: %s", text);
	free(text);
	free(json);
}

/* A writer whose flushes write through io_uring gets its io_uring figures, not "write() ... 0 calls". */
static void test_uring_writer(void)
{
	struct snapshot s;
	char *text, *json;

	agg_init(&agg, 100, false);
	for (int i = 0; i < 4; i++)
		flush_rec(0, 0, 2, 4096, 0);
	snap_init(&s, false);
	CAPTURE(text, report_print(f, &s));
	CHECK(!strstr(text, "write() inside those flushes"), "no write(2) line for an io_uring writer: %s", text);
	CHECK(strstr(text, "io_uring inside those flushes: 8 AOF writes completed (16384 bytes)"), "%s", text);
	CHECK(strstr(text, "closure (components / wall): flush 100.00%\n"), "closure without write: %s", text);
	CAPTURE(json, report_json(f, &s));
	CHECK(strstr(json, "\"uring_writes\": 8") && strstr(json, "\"uring_write_bytes\": 16384"), "%.600s", json);
	free(text);
	free(json);
}

/* --lite: no components anywhere, and the text says so. */
static void test_lite(void)
{
	struct snapshot s;
	char *text, *json;

	agg_init(&agg, 100, true);
	flush_rec(1, 100, 0, 0, 0);
	snap_init(&s, true);
	CAPTURE(text, report_print(f, &s));
	CAPTURE(json, report_json(f, &s));
	CHECK(strstr(text, "(--lite: latency, counts"), "%s", text);
	CHECK(!strstr(text, "journal/log commit "), "no component rows in lite: %s", text);
	CHECK(strstr(json, "\"mode\": \"lite\"") && !strstr(json, "components_us") && !strstr(json, "\"block\""),
	      "lite json: %.300s", json);
	free(text);
	free(json);
}

/* -i: a rewrite child that lived inside an interval shows in its CHILD column, then is gone. */
static void test_interval_children(void)
{
	char *out, *line2;

	agg_init(&agg, 100, false);
	flush_rec(1, 100, 0, 0, 0);
	proc_rec(EV_FORK, 200, 1);
	flush_rec(1, 100, 0, 0, 1);
	proc_rec(EV_EXIT, 200, 0);
	CAPTURE(out, report_interval(f, &agg); report_interval(f, &agg));
	line2 = strchr(out, '\n');
	CHECK(line2 && !strncmp(line2 - 2, " 1", 2), "a child alive during the interval: %s", out);
	CHECK(line2 && !strcmp(line2 + strlen(line2) - 3, " 0\n"), "none in the next: %s", out);
	CHECK(agg.all.forks == 1 && agg.all.child_exits == 1 && !agg.target_exited, "fork and exit counted");
	proc_rec(EV_EXIT, 100, 0);
	CHECK(agg.target_exited, "the target's exit");
	free(out);
}

/* The headline fdatasync is the main thread's of the AOF: a rewrite's manifest, directory and temp-file syncs apart. */
static void test_syncs_by_file(void)
{
	struct snapshot s;
	char *text, *json, *by_file;

	agg_init(&agg, 100, false);
	for (int i = 0; i < 5; i++)
		sync_rec(ROLE_MAIN, FILE_AOF, "appendonly.aof.1.incr.aof", i != 4);
	sync_rec(ROLE_MAIN, FILE_OTHER, "temp-appendonly.aof.manifest", 1);
	sync_rec(ROLE_MAIN, FILE_DIR, "appendonlydir", 0);
	sync_rec(ROLE_CHILD, FILE_OTHER, "temp-rewriteaof-bg-4242.aof", 1);
	sync_rec(ROLE_MAIN, FILE_OTHER, "appendonly.aof.1.base.rdb", 1);
	sync_rec(ROLE_MAIN, FILE_OTHER, "dump.rdb", 1);
	CHECK(agg.by_file[FILE_AOF].lat.count == 5 && agg.by_file[FILE_AOF].size_changed == 4, "aof");
	CHECK(agg.by_file[FILE_MANIFEST].lat.count == 1 && agg.by_file[FILE_DIR].lat.count == 1, "manifest, dir");
	CHECK(agg.by_file[FILE_REWRITE].lat.count == 2 && agg.by_file[FILE_OTHER].lat.count == 1, "rewrite, other");
	CHECK(agg.ops[OP_SYNC][RW_IDLE].wall.count == 5 && agg.all.aof_sync.count == 5, "headline: the AOF's own");
	CHECK(agg.all.sync[ROLE_MAIN].count == 9, "sync_by_role: every file");
	snap_init(&s, false);
	CAPTURE(text, report_print(f, &s));
	CAPTURE(json, report_json(f, &s));
	CHECK(strstr(text, "syncs by file (all threads)") && strstr(text, "the manifest"), "%s", text);
	CHECK(strstr(json, "\"other_files_syncs\": 4"), "%.2000s", json);
	by_file = strstr(json, "\"sync_by_file\": {");
	CHECK(by_file && strstr(by_file, "\"aof\": {") && strstr(strstr(by_file, "\"aof\": {"), "\"count\": 5,"),
	      "sync_by_file: %.300s", by_file ? by_file : json);
	free(text);
	free(json);
}

int main(void)
{
	uring_init(false);
	test_folded_spans();
	test_text_and_json_agree();
	test_uring_writer();
	test_lite();
	test_interval_children();
	test_syncs_by_file();
	uring_free();
	return t_result("test_report");
}

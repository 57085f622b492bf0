// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * aoftrace  Where the time of a Valkey/Redis AOF write goes.
 *
 * Attaches to a running valkey-server or redis-server and measures every flushAppendOnlyFile()
 * (uprobes), the write() calls inside it and every fdatasync()/fsync() of the server's threads
 * and forked children (syscall tracepoints), without kprobes or fentry.
 *
 * This file is the lifecycle only: probe the kernel, open and load the BPF object, attach, poll the
 * ring buffer, take one snapshot of the maps, write the reports (docs/design.md has the map).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include "aoftrace.skel.h"
#include "agg.h"
#include "attach.h"
#include "cli.h"
#include "kfeatures.h"
#include "names.h"
#include "report.h"
#include "snapshot.h"
#include "timeline.h"
#include "uring_stats.h"

static volatile sig_atomic_t exiting;

static void sig_handler(int sig)
{
	exiting = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args)
{
	if (!env.verbose)
		return 0;	/* failures are reported by us, in one line */
	return vfprintf(stderr, format, args);
}

static int handle_event(void *ctx, void *data, size_t len)
{
	timeline_event(data, len);
	agg_event(ctx, data, len);
	return 0;
}

/* The object opened and set up for this kernel and these options; dies with one line. */
static struct aoftrace_bpf *open_object(bool syscall_tps)
{
	LIBBPF_OPTS(bpf_object_open_opts, open_opts, .btf_custom_path = env.btf_path);
	struct aoftrace_bpf *obj = aoftrace_bpf__open_opts(&open_opts);
	char off[512];

	if (!obj)
		die("cannot open BPF object: %s", strerror(errno));
	if (!probe_features(obj->obj, btf_file()))
		die("cannot read kernel BTF from %s: %s", btf_file(), strerror(errno));
	if (*features_off(off, sizeof(off), true))
		die("this kernel lacks tracepoints the core needs: %s", off);
	if (*features_off(off, sizeof(off), false))
		fprintf(stderr, "aoftrace: features off: %s\n", off);
	obj->rodata->targ_tgid = env.pid;
	obj->rodata->timeline = env.timeline_path != NULL;
	obj->rodata->folded = env.folded_path != NULL;
	/*
	 * The ring is mapped twice and its pages stay resident once written: 1 MB (2 MB of RSS) holds over
	 * a second of flush, sync and io_uring records here; a timeline also sends every block request.
	 */
	obj->rodata->ring_size = env.timeline_path ? 8 << 20 : env.lite ? 256 << 10 : 1 << 20;
	bpf_map__set_max_entries(obj->maps.events, obj->rodata->ring_size);
	if (env.lite)
		lite_mode(obj);
	bpf_program__set_autoload(obj->progs.sys_enter, !syscall_tps);
	bpf_program__set_autoload(obj->progs.sys_exit, !syscall_tps);
	bpf_program__set_autoload(obj->progs.sys_enter_tp, syscall_tps);
	bpf_program__set_autoload(obj->progs.sys_exit_tp, syscall_tps);
	return obj;
}

static int load_and_attach(struct aoftrace_bpf *obj, bool syscall_tps, struct bpf_link **links)
{
	int err = aoftrace_bpf__load(obj);

	if (err) {
		fprintf(stderr, "aoftrace: cannot load BPF programs: %s (run with -v for the verifier log)\n",
			strerror(-err));
		return err;
	}
	if (!env.lite && (err = kranges_install(obj)))
		return err;
	if ((err = aoftrace_bpf__attach(obj))) {
		fprintf(stderr, "aoftrace: cannot attach tracepoints: %s (see aoftrace --check)\n", strerror(-err));
		return err;
	}
	if (syscall_tps && (err = attach_syscalls(obj)))
		return err;
	attach_flush(obj, links);
	return 0;
}

static FILE *create_output(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "w");

	if (!f) {
		fprintf(stderr, "aoftrace: cannot write %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	return f;
}

/* Until Ctrl-C, SIGTERM, -d or the target's exit; -i lines on the way. */
static int poll_loop(struct ring_buffer *rb, struct agg *a)
{
	uint64_t start = a->start_ns, ival_ns = env.interval * 1e9, next_ival = start + ival_ns;
	uint64_t end = env.duration ? start + (uint64_t)(env.duration * 1e9) : UINT64_MAX;
	int err;

	while (!exiting) {
		/* The BPF side rarely wakes us (BPF_RB_NO_WAKEUP): poll as a 100 ms tick, then drain. */
		err = ring_buffer__poll(rb, 100);
		if (err >= 0)
			err = ring_buffer__consume(rb);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "aoftrace: ring buffer: %s\n", strerror(-err));
			return err;
		}
		if (env.interval && now_ns() >= next_ival) {
			report_interval(stdout, a);
			next_ival += ival_ns;
		}
		if (a->target_exited || (kill(env.pid, 0) && errno == ESRCH)) {
			printf("target pid %d exited\n", env.pid);
			a->target_exited = true;
			break;
		}
		if (now_ns() >= end)
			break;
	}
	ring_buffer__consume(rb);
	return 0;
}

/* The JSON and the timeline, created once attached: a failed start leaves the user's files alone. */
static int open_outputs(FILE **json)
{
	int err;

	if (env.json_path && !(*json = create_output(env.json_path)))
		return -errno;
	if (env.timeline_path && (err = timeline_open(env.timeline_path, env.pid, now_ns()))) {
		fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.timeline_path, strerror(-err));
		return err;
	}
	return 0;
}

/* The JSON (closed here), the timeline and the folded stacks; 0 or the first error. */
static int write_outputs(const struct snapshot *s, FILE *json)
{
	FILE *f;
	int err = 0;

	if (json && (report_json(json, s) | fclose(json))) {
		err = -EIO;
		fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.json_path, strerror(EIO));
	}
	if (env.timeline_path && (err = timeline_close()))
		fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.timeline_path, strerror(-err));
	if (!err && env.folded_path) {
		if (!(f = create_output(env.folded_path)))
			return -errno;
		if (offcpu_write_folded(f, s) | fclose(f)) {
			err = -EIO;
			fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.folded_path, strerror(EIO));
		}
	}
	return err;
}

int main(int argc, char **argv)
{
	struct bpf_link *links[2] = {};
	struct ring_buffer *rb = NULL;
	struct aoftrace_bpf *obj = NULL;
	static struct target target;
	static struct agg agg;
	struct snapshot snap = {};
	const char **outputs[] = { &env.json_path, &env.folded_path, &env.timeline_path };
	FILE *json = NULL;
	uint64_t iowq_at_start;
	bool no_flush = false, syscall_tps;
	int err;

	/*
	 * libbpf reads the kernel's BTF (~6 MB, more once indexed) to load and frees it after. A fixed mmap
	 * threshold keeps such buffers out of the heap, so they are handed back when freed; glibc's adaptive
	 * threshold would grow after the first such free and keep later ones in the heap for good.
	 */
	mallopt(M_MMAP_THRESHOLD, 256 << 10);
	cli_parse(argc, argv);
	libbpf_set_print(libbpf_print_fn);
	if (!has_caps())
		die("need root, or CAP_BPF and CAP_PERFMON, to load BPF programs");
	if (env.check)
		return cmd_check();
	if (access(btf_file(), R_OK))
		die("no kernel BTF at %s: this tool needs a kernel built with CONFIG_DEBUG_INFO_BTF=y", btf_file());
	resolve_target(&target);
	for (size_t i = 0; i < ARRAY_SIZE(outputs); i++)
		if (*outputs[i])
			check_output_path(*outputs[i]);
	syscall_tps = private_tracefs();
	open_uprobes(&target);
	if (!env.lite)
		kranges_start();
	obj = open_object(syscall_tps);
	if ((err = load_and_attach(obj, syscall_tps, links)))
		goto cleanup;
	iowq_at_start = count_iowq_workers(env.pid);
	obj->bss->iowq_alive = obj->bss->iowq_max_alive = iowq_at_start;
	uring_init(env.lite);
	agg_init(&agg, env.pid, env.lite);
	if ((err = open_outputs(&json)))
		goto cleanup;
	if (!(rb = ring_buffer__new(bpf_map__fd(obj->maps.events), handle_event, &agg, NULL))) {
		err = -errno;
		fprintf(stderr, "aoftrace: cannot create ring buffer: %s\n", strerror(errno));
		goto cleanup;
	}
	signal(SIGINT, sig_handler);
	signal(SIGTERM, sig_handler);
	signal(SIGPIPE, SIG_IGN);	/* stdout piped into head: the JSON and the detach still happen */
	printf("Tracing %s pid %d (%s). Hit Ctrl-C to end.\n", target.comm, env.pid, target.exe);
	if (env.interval)
		report_interval_header(stdout);
	fflush(stdout);

	agg.start_ns = now_ns();
	if ((err = poll_loop(rb, &agg)))
		goto cleanup;
	if ((err = snapshot_take(&snap, obj, &agg, &target, iowq_at_start, (now_ns() - agg.start_ns) / 1e9,
				 env.top || env.folded_path)))
		goto cleanup;
	report_print(stdout, &snap);
	/* Valkey and Redis call flushAppendOnlyFile() on every event-loop turn, but only with the AOF on. */
	if (!env.any && !snap.counters[CNT_FLUSH_CALLS] && snap.window_s >= 1.0) {
		fprintf(stderr, "aoftrace: no AOF flush seen — is appendonly on? (no %s() call in %.1f s)\n",
			FLUSH_FUNC, snap.window_s);
		no_flush = true;
	}
	err = write_outputs(&snap, json);
	json = NULL;

cleanup:
	if (json)
		fclose(json);
	timeline_close();
	ring_buffer__free(rb);
	for (int i = 0; i < 2; i++)
		bpf_link__destroy(links[i]);
	detach_syscalls();
	aoftrace_bpf__destroy(obj);
	snapshot_free(&snap);
	uring_free();
	return err != 0 || no_flush;
}

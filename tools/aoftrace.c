// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * aoftrace  Where the time of a Valkey/Redis AOF write goes.
 *
 * Attaches to a running valkey-server or redis-server and measures every flushAppendOnlyFile()
 * (uprobes), the write() calls inside it and every fdatasync()/fsync() of the server's threads
 * and forked children (raw syscall tracepoints with BTF), without kprobes or fentry.
 */
#define _GNU_SOURCE
#include <argp.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <linux/perf_event.h>
#include <sys/stat.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "aoftrace.h"
#include "aoftrace.skel.h"
#include "durability.h"
#include "offcpu.h"
#include "trace_helpers.h"
#include "uprobe_helpers.h"
#include "timeline.h"
#include "uring_stats.h"

#define AOFTRACE_VERSION "0.1"
#define FLUSH_FUNC "flushAppendOnlyFile"

static struct env {
	pid_t pid;
	double duration;	/* seconds, 0: until Ctrl-C */
	double interval;	/* seconds, 0: no interval lines */
	const char *json_path;
	const char *binary;
	const char *btf_path;
	const char *folded_path;
	const char *timeline_path;
	int top;
	bool check;
	bool verbose;
	bool any;
	bool lite;
	bool top_set;
} env;

const char *argp_program_version = "aoftrace " AOFTRACE_VERSION;
const char *argp_program_bug_address = "https://github.com/aoftrace/aoftrace/issues";
static const char argp_program_doc[] =
"Trace the AOF write path of a running valkey-server or redis-server.\n"
"\n"
"USAGE: aoftrace -p PID [-d SECONDS] [-i SECONDS] [-j FILE] [-f FILE] [-t N] [-b BINARY] [-a] [-v]\n"
"       aoftrace -p PID --lite [-d SECONDS] [-i SECONDS] [-j FILE] [-b BINARY] [-a] [-v]\n"
"       aoftrace --check\n"
"\n"
"EXAMPLES:\n"
"    aoftrace -p $(pidof valkey-server)     # trace until Ctrl-C, then print histograms\n"
"    aoftrace -p 1234 -d 10                 # trace for 10 seconds\n"
"    aoftrace -p 1234 -i 1 -d 30            # a summary line every second for 30 seconds\n"
"    aoftrace -p 1234 -d 10 -j out.json     # also write the report as JSON\n"
"    aoftrace -p 1234 -d 10 -f off.folded   # off-CPU stacks with wakers, for a flame graph\n"
"    aoftrace -p 1234 -b ./src/valkey-server  # take symbols from this binary\n"
"    aoftrace -p 1234 -a                    # any process: its fsyncs and io_uring requests\n"
"    aoftrace -p 1234 -d 5 -T trace.json    # a timeline for Perfetto / chrome://tracing\n"
"    aoftrace -p 1234 --lite -i 60          # left attached: latency, counts, durability checks\n"
"    aoftrace --check                       # what this kernel offers the tool\n";

enum { OPT_CHECK = 0x100, OPT_BTF, OPT_LITE };

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Process id of the server to trace", 0 },
	{ "duration", 'd', "SECONDS", 0, "Stop after this many seconds (default: until Ctrl-C)", 0 },
	{ "interval", 'i', "SECONDS", 0, "Print a summary line every SECONDS", 0 },
	{ "json", 'j', "FILE", 0, "Write the report as JSON to FILE", 0 },
	{ "binary", 'b', "BINARY", 0, "Server binary with the symbols (default: /proc/PID/exe)", 0 },
	{ "folded", 'f', "FILE", 0, "Write off-CPU stacks with their wakers, folded, to FILE", 0 },
	{ "top", 't', "N", 0, "Print the N longest off-CPU stacks (default 5)", 0 },
	{ "timeline", 'T', "FILE", 0, "Write every flush, sync, io_uring and block request as a Chrome trace-event "
	  "timeline to FILE", 0 },
	{ "verbose", 'v', NULL, 0, "Print libbpf debug messages", 0 },
	{ "any", 'a', NULL, 0, "Trace a process without flushAppendOnlyFile too (no flush figures)", 0 },
	{ "lite", OPT_LITE, NULL, 0, "Low overhead, to leave attached: flush and fdatasync latency, counts, io_uring "
	  "requests and the durability checks, without splitting them into components", 0 },
	{ "check", OPT_CHECK, NULL, 0, "Report what this kernel offers and exit", 0 },
	{ "btf", OPT_BTF, "FILE", 0, "Kernel BTF to use (default: /sys/kernel/btf/vmlinux)", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show the full help", 0 },
	{},
};

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("aoftrace: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static double parse_seconds(const char *arg, const char *what, struct argp_state *state)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v > 0) || v > 86400 * 365)
		argp_error(state, "invalid %s: '%s' (a positive number of seconds)", what, arg);
	return v;
}

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	char *end;
	long v;

	switch (key) {
	case 'p':
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno || end == arg || *end || v <= 0 || v > INT_MAX)
			argp_error(state, "invalid pid: '%s'", arg);
		env.pid = v;
		break;
	case 'd':
		env.duration = parse_seconds(arg, "duration", state);
		break;
	case 'i':
		env.interval = parse_seconds(arg, "interval", state);
		break;
	case 'j':
		env.json_path = arg;
		break;
	case 'b':
		env.binary = arg;
		break;
	case 'f':
		env.folded_path = arg;
		break;
	case 'T':
		env.timeline_path = arg;
		break;
	case 't':
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno || end == arg || *end || v < 0 || v > 1000)
			argp_error(state, "invalid top: '%s' (0 to 1000)", arg);
		env.top = v;
		env.top_set = true;
		break;
	case 'v':
		env.verbose = true;
		break;
	case 'a':
		env.any = true;
		break;
	case OPT_LITE:
		env.lite = true;
		break;
	case OPT_CHECK:
		env.check = true;
		break;
	case OPT_BTF:
		env.btf_path = arg;
		break;
	case 'h':
		argp_state_help(state, stderr, ARGP_HELP_STD_HELP);
		break;
	case ARGP_KEY_ARG:
		argp_error(state, "unexpected argument: '%s'", arg);
		break;
	case ARGP_KEY_END:
		if (!env.check && !env.pid)
			argp_error(state, "a pid is required (-p PID)");
		if (env.lite && (env.folded_path || env.timeline_path || env.top_set))
			argp_error(state, "--lite keeps no off-CPU stacks or timeline: %s needs the full mode",
				   env.folded_path ? "-f" : env.timeline_path ? "-T" : "-t");
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static const struct argp argp = {
	.options = opts,
	.parser = parse_arg,
	.doc = argp_program_doc,
};

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level == LIBBPF_DEBUG && !env.verbose)
		return 0;
	if (!env.verbose)
		return 0;	/* failures are reported by us, in one line */
	return vfprintf(stderr, format, args);
}

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

/* ---- what this kernel offers ---------------------------------------------------------------- */

static const char *btf_file(void)
{
	return env.btf_path ? env.btf_path : "/sys/kernel/btf/vmlinux";
}

/* Capability bits in /proc/self/status CapEff. */
static bool has_caps(void)
{
	unsigned long long eff = 0;
	char line[256];
	FILE *f;

	if (geteuid() == 0)
		return true;
	f = fopen("/proc/self/status", "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	fclose(f);
	/* CAP_SYS_ADMIN (21), or CAP_BPF (39) with CAP_PERFMON (38), since 5.8. */
	return (eff >> 21 & 1) || ((eff >> 39 & 1) && (eff >> 38 & 1));
}

/*
 * Tracepoint groups, by the prefix of the tp_btf programs that use them. A kernel may lack some (ext4
 * or XFS not built, an older io_uring): those groups are switched off at start-up, before load, and
 * the report says so. The core cannot run without the groups marked core.
 */
struct feature {
	const char *prefix;
	const char *group;
	const char *what;	/* what the user loses without it */
	bool core;
};

static const struct feature features[] = {
	{ "sys_", "raw_syscalls", "flush and fdatasync timing", true },
	{ "sched_", "sched", "on-CPU/off-CPU attribution and children", true },
	{ "task_", "task", "io-wq worker creation", true },
	{ "contention_", "lock", "exact inode-lock waits", false },
	{ "block_", "block", "block requests on the AOF device", false },
	{ "io_uring_", "io_uring", "io_uring request tracking", false },
	{ "xfs_", "xfs", "XFS log forces and writes", false },
	{ "xlog_", "xfs", "XFS log forces and writes", false },
	{ "ext4_", "ext4", "ext4 fsync and writes", false },
	{ "jbd2_", "jbd2", "jbd2 commit phases", false },
	/* sleep hints (docs/attribution.md): without them every traced sleep is named by a stack unwind */
	{ "folio_", "filemap", "sleep hints (fewer stack unwinds)", false },
	{ "balance_", "writeback", "sleep hints (fewer stack unwinds)", false },
};

#define NFEATURES (sizeof(features) / sizeof(features[0]))

static const struct feature *feature_of(const char *tp)
{
	for (size_t i = 0; i < NFEATURES; i++)
		if (!strncmp(tp, features[i].prefix, strlen(features[i].prefix)))
			return &features[i];
	return NULL;
}

/* Groups switched off, with the first tracepoint found missing in each ("" when all present). */
static char feature_missing[NFEATURES][64];
static bool feature_used[NFEATURES];

/* The first tracepoint missing in `group`, or NULL when the group is whole. */
static const char *group_missing(const char *group)
{
	for (size_t i = 0; i < NFEATURES; i++)
		if (!strcmp(features[i].group, group) && feature_missing[i][0])
			return feature_missing[i];
	return NULL;
}

/* Each group once, in table order: is features[i] the first entry of its group? */
static bool group_first(size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (!strcmp(features[j].group, features[i].group))
			return false;
	return true;
}

/* The tp_btf programs' tracepoints, and which of them the BTF has a btf_trace_<name> typedef for. */
struct tp_probe {
	const char *tp[64];
	bool seen[64];
	size_t n;
};

static void note_trace_type(const char *s, void *ctx)
{
	struct tp_probe *p = ctx;

	if (strncmp(s, "btf_trace_", 10))
		return;
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->tp[i], s + 10))
			p->seen[i] = true;
}

/*
 * Which tp_btf programs this kernel can attach: a tracepoint exists when its btf_trace_<name>
 * typedef is in the BTF. Read from the BTF's strings, not a parsed BTF: in vmlinux those names are
 * only ever typedefs', and libbpf parses the whole BTF again to load, so parsing it here as well
 * cost ~40 ms of start-up. Returns false if BTF cannot be read.
 */
static bool probe_features(struct bpf_object *bobj, const char *btf_path)
{
	struct tp_probe p = {};
	struct bpf_program *prog;

	memset(feature_missing, 0, sizeof(feature_missing));
	memset(feature_used, 0, sizeof(feature_used));
	bpf_object__for_each_program(prog, bobj) {
		const char *sec = bpf_program__section_name(prog);

		if (!strncmp(sec, "tp_btf/", 7) && feature_of(sec + 7) && p.n < sizeof(p.tp) / sizeof(p.tp[0]))
			p.tp[p.n++] = sec + 7;
	}
	if (btf_for_each_string(btf_path, note_trace_type, &p)) {
		errno = EINVAL;
		return false;
	}
	for (size_t i = 0; i < p.n; i++) {
		const struct feature *f = feature_of(p.tp[i]);

		feature_used[f - features] = true;
		if (!p.seen[i] && !feature_missing[f - features][0])
			snprintf(feature_missing[f - features], sizeof(feature_missing[0]), "%s", p.tp[i]);
	}
	/* A group is off as a whole: half of the io_uring lifecycle would mislead. */
	bpf_object__for_each_program(prog, bobj) {
		const char *sec = bpf_program__section_name(prog);
		const struct feature *f = strncmp(sec, "tp_btf/", 7) ? NULL : feature_of(sec + 7);

		if (f && group_missing(f->group))
			bpf_program__set_autoload(prog, false);
	}
	return true;
}

/* "jbd2 (no jbd2_start_commit)" for each group off, comma-separated; "" if none. */
static const char *features_off(char *buf, size_t len, bool core_only)
{
	size_t used = 0;

	buf[0] = 0;
	for (size_t i = 0; i < NFEATURES && used < len; i++) {
		const char *tp = group_missing(features[i].group);

		if (!tp || !group_first(i) || features[i].core != core_only)
			continue;
		used += snprintf(buf + used, len - used, "%s%s (no %s tracepoint: %s off)", used ? ", " : "",
				 features[i].group, tp, features[i].what);
	}
	return buf;
}

static bool pmu_exists(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/bus/event_source/devices/%s/type", name);
	return access(path, R_OK) == 0;
}

/* fentry needs the ftrace function hooks: load a trivial program and try to attach it. */
static const char *probe_fentry(struct btf *btf)
{
	struct bpf_insn insns[] = {
		{ .code = 0xb7, .dst_reg = 0, .imm = 0 },	/* r0 = 0 */
		{ .code = 0x95 },				/* exit */
	};
	LIBBPF_OPTS(bpf_prog_load_opts, popts, .expected_attach_type = BPF_TRACE_FENTRY);
	int id, prog_fd, link_fd;

	id = btf__find_by_name_kind(btf, "vfs_fsync_range", BTF_KIND_FUNC);
	if (id < 0)
		return "unknown (vfs_fsync_range not in BTF)";
	popts.attach_btf_id = id;
	prog_fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, "probe_fentry", "GPL", insns, 2, &popts);
	if (prog_fd < 0)
		return "no (program refused)";
	link_fd = bpf_link_create(prog_fd, 0, BPF_TRACE_FENTRY, NULL);
	close(prog_fd);
	if (link_fd < 0)
		return "no (attach refused: no ftrace function hooks)";
	close(link_fd);
	return "yes";
}

static bool private_tracefs(void);

static int cmd_check(void)
{
	bool core = true, btf_ok, uprobe, ringbuf;
	struct btf *btf = NULL;

	btf_ok = access(btf_file(), R_OK) == 0;
	if (btf_ok) {
		btf = btf__parse(btf_file(), NULL);
		btf_ok = btf != NULL;
	}
	printf("%-24s %s (%s)\n", "BTF", btf_ok ? "yes" : "NO", btf_file());
	uprobe = pmu_exists("uprobe");
	printf("%-24s %s\n", "uprobes", uprobe ? "yes" : "NO");
	ringbuf = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) == 1;
	printf("%-24s %s\n", "BPF ring buffer", ringbuf ? "yes" : "NO");
	core = btf_ok && uprobe && ringbuf;
	if (btf_ok) {
		struct aoftrace_bpf *obj = aoftrace_bpf__open();

		if (obj && probe_features(obj->obj, btf_file())) {
			for (size_t i = 0; i < NFEATURES; i++) {
				const char *tp = group_missing(features[i].group);

				if (!group_first(i) || !feature_used[i])
					continue;
				printf("%-24s %s%s%s\n", features[i].group, tp ? "NO: no " : "yes", tp ? tp : "",
				       tp ? " tracepoint" : "");
				if (features[i].core && tp)
					core = false;
			}
		} else {
			core = false;
		}
		aoftrace_bpf__destroy(obj);
	}
	printf("%-24s %s\n", "tracefs mounted", access("/sys/kernel/tracing/events", R_OK) == 0 ?
	       "yes" : "no (mounted privately for the syscall tracepoints when it can be)");
	printf("%-24s %s\n", "syscall tracepoints", private_tracefs() ? "yes" :
	       "no (raw_syscalls instead: a program at every syscall)");
	printf("%-24s %s\n", "kprobes", pmu_exists("kprobe") ? "yes" : "no (not needed)");
	printf("%-24s %s\n", "fentry", btf ? probe_fentry(btf) : "unknown (no BTF)");
	printf("%-24s %s\n", "core (flush, fdatasync)", core ? "can run" : "CANNOT run");
	btf__free(btf);
	return core ? 0 : 1;
}

/* ---- aggregation ---------------------------------------------------------------------------- */

static const char *role_labels[ROLE_MAX] = {
	[ROLE_MAIN] = "the main thread", [ROLE_BIO] = "bio threads", [ROLE_IOWQ] = "io-wq workers",
	[ROLE_SQPOLL] = "the SQPOLL thread", [ROLE_CHILD] = "forked children", [ROLE_OTHER] = "other threads",
};

static const char *role_names[ROLE_MAX] = {
	[ROLE_MAIN] = "main", [ROLE_BIO] = "bio", [ROLE_IOWQ] = "iowq",
	[ROLE_SQPOLL] = "sqpoll", [ROLE_CHILD] = "child", [ROLE_OTHER] = "other",
};

struct totals {
	struct lhist flush;		/* flushes that wrote or synced */
	struct lhist flush_write;	/* write() time per such flush */
	uint64_t writes, write_bytes, write_errors;
	uint64_t uring_enters, uring_ns, uring_bytes;
	struct lhist sync[ROLE_MAX];	/* fdatasync+fsync per role */
	uint64_t sync_calls[ROLE_MAX][SYNC_MAX];
	uint64_t sync_errors[ROLE_MAX];
	uint64_t forks, child_exits;
};

static struct totals all, ival;

/* Attribution: operations split by whether a forked child (rewrite) was alive. */
enum { OP_FLUSH, OP_WRITE, OP_SYNC, OP_MAX };
enum { RW_IDLE, RW_ACTIVE, RW_MAX };
static const char *op_names[OP_MAX] = { "flush", "write", "fdatasync" };
static const char *rw_names[RW_MAX] = { "idle", "active" };
static const char *comp_names[COMP_MAX] = {
	[COMP_ONCPU] = "oncpu", [COMP_RUNQ] = "runqueue", [COMP_BLOCK] = "block",
	[COMP_JOURNAL] = "journal", [COMP_INODE_LOCK] = "inode_lock", [COMP_OTHER_LOCK] = "other_lock",
	[COMP_THROTTLE] = "throttle", [COMP_RECLAIM] = "reclaim", [COMP_IOWQ_QUEUE] = "iowq_queue",
	[COMP_OTHER_OFFCPU] = "other_offcpu",
};
static const char *comp_labels[COMP_MAX] = {
	[COMP_ONCPU] = "on-CPU", [COMP_RUNQ] = "run-queue wait", [COMP_BLOCK] = "block I/O",
	[COMP_JOURNAL] = "journal/log commit", [COMP_INODE_LOCK] = "inode lock",
	[COMP_OTHER_LOCK] = "other locks", [COMP_THROTTLE] = "dirty throttling",
	[COMP_RECLAIM] = "reclaim", [COMP_IOWQ_QUEUE] = "io-wq queueing",
	[COMP_OTHER_OFFCPU] = "other off-CPU",
};

struct opstat {
	struct lhist wall;
	uint64_t comp[COMP_MAX];
	struct lhist comp_h[COMP_MAX];
};

static struct opstat ops[OP_MAX][RW_MAX];

static struct {
	uint64_t bytes_written, uring_bytes, size_growth, offset_mismatches, growth_mismatches, commits_forced;
	uint64_t syncs_with_commit;
	uint64_t uring_late;	/* of bytes_written, io_uring writes that completed after their flush returned */
} fsx;

static void op_add(int op, int rw, uint64_t wall, const __u64 *comp)
{
	struct opstat *o = &ops[op][rw];

	lhist_add(&o->wall, wall);
	for (int c = 0; c < COMP_MAX && !env.lite; c++) {	/* --lite reports no component */
		o->comp[c] += comp[c];
		lhist_add(&o->comp_h[c], comp[c]);
	}
}

/* Both rewrite states together. */
static void op_total(int op, struct opstat *out)
{
	memset(out, 0, sizeof(*out));
	for (int rw = 0; rw < RW_MAX; rw++) {
		lhist_merge(&out->wall, &ops[op][rw].wall);
		for (int c = 0; c < COMP_MAX; c++) {
			out->comp[c] += ops[op][rw].comp[c];
			lhist_merge(&out->comp_h[c], &ops[op][rw].comp_h[c]);
		}
	}
}

static uint64_t comp_sum(const struct opstat *o)
{
	uint64_t sum = 0;

	for (int c = 0; c < COMP_MAX; c++)
		sum += o->comp[c];
	return sum;
}
static bool target_exited;
static uint64_t trace_start_ns;
static char target_exe[PATH_MAX];
static char target_comm[TASK_COMM_LEN + 1];

static int handle_event(void *ctx, void *data, size_t len)
{
	const struct aof_flush_event *f = data;

	timeline_event(data, len);
	const struct aof_sync_event *s = data;
	const struct aof_proc_event *p = data;
	struct totals *t[2] = { &all, &ival };

	for (int i = 0; i < 2; i++) {
		switch (f->type) {
		case EV_FLUSH:
			if (i == 0) {
				int rw = f->children ? RW_ACTIVE : RW_IDLE;

				op_add(OP_FLUSH, rw, f->dur_ns, f->comp);
				if (f->writes)
					op_add(OP_WRITE, rw, f->write_ns, f->write_comp);
				/* write(2) and io_uring alike: bytes that completed inside the flush */
				fsx.bytes_written += f->write_bytes + f->uring_bytes;
				fsx.uring_bytes += f->uring_bytes;
				if ((f->writes || f->uring_writes) && f->first_known && f->ino) {
					uint64_t grew = f->isize_after > f->isize_before ?
							f->isize_after - f->isize_before : 0;

					fsx.size_growth += grew;
					if (f->first_off != f->isize_before)
						fsx.offset_mismatches++;
					if (grew != f->write_bytes + f->uring_bytes)
						fsx.growth_mismatches++;
				}
			}
			if (i == 0)
				dur_flush(f);
			lhist_add(&t[i]->flush, f->dur_ns);
			lhist_add(&t[i]->flush_write, f->write_ns);
			t[i]->writes += f->writes;
			t[i]->write_bytes += f->write_bytes;
			t[i]->uring_bytes += f->uring_bytes;
			t[i]->write_errors += f->write_errors;
			t[i]->uring_enters += f->uring_enters;
			t[i]->uring_ns += f->uring_ns;
			break;
		case EV_SYNC:
			if (s->role >= ROLE_MAX || s->kind >= SYNC_MAX)
				break;
			if (i == 0 && s->role == ROLE_MAIN) {
				op_add(OP_SYNC, s->children ? RW_ACTIVE : RW_IDLE, s->dur_ns, s->comp);
				fsx.syncs_with_commit += s->commit;
			}
			lhist_add(&t[i]->sync[s->role], s->dur_ns);
			t[i]->sync_calls[s->role][s->kind]++;
			if (s->ret < 0)
				t[i]->sync_errors[s->role]++;
			break;
		case EV_VIOLATION:
			if (i == 0)
				dur_violation(data, trace_start_ns);
			break;
		case EV_FORK:
			t[i]->forks++;
			break;
		case EV_EXIT:
			if (p->pid == (uint32_t)env.pid)
				target_exited = true;
			else
				t[i]->child_exits++;
			break;
		case EV_UREQ:
			if (i == 0 && len >= sizeof(struct aof_ureq_event))
				uring_add(data);
			break;
		}
	}
	return 0;
}

static uint64_t sum_counter(struct aoftrace_bpf *obj, uint32_t idx)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t vals[ncpu > 0 ? ncpu : 1], sum = 0;

	if (ncpu <= 0 || bpf_map_lookup_elem(bpf_map__fd(obj->maps.counters), &idx, vals))
		return 0;
	for (int i = 0; i < ncpu; i++)
		sum += vals[i];
	return sum;
}

static double us(uint64_t ns)
{
	return ns / 1000.0;
}

static void dur_read(struct aoftrace_bpf *obj, struct dur_counts *c)
{
	for (int k = 0; k < VIO_MAX; k++)
		c->vio[k] = sum_counter(obj, CNT_VIO_OVERWRITE + k);
	c->overwrite_bytes = sum_counter(obj, CNT_OVERWRITE_BYTES);
	c->growth_diff_bytes = sum_counter(obj, CNT_GROWTH_DIFF_BYTES);
	c->sync_retried = sum_counter(obj, CNT_SYNC_RETRIED);
	c->sync_carried_on = sum_counter(obj, CNT_SYNC_CARRIED_ON);
	c->max_window_ns = obj->bss->dur_max_window_ns;
	c->exited_after_error = target_exited && obj->bss->dur_err_pending;
}

static void print_quantiles(const struct lhist *h)
{
	printf("  count %llu  avg %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f (usecs)\n",
	       (unsigned long long)h->count, h->count ? us(h->sum) / h->count : 0.0,
	       us(lhist_quantile(h, 0.5)), us(lhist_quantile(h, 0.9)), us(lhist_quantile(h, 0.99)),
	       us(lhist_quantile(h, 0.999)), us(h->max));
}

static void print_interval(void)
{
	char ts[16];
	time_t t = time(NULL);
	struct lhist *main_sync = &ival.sync[ROLE_MAIN];

	strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&t));
	printf("%-8s %8llu %9.1f %9.1f %9.1f %8llu %9.1f %9.1f %10.2f %5u\n", ts,
	       (unsigned long long)ival.flush.count, us(lhist_quantile(&ival.flush, 0.5)),
	       us(lhist_quantile(&ival.flush, 0.99)), us(ival.flush.max),
	       (unsigned long long)main_sync->count, us(lhist_quantile(main_sync, 0.5)),
	       us(lhist_quantile(main_sync, 0.99)), (ival.write_bytes + ival.uring_bytes) / 1048576.0,
	       (unsigned)(all.forks - all.child_exits));
	fflush(stdout);
	memset(&ival, 0, sizeof(ival));
}

static struct ksyms *ksyms;

static double mean_us(uint64_t total_ns, uint64_t count)
{
	return count ? total_ns / 1000.0 / count : 0.0;
}

static void print_attribution(void)
{
	static const int cols[][2] = {
		{ OP_FLUSH, RW_IDLE }, { OP_FLUSH, RW_ACTIVE }, { OP_WRITE, RW_IDLE },
		{ OP_WRITE, RW_ACTIVE }, { OP_SYNC, RW_IDLE }, { OP_SYNC, RW_ACTIVE },
	};
	const int ncols = sizeof(cols) / sizeof(cols[0]);
	struct opstat tot[OP_MAX];

	for (int op = 0; op < OP_MAX; op++)
		op_total(op, &tot[op]);
	if (!tot[OP_FLUSH].wall.count && !tot[OP_SYNC].wall.count)
		return;
	if (env.lite)
		printf("\nFlushes and fdatasyncs, without | with a forked child alive (--lite: not split into parts)\n");
	else
		printf("\nWhere the time went: mean usecs per operation, without | with a forked child alive\n");
	printf("%-20s %11s %11s %11s %11s %11s %11s\n", "", "flush", "flush+child", "write",
	       "write+child", "fdatasync", "fdsync+child");
	printf("%-20s", "operations");
	for (int i = 0; i < ncols; i++)
		printf(" %11llu", (unsigned long long)ops[cols[i][0]][cols[i][1]].wall.count);
	printf("\n");
	for (int c = 0; c < COMP_MAX && !env.lite; c++) {
		bool any = false;

		for (int op = 0; op < OP_MAX; op++)
			any |= tot[op].comp[c] != 0;
		if (!any)
			continue;
		printf("%-20s", comp_labels[c]);
		for (int i = 0; i < ncols; i++) {
			const struct opstat *o = &ops[cols[i][0]][cols[i][1]];

			printf(" %11.1f", mean_us(o->comp[c], o->wall.count));
		}
		printf("\n");
	}
	if (!env.lite) {
		printf("%-20s", "unattributed");
		for (int i = 0; i < ncols; i++) {
			const struct opstat *o = &ops[cols[i][0]][cols[i][1]];

			printf(" %11.1f", o->wall.count ? ((double)o->wall.sum - comp_sum(o)) / 1000.0 / o->wall.count : 0);
		}
		printf("\n");
	}
	printf("%-20s", env.lite ? "mean usecs" : "wall (measured)");
	for (int i = 0; i < ncols; i++) {
		const struct opstat *o = &ops[cols[i][0]][cols[i][1]];

		printf(" %11.1f", mean_us(o->wall.sum, o->wall.count));
	}
	if (env.lite) {
		printf("\n%-20s", "p99 usecs");
		for (int i = 0; i < ncols; i++)
			printf(" %11.1f", us(lhist_quantile(&ops[cols[i][0]][cols[i][1]].wall, 0.99)));
		printf("\n");
	} else {
		printf("\nclosure (components / wall): flush %.2f%%, write %.2f%%, fdatasync %.2f%%\n",
		       tot[OP_FLUSH].wall.sum ? 100.0 * comp_sum(&tot[OP_FLUSH]) / tot[OP_FLUSH].wall.sum : 0,
		       tot[OP_WRITE].wall.sum ? 100.0 * comp_sum(&tot[OP_WRITE]) / tot[OP_WRITE].wall.sum : 0,
		       tot[OP_SYNC].wall.sum ? 100.0 * comp_sum(&tot[OP_SYNC]) / tot[OP_SYNC].wall.sum : 0);
	}

	/* What a live child changes, component by component, for the operations a client waits on. */
	for (int op = 0; op < OP_MAX; op += 2) {
		const struct opstat *a = &ops[op][RW_IDLE], *b = &ops[op][RW_ACTIVE];
		double d[COMP_MAX], wa, wb;
		int order[COMP_MAX], shown = 0;

		if (!a->wall.count || !b->wall.count)
			continue;
		wa = mean_us(a->wall.sum, a->wall.count);
		wb = mean_us(b->wall.sum, b->wall.count);
		for (int c = 0; c < COMP_MAX; c++) {
			d[c] = mean_us(b->comp[c], b->wall.count) - mean_us(a->comp[c], a->wall.count);
			order[c] = c;
		}
		for (int i = 0; i < COMP_MAX; i++)
			for (int j = i + 1; j < COMP_MAX; j++)
				if (d[order[j]] > d[order[i]]) {
					int t = order[i];

					order[i] = order[j];
					order[j] = t;
				}
		printf("With a child alive, %s took %+.1f us on average (%.1f -> %.1f us, %+.0f%%)", op_names[op],
		       wb - wa, wa, wb, wa > 0 ? 100.0 * (wb - wa) / wa : 0.0);
		for (int i = 0; i < COMP_MAX && shown < 3 && !env.lite; i++) {
			if (d[order[i]] <= 0.05 * (wb > wa ? wb - wa : 1))
				break;
			printf("%s %s %+.1f us", shown ? "," : "; grew most:", comp_labels[order[i]], d[order[i]]);
			shown++;
		}
		printf("\n");
	}
}

struct offrow {
	struct aof_offkey key;
	uint64_t ns;
};

static int cmp_offrow(const void *a, const void *b)
{
	const struct offrow *x = a, *y = b;

	return x->ns < y->ns ? 1 : x->ns > y->ns ? -1 : 0;
}

static const char *span_names[SPAN_MAX] = { "flush", "write", "fdatasync" };

/* All off-CPU rows, longest first; *n gets their number. */
static struct offrow *read_offstacks(struct aoftrace_bpf *obj, size_t *n)
{
	int fd = bpf_map__fd(obj->maps.offstacks);
	struct aof_offkey key, next, *prev = NULL;
	struct offrow *rows = NULL;
	size_t cap = 0;

	*n = 0;
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		uint64_t ns;

		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &ns))
			continue;
		if (*n == cap) {
			struct offrow *p = realloc(rows, (cap = cap ? cap * 2 : 256) * sizeof(*rows));

			if (!p)
				break;
			rows = p;
		}
		rows[*n].key = key;
		rows[*n].ns = ns;
		(*n)++;
	}
	if (rows)
		qsort(rows, *n, sizeof(*rows), cmp_offrow);
	return rows;
}

static int read_stack(struct aoftrace_bpf *obj, int id, uint64_t *ips)
{
	int n = 0;

	if (id < 0 || bpf_map_lookup_elem(bpf_map__fd(obj->maps.stacks), &id, ips))
		return 0;
	while (n < MAX_FRAMES && ips[n])
		n++;
	return n;
}

/* All kernel symbols, read only when a report names stack frames: not on the start-up path. */
static const char *ksym_name(uint64_t ip)
{
	const struct ksym *k;

	if (!ksyms)
		ksyms = ksyms_load(NULL);
	k = ksyms_find(ksyms, ip);

	return k ? k->name : "[unknown]";
}

/*
 * Where a stack taken from a BPF program starts to mean something: past the BPF trampoline frames
 * (up to bpf_trace_run<N>), and for a sleeper also past the scheduler's own frames.
 */
static int first_frame(const uint64_t *ips, int n, bool sleeper)
{
	int i = 0;

	for (int j = 0; j < n && j < 4; j++)
		if (!strncmp(ksym_name(ips[j]), "bpf_trace_run", 13))
			i = j + 1;
	while (sleeper && i < n - 1) {
		const char *name = ksym_name(ips[i]);

		if (strcmp(name, "__schedule") && strcmp(name, "schedule") && strcmp(name, "__switch_to"))
			break;
		i++;
	}
	return i;
}

static void print_top_stacks(struct aoftrace_bpf *obj)
{
	uint64_t ips[MAX_FRAMES], wips[MAX_FRAMES];
	struct offrow *rows;
	size_t n;

	if (!env.top)
		return;
	rows = read_offstacks(obj, &n);
	if (!n)
		goto out;
	printf("\nLongest off-CPU stacks inside flushes and fdatasyncs (time asleep, until the wake-up):\n");
	for (size_t i = 0; i < n && i < (size_t)env.top; i++) {
		const struct aof_offkey *k = &rows[i].key;
		int nf = read_stack(obj, k->kstack, ips), nw = read_stack(obj, k->waker_kstack, wips);
		int s = first_frame(ips, nf, true), ws = first_frame(wips, nw, false);

		printf("  %.1f ms  %s, in %s, %s thread; woken by %s%s\n", rows[i].ns / 1e6, comp_labels[k->comp],
		       k->span < SPAN_MAX ? span_names[k->span] : "?", role_names[k->role],
		       k->waker_comm[0] ? k->waker_comm : "(wake-up not seen)",
		       k->waker_pid ? "" : k->waker_comm[0] ? " (interrupt or idle)" : "");
		for (int f = s; f < nf && f < s + 6; f++)
			printf("      %s\n", ksym_name(ips[f]));
		if (nw > ws) {
			printf("    waker:\n");
			for (int f = ws; f < nw && f < ws + 4; f++)
				printf("      %s\n", ksym_name(wips[f]));
		}
	}
out:
	free(rows);
}

/* flamegraph.pl / inferno folded format, as bcc's offwaketime writes it: values in microseconds. */
static int write_folded(struct aoftrace_bpf *obj, FILE *f)
{
	uint64_t ips[MAX_FRAMES], wips[MAX_FRAMES];
	struct offrow *rows;
	size_t n;

	rows = read_offstacks(obj, &n);
	for (size_t i = 0; i < n; i++) {
		const struct aof_offkey *k = &rows[i].key;
		int nf = read_stack(obj, k->kstack, ips), nw = read_stack(obj, k->waker_kstack, wips);

		if (rows[i].ns < 1000)
			continue;
		fprintf(f, "%s;%s;%s", role_names[k->role], k->span < SPAN_MAX ? span_names[k->span] : "?",
			comp_names[k->comp]);
		for (int j = nf - 1; j >= first_frame(ips, nf, false); j--)
			fprintf(f, ";%s", ksym_name(ips[j]));
		fprintf(f, ";--");
		for (int j = first_frame(wips, nw, false); j < nw; j++)
			fprintf(f, ";%s", ksym_name(wips[j]));
		fprintf(f, ";%s %llu\n", k->waker_comm[0] ? k->waker_comm : "[unknown]",
			(unsigned long long)(rows[i].ns / 1000));
	}
	free(rows);
	return ferror(f) ? -EIO : 0;
}

static const char *issuer_names[ISS_MAX] = { "target", "child", "jbd2", "kworker", "other" };
static const char *rqkind_names[RQ_MAX] = { "write", "write_fua", "flush", "read", "other" };

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

static void print_fs_block(struct aoftrace_bpf *obj)
{
	struct aof_blkstat bs[ISS_MAX][RQ_MAX];
	char fstype[64];
	bool any = false;

	aof_fstype(obj->bss->aof_dev, fstype, sizeof(fstype));
	printf("\nAOF file: %s on device %u:%u; %llu bytes written (%llu through io_uring), i_size grew %llu "
	       "bytes; %llu flushes started below end of file, %llu grew by other than they wrote\n", fstype,
	       obj->bss->aof_dev >> 20, obj->bss->aof_dev & 0xfffff,
	       (unsigned long long)fsx.bytes_written, (unsigned long long)fsx.uring_bytes,
	       (unsigned long long)fsx.size_growth, (unsigned long long)fsx.offset_mismatches,
	       (unsigned long long)fsx.growth_mismatches);
	if (fsx.uring_late)
		printf("io_uring writes submitted in a flush completed after it returned: %llu bytes\n",
		       (unsigned long long)fsx.uring_late);
	/* ext4's forced commits are seen at the jbd2 wake-up (sched_waking): not loaded by --lite */
	if (env.lite)
		printf("journal/log commits on it: %llu\n", (unsigned long long)sum_counter(obj, CNT_JOURNAL_COMMITS));
	else
		printf("journal/log commits on it: %llu; main-thread fdatasyncs that forced one: %llu\n",
		       (unsigned long long)sum_counter(obj, CNT_JOURNAL_COMMITS),
		       (unsigned long long)fsx.syncs_with_commit);
	{
		uint64_t n = sum_counter(obj, CNT_JBD2_COMMITS), x = sum_counter(obj, CNT_XLOG_WRITES);

		if (n)
			printf("jbd2 commits: %llu, on average %.1f us: start %.1f, locked (handles) %.1f, "
			       "flushing (ordered data) %.1f, logging (journal + commit block) %.1f\n",
			       (unsigned long long)n,
			       mean_us(sum_counter(obj, CNT_JBD2_START_NS) + sum_counter(obj, CNT_JBD2_LOCKED_NS) +
				       sum_counter(obj, CNT_JBD2_FLUSHING_NS) + sum_counter(obj, CNT_JBD2_LOGGING_NS), n),
			       mean_us(sum_counter(obj, CNT_JBD2_START_NS), n),
			       mean_us(sum_counter(obj, CNT_JBD2_LOCKED_NS), n),
			       mean_us(sum_counter(obj, CNT_JBD2_FLUSHING_NS), n),
			       mean_us(sum_counter(obj, CNT_JBD2_LOGGING_NS), n));
		if (x)
			printf("XFS iclog writes: %llu, %.1f us on average from submission to completion\n",
			       (unsigned long long)x, mean_us(sum_counter(obj, CNT_XLOG_WRITE_NS), x));
	}
	read_blkstats(obj, bs);
	for (int i = 0; i < ISS_MAX; i++)
		for (int k = 0; k < RQ_MAX; k++)
			if (bs[i][k].count) {
				if (!any)
					printf("block requests on it:  %-8s %-10s %8s %10s %9s %9s\n", "issuer", "kind",
					       "count", "KB", "avg_us", "max_us");
				any = true;
				printf("                       %-8s %-10s %8llu %10.1f %9.1f %9.1f\n", issuer_names[i],
				       rqkind_names[k], (unsigned long long)bs[i][k].count, bs[i][k].bytes / 1024.0,
				       us(bs[i][k].lat_ns) / bs[i][k].count, us(bs[i][k].max_ns));
			}
}

static uint64_t iowq_at_start;

static void uring_workers_read(struct aoftrace_bpf *obj, struct uring_workers *w)
{
	w->alive_at_start = iowq_at_start;
	w->created = sum_counter(obj, CNT_IOWQ_CREATED);
	w->exited = sum_counter(obj, CNT_IOWQ_EXITED);
	w->max_alive = obj->bss->iowq_max_alive > 0 ? obj->bss->iowq_max_alive : 0;
	w->short_writes = sum_counter(obj, CNT_URING_SHORT);
	w->links = sum_counter(obj, CNT_URING_LINKS);
	w->fail_links = sum_counter(obj, CNT_URING_FAIL_LINKS);
	w->reaped = sum_counter(obj, CNT_REAP_N);
	w->reap_ns = sum_counter(obj, CNT_REAP_NS);
	w->ncpus = 0;
	{
		int ncpu = libbpf_num_possible_cpus();
		uint64_t vals[ncpu > 0 ? ncpu : 1];
		uint32_t zero = 0;
		bool any = false;

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
}

/* io-wq workers the target has now: threads named iou-wrk-<pid>. */
static uint64_t count_iowq_workers(pid_t pid)
{
	char path[64], comm[32];
	struct dirent *d;
	uint64_t n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((d = readdir(dir))) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/comm", pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strncmp(comm, "iou-wrk-", 8))
			n++;
		fclose(f);
	}
	closedir(dir);
	return n;
}

static void print_report(struct aoftrace_bpf *obj, double window)
{
	uint64_t calls = sum_counter(obj, CNT_FLUSH_CALLS), empty = sum_counter(obj, CNT_FLUSH_EMPTY);

	printf("\n%s pid %d: %.1f s traced%s\n", target_comm, env.pid, window,
	       env.lite ? " (--lite: latency, counts, io_uring requests, durability; no components)" : "");
	{
		char off[512];

		if (*features_off(off, sizeof(off), false))
			printf("Features off: %s\n", off);
	}
	printf("\n" FLUSH_FUNC "() that wrote or synced: %llu (plus %llu empty calls of %llu)\n",
	       (unsigned long long)all.flush.count, (unsigned long long)empty, (unsigned long long)calls);
	lhist_print_log2(stdout, &all.flush, 1000, "usecs");
	print_quantiles(&all.flush);
	printf("\nwrite() inside those flushes: %llu calls, %llu bytes, %llu errors; time per flush:\n",
	       (unsigned long long)all.writes, (unsigned long long)all.write_bytes,
	       (unsigned long long)all.write_errors);
	print_quantiles(&all.flush_write);
	if (all.uring_enters)
		printf("io_uring_enter() inside those flushes: %llu calls, %.1f us on average per flush; "
		       "%llu bytes written through io_uring\n", (unsigned long long)all.uring_enters,
		       mean_us(all.uring_ns, all.flush.count), (unsigned long long)all.uring_bytes);
	for (int r = 0; r < ROLE_MAX; r++) {
		if (!all.sync[r].count)
			continue;
		printf("\nfdatasync/fsync by %s: %llu fdatasync, %llu fsync, %llu errors\n", role_labels[r],
		       (unsigned long long)all.sync_calls[r][SYNC_FDATASYNC],
		       (unsigned long long)all.sync_calls[r][SYNC_FSYNC], (unsigned long long)all.sync_errors[r]);
		lhist_print_log2(stdout, &all.sync[r], 1000, "usecs");
		print_quantiles(&all.sync[r]);
	}
	if (!all.sync[ROLE_MAIN].count && !all.flush.count)
		printf("\nno AOF flush seen — is appendonly on? (and did the server get writes?)\n");
	print_attribution();
	if (sum_counter(obj, CNT_SLEEPS_UNWOUND) + sum_counter(obj, CNT_SLEEPS_HINTED))
		printf("sleeps named by a stack unwind: %llu, by a hint: %llu (%llu hints checked by an unwind, "
		       "%llu disagreed)\n", (unsigned long long)sum_counter(obj, CNT_SLEEPS_UNWOUND),
		       (unsigned long long)sum_counter(obj, CNT_SLEEPS_HINTED),
		       (unsigned long long)sum_counter(obj, CNT_HINT_CHECKS),
		       (unsigned long long)sum_counter(obj, CNT_HINT_MISMATCHES));
	if (!env.lite)
		print_top_stacks(obj);
	print_fs_block(obj);
	{
		struct dur_counts dc;

		dur_read(obj, &dc);
		dur_print(stdout, &dc);
	}
	{
		struct uring_workers w;

		uring_workers_read(obj, &w);
		uring_print(stdout, &w, comp_labels);
	}
	printf("\nchildren forked: %llu (fork() took %.1f us on average), exited: %llu; they wrote %llu bytes, "
	       "called sync_file_range %llu times\n", (unsigned long long)all.forks,
	       mean_us(sum_counter(obj, CNT_FORK_NS), sum_counter(obj, CNT_FORKS)),
	       (unsigned long long)all.child_exits, (unsigned long long)sum_counter(obj, CNT_CHILD_WRITE_BYTES),
	       (unsigned long long)sum_counter(obj, CNT_CHILD_SFR));
	printf("lost events: %llu\n", (unsigned long long)sum_counter(obj, CNT_LOST));
}

static void json_lhist(struct jw *w, const struct lhist *h)
{
	jw_lhist_us(w, h, "_us");
}

static void json_comps(struct jw *w, const char *key, const struct opstat *o)
{
	jw_obj(w, key);
	for (int c = 0; c < COMP_MAX; c++)
		jw_dbl(w, comp_names[c], us(o->comp[c]));
	jw_dbl(w, "unattributed", ((double)o->wall.sum - comp_sum(o)) / 1000.0);
	jw_obj_end(w);
}

static void json_closure(struct jw *w, const struct opstat *o)
{
	jw_dbl(w, "closure_pct", o->wall.sum ? 100.0 * comp_sum(o) / o->wall.sum : 100.0);
}

/* Per-operation distribution of each component: how often a part is large, not just its total. */
static void json_comp_quantiles(struct jw *w, const struct opstat *o)
{
	jw_obj(w, "components_p50_us");
	for (int c = 0; c < COMP_MAX; c++)
		jw_dbl(w, comp_names[c], us(lhist_quantile(&o->comp_h[c], 0.5)));
	jw_obj_end(w);
	jw_obj(w, "components_p99_us");
	for (int c = 0; c < COMP_MAX; c++)
		jw_dbl(w, comp_names[c], us(lhist_quantile(&o->comp_h[c], 0.99)));
	jw_obj_end(w);
}

/* The split of an operation into components; --lite has none (docs/reliability.md, "Modes"). */
static void json_split(struct jw *w, const struct opstat *o)
{
	if (env.lite)
		return;
	json_comps(w, "components_us", o);
	json_comp_quantiles(w, o);
	json_closure(w, o);
}

static void json_op(struct jw *w, const char *key, const struct opstat *o)
{
	jw_obj(w, key);
	json_lhist(w, &o->wall);
	json_split(w, o);
	jw_obj_end(w);
}

static void write_json(FILE *f, struct aoftrace_bpf *obj, double window)
{
	struct aof_blkstat bs[ISS_MAX][RQ_MAX];
	struct opstat tot[OP_MAX];
	char fstype[64];

	for (int op = 0; op < OP_MAX; op++)
		op_total(op, &tot[op]);
	const struct lhist *ms = &all.sync[ROLE_MAIN];
	struct jw w;

	jw_begin(&w, f);
	jw_str(&w, "schema", "aoftrace/1");
	jw_str(&w, "version", AOFTRACE_VERSION);
	jw_str(&w, "mode", env.lite ? "lite" : "full");
	jw_obj(&w, "target");
	jw_i64(&w, "pid", env.pid);
	jw_str(&w, "exe", target_exe);
	jw_str(&w, "comm", target_comm);
	jw_bool(&w, "exited", target_exited);
	jw_obj_end(&w);
	jw_dbl(&w, "window_s", window);
	jw_arr(&w, "features_off");
	for (size_t i = 0; i < NFEATURES; i++)
		if (group_first(i) && group_missing(features[i].group))
			jw_str(&w, NULL, features[i].group);
	jw_arr_end(&w);
	jw_obj(&w, "flush");
	json_lhist(&w, &all.flush);
	jw_u64(&w, "calls", sum_counter(obj, CNT_FLUSH_CALLS));
	jw_u64(&w, "empty_calls", sum_counter(obj, CNT_FLUSH_EMPTY));
	jw_dbl(&w, "empty_total_us", us(sum_counter(obj, CNT_FLUSH_EMPTY_NS)));
	jw_u64(&w, "writes", all.writes);
	jw_u64(&w, "write_bytes", all.write_bytes);
	jw_u64(&w, "write_errors", all.write_errors);
	jw_dbl(&w, "write_total_us", us(all.flush_write.sum));
	jw_u64(&w, "uring_enters", all.uring_enters);
	jw_dbl(&w, "uring_enter_total_us", us(all.uring_ns));
	jw_u64(&w, "uring_write_bytes", all.uring_bytes);
	json_split(&w, &tot[OP_FLUSH]);
	if (!env.lite)
		json_comps(&w, "write_components_us", &tot[OP_WRITE]);
	jw_obj_end(&w);
	/* fdatasync: the main thread's fdatasync+fsync, the ones a client waits for. */
	jw_obj(&w, "fdatasync");
	json_lhist(&w, ms);
	jw_u64(&w, "fdatasync_calls", all.sync_calls[ROLE_MAIN][SYNC_FDATASYNC]);
	jw_u64(&w, "fsync_calls", all.sync_calls[ROLE_MAIN][SYNC_FSYNC]);
	jw_u64(&w, "errors", all.sync_errors[ROLE_MAIN]);
	if (!env.lite)
		jw_u64(&w, "forced_commits", fsx.syncs_with_commit);
	json_split(&w, &tot[OP_SYNC]);
	jw_obj_end(&w);
	jw_obj(&w, "by_rewrite");
	for (int rw = 0; rw < RW_MAX; rw++) {
		jw_obj(&w, rw_names[rw]);
		json_op(&w, "flush", &ops[OP_FLUSH][rw]);
		json_op(&w, "write", &ops[OP_WRITE][rw]);
		json_op(&w, "fdatasync", &ops[OP_SYNC][rw]);
		jw_obj_end(&w);
	}
	jw_obj_end(&w);
	jw_obj(&w, "sync_by_role");
	for (int r = 0; r < ROLE_MAX; r++) {
		jw_obj(&w, role_names[r]);
		json_lhist(&w, &all.sync[r]);
		jw_u64(&w, "fdatasync_calls", all.sync_calls[r][SYNC_FDATASYNC]);
		jw_u64(&w, "fsync_calls", all.sync_calls[r][SYNC_FSYNC]);
		jw_u64(&w, "errors", all.sync_errors[r]);
		jw_obj_end(&w);
	}
	jw_obj_end(&w);
	jw_obj(&w, "children");
	jw_u64(&w, "forked", all.forks);
	jw_u64(&w, "exited", all.child_exits);
	jw_obj_end(&w);
	{
		struct uring_workers uw;

		uring_workers_read(obj, &uw);
		uring_json(&w, &uw, comp_names);
	}
	jw_obj(&w, "rewrite");
	jw_u64(&w, "count", all.forks);
	jw_u64(&w, "forks_timed", sum_counter(obj, CNT_FORKS));
	jw_dbl(&w, "fork_us", us(sum_counter(obj, CNT_FORK_NS)));
	jw_u64(&w, "child_write_bytes", sum_counter(obj, CNT_CHILD_WRITE_BYTES));
	jw_u64(&w, "child_sync_file_range", sum_counter(obj, CNT_CHILD_SFR));
	jw_u64(&w, "child_syncs", all.sync[ROLE_CHILD].count);
	jw_obj_end(&w);
	aof_fstype(obj->bss->aof_dev, fstype, sizeof(fstype));
	jw_obj(&w, "fs");
	jw_str(&w, "type", fstype);
	jw_u64(&w, "dev_major", obj->bss->aof_dev >> 20);
	jw_u64(&w, "dev_minor", obj->bss->aof_dev & 0xfffff);
	jw_u64(&w, "bytes_written", fsx.bytes_written);
	jw_u64(&w, "uring_bytes", fsx.uring_bytes);
	jw_u64(&w, "uring_bytes_after_flush", fsx.uring_late);
	jw_u64(&w, "size_growth_bytes", fsx.size_growth);
	jw_u64(&w, "journal_commits", sum_counter(obj, CNT_JOURNAL_COMMITS));
	if (!env.lite) {	/* the phases come from programs --lite does not load */
		jw_obj(&w, "jbd2");
		jw_u64(&w, "commits", sum_counter(obj, CNT_JBD2_COMMITS));
		jw_dbl(&w, "start_us", us(sum_counter(obj, CNT_JBD2_START_NS)));
		jw_dbl(&w, "locked_us", us(sum_counter(obj, CNT_JBD2_LOCKED_NS)));
		jw_dbl(&w, "flushing_us", us(sum_counter(obj, CNT_JBD2_FLUSHING_NS)));
		jw_dbl(&w, "logging_us", us(sum_counter(obj, CNT_JBD2_LOGGING_NS)));
		jw_obj_end(&w);
		jw_obj(&w, "xfs_log");
		jw_u64(&w, "iclog_writes", sum_counter(obj, CNT_XLOG_WRITES));
		jw_dbl(&w, "iclog_write_us", us(sum_counter(obj, CNT_XLOG_WRITE_NS)));
		jw_obj_end(&w);
	}
	jw_u64(&w, "offset_mismatches", fsx.offset_mismatches);
	jw_u64(&w, "growth_mismatches", fsx.growth_mismatches);
	jw_obj_end(&w);
	if (!env.lite) {
		read_blkstats(obj, bs);
		jw_obj(&w, "block");
		for (int i = 0; i < ISS_MAX; i++) {
			jw_obj(&w, issuer_names[i]);
			for (int k = 0; k < RQ_MAX; k++) {
				jw_obj(&w, rqkind_names[k]);
				jw_u64(&w, "count", bs[i][k].count);
				jw_u64(&w, "bytes", bs[i][k].bytes);
				jw_dbl(&w, "avg_us", bs[i][k].count ? us(bs[i][k].lat_ns) / bs[i][k].count : 0);
				jw_dbl(&w, "max_us", us(bs[i][k].max_ns));
				jw_obj_end(&w);
			}
			jw_obj_end(&w);
		}
		jw_obj_end(&w);
	}
	{
		struct dur_counts dc;

		dur_read(obj, &dc);
		dur_json(&w, &dc);
	}
	if (!env.lite) {
		jw_obj(&w, "sleeps");
		jw_u64(&w, "unwound", sum_counter(obj, CNT_SLEEPS_UNWOUND));
		jw_u64(&w, "hinted", sum_counter(obj, CNT_SLEEPS_HINTED));
		jw_u64(&w, "hint_checks", sum_counter(obj, CNT_HINT_CHECKS));
		jw_u64(&w, "hint_mismatches", sum_counter(obj, CNT_HINT_MISMATCHES));
		jw_obj_end(&w);
	}
	jw_u64(&w, "lost_events", sum_counter(obj, CNT_LOST));
	jw_end(&w);
}

/* ---- attaching ------------------------------------------------------------------------------ */

static void resolve_target(char *attach_path, size_t len)
{
	char proc[64];
	ssize_t n;
	FILE *f;

	snprintf(proc, sizeof(proc), "/proc/%d", env.pid);
	if (access(proc, F_OK))
		die("no process with pid %d", env.pid);
	snprintf(proc, sizeof(proc), "/proc/%d/comm", env.pid);
	f = fopen(proc, "r");
	if (f) {
		if (fgets(target_comm, sizeof(target_comm), f))
			target_comm[strcspn(target_comm, "\n")] = 0;
		fclose(f);
	}
	snprintf(proc, sizeof(proc), "/proc/%d/exe", env.pid);
	n = readlink(proc, target_exe, sizeof(target_exe) - 1);
	if (n < 0 && !env.binary) {
		if (errno == ENOENT)
			die("pid %d has no executable (a kernel thread?): not a valkey or redis server", env.pid);
		die("cannot read %s: %s (use -b BINARY)", proc, strerror(errno));
	}
	target_exe[n > 0 ? n : 0] = 0;
	if (env.binary) {
		if (access(env.binary, R_OK))
			die("cannot read binary %s: %s", env.binary, strerror(errno));
		snprintf(attach_path, len, "%s", env.binary);
		if (!target_exe[0])
			snprintf(target_exe, sizeof(target_exe), "%s", env.binary);
	} else {
		/* The magic link reaches the mapped file even in another mount namespace or when deleted. */
		snprintf(attach_path, len, "%s", proc);
		if (access(proc, R_OK))
			die("cannot read %s: %s (use -b BINARY)", proc, strerror(errno));
	}
}

/* Fail before attaching when FILE cannot be written; create and truncate nothing yet. */
static void check_output_path(const char *path)
{
	char dir[PATH_MAX], *slash;
	struct stat st;

	if (!lstat(path, &st)) {
		if (S_ISLNK(st.st_mode))
			die("cannot write %s: it is a symbolic link (not followed)", path);
		if (!S_ISREG(st.st_mode))
			die("cannot write %s: not a regular file", path);
		if (access(path, W_OK))
			die("cannot write %s: %s", path, strerror(errno));
		return;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	if (stat(dir, &st)) {
		if (errno != ENOENT && errno != ENOTDIR)
			die("cannot write %s: %s: %s", path, dir, strerror(errno));
		die("cannot write %s: no directory %s", path, dir);
	}
	if (!S_ISDIR(st.st_mode))
		die("cannot write %s: no directory %s", path, dir);
	if (access(dir, W_OK))
		die("cannot write %s: %s", path, strerror(errno));
}

/*
 * The classifier's ranges come from /proc/kallsyms, which takes the kernel ~40 ms to print: read it
 * on a thread while the verifier checks the programs, keeping only the table's names.
 */
static struct {
	pthread_t thread;
	struct aof_krange r[MAX_KRANGES];
	int n, err;
} kr;

static void *kranges_thread(void *arg)
{
	struct ksyms *ks = ksyms_load_filter(NULL, offcpu_wanted);

	if (!ks) {
		kr.err = errno ? errno : ENOMEM;
		return NULL;
	}
	kr.n = build_kranges(ks, kr.r, MAX_KRANGES);
	ksyms_free(ks);
	return NULL;
}

static int kranges_install(struct aoftrace_bpf *obj)
{
	int fd = bpf_map__fd(obj->maps.kranges);

	pthread_join(kr.thread, NULL);
	if (kr.err) {
		fprintf(stderr, "aoftrace: cannot read /proc/kallsyms: %s\n", strerror(kr.err));
		return -kr.err;
	}
	{
		/* the padding too: see krange_comp(); in one syscall, not MAX_KRANGES */
		__u32 keys[MAX_KRANGES], n = MAX_KRANGES;

		for (__u32 i = 0; i < MAX_KRANGES; i++)
			keys[i] = i;
		if (bpf_map_update_batch(fd, keys, kr.r, &n, NULL))
			return -errno;
	}
	if (env.verbose)
		fprintf(stderr, "aoftrace: %d kernel ranges for the off-CPU classifier\n", kr.n);
	return 0;
}

/*
 * The syscalls the BPF side follows. raw_syscalls:sys_enter/sys_exit would run a program at every
 * syscall of the system (measured here: +145 ns on a getppid() loop); the syscalls:sys_enter_<name>
 * tracepoints run it only for these (+49 ns for the others: the tracepoint slow path). They need
 * tracefs for their ids: aoftrace mounts it in a mount namespace of its own, which the rest of the
 * system never sees and which vanishes with the process, even on SIGKILL. Each one costs a grace period
 * (~35-70 ms) when detached, one after another: so only what Valkey and Redis use for the AOF, replies
 * and forks. (raw_syscalls, the fallback, also sees pwritev, sendmsg, clone3, fork.)
 */
static const struct {
	const char *name;
	bool exit;	/* its sys_exit too */
} traced_syscalls[] = {
	{ "write", true }, { "writev", true }, { "pwrite64", true }, { "fsync", true }, { "fdatasync", true },
	{ "io_uring_enter", true }, { "clone", true }, { "sync_file_range", false },
};
#define NSYSCALLS (sizeof(traced_syscalls) / sizeof(traced_syscalls[0]))
#define SYSCALL_EVENTS "/sys/kernel/tracing/events/syscalls"

static bool syscall_events_exist(void)
{
	return access(SYSCALL_EVENTS "/sys_enter_fdatasync/id", R_OK) == 0;
}

/* Before any thread exists: unshare(CLONE_NEWNS) refuses a multithreaded process. */
static bool private_tracefs(void)
{
	if (syscall_events_exist())
		return true;
	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL)) {
		if (env.verbose)
			fprintf(stderr, "aoftrace: no private tracefs (%s): raw_syscalls for every syscall\n",
				strerror(errno));
		return false;
	}
	return syscall_events_exist();
}

static struct bpf_link *sys_links[2 * NSYSCALLS];

static int attach_syscalls(struct aoftrace_bpf *obj)
{
	char path[PATH_MAX], tp[64];
	int n = 0;

	for (size_t i = 0; i < NSYSCALLS; i++) {
		for (int exit = 0; exit < 1 + traced_syscalls[i].exit; exit++) {
			struct bpf_program *prog = exit ? obj->progs.sys_exit_tp : obj->progs.sys_enter_tp;

			snprintf(tp, sizeof(tp), "sys_%s_%s", exit ? "exit" : "enter", traced_syscalls[i].name);
			snprintf(path, sizeof(path), SYSCALL_EVENTS "/%s", tp);
			if (access(path, F_OK))
				continue;	/* not on this architecture (fork, vfork on arm64) */
			sys_links[n] = bpf_program__attach_tracepoint(prog, "syscalls", tp);
			if (!sys_links[n]) {
				fprintf(stderr, "aoftrace: cannot attach syscalls:%s: %s\n", tp, strerror(errno));
				return -errno;
			}
			n++;
		}
	}
	return 0;
}

static void *destroy_link(void *link)
{
	bpf_link__destroy(link);
	return NULL;
}

/*
 * Closing a syscall tracepoint's perf event waits for a grace period in tracepoint unregistering
 * (~70 ms here, 2.2 s for all 30 one after the other): close them all at once, so the waits overlap.
 */
static void detach_syscalls(void)
{
	pthread_t th[2 * NSYSCALLS];
	bool started[2 * NSYSCALLS] = {};

	for (size_t i = 0; i < 2 * NSYSCALLS; i++)
		if (sys_links[i])
			started[i] = !pthread_create(&th[i], NULL, destroy_link, sys_links[i]);
	for (size_t i = 0; i < 2 * NSYSCALLS; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
		else
			bpf_link__destroy(sys_links[i]);
		sys_links[i] = NULL;
	}
}

/* Where the uprobes go in the server binary, found in one pass over its symbols (0: absent). */
static const char *const uprobe_funcs[] = { FLUSH_FUNC };
static uint64_t uprobe_offs[sizeof(uprobe_funcs) / sizeof(uprobe_funcs[0])];

static void resolve_uprobes(const char *path)
{
	int err = elf_func_offsets(path, uprobe_funcs, uprobe_offs, sizeof(uprobe_offs) / sizeof(uprobe_offs[0]));

	if (err == -ENOEXEC && !env.any)
		die("%s is not an ELF executable: is pid %d a valkey-server or redis-server?",
		    env.binary ? env.binary : target_exe, env.pid);
	if (err && err != -ENOEXEC)
		die("cannot read %s: %s", path, strerror(-err));
	for (size_t i = 0; i < sizeof(uprobe_offs) / sizeof(uprobe_offs[0]); i++)
		if (uprobe_offs[i])
			uprobe_offs[i] = uprobe_skip_endbr64(path, uprobe_offs[i]);
}

/*
 * The uprobe perf events, opened on a thread while the BPF object loads: registering a uprobe waits
 * for an RCU grace period (uprobe_register() takes dup_mmap_sem, a percpu rwsem, for writing),
 * 10-30 ms here. The programs are attached to the open events after the load.
 */
static struct {
	pthread_t thread;
	const char *path;
	int fd[2];	/* flushAppendOnlyFile's entry and return */
	int err;	/* errno of the first failure */
} up = { .fd = { -1, -1 } };

static int read_sysfs_int(const char *path, const char *prefix)
{
	char buf[64];
	int v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f) && !strncmp(buf, prefix, strlen(prefix)))
		v = atoi(buf + strlen(prefix));
	fclose(f);
	return v;
}

/* As libbpf's perf_event_open_probe() does for a uprobe at a file offset. */
static int open_uprobe(const char *path, uint64_t off, bool ret)
{
	int type = read_sysfs_int("/sys/bus/event_source/devices/uprobe/type", "");
	int bit = ret ? read_sysfs_int("/sys/bus/event_source/devices/uprobe/format/retprobe", "config:") : 0;
	struct perf_event_attr attr = {};

	if (type < 0 || bit < 0 || bit > 63) {
		errno = ENOENT;
		return -1;
	}
	attr.size = sizeof(attr);
	attr.type = type;
	attr.config = ret ? 1ULL << bit : 0;
	attr.config1 = (uint64_t)(uintptr_t)path;	/* uprobe_path */
	attr.config2 = off;				/* probe_offset */
	attr.sample_period = 1;
	attr.wakeup_events = 1;
	return syscall(__NR_perf_event_open, &attr, env.pid, -1, -1, PERF_FLAG_FD_CLOEXEC);
}

static void *uprobe_thread(void *arg)
{
	for (int i = 0; i < 2 && !up.err; i++) {
		up.fd[i] = open_uprobe(up.path, uprobe_offs[0], i == 1);
		if (up.fd[i] < 0)
			up.err = errno;
	}
	return NULL;
}

static void open_uprobes(const char *path)
{
	int err;

	if (!uprobe_offs[0]) {
		if (env.any)
			return;	/* -a: not a server, trace it anyway */
		die("%s has no symbol %s: is pid %d a valkey-server or redis-server? (-b BINARY "
		    "names an unstripped binary)", env.binary ? env.binary : target_exe, FLUSH_FUNC, env.pid);
	}
	up.path = path;
	err = pthread_create(&up.thread, NULL, uprobe_thread, NULL);
	if (err)
		die("cannot start a thread: %s", strerror(err));
}

/* The flush uprobes, once the programs are loaded; NULL links with -a on a process without them. */
static void attach_flush(struct aoftrace_bpf *obj, struct bpf_link **links)
{
	struct bpf_program *progs[2] = { obj->progs.flush_enter, obj->progs.flush_exit };

	if (!up.path)
		return;
	pthread_join(up.thread, NULL);
	up.path = NULL;
	if (up.err) {
		if (up.err == ESRCH)
			die("no process with pid %d", env.pid);
		die("cannot attach uprobe to %s in %s: %s", FLUSH_FUNC,
		    env.binary ? env.binary : target_exe, strerror(up.err));
	}
	for (int i = 0; i < 2; i++) {
		links[i] = bpf_program__attach_perf_event(progs[i], up.fd[i]);
		if (!links[i])
			die("cannot attach uprobe to %s: %s", FLUSH_FUNC, strerror(errno));
		up.fd[i] = -1;	/* the link owns it now */
	}
}

/*
 * --lite: what runs per scheduler event, per lock contention and per block request is not loaded: the
 * split of each operation into components (sleeps, locks, run-queue chains of kernel threads), block
 * requests, jbd2 commit phases and XFS iclog writes. What stays runs per flush, per syscall the server
 * makes, per io_uring request and per journal commit (docs/reliability.md, "Modes").
 */
static const char *const full_only_progs[] = {
	"sched_switch", "sched_waking", "contention_begin", "contention_end",
	"folio_wait_writeback", "xfs_log_cil_wait", "xlog_iclog_wait_on", "balance_dirty_pages",
	"jbd2_start_commit", "jbd2_commit_locking", "jbd2_commit_flushing", "jbd2_commit_logging",
	"xlog_iclog_sync", "xlog_iclog_sync_done", "block_rq_issue", "block_rq_complete",
};

static void lite_mode(struct aoftrace_bpf *obj)
{
	/* maps only those programs use: one entry each, not megabytes of kernel memory */
	struct bpf_map *unused[] = {
		obj->maps.stacks, obj->maps.stack_comp, obj->maps.offstacks, obj->maps.kthread_rqs,
		obj->maps.inflight, obj->maps.jbd2_commits, obj->maps.iclog_writes, obj->maps.kranges,
	};

	for (size_t i = 0; i < sizeof(full_only_progs) / sizeof(full_only_progs[0]); i++) {
		struct bpf_program *prog = bpf_object__find_program_by_name(obj->obj, full_only_progs[i]);

		if (prog)
			bpf_program__set_autoload(prog, false);
	}
	for (size_t i = 0; i < sizeof(unused) / sizeof(unused[0]); i++)
		bpf_map__set_max_entries(unused[i], 1);
}

int main(int argc, char **argv)
{
	LIBBPF_OPTS(bpf_object_open_opts, open_opts);
	struct bpf_link *links[2] = {};
	struct ring_buffer *rb = NULL;
	struct aoftrace_bpf *obj = NULL;
	char attach_path[PATH_MAX], off[512];
	bool no_flush = false, syscall_tps;
	uint64_t start, next_ival, end;
	FILE *json = NULL;
	int err;

	/*
	 * libbpf reads the kernel's BTF (~6 MB, more once indexed) to load and frees it after. A fixed mmap
	 * threshold keeps such buffers out of the heap, so they are handed back when freed; glibc's adaptive
	 * threshold would grow after the first such free and keep later ones in the heap for good.
	 */
	mallopt(M_MMAP_THRESHOLD, 256 << 10);
	env.top = 5;
	argp_err_exit_status = 2;
	argv[0] = (char *)"aoftrace";	/* getopt's messages name argv[0]: keep them "aoftrace: ..." */
	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return 2;
	libbpf_set_print(libbpf_print_fn);

	if (!has_caps())
		die("need root, or CAP_BPF and CAP_PERFMON, to load BPF programs");
	if (env.check)
		return cmd_check();
	if (access(btf_file(), R_OK))
		die("no kernel BTF at %s: this tool needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
		    btf_file());
	resolve_target(attach_path, sizeof(attach_path));
	if (env.json_path)
		check_output_path(env.json_path);
	if (env.folded_path)
		check_output_path(env.folded_path);
	if (env.timeline_path)
		check_output_path(env.timeline_path);
	syscall_tps = private_tracefs();
	resolve_uprobes(attach_path);
	open_uprobes(attach_path);
	if (!env.lite && (err = pthread_create(&kr.thread, NULL, kranges_thread, NULL)))
		die("cannot start a thread: %s", strerror(err));

	open_opts.btf_custom_path = env.btf_path;
	obj = aoftrace_bpf__open_opts(&open_opts);
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

	err = aoftrace_bpf__load(obj);
	if (err) {
		fprintf(stderr, "aoftrace: cannot load BPF programs: %s (run with -v for the verifier log)\n",
			strerror(-err));
		goto cleanup;
	}
	err = env.lite ? 0 : kranges_install(obj);
	if (err)
		goto cleanup;
	err = aoftrace_bpf__attach(obj);
	if (err) {
		fprintf(stderr, "aoftrace: cannot attach tracepoints: %s (see aoftrace --check)\n",
			strerror(-err));
		goto cleanup;
	}
	if (syscall_tps && (err = attach_syscalls(obj)))
		goto cleanup;
	attach_flush(obj, links);
	iowq_at_start = count_iowq_workers(env.pid);
	obj->bss->iowq_alive = iowq_at_start;
	obj->bss->iowq_max_alive = iowq_at_start;
	uring_init(env.lite);

	if (env.json_path) {
		/* Opened only once attached, so a failed start leaves the user's file alone. */
		int fd = open(env.json_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);

		if (fd < 0 || !(json = fdopen(fd, "w"))) {
			err = -errno;
			fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.json_path, strerror(errno));
			goto cleanup;
		}
	}
	if (env.timeline_path) {
		err = timeline_open(env.timeline_path, env.pid, comp_names, now_ns());
		if (err) {
			fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.timeline_path, strerror(-err));
			goto cleanup;
		}
	}
	rb = ring_buffer__new(bpf_map__fd(obj->maps.events), handle_event, NULL, NULL);
	if (!rb) {
		err = -errno;
		fprintf(stderr, "aoftrace: cannot create ring buffer: %s\n", strerror(errno));
		goto cleanup;
	}
	signal(SIGINT, sig_handler);
	signal(SIGTERM, sig_handler);
	signal(SIGPIPE, SIG_IGN);	/* stdout piped into head: the JSON and the detach still happen */

	printf("Tracing %s pid %d (%s). Hit Ctrl-C to end.\n", target_comm, env.pid, target_exe);
	if (env.interval)
		printf("%-8s %8s %9s %9s %9s %8s %9s %9s %10s %5s\n", "TIME", "FLUSHES", "F_P50us", "F_P99us",
		       "F_MAXus", "FDSYNCS", "S_P50us", "S_P99us", "WRITE_MB", "CHILD");
	fflush(stdout);

	start = trace_start_ns = now_ns();
	next_ival = start + (uint64_t)(env.interval * 1e9);
	end = env.duration ? start + (uint64_t)(env.duration * 1e9) : UINT64_MAX;
	while (!exiting) {
		uint64_t now;

		/* The BPF side rarely wakes us (BPF_RB_NO_WAKEUP): poll as a 100 ms tick, then drain. */
		err = ring_buffer__poll(rb, 100);
		if (err >= 0)
			err = ring_buffer__consume(rb);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "aoftrace: ring buffer: %s\n", strerror(-err));
			goto cleanup;
		}
		err = 0;
		now = now_ns();
		if (env.interval && now >= next_ival) {
			print_interval();
			next_ival += (uint64_t)(env.interval * 1e9);
		}
		if (target_exited || (kill(env.pid, 0) && errno == ESRCH)) {
			printf("target pid %d exited\n", env.pid);
			target_exited = true;
			break;
		}
		if (now >= end)
			break;
	}
	ring_buffer__consume(rb);
	/* Writes that completed after their flush are in no flush record: count them once, for both reports. */
	fsx.uring_late = sum_counter(obj, CNT_URING_LATE_BYTES);
	fsx.bytes_written += fsx.uring_late;
	fsx.uring_bytes += fsx.uring_late;
	{
		double window = (now_ns() - start) / 1e9;

		print_report(obj, window);
		/* Valkey and Redis call flushAppendOnlyFile() on every event-loop turn, but only with the AOF on. */
		if (!env.any && !sum_counter(obj, CNT_FLUSH_CALLS) && window >= 1.0) {
			fprintf(stderr, "aoftrace: no AOF flush seen — is appendonly on? (no %s() call in %.1f s)\n",
				FLUSH_FUNC, window);
			no_flush = true;
		}
		if (json) {
			write_json(json, obj, window);
			if (fclose(json)) {
				json = NULL;
				err = -errno;
				fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.json_path, strerror(errno));
				goto cleanup;
			}
			json = NULL;
		}
		if (env.timeline_path && (err = timeline_close())) {
			fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.timeline_path, strerror(-err));
			goto cleanup;
		}
		if (env.folded_path) {
			int fd = open(env.folded_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
			FILE *ff = fd < 0 ? NULL : fdopen(fd, "w");

			if (!ff || write_folded(obj, ff) || fclose(ff)) {
				err = -EIO;
				fprintf(stderr, "aoftrace: cannot write %s: %s\n", env.folded_path, strerror(errno));
				goto cleanup;
			}
		}
	}

cleanup:
	if (json)
		fclose(json);
	timeline_close();
	ring_buffer__free(rb);
	for (int i = 0; i < 2; i++)
		bpf_link__destroy(links[i]);
	detach_syscalls();
	aoftrace_bpf__destroy(obj);
	ksyms_free(ksyms);
	uring_free();
	return err != 0 || no_flush;
}

// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What this kernel offers aoftrace: tracepoint groups found in its BTF (a group missing is switched
 * off before load, and said), capabilities, and `aoftrace --check`.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "aoftrace.skel.h"
#include "attach.h"
#include "cli.h"
#include "kfeatures.h"
#include "names.h"
#include "trace_helpers.h"

/* Capability bits in /proc/self/status CapEff. */
bool has_caps(void)
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

#define NFEATURES ARRAY_SIZE(features)

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

/*
 * Tracepoints renamed between kernels: a program for each name, and the one the kernel has is loaded
 * (the other is not a missing tracepoint). io_uring_submit_sqe became io_uring_submit_req in 6.3.
 */
static const char *const renamed[][2] = {
	{ "io_uring_submit_req", "io_uring_submit_sqe" },
};

/* The other name of a renamed tracepoint, or NULL. */
static const char *other_name(const char *tp)
{
	for (size_t i = 0; i < ARRAY_SIZE(renamed); i++)
		for (int k = 0; k < 2; k++)
			if (!strcmp(renamed[i][k], tp))
				return renamed[i][!k];
	return NULL;
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

static bool tp_seen(const struct tp_probe *p, const char *tp)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->tp[i], tp))
			return p->seen[i];
	return false;
}

/*
 * The kernel's own BTF, then, for the running kernel, every module's (/sys/kernel/btf/<module>, 5.11+):
 * where XFS, ext4 and jbd2 are modules (Debian's kernels), their tracepoints' typedefs are there, and
 * libbpf finds the module BTF to attach and relocate against. --btf FILE: that file alone.
 */
static int scan_btf(const char *btf_path, struct tp_probe *p)
{
	struct dirent *d;
	char path[PATH_MAX];
	DIR *dir;
	int err = btf_for_each_string(btf_path, note_trace_type, p);

	if (err || env.btf_path || !(dir = opendir("/sys/kernel/btf")))
		return err;
	while ((d = readdir(dir))) {
		if (d->d_name[0] == '.' || !strcmp(d->d_name, "vmlinux"))
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/btf/%s", d->d_name);
		btf_for_each_string(path, note_trace_type, p);	/* a module unloaded meanwhile: no matter */
	}
	closedir(dir);
	return 0;
}

/*
 * Which tp_btf programs this kernel can attach: a tracepoint exists when its btf_trace_<name>
 * typedef is in the BTF. Read from the BTF's strings, not a parsed BTF: in vmlinux those names are
 * only ever typedefs', and libbpf parses the whole BTF again to load, so parsing it here as well
 * cost ~40 ms of start-up. Returns false if BTF cannot be read.
 */
bool probe_features(struct bpf_object *bobj, const char *btf_path)
{
	struct tp_probe p = {};
	struct bpf_program *prog;

	memset(feature_missing, 0, sizeof(feature_missing));
	memset(feature_used, 0, sizeof(feature_used));
	bpf_object__for_each_program(prog, bobj) {
		const char *sec = bpf_program__section_name(prog);

		if (!strncmp(sec, "tp_btf/", 7) && feature_of(sec + 7) && p.n < ARRAY_SIZE(p.tp))
			p.tp[p.n++] = sec + 7;
	}
	if (scan_btf(btf_path, &p)) {
		errno = EINVAL;
		return false;
	}
	for (size_t i = 0; i < p.n; i++) {
		const struct feature *f = feature_of(p.tp[i]);
		const char *other = other_name(p.tp[i]);

		feature_used[f - features] = true;
		if (p.seen[i] || (other && tp_seen(&p, other)) || feature_missing[f - features][0])
			continue;
		snprintf(feature_missing[f - features], sizeof(feature_missing[0]), "%s", p.tp[i]);
	}
	/* A group is off as a whole: half of the io_uring lifecycle would mislead. */
	bpf_object__for_each_program(prog, bobj) {
		const char *sec = bpf_program__section_name(prog);
		const struct feature *f = strncmp(sec, "tp_btf/", 7) ? NULL : feature_of(sec + 7);

		if (f && (group_missing(f->group) || !tp_seen(&p, sec + 7)))
			bpf_program__set_autoload(prog, false);
	}
	return true;
}

/* "jbd2 (no jbd2_start_commit)" for each group off, comma-separated; "" if none. */
const char *features_off(char *buf, size_t len, bool core_only)
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

int cmd_check(void)
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

/* The groups switched off, each once, in table order; returns how many (at most max). */
size_t features_off_groups(const char **out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < NFEATURES && n < max; i++)
		if (group_first(i) && group_missing(features[i].group))
			out[n++] = features[i].group;
	return n;
}

// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Attaching: the target and its binary, the output paths checked before anything is attached, the
 * off-CPU classifier's kernel ranges, the syscall tracepoints (in a private tracefs), the flush
 * uprobes, and what --lite leaves out. Slow steps run on threads while the verifier works.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/magic.h>
#include <linux/perf_event.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "aoftrace.skel.h"
#include "attach.h"
#include "cli.h"
#include "names.h"
#include "offcpu.h"
#include "trace_helpers.h"
#include "uprobe_helpers.h"

/* The binary the symbols come from, as the user knows it. */
static const char *binary_name(const struct target *t)
{
	return env.binary ? env.binary : t->exe;
}

void resolve_target(struct target *t)
{
	char proc[64];
	ssize_t n;
	FILE *f;

	t->pid = env.pid;
	snprintf(proc, sizeof(proc), "/proc/%d", t->pid);
	if (access(proc, F_OK))
		die("no process with pid %d", t->pid);
	snprintf(proc, sizeof(proc), "/proc/%d/comm", t->pid);
	f = fopen(proc, "r");
	if (f) {
		if (fgets(t->comm, sizeof(t->comm), f))
			t->comm[strcspn(t->comm, "\n")] = 0;
		fclose(f);
	}
	snprintf(proc, sizeof(proc), "/proc/%d/exe", t->pid);
	n = readlink(proc, t->exe, sizeof(t->exe) - 1);
	if (n < 0 && !env.binary) {
		if (errno == ENOENT)
			die("pid %d has no executable (a kernel thread?): not a valkey or redis server", t->pid);
		die("cannot read %s: %s (use -b BINARY)", proc, strerror(errno));
	}
	t->exe[n > 0 ? n : 0] = 0;
	if (env.binary) {
		if (access(env.binary, R_OK))
			die("cannot read binary %s: %s", env.binary, strerror(errno));
		snprintf(t->attach_path, sizeof(t->attach_path), "%s", env.binary);
		if (!t->exe[0])
			snprintf(t->exe, sizeof(t->exe), "%s", env.binary);
	} else {
		/* The magic link reaches the mapped file even in another mount namespace or when deleted. */
		snprintf(t->attach_path, sizeof(t->attach_path), "%s", proc);
		if (access(proc, R_OK))
			die("cannot read %s: %s (use -b BINARY)", proc, strerror(errno));
	}
}

/*
 * The kernel's own file systems: their "regular files" (/proc/version, a sysfs attribute) open for
 * writing as root and fail only at the write, after the whole trace. Refused up front.
 */
static const char *pseudo_fs(const char *path)
{
	static const struct {
		long magic;
		const char *name;
	} kinds[] = {
		{ PROC_SUPER_MAGIC, "procfs" }, { SYSFS_MAGIC, "sysfs" }, { TRACEFS_MAGIC, "tracefs" },
		{ DEBUGFS_MAGIC, "debugfs" }, { CGROUP_SUPER_MAGIC, "cgroupfs" }, { CGROUP2_SUPER_MAGIC, "cgroup2" },
		{ SECURITYFS_MAGIC, "securityfs" }, { BPF_FS_MAGIC, "bpffs" }, { 0x62656570 /* CONFIGFS_MAGIC, not in uapi */, "configfs" },
	};
	struct statfs sfs;

	if (statfs(path, &sfs))
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
		if ((long)sfs.f_type == kinds[i].magic)
			return kinds[i].name;
	return NULL;
}

/* Fail before attaching when FILE cannot be written; create and truncate nothing yet. */
void check_output_path(const char *path)
{
	char dir[PATH_MAX], *slash;
	const char *fs;
	struct stat st;

	if (!lstat(path, &st)) {
		if (S_ISLNK(st.st_mode))
			die("cannot write %s: it is a symbolic link (not followed)", path);
		if (!S_ISREG(st.st_mode))
			die("cannot write %s: not a regular file", path);
		if ((fs = pseudo_fs(path)))
			die("cannot write %s: a file of the kernel's %s, not a place for a report", path, fs);
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
	if ((fs = pseudo_fs(dir)))
		die("cannot write %s: %s is the kernel's %s, not a place for a report", path, dir, fs);
	if (access(dir, W_OK))
		die("cannot write %s: %s", path, strerror(errno));
}

/*
 * The classifier's ranges come from /proc/kallsyms, which takes the kernel ~40 ms to print: read it
 * on a thread while the verifier checks the programs, keeping only the table's names.
 */
static struct {
	pthread_t thread;
	bool started;
	struct aof_kranges t;
	int n, err;
} kr;

static void *kranges_thread(void *arg)
{
	struct ksyms *ks = ksyms_load_filter(NULL, offcpu_wanted);

	if (!ks) {
		kr.err = errno ? errno : ENOMEM;
		return NULL;
	}
	kr.n = build_kranges(ks, kr.t.r, MAX_KRANGES);
	ksyms_free(ks);
	return NULL;
}

/* Starts reading /proc/kallsyms on a thread, for kranges_install(). */
void kranges_start(void)
{
	int err = pthread_create(&kr.thread, NULL, kranges_thread, NULL);

	if (err)
		die("cannot start a thread: %s", strerror(err));
	kr.started = true;
}

int kranges_install(struct aoftrace_bpf *obj)
{
	int fd = bpf_map__fd(obj->maps.kranges);

	if (!kr.started)
		return -ESRCH;
	pthread_join(kr.thread, NULL);
	kr.started = false;
	if (kr.err) {
		fprintf(stderr, "aoftrace: cannot read /proc/kallsyms: %s\n", strerror(kr.err));
		return -kr.err;
	}
	/* the padding too: see krange_comp(); the whole table is the map's one value */
	if (bpf_map_update_elem(fd, &(__u32){ 0 }, &kr.t, BPF_ANY))
		return -errno;
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
#define NSYSCALLS ARRAY_SIZE(traced_syscalls)
#define SYSCALL_EVENTS "/sys/kernel/tracing/events/syscalls"

static bool syscall_events_exist(void)
{
	return access(SYSCALL_EVENTS "/sys_enter_fdatasync/id", R_OK) == 0;
}

/* Before any thread exists: unshare(CLONE_NEWNS) refuses a multithreaded process. */
bool private_tracefs(void)
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

int attach_syscalls(struct aoftrace_bpf *obj)
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
void detach_syscalls(void)
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
static uint64_t uprobe_offs[ARRAY_SIZE(uprobe_funcs)];

static void resolve_uprobes(const struct target *t)
{
	const char *path = t->attach_path;
	int err = elf_func_offsets(path, uprobe_funcs, uprobe_offs, ARRAY_SIZE(uprobe_offs));

	if (err == -ENOEXEC && !env.any)
		die("%s is not an ELF executable: is pid %d a valkey-server or redis-server?",
		    binary_name(t), t->pid);
	if (err && err != -ENOEXEC)
		die("cannot read %s: %s", path, strerror(-err));
	for (size_t i = 0; i < ARRAY_SIZE(uprobe_offs); i++)
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
	const struct target *target;
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

void open_uprobes(const struct target *t)
{
	int err;

	resolve_uprobes(t);
	if (!uprobe_offs[0]) {
		if (env.any)
			return;	/* -a: not a server, trace it anyway */
		die("%s has no symbol %s: is pid %d a valkey-server or redis-server? (-b BINARY "
		    "names an unstripped binary)", binary_name(t), FLUSH_FUNC, t->pid);
	}
	up.target = t;
	up.path = t->attach_path;
	err = pthread_create(&up.thread, NULL, uprobe_thread, NULL);
	if (err)
		die("cannot start a thread: %s", strerror(err));
}

/* The flush uprobes, once the programs are loaded; NULL links with -a on a process without them. */
void attach_flush(struct aoftrace_bpf *obj, struct bpf_link **links)
{
	struct bpf_program *progs[2] = { obj->progs.flush_enter, obj->progs.flush_exit };

	if (!up.path)
		return;
	pthread_join(up.thread, NULL);
	up.path = NULL;
	if (up.err) {
		if (up.err == ESRCH)
			die("no process with pid %d", up.target->pid);
		die("cannot attach uprobe to %s in %s: %s", FLUSH_FUNC,
		    binary_name(up.target), strerror(up.err));
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

void lite_mode(struct aoftrace_bpf *obj)
{
	/* maps only those programs use: one entry each, not megabytes of kernel memory */
	struct bpf_map *unused[] = {
		obj->maps.stacks, obj->maps.stack_comp, obj->maps.offstacks, obj->maps.kthread_rqs,
		obj->maps.inflight, obj->maps.jbd2_commits, obj->maps.iclog_writes, obj->maps.kranges,
	};

	for (size_t i = 0; i < ARRAY_SIZE(full_only_progs); i++) {
		struct bpf_program *prog = bpf_object__find_program_by_name(obj->obj, full_only_progs[i]);

		if (prog)
			bpf_program__set_autoload(prog, false);
	}
	for (size_t i = 0; i < ARRAY_SIZE(unused); i++)
		bpf_map__set_max_entries(unused[i], 1);
}

/* io-wq workers the target has now: threads named iou-wrk-<pid>. */
uint64_t count_iowq_workers(pid_t pid)
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


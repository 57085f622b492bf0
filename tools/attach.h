/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __ATTACH_H
#define __ATTACH_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/types.h>
#include "aoftrace.h"

struct aoftrace_bpf;
struct bpf_link;

/* The process traced, as the user named it. */
struct target {
	pid_t pid;
	char exe[PATH_MAX];		/* /proc/PID/exe's target, or -b */
	char comm[TASK_COMM_LEN + 1];
	char attach_path[PATH_MAX];	/* where the uprobes go: -b, or the /proc/PID/exe magic link */
};

/* Fills t for env.pid; a process that is gone or unreadable dies with one line. */
void resolve_target(struct target *t);
/* Dies with one line when FILE could not be written; creates and truncates nothing. */
void check_output_path(const char *path);

/* The off-CPU classifier's kernel ranges: read /proc/kallsyms on a thread, then fill the map. */
void kranges_start(void);
int kranges_install(struct aoftrace_bpf *obj);

/* The syscalls:sys_{enter,exit}_<name> tracepoints, in a tracefs of our own if none is mounted. */
bool private_tracefs(void);	/* before any thread exists: unshare() refuses a threaded process */
int attach_syscalls(struct aoftrace_bpf *obj);
void detach_syscalls(void);

/* The flushAppendOnlyFile uprobes: perf events opened on a thread while the object loads. */
void open_uprobes(const struct target *t);
void attach_flush(struct aoftrace_bpf *obj, struct bpf_link **links);

/* --lite: the per-scheduler-event, lock and block programs not loaded, their maps cut to one entry. */
void lite_mode(struct aoftrace_bpf *obj);

/* io-wq workers the process has now (threads named iou-wrk-*). */
uint64_t count_iowq_workers(pid_t pid);

#endif /* __ATTACH_H */

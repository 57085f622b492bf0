// SPDX-License-Identifier: BSD-3-Clause
/*
 * aofwriter's AOF rewrite, named as in Valkey's aof.c so that uprobes on serverFork,
 * rewriteAppendOnlyFileBackground and backgroundRewriteDoneHandler see the same structure: the forked
 * child writes the dataset as a new base file, the parent then switches the manifest over to it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aofwriter.h"

#define CHILD_TYPE_AOF 2

long long last_rewrite_fail_ms;

/* ---------------------------------------------------------------- rewrite (child side) */

struct rio {
	int fd;
	char buf[64 * 1024];
	size_t len;
	off_t written, synced;
	int err;
};

static void rio_flush(struct rio *r, const char *p, size_t n)
{
	while (n && !r->err) {
		ssize_t w = write(r->fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			r->err = w < 0 ? errno : ENOSPC;
			return;
		}
		p += w;
		n -= w;
		r->written += w;
	}
	/* aof-rewrite-incremental-fsync: push dirty pages out every 4 MB instead of at the end. */
	if (r->written - r->synced >= REWRITE_FSYNC_BYTES) {
		sync_file_range(r->fd, r->synced, r->written - r->synced,
				SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE);
		r->synced = r->written;
	}
}

static void rio_write(struct rio *r, const void *p, size_t n)
{
	if (r->len + n > sizeof(r->buf)) {
		rio_flush(r, r->buf, r->len);
		r->len = 0;
	}
	if (n >= sizeof(r->buf)) {
		rio_flush(r, p, n);
		return;
	}
	memcpy(r->buf + r->len, p, n);
	r->len += n;
}

static void rio_bulk(struct rio *r, const char *p, size_t n)
{
	char hdr[32];
	int l = snprintf(hdr, sizeof(hdr), "$%zu\r\n", n);

	rio_write(r, hdr, l);
	rio_write(r, p, n);
	rio_write(r, "\r\n", 2);
}

static void rewrite_entry(struct entry *e, void *ctx)
{
	struct rio *r = ctx;

	rio_write(r, "*3\r\n$3\r\nSET\r\n", 13);
	rio_bulk(r, e->key, e->klen);
	rio_bulk(r, e->val, e->vlen);
}

/* Writes the dataset as a RESP base file (aof-use-rdb-preamble no), like rewriteAppendOnlyFile(). */
static int rewriteAppendOnlyFile(const char *tmpname)
{
	static struct rio r;
	const char *path = aof_path(tmpname);

	memset(&r, 0, sizeof(r));
	r.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (r.fd < 0) {
		serverLog("Opening the temp file for AOF rewrite in rewriteAppendOnlyFile(): %s", strerror(errno));
		return -1;
	}
	if (server.db.used) {
		static const char sel[] = "*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n";

		rio_write(&r, sel, sizeof(sel) - 1);
		dict_iter(rewrite_entry, &r);
	}
	rio_flush(&r, r.buf, r.len);
	if (!r.err && fsync(r.fd) < 0)
		r.err = errno;
	close(r.fd);
	if (r.err) {
		serverLog("Write error writing append only file on disk: %s", strerror(r.err));
		unlink(path);
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- rewrite (parent side) */

/* Valkey 8's serverFork() (redisFork in Redis 7): fork and prepare the child. */
EXPORT pid_t serverFork(int purpose)
{
	pid_t parent = getpid(), pid;
	sigset_t none;

	pid = fork();
	if (pid != 0)
		return pid;
	/* child */
	server.child_pid = 0;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	aof_close_listeners_in_child();
	prctl(PR_SET_NAME, purpose == CHILD_TYPE_AOF ? "aof-rewrite" : "aofwriter-child");
	/* A rewrite is useless once the parent is gone (killed): do not outlive it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	return 0;
}

EXPORT int rewriteAppendOnlyFileBackground(void)
{
	pid_t childpid;

	if (server.child_pid != -1)
		return C_ERR;
	/* Everything before the fork goes to the old incr file, everything after to the new one. */
	flushAppendOnlyFile(1);
	if (server.aof_buf.len) {
		serverLog("Can't rewrite the AOF: the AOF buffer could not be written");
		goto fail;
	}
	if (openNewIncrAofForAppend() != C_OK)
		goto fail;
	server.rewrite_start_ms = mstime();
	childpid = serverFork(CHILD_TYPE_AOF);
	if (childpid == 0) {
		char tmp[64], bg[64];

		snprintf(tmp, sizeof(tmp), "temp-rewriteaof-%d.aof", (int)getpid());
		snprintf(bg, sizeof(bg), "temp-rewriteaof-bg-%d.aof", (int)getpid());
		if (rewriteAppendOnlyFile(tmp) == 0 && rename(aof_path(tmp), aof_path(bg)) == 0)
			_exit(0);
		unlink(aof_path(tmp));
		_exit(1);
	}
	if (childpid == -1) {
		serverLog("Can't rewrite append only file in background: fork: %s", strerror(errno));
		goto fail;
	}
	if (server.verbose)
		serverLog("Background append only file rewriting started by pid %d", (int)childpid);
	server.child_pid = childpid;
	return C_OK;
fail:
	server.aof_last_bgrewrite_status = C_ERR;
	last_rewrite_fail_ms = mstime();
	return C_ERR;
}

void unlink_rewrite_temp(pid_t pid)
{
	char name[64];

	snprintf(name, sizeof(name), "temp-rewriteaof-%d.aof", (int)pid);
	unlink(aof_path(name));
	snprintf(name, sizeof(name), "temp-rewriteaof-bg-%d.aof", (int)pid);
	unlink(aof_path(name));
}

/* The child is done: the new base replaces the old base and the incr files it covers. */
EXPORT void backgroundRewriteDoneHandler(int exitcode, int bysignal)
{
	struct manifest m = { 0 };
	char tmp[64], *base = NULL;
	pid_t pid = server.child_pid;
	int last = server.manifest.nincr - 1;

	server.child_pid = -1;
	server.aof_last_rewrite_ms = mstime() - server.rewrite_start_ms;
	if (bysignal || exitcode != 0) {
		serverLog("Background AOF rewrite %s %d", bysignal ? "terminated by signal" : "failed with exit code",
			  bysignal ? bysignal : exitcode);
		goto fail;
	}
	snprintf(tmp, sizeof(tmp), "temp-rewriteaof-bg-%d.aof", (int)pid);
	base = aof_name("base", server.manifest.cur_base_seq + 1);
	if (rename(aof_path(tmp), aof_path(base)) < 0) {
		serverLog("Error trying to rename the temporary AOF base file %s into %s: %s", tmp, base, strerror(errno));
		goto fail;
	}
	/* New manifest: the new base and the incr file opened at fork time; the rest is history. */
	m.base.name = base;
	m.base.seq = server.manifest.cur_base_seq + 1;
	m.base.type = 'b';
	m.cur_base_seq = m.base.seq;
	m.cur_incr_seq = server.manifest.cur_incr_seq;
	base = NULL;
	if (last >= 0)
		manifest_add_incr(&m, strdup(server.manifest.incr[last].name), server.manifest.incr[last].seq);
	if (persistAofManifest(&m) < 0) {
		unlink(aof_path(m.base.name));
		goto fail;
	}
	/* Only now that the manifest no longer names them, the history files go. */
	if (server.manifest.base.name)
		unlink(aof_path(server.manifest.base.name));
	for (int i = 0; i < last; i++)
		unlink(aof_path(server.manifest.incr[i].name));
	if (server.test_faults & FAULT_STALE_FILE) {
		struct stat st;

		/* From now on every flush writes to a deleted file: count each as an injected fault. */
		server.aof_fd_unlinked = fstat(server.aof_fd, &st) == 0 && st.st_nlink == 0;
	}
	manifest_free(&server.manifest);
	server.manifest = m;
	server.aof_base_size = file_size(aof_path(server.manifest.base.name));
	/* stale-file: the manifest's incr file is empty; count growth from here, as after a switch */
	server.aof_current_size = server.aof_base_size + (server.aof_fd_unlinked ? 0 : server.aof_offset);
	server.aof_rewrites++;
	server.aof_last_bgrewrite_status = C_OK;
	if (server.verbose)
		serverLog("Background AOF rewrite finished successfully");
	return;
fail:
	manifest_free(&m);
	free(base);
	unlink_rewrite_temp(pid);
	server.aof_last_bgrewrite_status = C_ERR;
	last_rewrite_fail_ms = mstime();
}

void aof_check_child(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != server.child_pid)
			continue;
		backgroundRewriteDoneHandler(WIFEXITED(status) ? WEXITSTATUS(status) : -1,
					     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		/* --auto-rewrite without a size: the next rewrite starts right away. */
		if (server.auto_rewrite && !server.auto_rewrite_bytes && server.aof_last_bgrewrite_status == C_OK)
			rewriteAppendOnlyFileBackground();
	}
}

// SPDX-License-Identifier: BSD-3-Clause
/*
 * The AOF path of aofwriter, shaped and named like Valkey's aof.c so that uprobes on
 * flushAppendOnlyFile, aofWrite, rewriteAppendOnlyFileBackground, backgroundRewriteDoneHandler
 * and serverFork see the same structure as in Valkey: Redis 7 multi-part AOF (base + incr files
 * and a manifest), flush before replies, fsync always/everysec (bio_aof thread)/no, rewrite in a
 * forked child. The write itself goes through write(2) or io_uring (--io). This file holds the
 * write path, init, cron, shutdown and INFO; the rewrite, the manifest, loading, the bio_aof thread,
 * io_uring and the test faults have files of their own (aofwriter.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aofwriter.h"

/* ---------------------------------------------------------------- writing */

static int aof_open_flags(void)
{
	/* write(2) appends (O_APPEND, as Valkey); io_uring writes at explicit offsets instead. */
	return O_WRONLY | O_CREAT | O_CLOEXEC | (uring_mode() ? 0 : O_APPEND);
}

/* Set by flushAppendOnlyFile() for the aofWrite() it calls: where the buffer goes and whether the
 * io_uring modes link the fsync behind the writes. Only the test faults change them. */
static off_t write_off;
static bool write_overwrite;	/* overwrite fault: pwrite at write_off below the end of file */
static bool write_linked_sync;

/* Valkey's aofWrite(): write everything or return what was written (-1 if nothing). */
EXPORT ssize_t aofWrite(int fd, const char *buf, size_t len)
{
	ssize_t nwritten = 0, totwritten = 0;

	if (uring_mode())
		return uring_write(fd, buf, len, write_off, write_linked_sync);
	if (write_overwrite)
		return fault_pwrite(fd, buf, len, write_off);
	while (len) {
		nwritten = write(fd, buf, len);
		server.stat_write_calls++;
		if (nwritten < 0) {
			if (errno == EINTR) {
				server.stat_retries++;
				continue;
			}
			return totwritten ? totwritten : -1;
		}
		if ((size_t)nwritten < len)
			server.stat_short_writes++;
		len -= nwritten;
		buf += nwritten;
		totwritten += nwritten;
	}
	return totwritten;
}

static void aof_background_fsync(void)
{
	bio_submit(server.aof_fd, true, false, server.aof_offset);
	server.aof_fsync_offset = server.aof_offset;
	server.last_fsync_ms = mstime();
}

/* Which every-Nth-flush test faults hit this flush: none without --test-fault. Only event-loop
 * flushes count; a forced one (rewrite start, shutdown) has no replies to send early. */
static unsigned test_faults_due(int force)
{
	unsigned due;

	if (force || !(server.test_faults & FAULTS_EVERY_NTH))
		return 0;
	if (++server.fault_flushes % server.test_fault_every)
		return 0;
	due = server.test_faults & FAULTS_EVERY_NTH;
	if (server.aof_offset == 0)		/* an empty file has nothing to overwrite */
		due &= ~FAULT_OVERWRITE;
	if (due & FAULT_SKIP_FSYNC)		/* no fsync to reply before */
		due &= ~FAULT_REPLY_BEFORE_SYNC;
	return due;
}

/* The fsync of appendfsync always when it is not linked behind the writes: fdatasync(2), or in
 * the linked io_uring modes (reply-before-sync fault only) an IORING_OP_FSYNC of its own. */
static void aof_fsync_always(void)
{
	long long ts = nstime();
	int err = 0;

	if (linked_fsync()) {
		errno = 0;
		uring_write(server.aof_fd, NULL, 0, server.aof_offset, true);
		if (!linked_fsync_done)
			err = linked_fsync_errno ? linked_fsync_errno : errno ? errno : EIO;
	} else if (fdatasync(server.aof_fd) < 0) {
		err = errno;
	} else {
		server.stat_fsyncs++;
	}
	if (err) {
		serverLog("Can't persist AOF for fsync error when the AOF fsync policy is 'always': %s. Exiting...",
			  strerror(err));
		exit(1);
	}
	server.stat_fsync_ns += nstime() - ts;
}

/* Valkey's flushAppendOnlyFile(): called before every reply (beforeSleep); write the AOF buffer,
 * then fsync according to appendfsync. force is kept for Valkey's signature: there is no
 * postponed write here, so it changes nothing (except that test faults skip forced flushes). */
EXPORT void flushAppendOnlyFile(int force)
{
	long long t0, t1;
	ssize_t nwritten;
	size_t len = server.aof_buf.len;
	unsigned fault;
	off_t end;

	if (len == 0) {
		/* Data written but not fsynced yet still gets its fsync within a second (everysec). */
		if (server.fsync == AOF_FSYNC_EVERYSEC && server.aof_fsync_offset != server.aof_offset &&
		    mstime() - server.last_fsync_ms >= 1000 && !bio_pending())
			aof_background_fsync();
		return;
	}

	fault = test_faults_due(force);
	write_overwrite = fault & FAULT_OVERWRITE;
	write_off = server.aof_offset;
	if (write_overwrite)	/* TEST FAULT: over the tail of the file, from its start at most */
		write_off = server.aof_offset > (off_t)len ? server.aof_offset - (off_t)len : 0;
	write_linked_sync = linked_fsync() && !(fault & (FAULT_SKIP_FSYNC | FAULT_REPLY_BEFORE_SYNC));

	t0 = nstime();
	nwritten = aofWrite(server.aof_fd, server.aof_buf.p, len);
	if (nwritten != (ssize_t)len) {
		int err = nwritten < 0 ? errno : ENOSPC;	/* a short write means no space, as in Valkey */

		if (nwritten > 0) {
			/* Cut the partial command off so that the next write starts at a command boundary. */
			if (ftruncate(server.aof_fd, server.aof_offset) < 0) {
				/* Could not: the partial data stays and leaves the buffer. */
				server.aof_offset += nwritten;
				server.aof_current_size += nwritten;
				memmove(server.aof_buf.p, server.aof_buf.p + nwritten, len - nwritten);
				server.aof_buf.len -= nwritten;
			}
		}
		if (server.fsync == AOF_FSYNC_ALWAYS) {
			serverLog("Can't recover from AOF write error when the AOF fsync policy is 'always' (%s). Exiting...",
				  strerror(err));
			exit(1);
		}
		if (server.aof_last_write_status == C_OK || server.verbose)
			serverLog("Error writing to the AOF file: %s", strerror(err));
		server.aof_last_write_status = C_ERR;
		server.aof_last_write_errno = err;
		return;
	}
	if (write_linked_sync && !linked_fsync_done) {
		serverLog("Can't persist AOF for fsync error when the AOF fsync policy is 'always': %s. Exiting...",
			  strerror(linked_fsync_errno ? linked_fsync_errno : EIO));
		exit(1);
	}
	if (server.aof_last_write_status == C_ERR) {
		serverLog("AOF write error looks solved, aofwriter can write again.");
		server.aof_last_write_status = C_OK;
	}
	/* An overwrite grows the file only when it started at 0 and reached past the old end. */
	end = write_off + nwritten > server.aof_offset ? write_off + nwritten : server.aof_offset;
	server.aof_current_size += end - server.aof_offset;
	server.aof_offset = end;
	server.stat_bytes += nwritten;
	server.aof_buf.len = 0;
	if (server.aof_buf.cap > (4 << 20))	/* do not keep a huge buffer around */
		buf_free(&server.aof_buf);

	if (server.fsync == AOF_FSYNC_ALWAYS) {
		if (fault & FAULT_REPLY_BEFORE_SYNC)	/* TEST FAULT: acknowledge, then sync */
			handleClientsWithPendingWrites();
		if (!(fault & FAULT_SKIP_FSYNC)) {	/* TEST FAULT skip-fsync: no sync at all */
			if (!write_linked_sync)
				aof_fsync_always();
			server.aof_fsync_offset = server.aof_offset;
		}
	} else if (server.fsync == AOF_FSYNC_EVERYSEC && mstime() - server.last_fsync_ms >= 1000 && !bio_pending()) {
		aof_background_fsync();
	}
	server.stat_test_faults += __builtin_popcount(fault) + server.aof_fd_unlinked;
	t1 = nstime();
	server.stat_flushes++;
	server.stat_flush_ns += t1 - t0;
	if ((unsigned long long)(t1 - t0) > server.stat_flush_max_ns)
		server.stat_flush_max_ns = t1 - t0;
}

static void append_bulk_hdr(struct buf *b, char type, size_t n)
{
	char tmp[32];
	int i = sizeof(tmp);

	tmp[--i] = '\n';
	tmp[--i] = '\r';
	do {
		tmp[--i] = '0' + n % 10;
		n /= 10;
	} while (n);
	tmp[--i] = type;
	buf_append(b, tmp + i, sizeof(tmp) - i);
}

static void catAppendOnlyGenericCommand(struct buf *b, int argc, struct arg *argv)
{
	append_bulk_hdr(b, '*', argc);
	for (int i = 0; i < argc; i++) {
		append_bulk_hdr(b, '$', argv[i].len);
		buf_reserve(b, argv[i].len + 2);
		memcpy(b->p + b->len, argv[i].p, argv[i].len);
		memcpy(b->p + b->len + argv[i].len, "\r\n", 2);
		b->len += argv[i].len + 2;
	}
}

/* Valkey's feedAppendOnlyFile(): append a write command to the AOF buffer, flushed before reply. */
void feedAppendOnlyFile(int argc, struct arg *argv)
{
	if (server.loading)
		return;
	if (server.aof_selected_db != 0) {
		static const char sel[] = "*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n";

		buf_append(&server.aof_buf, sel, sizeof(sel) - 1);
		server.aof_selected_db = 0;
	}
	catAppendOnlyGenericCommand(&server.aof_buf, argc, argv);
}

/* Creates the next incr file, records it in the manifest and makes it the write target. */
int openNewIncrAofForAppend(void)
{
	struct manifest m;
	long long seq = server.manifest.cur_incr_seq + 1;
	char *name = aof_name("incr", seq);
	int fd;

	fd = open(aof_path(name), aof_open_flags() | O_TRUNC, 0644);
	if (fd < 0) {
		serverLog("Can't open the append-only file %s: %s", name, strerror(errno));
		free(name);
		return C_ERR;
	}
	manifest_dup(&m, &server.manifest);
	manifest_add_incr(&m, name, seq);
	if (persistAofManifest(&m) < 0) {
		close(fd);
		unlink(aof_path(name));
		manifest_free(&m);
		return C_ERR;
	}
	manifest_free(&server.manifest);
	server.manifest = m;
	if (server.aof_fd >= 0 && (server.test_faults & FAULT_STALE_FILE)) {
		/* TEST FAULT: the new incr file exists and the manifest names it, but the writes stay
		 * on the old fd, whose file backgroundRewriteDoneHandler() deletes as history. */
		close(fd);
		if (server.verbose)
			serverLog("Created AOF incr file %s, still writing to the old one (stale-file fault)", name);
		return C_OK;
	}
	if (server.aof_fd >= 0) {
		/* The old incr file: fsynced already with always; the bio thread finishes it otherwise. */
		if (server.fsync == AOF_FSYNC_ALWAYS)
			close(server.aof_fd);
		else
			bio_submit(server.aof_fd, server.fsync == AOF_FSYNC_EVERYSEC, true, 0);
	}
	server.aof_fd = fd;
	server.aof_offset = 0;
	server.aof_fsync_offset = 0;
	server.aof_selected_db = -1;	/* the new file starts with a SELECT */
	if (server.verbose)
		serverLog("Creating AOF incr file %s", name);
	return C_OK;
}

/* ---------------------------------------------------------------- init, cron, shutdown, info */

int aof_init(void)
{
	struct manifest m;
	char err[512];
	struct stat st;

	if (mkdir(server.aof_dirname, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "aofwriter: cannot create %s/%s: %s\n", server.dir, server.aof_dirname, strerror(errno));
		return -1;
	}
	if (stat(server.aof_dirname, &st) < 0 || !S_ISDIR(st.st_mode) || access(server.aof_dirname, W_OK | X_OK) < 0) {
		fprintf(stderr, "aofwriter: %s/%s: %s\n", server.dir, server.aof_dirname,
			errno ? strerror(errno) : "not a directory");
		return -1;
	}
	if (uring_init() < 0)
		return -1;

	if (access(aof_path(manifest_name()), F_OK) == 0) {
		if (aofLoadManifestFromFile(&m, err, sizeof(err)) < 0) {
			fprintf(stderr, "aofwriter: %s; refusing to start, files left untouched\n", err);
			return -1;
		}
		server.manifest = m;
		if (loadAppendOnlyFiles(&server.manifest) < 0)
			return -1;
		remove_temp_files();
		if (server.manifest.base.name)
			server.aof_base_size = file_size(aof_path(server.manifest.base.name));
		server.aof_current_size = server.aof_base_size;
		for (int i = 0; i < server.manifest.nincr; i++)
			server.aof_current_size += file_size(aof_path(server.manifest.incr[i].name));
		if (server.manifest.nincr) {
			const char *last = server.manifest.incr[server.manifest.nincr - 1].name;

			server.aof_fd = open(aof_path(last), aof_open_flags(), 0644);
			if (server.aof_fd < 0) {
				fprintf(stderr, "aofwriter: %s: %s\n", aof_path(last), strerror(errno));
				return -1;
			}
			server.aof_offset = server.aof_fsync_offset = lseek(server.aof_fd, 0, SEEK_END);
		} else if (openNewIncrAofForAppend() != C_OK) {
			return -1;
		}
		serverLog("DB loaded from append only file: %zu keys", server.db.used);
	} else {
		char *base;
		int fd;

		/* No manifest: only start from scratch when there is nothing we could overwrite. */
		if (dir_has_aof_files() || access(server.aof_filename, F_OK) == 0) {
			fprintf(stderr, "aofwriter: %s/%s has AOF files but no %s (or an old single-file %s exists); refusing to start, files left untouched\n",
				server.dir, server.aof_dirname, manifest_name(), server.aof_filename);
			return -1;
		}
		remove_temp_files();
		base = aof_name("base", 1);
		fd = open(aof_path(base), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || fsync(fd) < 0) {
			fprintf(stderr, "aofwriter: %s: %s\n", aof_path(base), strerror(errno));
			return -1;
		}
		close(fd);
		server.manifest.base.name = base;
		server.manifest.base.seq = 1;
		server.manifest.base.type = 'b';
		server.manifest.cur_base_seq = 1;
		if (openNewIncrAofForAppend() != C_OK) {
			fprintf(stderr, "aofwriter: cannot create the first AOF incr file in %s/%s\n", server.dir, server.aof_dirname);
			return -1;
		}
		serverLog("Created AOF base file %s and incr file %s", server.manifest.base.name, server.manifest.incr[0].name);
	}
	server.aof_selected_db = -1;
	server.aof_last_write_status = C_OK;
	server.aof_last_bgrewrite_status = C_OK;
	server.last_fsync_ms = mstime();
	return bio_start();
}

void aof_cron(void)
{
	int st = __atomic_load_n(&server.bio_fsync_status, __ATOMIC_RELAXED);

	/* everysec: a failed background fsync refuses writes until one succeeds, as in Valkey. */
	if (st && server.aof_last_write_status == C_OK) {
		serverLog("Error syncing the AOF file in the background: %s", strerror(st));
		server.aof_last_write_status = C_ERR;
		server.aof_last_write_errno = st;
	} else if (!st && server.aof_last_write_status == C_ERR && server.aof_buf.len == 0 &&
		   server.aof_last_write_errno && server.fsync != AOF_FSYNC_ALWAYS &&
		   __atomic_load_n(&server.bio_fsync_offset, __ATOMIC_RELAXED) == server.aof_offset) {
		server.aof_last_write_status = C_OK;
	}
	if (server.auto_rewrite && server.child_pid == -1 && mstime() - last_rewrite_fail_ms >= 1000) {
		if (!server.auto_rewrite_bytes ||
		    server.aof_current_size - server.aof_base_size >= server.auto_rewrite_bytes)
			rewriteAppendOnlyFileBackground();
	}
}

void aof_shutdown(void)
{
	flushAppendOnlyFile(1);
	if (server.child_pid != -1) {
		pid_t pid = server.child_pid;

		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		unlink_rewrite_temp(pid);
		server.child_pid = -1;
		serverLog("There is a child rewriting the AOF. Killing it!");
	}
	if (server.aof_fd >= 0) {
		serverLog("Calling fsync() on the AOF file.");
		if (fsync(server.aof_fd) < 0)
			serverLog("fsync of the AOF failed: %s", strerror(errno));
	}
	bio_stop();
	if (server.aof_fd >= 0)
		close(server.aof_fd);
	server.aof_fd = -1;
	if (server.ring_ready)
		io_uring_queue_exit(&server.ring);
	server.ring_ready = false;
}

void aof_info(struct buf *b)
{
	long long now = mstime();

	buf_printf(b, "aof_enabled:1\r\naof_rewrite_in_progress:%d\r\naof_rewrite_scheduled:0\r\n"
		   "aof_last_rewrite_time_sec:%lld\r\naof_current_rewrite_time_sec:%lld\r\n"
		   "aof_last_bgrewrite_status:%s\r\naof_rewrites:%lld\r\naof_last_write_status:%s\r\n"
		   "aof_current_size:%lld\r\naof_base_size:%lld\r\naof_pending_rewrite:0\r\n"
		   "aof_buffer_length:%zu\r\naof_pending_bio_fsync:%d\r\naof_delayed_fsync:0\r\n"
		   "aof_rewrite_child_pid:%d\r\naof_incr_file:%s\r\naof_base_file:%s\r\n"
		   "aof_test_faults_injected:%llu\r\naof_test_faults:",
		   server.child_pid != -1, server.aof_rewrites ? server.aof_last_rewrite_ms / 1000 : -1,
		   server.child_pid != -1 ? (now - server.rewrite_start_ms) / 1000 : -1,
		   server.aof_last_bgrewrite_status == C_OK ? "ok" : "err", server.aof_rewrites,
		   server.aof_last_write_status == C_OK ? "ok" : "err", server.aof_current_size,
		   server.aof_base_size, server.aof_buf.len, bio_pending(), (int)server.child_pid,
		   server.manifest.nincr ? server.manifest.incr[server.manifest.nincr - 1].name : "",
		   server.manifest.base.name ? server.manifest.base.name : "", server.stat_test_faults);
	test_faults_str(b, server.test_faults);
	buf_printf(b, "\r\n");
}

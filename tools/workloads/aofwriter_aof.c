// SPDX-License-Identifier: BSD-3-Clause
/*
 * The AOF path of aofwriter, shaped and named like Valkey's aof.c so that uprobes on
 * flushAppendOnlyFile, aofWrite, rewriteAppendOnlyFileBackground, backgroundRewriteDoneHandler
 * and serverFork see the same structure as in Valkey: Redis 7 multi-part AOF (base + incr files
 * and a manifest), flush before replies, fsync always/everysec (bio_aof thread)/no, rewrite in a
 * forked child. The write itself goes through write(2) or io_uring (--io).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aofwriter.h"

#define EXPORT __attribute__((noinline, used))
#define CHILD_TYPE_AOF 2
#define FSYNC_TAG (~0ULL)

static long long last_rewrite_fail_ms;

/* ---------------------------------------------------------------- names and paths */

static const char *aof_path(const char *name)
{
	static char path[2][PATH_MAX];
	static int i;

	i ^= 1;	/* two paths may be in use at once (rename) */
	snprintf(path[i], sizeof(path[i]), "%s/%s", server.aof_dirname, name);
	return path[i];
}

static char *aof_name(const char *type, long long seq)
{
	char *s;

	if (asprintf(&s, "%s.%lld.%s.aof", server.aof_filename, seq, type) < 0)
		abort();
	return s;
}

static const char *manifest_name(void)
{
	static char name[NAME_MAX + 1];

	snprintf(name, sizeof(name), "%s.manifest", server.aof_filename);
	return name;
}

static int fsync_dir(void)
{
	int fd = open(server.aof_dirname, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret;

	if (fd < 0)
		return -1;
	ret = fsync(fd);
	close(fd);
	return ret;
}

static long long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : 0;
}

/* ---------------------------------------------------------------- manifest */

static void manifest_free(struct manifest *m)
{
	free(m->base.name);
	for (int i = 0; i < m->nincr; i++)
		free(m->incr[i].name);
	free(m->incr);
	memset(m, 0, sizeof(*m));
}

static void manifest_add_incr(struct manifest *m, char *name, long long seq)
{
	m->incr = realloc(m->incr, (m->nincr + 1) * sizeof(*m->incr));
	if (!m->incr)
		abort();
	m->incr[m->nincr].name = name;
	m->incr[m->nincr].seq = seq;
	m->incr[m->nincr].type = 'i';
	m->nincr++;
	if (seq > m->cur_incr_seq)
		m->cur_incr_seq = seq;
}

static void manifest_dup(struct manifest *dst, const struct manifest *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->base = src->base;
	if (src->base.name)
		dst->base.name = strdup(src->base.name);
	for (int i = 0; i < src->nincr; i++)
		manifest_add_incr(dst, strdup(src->incr[i].name), src->incr[i].seq);
	dst->cur_base_seq = src->cur_base_seq;
	dst->cur_incr_seq = src->cur_incr_seq;
}

/* Writes the manifest like Redis 7: temp file, fsync, rename, fsync of the directory. */
static int persistAofManifest(const struct manifest *m)
{
	char tmp[NAME_MAX + 8];
	struct buf b = { 0 };
	int fd = -1, ret = -1;
	size_t off = 0;

	if (m->base.name)
		buf_printf(&b, "file %s seq %lld type b\n", m->base.name, m->base.seq);
	for (int i = 0; i < m->nincr; i++)
		buf_printf(&b, "file %s seq %lld type i\n", m->incr[i].name, m->incr[i].seq);
	snprintf(tmp, sizeof(tmp), "temp-%s", manifest_name());
	fd = open(aof_path(tmp), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto cleanup;
	while (off < b.len) {
		ssize_t n = write(fd, b.p + off, b.len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto cleanup;
		off += n;
	}
	if (fsync(fd) < 0)
		goto cleanup;
	if (rename(aof_path(tmp), aof_path(manifest_name())) < 0)
		goto cleanup;
	if (fsync_dir() < 0)
		goto cleanup;
	ret = 0;
cleanup:
	if (ret < 0)
		serverLog("Can't persist the AOF manifest %s: %s", manifest_name(), strerror(errno));
	if (fd >= 0)
		close(fd);
	buf_free(&b);
	return ret;
}

/* Parses the manifest as Redis 7.0 does (aofLoadManifestFromFile); 0, or -1 with err set. */
static int aofLoadManifestFromFile(struct manifest *m, char *err, size_t errlen)
{
	const char *path = aof_path(manifest_name());
	FILE *f = fopen(path, "r");
	char line[1024];
	int lineno = 0, ret = -1;

	memset(m, 0, sizeof(*m));
	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *tok[16], *save, *p, *name = NULL, type = 0;
		long long seq = -1;
		int ntok = 0;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line too long", path, lineno);
			goto cleanup;
		}
		if (line[0] == '#' || line[strspn(line, " \t\r\n")] == 0)
			continue;
		for (p = strtok_r(line, " \t\r\n", &save); p && ntok < 16; p = strtok_r(NULL, " \t\r\n", &save))
			tok[ntok++] = p;
		if (ntok < 6 || ntok % 2) {
			snprintf(err, errlen, "%s:%d: invalid manifest line", path, lineno);
			goto cleanup;
		}
		for (int i = 0; i < ntok; i += 2) {
			char *end;

			if (!strcmp(tok[i], "file")) {
				name = tok[i + 1];
			} else if (!strcmp(tok[i], "seq")) {
				seq = strtoll(tok[i + 1], &end, 10);
				if (*end || seq < 0)
					seq = -1;
			} else if (!strcmp(tok[i], "type")) {
				type = strlen(tok[i + 1]) == 1 ? tok[i + 1][0] : '?';
			}
		}
		if (!name || seq < 0 || !type || strchr(name, '/') || name[0] == '"') {
			snprintf(err, errlen, "%s:%d: invalid manifest line", path, lineno);
			goto cleanup;
		}
		if (type == 'b') {
			if (m->base.name) {
				snprintf(err, errlen, "%s:%d: duplicate base file", path, lineno);
				goto cleanup;
			}
			m->base.name = strdup(name);
			m->base.seq = seq;
			m->base.type = 'b';
			m->cur_base_seq = seq;
		} else if (type == 'i') {
			if (m->nincr && seq <= m->incr[m->nincr - 1].seq) {
				snprintf(err, errlen, "%s:%d: non-monotonic incr sequence", path, lineno);
				goto cleanup;
			}
			manifest_add_incr(m, strdup(name), seq);
		} else if (type == 'h') {
			/* A history file: already merged into the base, not loaded, removed below. */
			continue;
		} else {
			snprintf(err, errlen, "%s:%d: unknown file type '%c'", path, lineno, type);
			goto cleanup;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto cleanup;
	}
	if (!m->base.name && !m->nincr) {
		snprintf(err, errlen, "%s: empty manifest", path);
		goto cleanup;
	}
	ret = 0;
cleanup:
	fclose(f);
	if (ret < 0)
		manifest_free(m);
	return ret;
}

/* ---------------------------------------------------------------- loading */

enum { LOAD_OK, LOAD_TRUNCATED, LOAD_ERR };

/* Replays one RESP file. LOAD_TRUNCATED: it ends inside a command, *valid is where the last
 * complete command ends. Never modifies the file. */
static int loadSingleAppendOnlyFile(const char *name, long long *valid, char *err, size_t errlen)
{
	const char *path = aof_path(name);
	struct arg *argv = NULL;
	size_t pos = 0, size, argcap = 0;
	char *data = NULL;
	struct stat st;
	int fd, ret = LOAD_ERR;

	*valid = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto cleanup;
	}
	size = st.st_size;
	if (size == 0) {
		ret = LOAD_OK;
		goto cleanup;
	}
	data = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (data == MAP_FAILED) {
		data = NULL;
		snprintf(err, errlen, "%s: mmap: %s", path, strerror(errno));
		goto cleanup;
	}

#define NEED_LINE(nl) do { \
		nl = memchr(data + pos, '\n', size - pos); \
		if (!nl) { ret = LOAD_TRUNCATED; goto cleanup; } \
	} while (0)
#define FMTERR(what) do { \
		snprintf(err, errlen, "%s: bad file format at offset %zu (%s)", path, pos, what); \
		goto cleanup; \
	} while (0)

	while (pos < size) {
		long long argc, len;
		char *nl, *end;

		if (data[pos] == '#') {		/* annotation, e.g. a timestamp */
			NEED_LINE(nl);
			pos = nl - data + 1;
			*valid = pos;
			continue;
		}
		if (data[pos] != '*')
			FMTERR("expected '*'");
		NEED_LINE(nl);
		argc = strtoll(data + pos + 1, &end, 10);
		if (end == data + pos + 1 || *end != '\r' || end + 1 != nl || argc < 1 || argc > INT_MAX / 2)
			FMTERR("bad argument count");
		pos = nl - data + 1;
		if ((size_t)argc > argcap) {
			argcap = argc;
			argv = realloc(argv, argcap * sizeof(*argv));
			if (!argv)
				abort();
		}
		for (long long i = 0; i < argc; i++) {
			if (pos >= size) {
				ret = LOAD_TRUNCATED;
				goto cleanup;
			}
			if (data[pos] != '$')
				FMTERR("expected '$'");
			NEED_LINE(nl);
			len = strtoll(data + pos + 1, &end, 10);
			if (end == data + pos + 1 || *end != '\r' || end + 1 != nl || len < 0)
				FMTERR("bad bulk length");
			pos = nl - data + 1;
			if (size - pos < (size_t)len + 2) {
				ret = LOAD_TRUNCATED;
				goto cleanup;
			}
			if (data[pos + len] != '\r' || data[pos + len + 1] != '\n')
				FMTERR("bulk not terminated by CRLF");
			argv[i].p = data + pos;
			argv[i].len = len;
			pos += len + 2;
		}
		if (exec_loaded_command(argc, argv, err, errlen) < 0) {
			char msg[256];

			snprintf(msg, sizeof(msg), "%s", err);
			snprintf(err, errlen, "%s: offset %lld: %s", path, *valid, msg);
			goto cleanup;
		}
		*valid = pos;
	}
	ret = LOAD_OK;
#undef NEED_LINE
#undef FMTERR
cleanup:
	if (data)
		munmap(data, size);
	if (fd >= 0)
		close(fd);
	free(argv);
	return ret;
}

/* Loads base then incr files in manifest order, as Valkey's loadAppendOnlyFiles does. A truncated
 * tail is accepted only in the last file (aof-load-truncated yes) and cut off only after every
 * file loaded; any other damage leaves the files untouched and fails. */
static int loadAppendOnlyFiles(struct manifest *m)
{
	int nfiles = (m->base.name ? 1 : 0) + m->nincr, idx = 0, ret;
	char err[512];
	long long valid = 0;
	const char *last = NULL;
	bool truncated = false;

	server.loading = true;
	for (int i = -1; i < m->nincr; i++) {
		const char *name = i < 0 ? m->base.name : m->incr[i].name;

		if (!name)
			continue;
		idx++;
		if (access(aof_path(name), F_OK) < 0) {
			fprintf(stderr, "aofwriter: %s: listed in %s but %s; refusing to start, files left untouched\n",
				aof_path(name), manifest_name(), strerror(errno));
			return -1;
		}
		ret = loadSingleAppendOnlyFile(name, &valid, err, sizeof(err));
		if (ret == LOAD_ERR) {
			fprintf(stderr, "aofwriter: %s; refusing to start, files left untouched\n", err);
			return -1;
		}
		if (ret == LOAD_TRUNCATED) {
			if (idx != nfiles) {
				fprintf(stderr, "aofwriter: %s is truncated but is not the last AOF file; refusing to start, files left untouched\n",
					aof_path(name));
				return -1;
			}
			truncated = true;
			last = name;
		}
	}
	server.loading = false;
	if (truncated) {
		long long size = file_size(aof_path(last));

		serverLog("!!! Warning: short read while loading the AOF file %s, truncating %lld bytes at offset %lld (aof-load-truncated) !!!",
			  last, size - valid, valid);
		if (truncate(aof_path(last), valid) < 0) {
			fprintf(stderr, "aofwriter: truncate %s: %s\n", aof_path(last), strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Leftovers of a crash: temporary rewrite files and manifests. */
static void remove_temp_files(void)
{
	DIR *d = opendir(server.aof_dirname);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "temp-rewriteaof-", 16) || !strncmp(de->d_name, "temp-", 5))
			unlink(aof_path(de->d_name));
	closedir(d);
}

static bool dir_has_aof_files(void)
{
	size_t n = strlen(server.aof_filename);
	DIR *d = opendir(server.aof_dirname);
	struct dirent *de;
	bool found = false;

	if (!d)
		return false;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, server.aof_filename, n) && de->d_name[n] == '.')
			found = true;
	closedir(d);
	return found;
}

/* ---------------------------------------------------------------- bio_aof thread */

static void *bio_main(void *arg)
{
	pthread_mutex_lock(&server.bio_lock);
	for (;;) {
		struct bio_job *job;

		while (!server.bio_head && !server.bio_stop)
			pthread_cond_wait(&server.bio_cond, &server.bio_lock);
		job = server.bio_head;
		if (!job)
			break;
		server.bio_head = job->next;
		if (!server.bio_head)
			server.bio_tail = NULL;
		pthread_mutex_unlock(&server.bio_lock);

		if (job->fsync) {
			if (fdatasync(job->fd) < 0) {
				__atomic_store_n(&server.bio_fsync_status, errno, __ATOMIC_RELAXED);
			} else {
				__atomic_store_n(&server.bio_fsync_status, 0, __ATOMIC_RELAXED);
				__atomic_store_n(&server.bio_fsync_offset, job->offset, __ATOMIC_RELAXED);
			}
		}
		if (job->close_fd)
			close(job->fd);
		free(job);
		__atomic_sub_fetch(&server.bio_pending, 1, __ATOMIC_RELEASE);
		pthread_mutex_lock(&server.bio_lock);
	}
	pthread_mutex_unlock(&server.bio_lock);
	return NULL;
}

static void bio_submit(int fd, bool fsync, bool close_fd, off_t offset)
{
	struct bio_job *job = calloc(1, sizeof(*job));

	if (!job)
		abort();
	job->fd = fd;
	job->fsync = fsync;
	job->close_fd = close_fd;
	job->offset = offset;
	__atomic_add_fetch(&server.bio_pending, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&server.bio_lock);
	if (server.bio_tail)
		server.bio_tail->next = job;
	else
		server.bio_head = job;
	server.bio_tail = job;
	pthread_cond_signal(&server.bio_cond);
	pthread_mutex_unlock(&server.bio_lock);
}

static int bio_pending(void)
{
	return __atomic_load_n(&server.bio_pending, __ATOMIC_ACQUIRE);
}

static int bio_start(void)
{
	int ret;

	pthread_mutex_init(&server.bio_lock, NULL);
	pthread_cond_init(&server.bio_cond, NULL);
	ret = pthread_create(&server.bio_thread, NULL, bio_main, NULL);
	if (ret) {
		fprintf(stderr, "aofwriter: cannot start the bio_aof thread: %s\n", strerror(ret));
		return -1;
	}
	pthread_setname_np(server.bio_thread, "bio_aof");
	server.bio_started = true;
	return 0;
}

static void bio_stop(void)
{
	if (!server.bio_started)
		return;
	pthread_mutex_lock(&server.bio_lock);
	server.bio_stop = true;
	pthread_cond_signal(&server.bio_cond);
	pthread_mutex_unlock(&server.bio_lock);
	pthread_join(server.bio_thread, NULL);
	server.bio_started = false;
}

/* ---------------------------------------------------------------- writing */

static bool uring_mode(void)
{
	return server.io != IO_WRITE;
}

static bool linked_fsync(void)
{
	return (server.io == IO_URING_LINKED || server.io == IO_URING_SQPOLL) && server.fsync == AOF_FSYNC_ALWAYS;
}

static int aof_open_flags(void)
{
	/* write(2) appends (O_APPEND, as Valkey); io_uring writes at explicit offsets instead. */
	return O_WRONLY | O_CREAT | O_CLOEXEC | (uring_mode() ? 0 : O_APPEND);
}

static int uring_init(void)
{
	struct io_uring_params p = { 0 };
	int ret;

	if (!uring_mode())
		return 0;
	if (server.io == IO_URING_SQPOLL) {
		p.flags |= IORING_SETUP_SQPOLL;
		p.sq_thread_idle = server.sqpoll_idle_ms;
	}
	ret = io_uring_queue_init_params(server.ring_depth, &server.ring, &p);
	if (ret < 0) {
		fprintf(stderr, "aofwriter: --io %s: io_uring setup (%u entries%s) failed: %s\n",
			server.io == IO_URING_SQPOLL ? "uring-sqpoll" : server.io == IO_URING ? "uring" : "uring-linked",
			server.ring_depth, server.io == IO_URING_SQPOLL ? ", SQPOLL" : "", strerror(-ret));
		return -1;
	}
	server.ring_ready = true;
	return 0;
}

static int linked_fsync_errno;	/* set by uring_write when the linked fsync failed */
static bool linked_fsync_done;

/* Writes buf at offset off through the ring, in chunks of --uring-chunk bytes, up to
 * --uring-inflight SQEs per submission, linked (IOSQE_IO_LINK) so they run in order and a short
 * write cancels the rest: the file only ever grows by a prefix of the buffer. With fsync, an
 * IORING_OP_FSYNC(DATASYNC) is linked behind the last write of the same submission. Returns the
 * length of the prefix written (len on success) or -1 with errno. */
static ssize_t uring_write(int fd, const char *buf, size_t len, off_t off, bool fsync)
{
	struct req {
		size_t pos, len;
		int res;
	} req[1024];
	struct io_uring *ring = &server.ring;
	size_t done = 0;
	int stalls = 0;

	linked_fsync_done = false;
	linked_fsync_errno = 0;
	while (done < len || (fsync && !linked_fsync_done)) {
		struct io_uring_sqe *sqe = NULL;
		unsigned n = 0, nsqe, got;
		size_t pos = done, before = done;
		bool with_fsync;
		int fsync_res = 0, ret;

		while (n < server.uring_inflight && pos < len) {
			size_t chunk = len - pos;

			if (chunk > server.uring_chunk) {
				/* End chunks after a newline: a crash between two chunks then cuts the
				 * AOF at a line boundary, a tail Redis always treats as truncated. */
				const char *nl = memrchr(buf + pos, '\n', server.uring_chunk);

				chunk = nl ? (size_t)(nl - (buf + pos)) + 1 : server.uring_chunk;
			}
			sqe = io_uring_get_sqe(ring);
			if (!sqe)	/* cannot happen: ring_depth > inflight and the ring is drained */
				break;
			io_uring_prep_write(sqe, fd, buf + pos, chunk, off + pos);
			sqe->user_data = n;
			if (!server.uring_unlinked)
				sqe->flags |= IOSQE_IO_LINK;
			if (server.uring_async)	/* straight to io-wq, as a write that would block goes */
				sqe->flags |= IOSQE_ASYNC;
			req[n].pos = pos;
			req[n].len = chunk;
			req[n].res = -ECANCELED;
			pos += chunk;
			n++;
		}
		with_fsync = fsync && pos == len;
		if (with_fsync) {
			if (sqe && server.uring_unlinked)
				sqe->flags |= IOSQE_IO_LINK;
			sqe = io_uring_get_sqe(ring);
			if (!sqe) {
				errno = EBUSY;
				return done ? (ssize_t)done : -1;
			}
			io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
			sqe->user_data = FSYNC_TAG;
			if (server.uring_unlinked)	/* unlinked writes: wait for all of them */
				sqe->flags |= IOSQE_IO_DRAIN;
		} else if (sqe) {
			sqe->flags &= ~IOSQE_IO_LINK;	/* the chain ends with this batch */
		}
		nsqe = n + with_fsync;
		if (!nsqe)
			break;
		do {
			ret = io_uring_submit_and_wait(ring, nsqe);
		} while (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY);
		if (ret < 0) {
			errno = -ret;
			return done ? (ssize_t)done : -1;
		}
		server.stat_write_calls += n;
		for (got = 0; got < nsqe; got++) {
			struct io_uring_cqe *cqe;

			do {
				ret = io_uring_wait_cqe(ring, &cqe);
			} while (ret == -EINTR || ret == -EAGAIN);
			if (ret < 0) {
				errno = -ret;
				return -1;
			}
			if (cqe->user_data == FSYNC_TAG)
				fsync_res = cqe->res;
			else if (cqe->user_data < n)
				req[cqe->user_data].res = cqe->res;
			io_uring_cqe_seen(ring, cqe);
		}
		/* Only a contiguous prefix counts; what follows a short or failed write is redone. */
		for (unsigned i = 0; i < n; i++) {
			int r = req[i].res;

			if (r == (int)req[i].len) {
				done += r;
				continue;
			}
			if (r >= 0) {
				done += r;
				server.stat_short_writes++;
			} else if (r == -EAGAIN || r == -EINTR || r == -ECANCELED) {
				server.stat_retries++;
			} else {
				errno = -r;
				return done ? (ssize_t)done : -1;
			}
			break;
		}
		if (with_fsync && done == len) {
			if (fsync_res == 0) {
				linked_fsync_done = true;
				server.stat_fsyncs++;
			} else if (fsync_res != -ECANCELED && fsync_res != -EINTR && fsync_res != -EAGAIN) {
				linked_fsync_errno = -fsync_res;
				return done;
			}
		}
		if (done == before && (!with_fsync || !linked_fsync_done) && ++stalls > 16) {
			errno = done < len ? ENOSPC : EIO;
			return done ? (ssize_t)done : -1;
		}
	}
	return done;
}

/* Set by flushAppendOnlyFile() for the aofWrite() it calls: where the buffer goes and whether the
 * io_uring modes link the fsync behind the writes. Only the test faults change them. */
static off_t write_off;
static bool write_overwrite;	/* overwrite fault: pwrite at write_off below the end of file */
static bool write_linked_sync;

/* Test fault "overwrite" in write mode: pwrite(2) below the end of file. pwrite ignores the offset
 * on an O_APPEND fd, so O_APPEND is dropped for the call and put back afterwards. */
static ssize_t fault_pwrite(int fd, const char *buf, size_t len, off_t off)
{
	ssize_t n, tot = 0;

	if (fcntl(fd, F_SETFL, 0) < 0)
		return -1;
	while (len) {
		n = pwrite(fd, buf, len, off);
		server.stat_write_calls++;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len -= n;
		buf += n;
		off += n;
		tot += n;
	}
	fcntl(fd, F_SETFL, O_APPEND);
	return tot ? tot : -1;
}

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
static int openNewIncrAofForAppend(void)
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

static void unlink_rewrite_temp(pid_t pid)
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

/* ---------------------------------------------------------------- test faults */

const char *const test_fault_names[NR_TEST_FAULTS] = {
	"overwrite", "reply-before-sync", "skip-fsync", "stale-file",
};

/* "overwrite,skip-fsync", or "none" */
void test_faults_str(struct buf *b, unsigned faults)
{
	const char *sep = "";

	if (!faults)
		buf_printf(b, "none");
	for (int i = 0; i < NR_TEST_FAULTS; i++)
		if (faults & (1u << i)) {
			buf_printf(b, "%s%s", sep, test_fault_names[i]);
			sep = ",";
		}
}

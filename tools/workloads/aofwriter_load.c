// SPDX-License-Identifier: BSD-3-Clause
/* aofwriter's AOF loading at startup: replays the base and incr files through exec_loaded_command(). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aofwriter.h"

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
int loadAppendOnlyFiles(struct manifest *m)
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

// SPDX-License-Identifier: BSD-3-Clause
/*
 * The AOF directory of aofwriter, as Redis 7 lays it out: the names of the base and incr files,
 * the manifest (persistAofManifest, aofLoadManifestFromFile) and the leftovers of a crash.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aofwriter.h"

/* ---------------------------------------------------------------- names and paths */

const char *aof_path(const char *name)
{
	static char path[2][PATH_MAX];
	static int i;

	i ^= 1;	/* two paths may be in use at once (rename) */
	snprintf(path[i], sizeof(path[i]), "%s/%s", server.aof_dirname, name);
	return path[i];
}

char *aof_name(const char *type, long long seq)
{
	char *s;

	if (asprintf(&s, "%s.%lld.%s.aof", server.aof_filename, seq, type) < 0)
		abort();
	return s;
}

const char *manifest_name(void)
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

long long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : 0;
}

/* ---------------------------------------------------------------- manifest */

void manifest_free(struct manifest *m)
{
	free(m->base.name);
	for (int i = 0; i < m->nincr; i++)
		free(m->incr[i].name);
	free(m->incr);
	memset(m, 0, sizeof(*m));
}

void manifest_add_incr(struct manifest *m, char *name, long long seq)
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

void manifest_dup(struct manifest *dst, const struct manifest *src)
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
int persistAofManifest(const struct manifest *m)
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
int aofLoadManifestFromFile(struct manifest *m, char *err, size_t errlen)
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

/* ---------------------------------------------------------------- the AOF directory */

/* Leftovers of a crash: temporary rewrite files and manifests. */
void remove_temp_files(void)
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

bool dir_has_aof_files(void)
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

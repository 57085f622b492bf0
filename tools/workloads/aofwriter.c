// SPDX-License-Identifier: BSD-3-Clause
/*
 * aofwriter: a small single-threaded RESP server whose AOF path behaves like Valkey's, so that
 * redis-benchmark can drive it and aoftrace can trace it. This file holds the server: options,
 * the epoll event loop, clients, the RESP parser, the dataset and the commands. The AOF path
 * (flushAppendOnlyFile and friends, io_uring, rewrite, loading) is in aofwriter_aof.c.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aofwriter.h"

#define AOFWRITER_VERSION "1.0"
#define CRON_MS 100	/* serverCron at hz 10 */

struct server server;

static int listen_fd = -1, epoll_fd = -1, signal_fd = -1;
static bool shutdown_asap;

/* ---------------------------------------------------------------- utilities */

long long nstime(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

long long mstime(void)
{
	return nstime() / 1000000;
}

void serverLog(const char *fmt, ...)
{
	char msg[1024], ts[64];
	struct timespec now;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	localtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%d %b %Y %H:%M:%S", &tm);
	fprintf(stderr, "%d:%c %s.%03ld * %s\n", (int)getpid(), server.child_pid == 0 ? 'C' : 'M',
		ts, now.tv_nsec / 1000000, msg);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "aofwriter: out of memory allocating %zu bytes\n", n);
		abort();
	}
	return p;
}

void buf_reserve(struct buf *b, size_t extra)
{
	size_t need = b->len + extra;

	if (need <= b->cap)
		return;
	b->cap = b->cap ? b->cap : 256;
	while (b->cap < need)
		b->cap *= 2;
	b->p = xrealloc(b->p, b->cap);
}

void buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	buf_reserve(b, n + 1);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, n + 1, fmt, ap);
	va_end(ap);
	b->len += n;
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Strict decimal parse of a whole string, like Redis' string2ll. */
static bool str2ll(const char *s, size_t len, long long *out)
{
	unsigned long long v = 0;
	bool neg = false;
	size_t i = 0;

	if (len == 0 || len > 20)
		return false;
	if (s[0] == '-') {
		neg = true;
		if (++i == len)
			return false;
	}
	if (s[i] == '0' && len - i > 1)
		return false;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (ULLONG_MAX - (s[i] - '0')) / 10)
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (neg) {
		if (v > (unsigned long long)LLONG_MAX + 1)
			return false;
		*out = (long long)(0 - v);
	} else {
		if (v > LLONG_MAX)
			return false;
		*out = (long long)v;
	}
	return true;
}

static bool argis(const struct arg *a, const char *s)
{
	return a->len == strlen(s) && strncasecmp(a->p, s, a->len) == 0;
}

/* ---------------------------------------------------------------- dataset */

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 29);
}

static struct entry **dict_slot(const char *k, size_t klen, uint64_t h)
{
	struct entry **pp;

	if (!server.db.size)
		return NULL;
	for (pp = &server.db.tab[h & (server.db.size - 1)]; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, k, klen) == 0)
			return pp;
	return pp;
}

static struct entry *dict_find(const char *k, size_t klen)
{
	struct entry **pp = dict_slot(k, klen, hash_bytes(k, klen));

	return pp ? *pp : NULL;
}

static void dict_grow(void)
{
	size_t nsize = server.db.size ? server.db.size * 2 : 1024;
	struct entry **ntab = calloc(nsize, sizeof(*ntab));

	if (!ntab) {
		fprintf(stderr, "aofwriter: out of memory growing the dataset\n");
		abort();
	}
	for (size_t i = 0; i < server.db.size; i++) {
		struct entry *e = server.db.tab[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = ntab[e->hash & (nsize - 1)];
			ntab[e->hash & (nsize - 1)] = e;
		}
	}
	free(server.db.tab);
	server.db.tab = ntab;
	server.db.size = nsize;
}

static void dict_set(const char *k, size_t klen, const char *v, size_t vlen)
{
	uint64_t h = hash_bytes(k, klen);
	struct entry **pp, *e;

	if (server.db.used >= server.db.size)
		dict_grow();
	pp = dict_slot(k, klen, h);
	e = *pp;
	if (!e) {
		e = xrealloc(NULL, sizeof(*e));
		e->next = NULL;
		e->hash = h;
		e->key = xrealloc(NULL, klen);
		memcpy(e->key, k, klen);
		e->klen = klen;
		e->val = NULL;
		*pp = e;
		server.db.used++;
	}
	e->val = xrealloc(e->val, vlen);
	memcpy(e->val, v, vlen);
	e->vlen = vlen;
}

static bool dict_del(const char *k, size_t klen)
{
	struct entry **pp = dict_slot(k, klen, hash_bytes(k, klen)), *e;

	if (!pp || !*pp)
		return false;
	e = *pp;
	*pp = e->next;
	free(e->key);
	free(e->val);
	free(e);
	server.db.used--;
	return true;
}

static void dict_empty(void)
{
	for (size_t i = 0; i < server.db.size; i++) {
		struct entry *e = server.db.tab[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e->key);
			free(e->val);
			free(e);
		}
	}
	free(server.db.tab);
	server.db.tab = NULL;
	server.db.size = server.db.used = 0;
}

void dict_iter(void (*fn)(struct entry *e, void *ctx), void *ctx)
{
	for (size_t i = 0; i < server.db.size; i++)
		for (struct entry *e = server.db.tab[i]; e; e = e->next)
			fn(e, ctx);
}

/* ---------------------------------------------------------------- clients and replies */

struct client {
	int fd;
	struct client *prev, *next;	/* all clients */
	struct client *pending_next;	/* clients with replies to send after the AOF flush */
	bool pending, want_out, closing, close_after_reply;
	/* query buffer: q[qpos..qlen) is unprocessed input, ppos the parse cursor */
	char *q;
	size_t qlen, qcap, qpos, ppos;
	int reqtype;			/* 0, '*' multibulk, 'i' inline */
	long long mbulk;		/* arguments still to read */
	long long bulklen;		/* -1: "$len" line not read yet */
	int argc, argcap;
	size_t *aoff, *alen;
	struct buf r;
	size_t rpos;
};

static struct client *clients, *pending_clients, *freed_clients;
static int nclients;

static void addReplyRaw(struct client *c, const char *s, size_t n)
{
	if (c->closing)
		return;
	buf_append(&c->r, s, n);
}

static void addReplyStatus(struct client *c, const char *s)
{
	buf_printf(&c->r, "+%s\r\n", s);
}

static void addReplyError(struct client *c, const char *s)
{
	buf_printf(&c->r, "-%s\r\n", s);
}

static void addReplyLongLong(struct client *c, long long v)
{
	buf_printf(&c->r, ":%lld\r\n", v);
}

static void addReplyBulk(struct client *c, const char *p, size_t n)
{
	buf_printf(&c->r, "$%zu\r\n", n);
	buf_append(&c->r, p, n);
	buf_append(&c->r, "\r\n", 2);
}

static void addReplyBulkStr(struct client *c, const char *s)
{
	addReplyBulk(c, s, strlen(s));
}

static void addReplyNull(struct client *c)
{
	addReplyRaw(c, "$-1\r\n", 5);
}

static void addReplyArrayLen(struct client *c, long long n)
{
	buf_printf(&c->r, "*%lld\r\n", n);
}

static const char shared_ok[] = "+OK\r\n";

/* ---------------------------------------------------------------- commands */

#define CMD_WRITE	1	/* changes the dataset: propagated to the AOF, refused on AOF errors */
#define CMD_LOADABLE	2	/* may appear in an AOF file */

struct command {
	const char *name;
	int arity;		/* Redis convention: N exact, -N at least N */
	int flags;
	void (*proc)(struct client *c, int argc, struct arg *argv);
};

static void pingCommand(struct client *c, int argc, struct arg *argv)
{
	if (argc == 1)
		addReplyStatus(c, "PONG");
	else
		addReplyBulk(c, argv[1].p, argv[1].len);
}

static void echoCommand(struct client *c, int argc, struct arg *argv)
{
	addReplyBulk(c, argv[1].p, argv[1].len);
}

static void selectCommand(struct client *c, int argc, struct arg *argv)
{
	long long db;

	if (!str2ll(argv[1].p, argv[1].len, &db))
		addReplyError(c, "ERR value is not an integer or out of range");
	else if (db != 0)
		addReplyError(c, "ERR DB index is out of range");
	else
		addReplyRaw(c, shared_ok, 5);
}

static void setCommand(struct client *c, int argc, struct arg *argv)
{
	bool nx = false, xx = false, get = false;
	struct entry *e;

	for (int i = 3; i < argc; i++) {
		if (argis(&argv[i], "NX") && !xx)
			nx = true;
		else if (argis(&argv[i], "XX") && !nx)
			xx = true;
		else if (argis(&argv[i], "GET"))
			get = true;
		else if (argis(&argv[i], "KEEPTTL"))
			continue;
		else {
			/* No key expiry here: EX/PX/EXAT/PXAT are refused rather than ignored. */
			addReplyError(c, "ERR syntax error");
			return;
		}
	}
	e = dict_find(argv[1].p, argv[1].len);
	if (get) {
		if (e)
			addReplyBulk(c, e->val, e->vlen);
		else
			addReplyNull(c);
	}
	if ((nx && e) || (xx && !e)) {
		if (!get)
			addReplyNull(c);
		return;
	}
	dict_set(argv[1].p, argv[1].len, argv[2].p, argv[2].len);
	if (argc == 3) {
		feedAppendOnlyFile(argc, argv);
	} else {
		struct arg set[3] = { { "SET", 3 }, argv[1], argv[2] };

		feedAppendOnlyFile(3, set);
	}
	if (!get)
		addReplyRaw(c, shared_ok, 5);
}

static void getCommand(struct client *c, int argc, struct arg *argv)
{
	struct entry *e = dict_find(argv[1].p, argv[1].len);

	if (e)
		addReplyBulk(c, e->val, e->vlen);
	else
		addReplyNull(c);
}

static void delCommand(struct client *c, int argc, struct arg *argv)
{
	long long n = 0;

	for (int i = 1; i < argc; i++)
		n += dict_del(argv[i].p, argv[i].len);
	if (n)
		feedAppendOnlyFile(argc, argv);
	addReplyLongLong(c, n);
}

static void existsCommand(struct client *c, int argc, struct arg *argv)
{
	long long n = 0;

	for (int i = 1; i < argc; i++)
		n += dict_find(argv[i].p, argv[i].len) != NULL;
	addReplyLongLong(c, n);
}

static void incrDecr(struct client *c, int argc, struct arg *argv, long long by)
{
	struct entry *e = dict_find(argv[1].p, argv[1].len);
	long long v = 0;
	char s[32];
	int n;

	if (e && !str2ll(e->val, e->vlen, &v)) {
		addReplyError(c, "ERR value is not an integer or out of range");
		return;
	}
	if ((by > 0 && v > LLONG_MAX - by) || (by < 0 && v < LLONG_MIN - by)) {
		addReplyError(c, "ERR increment or decrement would overflow");
		return;
	}
	v += by;
	n = snprintf(s, sizeof(s), "%lld", v);
	dict_set(argv[1].p, argv[1].len, s, n);
	feedAppendOnlyFile(argc, argv);
	addReplyLongLong(c, v);
}

static void incrCommand(struct client *c, int argc, struct arg *argv)
{
	incrDecr(c, argc, argv, 1);
}

static void decrCommand(struct client *c, int argc, struct arg *argv)
{
	incrDecr(c, argc, argv, -1);
}

static void dbsizeCommand(struct client *c, int argc, struct arg *argv)
{
	addReplyLongLong(c, server.db.used);
}

static void flushallCommand(struct client *c, int argc, struct arg *argv)
{
	if (argc > 2 || (argc == 2 && !argis(&argv[1], "ASYNC") && !argis(&argv[1], "SYNC"))) {
		addReplyError(c, "ERR syntax error");
		return;
	}
	dict_empty();
	feedAppendOnlyFile(argc, argv);
	addReplyRaw(c, shared_ok, 5);
}

static bool info_section(int argc, struct arg *argv, const char *name, bool dflt)
{
	if (argc < 2)
		return dflt;
	for (int i = 1; i < argc; i++)
		if (argis(&argv[i], name) || argis(&argv[i], "all") || argis(&argv[i], "everything") ||
		    (dflt && argis(&argv[i], "default")))
			return true;
	return false;
}

static const char *io_name(enum io_mode m)
{
	static const char *names[] = { "write", "uring", "uring-linked", "uring-sqpoll" };

	return names[m];
}

static const char *fsync_name(enum fsync_policy f)
{
	static const char *names[] = { "always", "everysec", "no" };

	return names[f];
}

static void info_commandstats(struct buf *b);

static void infoCommand(struct client *c, int argc, struct arg *argv)
{
	struct buf b = { 0 };

	if (info_section(argc, argv, "server", true))
		buf_printf(&b, "# Server\r\nredis_version:7.0.0\r\nserver_name:aofwriter\r\n"
			   "aofwriter_version:%s\r\nredis_mode:standalone\r\nmultiplexing_api:epoll\r\n"
			   "process_id:%d\r\ntcp_port:%d\r\nconfig_file:\r\n\r\n",
			   AOFWRITER_VERSION, (int)getpid(), server.port);
	if (info_section(argc, argv, "clients", true))
		buf_printf(&b, "# Clients\r\nconnected_clients:%d\r\n\r\n", nclients);
	if (info_section(argc, argv, "persistence", true)) {
		buf_printf(&b, "# Persistence\r\nloading:0\r\n");
		aof_info(&b);
		buf_printf(&b, "\r\n");
	}
	if (info_section(argc, argv, "stats", true))
		buf_printf(&b, "# Stats\r\ntotal_connections_received:%llu\r\n"
			   "total_commands_processed:%llu\r\n\r\n", server.stat_conns, server.stat_commands);
	if (info_section(argc, argv, "aofwriter", true))
		buf_printf(&b, "# Aofwriter\r\nio:%s\r\nappendfsync:%s\r\nring_depth:%u\r\n"
			   "uring_chunk:%u\r\nuring_inflight:%u\r\nuring_linked_chunks:%d\r\n"
			   "auto_rewrite:%s\r\nauto_rewrite_bytes:%lld\r\ntest_fault_every:%u\r\n"
			   "flushes:%llu\r\nflush_ns_total:%llu\r\nflush_ns_max:%llu\r\n"
			   "fsyncs:%llu\r\nfsync_ns_total:%llu\r\nwrite_calls:%llu\r\nshort_writes:%llu\r\n"
			   "write_retries:%llu\r\naof_bytes_written:%llu\r\n\r\n",
			   io_name(server.io), fsync_name(server.fsync), server.ring_depth, server.uring_chunk,
			   server.uring_inflight, !server.uring_unlinked, server.auto_rewrite ? "yes" : "no",
			   server.auto_rewrite_bytes, server.test_fault_every, server.stat_flushes, server.stat_flush_ns,
			   server.stat_flush_max_ns, server.stat_fsyncs, server.stat_fsync_ns,
			   server.stat_write_calls, server.stat_short_writes, server.stat_retries,
			   server.stat_bytes);
	if (info_section(argc, argv, "commandstats", false))
		info_commandstats(&b);
	if (info_section(argc, argv, "keyspace", true)) {
		buf_printf(&b, "# Keyspace\r\n");
		if (server.db.used)
			buf_printf(&b, "db0:keys=%zu,expires=0,avg_ttl=0\r\n", server.db.used);
	}
	addReplyBulk(c, b.p ? b.p : "", b.len);
	buf_free(&b);
}

static void configCommand(struct client *c, int argc, struct arg *argv)
{
	char port[16], auto_min[32], dir[PATH_MAX];
	const char *conf[][2] = {
		{ "appendonly", "yes" },
		{ "appendfsync", fsync_name(server.fsync) },
		{ "appenddirname", server.aof_dirname },
		{ "appendfilename", server.aof_filename },
		{ "dir", getcwd(dir, sizeof(dir)) ? dir : server.dir },
		{ "port", port },
		{ "bind", server.bind },
		{ "save", "" },
		{ "databases", "1" },
		{ "aof-use-rdb-preamble", "no" },
		{ "aof-rewrite-incremental-fsync", "yes" },
		{ "aof-load-truncated", "yes" },
		{ "aof-timestamp-enabled", "no" },
		{ "auto-aof-rewrite-percentage", "0" },
		{ "auto-aof-rewrite-min-size", auto_min },
		{ "proto-max-bulk-len", "67108864" },
		{ "client-query-buffer-limit", "268435456" },
	};
	const int nconf = sizeof(conf) / sizeof(conf[0]);
	bool match[sizeof(conf) / sizeof(conf[0])] = { false };
	int n = 0;

	if (!argis(&argv[1], "GET") || argc < 3) {
		addReplyError(c, "ERR aofwriter only supports CONFIG GET <pattern> [<pattern> ...]");
		return;
	}
	snprintf(port, sizeof(port), "%d", server.port);
	snprintf(auto_min, sizeof(auto_min), "%lld", server.auto_rewrite_bytes);
	for (int i = 2; i < argc; i++) {
		char pat[256];

		snprintf(pat, sizeof(pat), "%.*s", (int)argv[i].len, argv[i].p);
		for (int j = 0; j < nconf; j++)
			if (!match[j] && fnmatch(pat, conf[j][0], FNM_CASEFOLD) == 0) {
				match[j] = true;
				n++;
			}
	}
	addReplyArrayLen(c, 2LL * n);
	for (int j = 0; j < nconf; j++)
		if (match[j]) {
			addReplyBulkStr(c, conf[j][0]);
			addReplyBulkStr(c, conf[j][1]);
		}
}

static void bgrewriteaofCommand(struct client *c, int argc, struct arg *argv)
{
	if (server.child_pid != -1)
		addReplyError(c, "ERR Background append only file rewriting already in progress");
	else if (rewriteAppendOnlyFileBackground() == C_OK)
		addReplyStatus(c, "Background append only file rewriting started");
	else
		addReplyError(c, "ERR Can't execute an AOF background rewriting. Please check the server logs for more information.");
}

static void shutdownCommand(struct client *c, int argc, struct arg *argv)
{
	/* No reply, like Redis: the connection closes when the process exits. */
	shutdown_asap = true;
}

static void quitCommand(struct client *c, int argc, struct arg *argv)
{
	addReplyRaw(c, shared_ok, 5);
	c->close_after_reply = true;
}

static void keysCommand(struct client *c, int argc, struct arg *argv)
{
	struct buf out = { 0 };
	char *pat = strndup(argv[1].p, argv[1].len);
	long long n = 0;

	for (size_t i = 0; i < server.db.size; i++)
		for (struct entry *e = server.db.tab[i]; e; e = e->next) {
			char *k = strndup(e->key, e->klen);

			if (fnmatch(pat, k, 0) == 0) {
				buf_printf(&out, "$%zu\r\n", e->klen);
				buf_append(&out, e->key, e->klen);
				buf_append(&out, "\r\n", 2);
				n++;
			}
			free(k);
		}
	addReplyArrayLen(c, n);
	if (out.len)
		addReplyRaw(c, out.p, out.len);
	buf_free(&out);
	free(pat);
}

static void commandCommand(struct client *c, int argc, struct arg *argv)
{
	addReplyArrayLen(c, 0);
}

static const struct command commands[] = {
	{ "ping", -1, 0, pingCommand },
	{ "echo", 2, 0, echoCommand },
	{ "select", 2, CMD_LOADABLE, selectCommand },
	{ "set", -3, CMD_WRITE | CMD_LOADABLE, setCommand },
	{ "get", 2, 0, getCommand },
	{ "del", -2, CMD_WRITE | CMD_LOADABLE, delCommand },
	{ "unlink", -2, CMD_WRITE | CMD_LOADABLE, delCommand },
	{ "exists", -2, 0, existsCommand },
	{ "keys", 2, 0, keysCommand },
	{ "incr", 2, CMD_WRITE | CMD_LOADABLE, incrCommand },
	{ "decr", 2, CMD_WRITE | CMD_LOADABLE, decrCommand },
	{ "dbsize", 1, 0, dbsizeCommand },
	{ "flushall", -1, CMD_WRITE | CMD_LOADABLE, flushallCommand },
	{ "flushdb", -1, CMD_WRITE | CMD_LOADABLE, flushallCommand },
	{ "info", -1, 0, infoCommand },
	{ "config", -2, 0, configCommand },
	{ "bgrewriteaof", 1, 0, bgrewriteaofCommand },
	{ "shutdown", -1, 0, shutdownCommand },
	{ "quit", -1, 0, quitCommand },
	{ "command", -1, 0, commandCommand },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))
static unsigned long long cmd_calls[NCOMMANDS];

static const struct command *lookupCommand(const struct arg *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (argis(name, commands[i].name))
			return &commands[i];
	return NULL;
}

static void info_commandstats(struct buf *b)
{
	buf_printf(b, "# Commandstats\r\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (cmd_calls[i])
			buf_printf(b, "cmdstat_%s:calls=%llu,usec=0,usec_per_call=0.00,rejected_calls=0,failed_calls=0\r\n",
				   commands[i].name, cmd_calls[i]);
	buf_printf(b, "\r\n");
}

static bool arity_ok(const struct command *cmd, int argc)
{
	return cmd->arity > 0 ? argc == cmd->arity : argc >= -cmd->arity;
}

static void processCommand(struct client *c, int argc, struct arg *argv)
{
	const struct command *cmd = lookupCommand(&argv[0]);
	char err[256];

	server.stat_commands++;
	if (!cmd) {
		struct buf b = { 0 };

		buf_printf(&b, "ERR unknown command '%.*s', with args beginning with: ",
			   (int)(argv[0].len > 128 ? 128 : argv[0].len), argv[0].p);
		for (int i = 1; i < argc && i < 4; i++)
			buf_printf(&b, "'%.*s' ", (int)(argv[i].len > 64 ? 64 : argv[i].len), argv[i].p);
		for (size_t i = 0; i < b.len; i++)	/* the error line must stay one line */
			if (b.p[i] == '\r' || b.p[i] == '\n')
				b.p[i] = ' ';
		buf_append(&b, "", 1);
		addReplyError(c, b.p);
		buf_free(&b);
		return;
	}
	if (!arity_ok(cmd, argc)) {
		snprintf(err, sizeof(err), "ERR wrong number of arguments for '%s' command", cmd->name);
		addReplyError(c, err);
		return;
	}
	if ((cmd->flags & CMD_WRITE) && server.aof_last_write_status != C_OK) {
		snprintf(err, sizeof(err), "MISCONF Errors writing to the AOF file: %s",
			 strerror(server.aof_last_write_errno));
		addReplyError(c, err);
		return;
	}
	cmd_calls[cmd - commands]++;
	cmd->proc(c, argc, argv);
}

/* Executes one command read from an AOF file; 0 or -1 with a message in err. As Redis does, error
 * replies of known commands are ignored, except SELECT of a database we do not have. */
int exec_loaded_command(int argc, struct arg *argv, char *err, size_t errlen)
{
	static struct client fake = { .fd = -1 };
	const struct command *cmd = lookupCommand(&argv[0]);
	int ret = 0;

	if (!cmd || !(cmd->flags & CMD_LOADABLE)) {
		snprintf(err, errlen, "unknown command '%.*s' in the append only file",
			 (int)(argv[0].len > 64 ? 64 : argv[0].len), argv[0].p);
		return -1;
	}
	if (!arity_ok(cmd, argc)) {
		snprintf(err, errlen, "wrong number of arguments for '%s' in the append only file", cmd->name);
		return -1;
	}
	fake.r.len = 0;
	cmd->proc(&fake, argc, argv);
	if (cmd->proc == selectCommand && fake.r.len && fake.r.p[0] == '-') {
		snprintf(err, errlen, "SELECT %.*s: aofwriter has only database 0",
			 (int)(argv[1].len > 20 ? 20 : argv[1].len), argv[1].p);
		ret = -1;
	}
	return ret;
}

/* ---------------------------------------------------------------- RESP input */

static void reset_parse(struct client *c)
{
	c->qpos = c->ppos;
	c->reqtype = 0;
	c->mbulk = 0;
	c->bulklen = -1;
	c->argc = 0;
}

static void protocol_error(struct client *c, const char *msg)
{
	char err[160];

	snprintf(err, sizeof(err), "ERR Protocol error: %s", msg);
	addReplyError(c, err);
	c->close_after_reply = true;
}

static void push_arg(struct client *c, size_t off, size_t len)
{
	if (c->argc == c->argcap) {
		c->argcap = c->argcap ? c->argcap * 2 : 8;
		c->aoff = xrealloc(c->aoff, c->argcap * sizeof(*c->aoff));
		c->alen = xrealloc(c->alen, c->argcap * sizeof(*c->alen));
	}
	c->aoff[c->argc] = off;
	c->alen[c->argc] = len;
	c->argc++;
}

static void run_parsed(struct client *c)
{
	struct arg stackv[16], *argv = stackv;

	if (c->argc > 16)
		argv = xrealloc(NULL, c->argc * sizeof(*argv));
	for (int i = 0; i < c->argc; i++) {
		argv[i].p = c->q + c->aoff[i];
		argv[i].len = c->alen[i];
	}
	if (c->argc)
		processCommand(c, c->argc, argv);
	if (argv != stackv)
		free(argv);
}

/* Reads a "<prefix><integer>\r\n" line at ppos: 1 done, 0 incomplete, -1 malformed. */
static int read_len_line(struct client *c, long long *out)
{
	char *nl = memchr(c->q + c->ppos, '\n', c->qlen - c->ppos);
	size_t end;

	if (!nl)
		return c->qlen - c->ppos > 32 ? -1 : 0;
	end = nl - c->q;
	if (end - c->ppos < 2 || c->q[end - 1] != '\r' ||
	    !str2ll(c->q + c->ppos + 1, end - 1 - (c->ppos + 1), out))
		return -1;
	c->ppos = end + 1;
	return 1;
}

static void processInlineBuffer(struct client *c)
{
	char *nl = memchr(c->q + c->ppos, '\n', c->qlen - c->ppos);
	size_t end, i;

	if (!nl) {
		if (c->qlen - c->ppos > MAX_INLINE)
			protocol_error(c, "too big inline request");
		return;
	}
	end = nl - c->q;
	i = c->ppos;
	while (i < end) {
		size_t start;

		while (i < end && isspace((unsigned char)c->q[i]))
			i++;
		start = i;
		while (i < end && !isspace((unsigned char)c->q[i]))
			i++;
		if (i > start)
			push_arg(c, start, i - start);
	}
	c->ppos = end + 1;
	run_parsed(c);
	reset_parse(c);
}

/* Parses and executes every complete command in the query buffer (processInputBuffer). */
static void processInputBuffer(struct client *c)
{
	while (!c->close_after_reply && !c->closing && !shutdown_asap && c->ppos < c->qlen) {
		long long ll;
		int r;

		if (!c->reqtype)
			c->reqtype = c->q[c->ppos] == '*' ? '*' : 'i';
		if (c->reqtype == 'i') {
			size_t before = c->ppos;

			processInlineBuffer(c);
			if (c->ppos == before)
				break;
			continue;
		}
		if (c->mbulk == 0) {
			r = read_len_line(c, &ll);
			if (r == 0)
				break;
			if (r < 0 || ll > MAX_MULTIBULK) {
				protocol_error(c, r < 0 ? "invalid multibulk length" :
					       "too many arguments (aofwriter limit: 1048576)");
				break;
			}
			if (ll <= 0) {
				reset_parse(c);
				continue;
			}
			c->mbulk = ll;
		}
		while (c->mbulk > 0) {
			if (c->bulklen == -1) {
				if (c->ppos >= c->qlen)
					return;
				if (c->q[c->ppos] != '$') {
					char msg[64];

					snprintf(msg, sizeof(msg), "expected '$', got '%c'",
						 isprint((unsigned char)c->q[c->ppos]) ? c->q[c->ppos] : '?');
					protocol_error(c, msg);
					return;
				}
				r = read_len_line(c, &ll);
				if (r == 0)
					return;
				if (r < 0 || ll < 0 || ll > MAX_BULK_LEN) {
					protocol_error(c, r < 0 || ll < 0 ? "invalid bulk length" :
						       "invalid bulk length (aofwriter limit: 64 MiB)");
					return;
				}
				c->bulklen = ll;
			}
			if (c->qlen - c->ppos < (size_t)c->bulklen + 2)
				return;
			if (c->q[c->ppos + c->bulklen] != '\r' || c->q[c->ppos + c->bulklen + 1] != '\n') {
				protocol_error(c, "bulk not terminated by CRLF");
				return;
			}
			push_arg(c, c->ppos, c->bulklen);
			c->ppos += c->bulklen + 2;
			c->bulklen = -1;
			c->mbulk--;
		}
		run_parsed(c);
		reset_parse(c);
	}
}

/* ---------------------------------------------------------------- event loop */

static void epoll_mod(struct client *c, bool out)
{
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c };

	if (c->want_out != out && epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->want_out = out;
}

static void freeClient(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nclients--;
	/* Freed at the end of the loop iteration: events and the pending list may still point here. */
	c->next = freed_clients;
	freed_clients = c;
}

static void add_pending(struct client *c)
{
	if (!c->pending && !c->closing) {
		c->pending = true;
		c->pending_next = pending_clients;
		pending_clients = c;
	}
}

static void acceptHandler(void)
{
	for (;;) {
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		struct epoll_event ev = { .events = EPOLLIN };
		struct client *c;
		int fd, one = 1;

		fd = accept4(listen_fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				serverLog("accept: %s", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->bulklen = -1;
		ev.data.ptr = c;
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = clients;
		if (clients)
			clients->prev = c;
		clients = c;
		nclients++;
		server.stat_conns++;
	}
}

static void readQueryFromClient(struct client *c)
{
	size_t readlen = IOBUF_LEN;
	ssize_t n;

	/* A big argument: read the rest of it in one go, as Redis does. */
	if (c->reqtype == '*' && c->bulklen >= 32 * 1024) {
		size_t have = c->qlen - c->ppos, need = c->bulklen + 2;

		if (need > have && need - have > readlen)
			readlen = need - have;
	}
	if (c->qcap - c->qlen < readlen) {
		c->qcap = c->qlen + readlen;
		c->q = xrealloc(c->q, c->qcap);
	}
	n = read(c->fd, c->q + c->qlen, readlen);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		freeClient(c);
		return;
	}
	c->qlen += n;
	if (c->qlen - c->qpos > MAX_QUERYBUF) {
		protocol_error(c, "client query buffer exceeds the limit (aofwriter limit: 256 MiB)");
		add_pending(c);
		return;
	}
	processInputBuffer(c);
	/* Drop what was consumed; offsets of a partially parsed command move with it. */
	if (c->qpos == c->qlen) {
		c->qlen = c->qpos = c->ppos = 0;
	} else if (c->qpos > 0 && (c->qpos >= c->qcap / 2 || c->qlen == c->qcap)) {
		memmove(c->q, c->q + c->qpos, c->qlen - c->qpos);
		for (int i = 0; i < c->argc; i++)
			c->aoff[i] -= c->qpos;
		c->qlen -= c->qpos;
		c->ppos -= c->qpos;
		c->qpos = 0;
	}
	if (c->r.len > c->rpos)
		add_pending(c);
	if (c->r.len - c->rpos > MAX_REPLYBUF) {
		serverLog("client fd %d: reply buffer over %lld bytes, closing", c->fd, MAX_REPLYBUF);
		freeClient(c);
	}
}

/* Sends replies; only ever called after flushAppendOnlyFile() in beforeSleep(), so no reply
 * leaves before the write it acknowledges went to the AOF (and, with always, to disk). The
 * reply-before-sync test fault calls it from inside the flush, before the fsync. */
void handleClientsWithPendingWrites(void)
{
	struct client *c, *next;

	for (c = pending_clients, pending_clients = NULL; c; c = next) {
		next = c->pending_next;
		c->pending = false;
		if (c->closing)
			continue;
		while (c->rpos < c->r.len) {
			ssize_t n = write(c->fd, c->r.p + c->rpos, c->r.len - c->rpos);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n <= 0) {
				freeClient(c);
				break;
			}
			c->rpos += n;
		}
		if (c->closing)
			continue;
		if (c->rpos == c->r.len) {
			c->rpos = c->r.len = 0;
			if (c->r.cap > 1 << 20) {	/* give back a big buffer */
				buf_free(&c->r);
			}
			if (c->close_after_reply) {
				freeClient(c);
				continue;
			}
			epoll_mod(c, false);
		} else {
			epoll_mod(c, true);
		}
	}
}

void aof_close_listeners_in_child(void)
{
	if (listen_fd >= 0)
		close(listen_fd);
	if (epoll_fd >= 0)
		close(epoll_fd);
	if (signal_fd >= 0)
		close(signal_fd);
}

static void handleSignals(void)
{
	struct signalfd_siginfo si;

	while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGCHLD) {
			aof_check_child();
		} else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			serverLog("Received %s, scheduling shutdown...", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
			shutdown_asap = true;
		}
	}
}

static void beforeSleep(void)
{
	flushAppendOnlyFile(0);
	handleClientsWithPendingWrites();
}

static int eventLoop(void)
{
	struct epoll_event events[1024];
	long long next_cron = mstime() + CRON_MS;

	while (!shutdown_asap) {
		int n, timeout = (int)(next_cron - mstime());

		n = epoll_wait(epoll_fd, events, 1024, timeout < 0 ? 0 : timeout);
		if (n < 0 && errno != EINTR) {
			serverLog("epoll_wait: %s", strerror(errno));
			return -1;
		}
		for (int i = 0; i < n; i++) {
			void *p = events[i].data.ptr;
			struct client *c;

			if (p == &listen_fd) {
				acceptHandler();
				continue;
			}
			if (p == &signal_fd) {
				handleSignals();
				continue;
			}
			c = p;
			if (c->closing)
				continue;
			if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				readQueryFromClient(c);
			/* Writable: send in beforeSleep, after the flush, never from here. */
			if (!c->closing && (events[i].events & EPOLLOUT))
				add_pending(c);
		}
		if (mstime() >= next_cron) {
			aof_cron();
			next_cron = mstime() + CRON_MS;
		}
		beforeSleep();
		while (freed_clients) {
			struct client *c = freed_clients;

			freed_clients = c->next;
			free(c->q);
			free(c->aoff);
			free(c->alen);
			buf_free(&c->r);
			free(c);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- options and main */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: aofwriter [OPTIONS]\n"
"A single-threaded RESP server whose AOF path behaves like Valkey's (flushAppendOnlyFile before\n"
"replies, Redis 7 multi-part AOF directory), for A/B experiments on the AOF write path.\n"
"\n"
"Server (names as in Valkey's configuration):\n"
"  --port N                 TCP port (default 6379)\n"
"  --bind ADDR              IPv4 loopback address to listen on (default 127.0.0.1; anything\n"
"                           outside 127.0.0.0/8 is refused)\n"
"  --dir DIR                working directory holding the AOF directory (default: current dir)\n"
"  --appenddirname NAME     AOF directory inside DIR (default appendonlydir)\n"
"  --appendfilename NAME    AOF base name (default appendonly.aof)\n"
"  --appendfsync POLICY     always | everysec | no (default everysec). always: fdatasync after\n"
"                           every write, before any reply; everysec: the bio_aof thread\n"
"                           fdatasyncs once a second; no: never fsync\n"
"\n"
"AOF I/O method:\n"
"  --io MODE                write        write(2) loop on an O_APPEND fd, fdatasync(2) (default)\n"
"                           uring        io_uring writes at the tracked end of file, in chunks,\n"
"                                        fdatasync(2) as a syscall\n"
"                           uring-linked io_uring writes + IORING_OP_FSYNC(DATASYNC) linked in one\n"
"                                        submission, one wait\n"
"                           uring-sqpoll as uring-linked on an IORING_SETUP_SQPOLL ring\n"
"  --ring-depth N           io_uring SQ entries (default 64, at least --uring-inflight + 1)\n"
"  --uring-chunk BYTES      bytes per io_uring write SQE (default 256k; k/m suffixes)\n"
"  --uring-inflight N       write SQEs submitted together (default 4); they are linked so they\n"
"                           execute in order and a crash leaves a prefix, never a hole\n"
"  --uring-unlinked         do not link the write SQEs: they may run concurrently (a crash may\n"
"                           then leave a zero-filled hole that Redis refuses to load)\n"
"  --uring-async            IOSQE_ASYNC on the write SQEs: every write runs in an io-wq worker\n"
"  --sqpoll-idle MS         SQPOLL thread idle time (default 1000)\n"
"\n"
"Rewrite:\n"
"  --auto-rewrite[=MB]      without MB: start a BGREWRITEAOF as soon as the previous one ends;\n"
"                           with MB: start one when the incr files grew by MB megabytes\n"
"\n"
"Other:\n"
"  --verbose                log every flush error and rewrite step\n"
"  -h, --help               this help\n"
"  --version                print the version\n"
"\n"
"Test only (they lose acknowledged writes on purpose, to test aoftrace's durability checks;\n"
"refused unless --enable-test-faults is given; INFO shows aof_test_faults_injected):\n"
"  --enable-test-faults     allow the switches below (prints a warning at start)\n"
"  --test-fault LIST        comma list of faults to inject into the AOF path:\n"
"                           overwrite          every Nth flush writes its buffer at\n"
"                                              end - length (from 0 at most), over earlier data\n"
"                           reply-before-sync  every Nth flush sends the replies before the\n"
"                                              fsync (--appendfsync always only)\n"
"                           skip-fsync         every Nth flush does no fsync at all\n"
"                                              (--appendfsync always only)\n"
"                           stale-file         after a rewrite, keep writing to the old incr\n"
"                                              file, which the rewrite deletes\n"
"  --test-fault-every N     N for the every-Nth-flush faults (default 20)\n"
"\n"
"Commands: PING ECHO SELECT(0) SET(NX|XX|GET) GET DEL UNLINK EXISTS KEYS INCR DECR DBSIZE FLUSHALL\n"
"FLUSHDB INFO CONFIG-GET BGREWRITEAOF SHUTDOWN QUIT COMMAND. No key expiry.\n"
"Limits: one argument 64 MiB, 1048576 arguments per command, 256 MiB of unparsed input per\n"
"client, 64 KiB per inline command; a request over a limit gets -ERR Protocol error and the\n"
"connection is closed.\n"
"Signals: SIGTERM and SIGINT act as SHUTDOWN (flush, fsync, exit 0).\n");
}

static void die_opt(const char *fmt, const char *arg)
{
	fprintf(stderr, "aofwriter: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see --help)\n");
	exit(2);
}

static long long parse_num(const char *opt, const char *s, long long min, long long max, bool suffix)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (end == s || errno)
		goto bad;
	if (suffix && *end) {
		if ((*end == 'k' || *end == 'K') && !end[1])
			v <<= 10;
		else if ((*end == 'm' || *end == 'M') && !end[1])
			v <<= 20;
		else
			goto bad;
	} else if (*end) {
		goto bad;
	}
	if (v < min || v > max)
		goto bad;
	return v;
bad:
	fprintf(stderr, "aofwriter: bad value '%s' for %s (expected %lld..%lld) (see --help)\n", s, opt, min, max);
	exit(2);
}

enum {
	OPT_PORT = 256, OPT_BIND, OPT_DIR, OPT_DIRNAME, OPT_FILENAME, OPT_FSYNC, OPT_IO, OPT_RING,
	OPT_CHUNK, OPT_INFLIGHT, OPT_UNLINKED, OPT_ASYNC, OPT_SQIDLE, OPT_AUTO, OPT_VERBOSE, OPT_VERSION,
	OPT_ENABLE_FAULTS, OPT_FAULT, OPT_FAULT_EVERY,
};

/* --test-fault LIST: comma-separated names of test_fault_names[]. */
static unsigned parse_test_faults(const char *list)
{
	unsigned faults = 0;
	const char *p = list;

	do {
		size_t n = strcspn(p, ",");
		int i;

		for (i = 0; i < NR_TEST_FAULTS; i++)
			if (strlen(test_fault_names[i]) == n && !strncmp(p, test_fault_names[i], n))
				break;
		if (i == NR_TEST_FAULTS)
			die_opt("--test-fault '%s': expected a comma list of overwrite, reply-before-sync, skip-fsync, stale-file", list);
		faults |= 1u << i;
		p += n;
	} while (*p++ == ',');
	return faults;
}

static void parse_options(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, OPT_PORT },
		{ "bind", required_argument, NULL, OPT_BIND },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "appenddirname", required_argument, NULL, OPT_DIRNAME },
		{ "appendfilename", required_argument, NULL, OPT_FILENAME },
		{ "appendfsync", required_argument, NULL, OPT_FSYNC },
		{ "io", required_argument, NULL, OPT_IO },
		{ "ring-depth", required_argument, NULL, OPT_RING },
		{ "uring-chunk", required_argument, NULL, OPT_CHUNK },
		{ "uring-inflight", required_argument, NULL, OPT_INFLIGHT },
		{ "uring-unlinked", no_argument, NULL, OPT_UNLINKED },
		{ "uring-async", no_argument, NULL, OPT_ASYNC },
		{ "sqpoll-idle", required_argument, NULL, OPT_SQIDLE },
		{ "auto-rewrite", optional_argument, NULL, OPT_AUTO },
		{ "verbose", no_argument, NULL, OPT_VERBOSE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ "enable-test-faults", no_argument, NULL, OPT_ENABLE_FAULTS },
		{ "test-fault", required_argument, NULL, OPT_FAULT },
		{ "test-fault-every", required_argument, NULL, OPT_FAULT_EVERY },
		{ 0 },
	};
	bool enable_faults = false, every_set = false;
	struct in_addr a;
	int opt;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (opt) {
		case OPT_PORT:
			server.port = parse_num("--port", optarg, 1, 65535, false);
			break;
		case OPT_BIND:
			if (strcmp(optarg, "localhost") == 0)
				optarg = "127.0.0.1";
			if (inet_pton(AF_INET, optarg, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127)
				die_opt("--bind %s: only an IPv4 loopback address (127.0.0.0/8) is allowed", optarg);
			snprintf(server.bind, sizeof(server.bind), "%s", optarg);
			break;
		case OPT_DIR:
			server.dir = optarg;
			break;
		case OPT_DIRNAME:
			if (!*optarg || strchr(optarg, '/') || !strcmp(optarg, ".") || !strcmp(optarg, ".."))
				die_opt("--appenddirname '%s': must be a plain directory name", optarg);
			server.aof_dirname = optarg;
			break;
		case OPT_FILENAME:
			if (!*optarg || strchr(optarg, '/') || strpbrk(optarg, " \t\r\n\"'"))
				die_opt("--appendfilename '%s': must be a plain file name without spaces", optarg);
			server.aof_filename = optarg;
			break;
		case OPT_FSYNC:
			if (!strcmp(optarg, "always"))
				server.fsync = AOF_FSYNC_ALWAYS;
			else if (!strcmp(optarg, "everysec"))
				server.fsync = AOF_FSYNC_EVERYSEC;
			else if (!strcmp(optarg, "no"))
				server.fsync = AOF_FSYNC_NO;
			else
				die_opt("--appendfsync '%s': expected always, everysec or no", optarg);
			break;
		case OPT_IO:
			if (!strcmp(optarg, "write"))
				server.io = IO_WRITE;
			else if (!strcmp(optarg, "uring"))
				server.io = IO_URING;
			else if (!strcmp(optarg, "uring-linked"))
				server.io = IO_URING_LINKED;
			else if (!strcmp(optarg, "uring-sqpoll"))
				server.io = IO_URING_SQPOLL;
			else
				die_opt("--io '%s': expected write, uring, uring-linked or uring-sqpoll", optarg);
			break;
		case OPT_RING:
			server.ring_depth = parse_num("--ring-depth", optarg, 2, 4096, false);
			break;
		case OPT_CHUNK:
			server.uring_chunk = parse_num("--uring-chunk", optarg, 512, 64 << 20, true);
			break;
		case OPT_INFLIGHT:
			server.uring_inflight = parse_num("--uring-inflight", optarg, 1, 1024, false);
			break;
		case OPT_UNLINKED:
			server.uring_unlinked = true;
			break;
		case OPT_ASYNC:
			server.uring_async = true;
			break;
		case OPT_SQIDLE:
			server.sqpoll_idle_ms = parse_num("--sqpoll-idle", optarg, 1, 600000, false);
			break;
		case OPT_AUTO:
			server.auto_rewrite = true;
			/* Also accept "--auto-rewrite 64" (getopt only takes "--auto-rewrite=64"). */
			if (!optarg && optind < argc && argv[optind][0] >= '0' && argv[optind][0] <= '9')
				optarg = argv[optind++];
			if (optarg)
				server.auto_rewrite_bytes = parse_num("--auto-rewrite", optarg, 1, 1 << 20, false) << 20;
			break;
		case OPT_VERBOSE:
			server.verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case OPT_VERSION:
			printf("aofwriter %s\n", AOFWRITER_VERSION);
			exit(0);
		case OPT_ENABLE_FAULTS:
			enable_faults = true;
			break;
		case OPT_FAULT:
			server.test_faults |= parse_test_faults(optarg);
			break;
		case OPT_FAULT_EVERY:
			server.test_fault_every = parse_num("--test-fault-every", optarg, 1, 1000000, false);
			every_set = true;
			break;
		case ':':
			die_opt("option '%s' needs a value", argv[optind - 1]);
			break;
		default:
			die_opt("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		die_opt("unexpected argument '%s'", argv[optind]);
	if (server.io != IO_WRITE && server.ring_depth < server.uring_inflight + 1) {
		fprintf(stderr, "aofwriter: --ring-depth %u must be at least --uring-inflight + 1 (%u) (see --help)\n",
			server.ring_depth, server.uring_inflight + 1);
		exit(2);
	}
	if ((server.test_faults || every_set) && !enable_faults) {
		fprintf(stderr, "aofwriter: --test-fault and --test-fault-every are test-only switches that lose acknowledged writes; refused without --enable-test-faults (see --help)\n");
		exit(2);
	}
	if ((server.test_faults & (FAULT_REPLY_BEFORE_SYNC | FAULT_SKIP_FSYNC)) && server.fsync != AOF_FSYNC_ALWAYS) {
		fprintf(stderr, "aofwriter: --test-fault %s needs --appendfsync always (see --help)\n",
			server.test_faults & FAULT_REPLY_BEFORE_SYNC ? "reply-before-sync" : "skip-fsync");
		exit(2);
	}
	if (enable_faults) {
		struct buf b = { 0 };

		test_faults_str(&b, server.test_faults);
		fprintf(stderr, "aofwriter: TEST FAULTS ENABLED: %s (every-Nth-flush faults: N=%u): acknowledged writes may be lost; never use this for data you want to keep\n",
			b.p, server.test_fault_every);
		buf_free(&b);
	}
}

static int setup_listener(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(server.port) };
	struct epoll_event ev = { .events = EPOLLIN };
	int one = 1;

	inet_pton(AF_INET, server.bind, &sa.sin_addr);
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd < 0)
		goto err;
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(listen_fd, 511) < 0)
		goto err;
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		goto err;
	ev.data.ptr = &listen_fd;
	if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) < 0)
		goto err;
	ev.data.ptr = &signal_fd;
	if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, signal_fd, &ev) < 0)
		goto err;
	return 0;
err:
	fprintf(stderr, "aofwriter: cannot listen on %s:%d: %s\n", server.bind, server.port, strerror(errno));
	return -1;
}

int main(int argc, char **argv)
{
	sigset_t mask;
	int ret = 1;

	server.port = 6379;
	snprintf(server.bind, sizeof(server.bind), "127.0.0.1");
	server.dir = ".";
	server.aof_dirname = "appendonlydir";
	server.aof_filename = "appendonly.aof";
	server.fsync = AOF_FSYNC_EVERYSEC;
	server.io = IO_WRITE;
	server.ring_depth = 64;
	server.uring_chunk = 256 << 10;
	server.uring_inflight = 4;
	server.sqpoll_idle_ms = 1000;
	server.test_fault_every = TEST_FAULT_EVERY_DEFAULT;
	server.child_pid = -1;
	server.aof_fd = -1;
	parse_options(argc, argv);

	if (chdir(server.dir) < 0) {
		fprintf(stderr, "aofwriter: --dir %s: %s\n", server.dir, strerror(errno));
		return 1;
	}
	if (access(".", W_OK | X_OK) < 0) {
		fprintf(stderr, "aofwriter: --dir %s: %s\n", server.dir, strerror(errno));
		return 1;
	}

	/* Signals arrive through a signalfd in the event loop; the bio thread inherits the mask. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (signal_fd < 0) {
		fprintf(stderr, "aofwriter: signalfd: %s\n", strerror(errno));
		return 1;
	}

	/* Listen first so a port in use fails before the AOF directory is touched. */
	if (setup_listener() < 0)
		return 1;
	if (aof_init() < 0)
		return 1;
	serverLog("aofwriter %s ready on %s:%d, io=%s appendfsync=%s dir=%s/%s", AOFWRITER_VERSION,
		  server.bind, server.port, io_name(server.io), fsync_name(server.fsync), server.dir,
		  server.aof_dirname);

	if (eventLoop() == 0)
		ret = 0;
	serverLog("User requested shutdown...");
	aof_shutdown();
	serverLog("aofwriter is now ready to exit, bye bye...");
	return ret;
}

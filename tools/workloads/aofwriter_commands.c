// SPDX-License-Identifier: BSD-3-Clause
/*
 * aofwriter's commands: the reply builders, the command table (PING, SET, GET, INFO, CONFIG GET,
 * BGREWRITEAOF, ...), processCommand() for clients and exec_loaded_command() for the AOF loader.
 */
#define _GNU_SOURCE
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "aofwriter.h"

static bool argis(const struct arg *a, const char *s)
{
	return a->len == strlen(s) && strncasecmp(a->p, s, a->len) == 0;
}

/* ---------------------------------------------------------------- replies */

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

void addReplyError(struct client *c, const char *s)
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

void processCommand(struct client *c, int argc, struct arg *argv)
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

// SPDX-License-Identifier: BSD-3-Clause
/*
 * aofwriter's network side: the listener, the epoll event loop (signals, cron, the AOF flush
 * before replies), clients, the RESP parser (multibulk and inline) and sending replies.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aofwriter.h"

#define CRON_MS 100	/* serverCron at hz 10 */

static int listen_fd = -1, epoll_fd = -1;
int signal_fd = -1;
bool shutdown_asap;

static struct client *clients, *pending_clients, *freed_clients;
int nclients;

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

/* ---------------------------------------------------------------- clients and the event loop */

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

int eventLoop(void)
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

/* ---------------------------------------------------------------- the listener */

int setup_listener(void)
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

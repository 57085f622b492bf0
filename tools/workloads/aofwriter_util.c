// SPDX-License-Identifier: BSD-3-Clause
/* aofwriter's utilities: clocks, serverLog, growable buffers, strict integer parsing. */
#define _GNU_SOURCE
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aofwriter.h"

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

void *xrealloc(void *p, size_t n)
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
bool str2ll(const char *s, size_t len, long long *out)
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

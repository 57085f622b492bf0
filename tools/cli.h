/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* aoftrace's command line: the options, and the one-line error every failure ends in. */
#ifndef __CLI_H
#define __CLI_H

#include <stdbool.h>
#include <sys/types.h>

#define AOFTRACE_VERSION "0.1"
#define FLUSH_FUNC "flushAppendOnlyFile"

struct env {
	pid_t pid;
	double duration;	/* seconds, 0: until Ctrl-C */
	double interval;	/* seconds, 0: no interval lines */
	const char *json_path;
	const char *binary;
	const char *btf_path;
	const char *folded_path;
	const char *timeline_path;
	int top;
	bool check;
	bool verbose;
	bool any;
	bool lite;
	bool top_set;
};

extern struct env env;

/* Parses argv into env; a usage error prints one line and exits 2. */
void cli_parse(int argc, char **argv);
/* "aoftrace: <message>" on stderr, exit 1. */
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* The kernel BTF in use: --btf, or the running kernel's. */
const char *btf_file(void);

#endif /* __CLI_H */

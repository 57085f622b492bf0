// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* aoftrace's options (argp, as libbpf-tools parse theirs) and its one-line errors. */
#include <argp.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

struct env env = { .top = 5 };

const char *argp_program_version = "aoftrace " AOFTRACE_VERSION;
const char *argp_program_bug_address = "https://github.com/aoftrace/aoftrace/issues";
static const char argp_program_doc[] =
"Trace the AOF write path of a running valkey-server or redis-server.\n"
"\n"
"USAGE: aoftrace -p PID [-d SECONDS] [-i SECONDS] [-j FILE] [-f FILE] [-T FILE] [-t N] [-b BINARY] [-a] [-v]\n"
"       aoftrace -p PID --lite [-d SECONDS] [-i SECONDS] [-j FILE] [-b BINARY] [-a] [-v]\n"
"       aoftrace --check\n"
"\n"
"EXAMPLES:\n"
"    aoftrace -p $(pidof valkey-server)     # trace until Ctrl-C, then print histograms\n"
"    aoftrace -p 1234 -d 10                 # trace for 10 seconds\n"
"    aoftrace -p 1234 -i 1 -d 30            # a summary line every second for 30 seconds\n"
"    aoftrace -p 1234 -d 10 -j out.json     # also write the report as JSON\n"
"    aoftrace -p 1234 -d 10 -f off.folded   # off-CPU stacks with wakers, for a flame graph\n"
"    aoftrace -p 1234 -b ./src/valkey-server  # take symbols from this binary\n"
"    aoftrace -p 1234 -a                    # any process: its fsyncs and io_uring requests\n"
"    aoftrace -p 1234 -d 5 -T trace.json    # a timeline for Perfetto / chrome://tracing\n"
"    aoftrace -p 1234 --lite -i 60          # left attached: latency, counts, durability checks\n"
"    aoftrace --check                       # what this kernel offers the tool\n";

enum { OPT_CHECK = 0x100, OPT_BTF, OPT_LITE };

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Process id of the server to trace", 0 },
	{ "duration", 'd', "SECONDS", 0, "Stop after this many seconds (default: until Ctrl-C)", 0 },
	{ "interval", 'i', "SECONDS", 0, "Print a summary line every SECONDS", 0 },
	{ "json", 'j', "FILE", 0, "Write the report as JSON to FILE", 0 },
	{ "binary", 'b', "BINARY", 0, "Server binary with the symbols (default: /proc/PID/exe)", 0 },
	{ "folded", 'f', "FILE", 0, "Write off-CPU stacks with their wakers, folded, to FILE", 0 },
	{ "top", 't', "N", 0, "Print the N longest off-CPU stacks (default 5)", 0 },
	{ "timeline", 'T', "FILE", 0, "Write every flush, sync, io_uring and block request as a Chrome trace-event "
	  "timeline to FILE", 0 },
	{ "verbose", 'v', NULL, 0, "Print libbpf debug messages", 0 },
	{ "any", 'a', NULL, 0, "Trace a process without flushAppendOnlyFile too (no flush figures)", 0 },
	{ "lite", OPT_LITE, NULL, 0, "Low overhead, to leave attached: flush and fdatasync latency, counts, io_uring "
	  "requests and the durability checks, without splitting them into components", 0 },
	{ "check", OPT_CHECK, NULL, 0, "Report what this kernel offers and exit", 0 },
	{ "btf", OPT_BTF, "FILE", 0, "Kernel BTF to use (default: /sys/kernel/btf/vmlinux)", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show the full help", 0 },
	{},
};

void die(const char *fmt, ...)
{
	va_list ap;

	fputs("aoftrace: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static double parse_seconds(const char *arg, const char *what, struct argp_state *state)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v > 0) || v > 86400 * 365)
		argp_error(state, "invalid %s: '%s' (a positive number of seconds)", what, arg);
	return v;
}

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	char *end;
	long v;

	switch (key) {
	case 'p':
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno || end == arg || *end || v <= 0 || v > INT_MAX)
			argp_error(state, "invalid pid: '%s'", arg);
		env.pid = v;
		break;
	case 'd':
		env.duration = parse_seconds(arg, "duration", state);
		break;
	case 'i':
		env.interval = parse_seconds(arg, "interval", state);
		break;
	case 'j':
		env.json_path = arg;
		break;
	case 'b':
		env.binary = arg;
		break;
	case 'f':
		env.folded_path = arg;
		break;
	case 'T':
		env.timeline_path = arg;
		break;
	case 't':
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno || end == arg || *end || v < 0 || v > 1000)
			argp_error(state, "invalid top: '%s' (0 to 1000)", arg);
		env.top = v;
		env.top_set = true;
		break;
	case 'v':
		env.verbose = true;
		break;
	case 'a':
		env.any = true;
		break;
	case OPT_LITE:
		env.lite = true;
		break;
	case OPT_CHECK:
		env.check = true;
		break;
	case OPT_BTF:
		env.btf_path = arg;
		break;
	case 'h':
		argp_state_help(state, stderr, ARGP_HELP_STD_HELP);
		break;
	case ARGP_KEY_ARG:
		argp_error(state, "unexpected argument: '%s'", arg);
		break;
	case ARGP_KEY_END:
		if (!env.check && !env.pid)
			argp_error(state, "a pid is required (-p PID)");
		if (env.lite && (env.folded_path || env.timeline_path || env.top_set))
			argp_error(state, "--lite keeps no off-CPU stacks or timeline: %s needs the full mode",
				   env.folded_path ? "-f" : env.timeline_path ? "-T" : "-t");
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static const struct argp argp = {
	.options = opts,
	.parser = parse_arg,
	.doc = argp_program_doc,
};


void cli_parse(int argc, char **argv)
{
	argp_err_exit_status = 2;
	argv[0] = (char *)"aoftrace";	/* getopt's messages name argv[0]: keep them "aoftrace: ..." */
	if (argp_parse(&argp, argc, argv, 0, NULL, NULL))
		exit(2);
}

const char *btf_file(void)
{
	return env.btf_path ? env.btf_path : "/sys/kernel/btf/vmlinux";
}

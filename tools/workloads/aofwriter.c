// SPDX-License-Identifier: BSD-3-Clause
/*
 * aofwriter: a small single-threaded RESP server whose AOF path behaves like Valkey's, so that
 * redis-benchmark can drive it and aoftrace can trace it. This file holds the command line and
 * main(); aofwriter.h lists what the other aofwriter_*.c files hold.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "aofwriter.h"

struct server server;

const char *io_name(enum io_mode m)
{
	static const char *names[] = { "write", "uring", "uring-linked", "uring-sqpoll" };

	return names[m];
}

const char *fsync_name(enum fsync_policy f)
{
	static const char *names[] = { "always", "everysec", "no" };

	return names[f];
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

/* SPDX-License-Identifier: MIT */
/*
 * uringwriter: write ONE file from N threads, each with its own io_uring
 * ring (or plain pwrite(2) with --sync), to see how io-wq handles concurrent
 * writes to a single file. This is the "multi-threaded pattern" from the
 * liburing write-benchmark discussion: one ring per thread, optionally all
 * attached to ring 1's io-wq, buffered or O_DIRECT.
 *
 * Thread t, write i lands at ((t * count) + i) * size: regions are disjoint,
 * so the final size is threads * count * size. Every block starts with a
 * 16-byte header (offset, t, i as little-endian u64/u32/u32) followed by the
 * byte (t * 31 + i) & 0xff, so a reader can check any block in isolation.
 *
 * Exit status: 0 ok, 1 I/O or system error, 2 bad usage (nothing touched).
 */
#define _GNU_SOURCE	/* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#define ALIGN		4096
#define MAX_THREADS	64
#define MAX_DEPTH	256
#define MAX_SIZE	(64ULL << 20)
#define MAX_BUFMEM	(1ULL << 30)
#define FSYNC_TAG	UINT64_MAX

struct opts {
	const char *file;
	unsigned threads, depth;
	unsigned long long size, count, fsync_every;
	int attach_wq, direct, sync, force_async;
	int depth_set;
};

struct slot {
	unsigned char *buf;
	unsigned long long index;	/* write number within the thread */
	size_t done;			/* bytes already written (short writes) */
};

struct writer {
	pthread_t tid;
	unsigned id;
	struct io_uring ring;
	struct slot *slots;
	unsigned long long fsyncs;
	double start, end;
};

static struct opts o = {
	.threads = 4, .depth = 1, .size = 4096, .count = 1000,
};
static int fd = -1;
static pthread_barrier_t start_barrier;

static void usage(FILE *f)
{
	fprintf(f,
"usage: uringwriter --file PATH [options]\n"
"Write one file from N threads, each with its own io_uring ring.\n"
"\n"
"  --file PATH        file to write (created or truncated; must be a regular\n"
"                     file if it exists)                         (required)\n"
"  --threads N        writer threads, 1..%d                     (default 4)\n"
"  --size BYTES       bytes per write, suffix k or m (x1024);\n"
"                     a multiple of 4096 with --direct, max 64m  (default 4096)\n"
"  --count N          writes per thread                         (default 1000)\n"
"  --depth N          writes in flight per thread/ring, 1..%d  (default 1)\n"
"  --attach-wq        create rings 2..N with IORING_SETUP_ATTACH_WQ on ring 1\n"
"  --direct           open with O_DIRECT, 4096-aligned buffers\n"
"  --sync             no io_uring: pwrite(2) from each thread (comparison)\n"
"  --force-async      set IOSQE_ASYNC on every SQE (always punt to io-wq)\n"
"  --fsync-every N    fsync after every N writes of a thread (IORING_OP_FSYNC,\n"
"                     or fsync(2) with --sync); 0 = never        (default 0)\n"
"  -h, --help         this text\n"
"\n"
"Thread t, write i goes to offset ((t * count) + i) * size. Each block holds\n"
"offset (u64 LE), t (u32 LE), i (u32 LE), then the byte (t * 31 + i) & 0xff.\n"
"--attach-wq, --force-async and --depth need io_uring (not --sync).\n"
"\n"
"Prints one line: mode= threads= direct= attach_wq= writes= bytes= seconds=\n"
"MBps= iops= size= depth= force_async= fsyncs=   (MB = 10^6 bytes)\n"
"Exit status: 0 ok, 1 I/O or system error, 2 bad usage.\n",
		MAX_THREADS, MAX_DEPTH);
}

static void __attribute__((noreturn, format(printf, 2, 3)))
die(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("uringwriter: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(status);
}

/* Strict unsigned parse: digits only (no sign, no blanks), optional k/m. */
static unsigned long long parse_num(const char *name, const char *s,
				    int suffix, unsigned long long min,
				    unsigned long long max)
{
	unsigned long long v, mul = 1;
	char *end;

	if (*s < '0' || *s > '9')
		die(2, "--%s: '%s' is not a number", name, s);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (suffix && (*end == 'k' || *end == 'K'))
		mul = 1024, end++;
	else if (suffix && (*end == 'm' || *end == 'M'))
		mul = 1024 * 1024, end++;
	if (*end)
		die(2, "--%s: '%s' is not a number", name, s);
	if (errno == ERANGE || v > max / mul || v * mul < min || v * mul > max)
		die(2, "--%s: %s is out of range %llu..%llu", name, s, min, max);
	return v * mul;
}

static void parse_args(int argc, char **argv)
{
	enum { OPT_FILE = 256, OPT_THREADS, OPT_SIZE, OPT_COUNT, OPT_DEPTH,
	       OPT_ATTACH, OPT_DIRECT, OPT_SYNC, OPT_ASYNC, OPT_FSYNC };
	static const struct option lopts[] = {
		{ "file",	 required_argument, NULL, OPT_FILE },
		{ "threads",	 required_argument, NULL, OPT_THREADS },
		{ "size",	 required_argument, NULL, OPT_SIZE },
		{ "count",	 required_argument, NULL, OPT_COUNT },
		{ "depth",	 required_argument, NULL, OPT_DEPTH },
		{ "attach-wq",	 no_argument,	    NULL, OPT_ATTACH },
		{ "direct",	 no_argument,	    NULL, OPT_DIRECT },
		{ "sync",	 no_argument,	    NULL, OPT_SYNC },
		{ "force-async", no_argument,	    NULL, OPT_ASYNC },
		{ "fsync-every", required_argument, NULL, OPT_FSYNC },
		{ "help",	 no_argument,	    NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	int c, li;

	/* our own one-line messages, not getopt's "argv[0]: ..." */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lopts, &li)) != -1) {
		switch (c) {
		case OPT_FILE:
			if (!*optarg)
				die(2, "--file: empty path");
			o.file = optarg;
			break;
		case OPT_THREADS:
			o.threads = parse_num("threads", optarg, 0, 1, MAX_THREADS);
			break;
		case OPT_SIZE:
			o.size = parse_num("size", optarg, 1, 1, MAX_SIZE);
			break;
		case OPT_COUNT:
			o.count = parse_num("count", optarg, 0, 1, UINT32_MAX);
			break;
		case OPT_DEPTH:
			o.depth = parse_num("depth", optarg, 0, 1, MAX_DEPTH);
			o.depth_set = 1;
			break;
		case OPT_ATTACH:	o.attach_wq = 1; break;
		case OPT_DIRECT:	o.direct = 1; break;
		case OPT_SYNC:	o.sync = 1; break;
		case OPT_ASYNC:	o.force_async = 1; break;
		case OPT_FSYNC:
			o.fsync_every = parse_num("fsync-every", optarg, 0, 0,
						  UINT32_MAX);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			if (optopt >= OPT_FILE)
				die(2, "option '--%s' needs an argument",
				    lopts[optopt - OPT_FILE].name);
			die(2, "option '%s' needs an argument", argv[optind - 1]);
		default: {
			const char *a = argv[optind - 1];

			/* a short option may sit inside a cluster like -xh */
			if (optopt > 0 && optopt < OPT_FILE && strncmp(a, "--", 2))
				die(2, "unknown option '-%c' (try --help)", optopt);
			die(2, "unknown, ambiguous or malformed option '%s' (try --help)", a);
		}
		}
	}
	if (optind < argc)
		die(2, "unexpected argument '%s' (try --help)", argv[optind]);
	if (!o.file)
		die(2, "--file PATH is required (try --help)");
	if (o.direct && o.size % ALIGN)
		die(2, "--size %llu: --direct needs a multiple of %d", o.size, ALIGN);
	if (o.sync && (o.attach_wq || o.force_async || o.depth_set))
		die(2, "--sync does not use io_uring: no --attach-wq, --force-async or --depth");
	/* offsets must fit in off_t; buffers must fit in memory */
	if (o.count * o.size > (unsigned long long)INT64_MAX / o.threads)
		die(2, "threads * count * size overflows a file offset");
	if ((unsigned long long)o.threads * o.depth * o.size > MAX_BUFMEM)
		die(2, "threads * depth * size is more than 1 GiB of buffers");
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
	for (int k = 0; k < n; k++)
		p[k] = v >> (8 * k);
}

static unsigned long long offset_of(unsigned t, unsigned long long i)
{
	return ((unsigned long long)t * o.count + i) * o.size;
}

static void fill(unsigned char *buf, unsigned t, unsigned long long i)
{
	unsigned char hdr[16];
	size_t n = o.size < sizeof(hdr) ? o.size : sizeof(hdr);

	put_le(hdr, offset_of(t, i), 8);
	put_le(hdr + 8, t, 4);
	put_le(hdr + 12, i, 4);
	memcpy(buf, hdr, n);
	memset(buf + n, (t * 31 + i) & 0xff, o.size - n);
}

static struct io_uring_sqe *get_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	/* inflight <= depth == SQ entries, and we submit before refilling */
	if (!sqe)
		die(1, "internal error: SQ ring full");
	if (o.force_async)
		io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
	return sqe;
}

static void queue_write(struct writer *w, unsigned s)
{
	struct slot *sl = &w->slots[s];
	struct io_uring_sqe *sqe = get_sqe(&w->ring);

	io_uring_prep_write(sqe, fd, sl->buf + sl->done, o.size - sl->done,
			    offset_of(w->id, sl->index) + sl->done);
	io_uring_sqe_set_data64(sqe, s);
}

static void submit_wait(struct io_uring *ring)
{
	int ret;

	do
		ret = io_uring_submit_and_wait(ring, 1);
	while (ret == -EINTR);
	if (ret < 0)
		die(1, "io_uring_submit_and_wait: %s", strerror(-ret));
}

/* fsync only once every write before it has completed: no IOSQE_IO_DRAIN */
static void uring_fsync(struct writer *w)
{
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	int res;

	for (;;) {
		sqe = get_sqe(&w->ring);
		io_uring_prep_fsync(sqe, fd, 0);
		io_uring_sqe_set_data64(sqe, FSYNC_TAG);
		submit_wait(&w->ring);
		if (io_uring_peek_cqe(&w->ring, &cqe))
			die(1, "internal error: no CQE after wait");
		res = cqe->res;
		io_uring_cqe_seen(&w->ring, cqe);
		if (res != -EINTR && res != -EAGAIN)
			break;
	}
	if (res < 0)
		die(1, "fsync failed: %s", strerror(-res));
	w->fsyncs++;
}

static void uring_loop(struct writer *w)
{
	unsigned long long next = 0, done = 0, since_sync = 0;
	unsigned inflight = 0, nfree = o.depth, s;
	unsigned freelist[MAX_DEPTH];
	struct io_uring_cqe *cqe;
	unsigned head, seen;

	for (s = 0; s < o.depth; s++)
		freelist[s] = o.depth - 1 - s;

	for (;;) {
		if (o.fsync_every && since_sync == o.fsync_every && !inflight) {
			uring_fsync(w);
			since_sync = 0;
		}
		if (done == o.count)
			break;

		while (nfree && next < o.count &&
		       !(o.fsync_every && since_sync == o.fsync_every)) {
			s = freelist[--nfree];
			w->slots[s].index = next++;
			w->slots[s].done = 0;
			fill(w->slots[s].buf, w->id, w->slots[s].index);
			queue_write(w, s);
			inflight++;
			since_sync++;
		}

		submit_wait(&w->ring);

		seen = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			struct slot *sl;
			int res = cqe->res;

			seen++;
			s = cqe->user_data;
			sl = &w->slots[s];
			if (res == -EINTR || res == -EAGAIN) {
				queue_write(w, s);
				continue;
			}
			if (res < 0)
				die(1, "write failed: %s", strerror(-res));
			if (res == 0)
				die(1, "write failed: no progress at offset %llu",
				    offset_of(w->id, sl->index) + sl->done);
			sl->done += res;
			if (sl->done < o.size) {
				/* short write: the rest, at the right offset */
				queue_write(w, s);
				continue;
			}
			freelist[nfree++] = s;
			inflight--;
			done++;
		}
		io_uring_cq_advance(&w->ring, seen);
	}
}

static void sync_loop(struct writer *w)
{
	unsigned char *buf = w->slots[0].buf;

	for (unsigned long long i = 0; i < o.count; i++) {
		unsigned long long off = offset_of(w->id, i);
		size_t done = 0;

		fill(buf, w->id, i);
		while (done < o.size) {
			ssize_t n = pwrite(fd, buf + done, o.size - done, off + done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				die(1, "write failed: %s", strerror(errno));
			if (n == 0)
				die(1, "write failed: no progress at offset %llu",
				    off + done);
			done += n;
		}
		if (o.fsync_every && (i + 1) % o.fsync_every == 0) {
			if (fsync(fd))
				die(1, "fsync failed: %s", strerror(errno));
			w->fsyncs++;
		}
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void *writer_thread(void *arg)
{
	struct writer *w = arg;

	pthread_barrier_wait(&start_barrier);
	w->start = now();
	if (o.sync)
		sync_loop(w);
	else
		uring_loop(w);
	w->end = now();
	return NULL;
}

int main(int argc, char **argv)
{
	struct writer *w;
	unsigned long long total, writes, fsyncs = 0;
	unsigned nbuf;
	struct stat st;
	double first = 0, last = 0, secs;
	int existed, ret, flags;

	parse_args(argc, argv);

	/* refuse before anything is created: a FIFO would even block open() */
	existed = stat(o.file, &st) == 0;
	if (existed && !S_ISREG(st.st_mode))
		die(2, "%s: exists and is not a regular file", o.file);

	w = calloc(o.threads, sizeof(*w));
	if (!w)
		die(1, "out of memory");

	/* rings and buffers first, so a setup failure leaves no file behind */
	nbuf = o.sync ? 1 : o.depth;
	for (unsigned t = 0; t < o.threads; t++) {
		w[t].id = t;
		w[t].slots = calloc(nbuf, sizeof(*w[t].slots));
		if (!w[t].slots)
			die(1, "out of memory");
		for (unsigned s = 0; s < nbuf; s++) {
			void *p;

			if (posix_memalign(&p, ALIGN, o.size))
				die(1, "out of memory for buffers");
			/* fault the pages in now, not inside the timed run */
			memset(p, 0, o.size);
			w[t].slots[s].buf = p;
		}
		if (o.sync)
			continue;

		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		if (o.attach_wq && t > 0) {
			p.flags = IORING_SETUP_ATTACH_WQ;
			p.wq_fd = w[0].ring.ring_fd;
		}
		ret = io_uring_queue_init_params(o.depth, &w[t].ring, &p);
		if (ret < 0)
			die(1, "io_uring_queue_init (ring %u): %s", t + 1,
			    strerror(-ret));
	}

	flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
	if (o.direct)
		flags |= O_DIRECT;
	fd = open(o.file, flags, 0644);
	if (fd < 0) {
		int err = errno;

		/* O_DIRECT is refused after the create: undo our own create */
		if (err == EINVAL && o.direct && !existed)
			unlink(o.file);
		die(1, "open %s: %s", o.file, strerror(err));
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode))
		die(1, "%s: not a regular file", o.file);

	ret = pthread_barrier_init(&start_barrier, NULL, o.threads + 1);
	if (ret)
		die(1, "pthread_barrier_init: %s", strerror(ret));
	for (unsigned t = 0; t < o.threads; t++) {
		ret = pthread_create(&w[t].tid, NULL, writer_thread, &w[t]);
		if (ret)
			die(1, "pthread_create: %s", strerror(ret));
	}
	pthread_barrier_wait(&start_barrier);
	for (unsigned t = 0; t < o.threads; t++) {
		pthread_join(w[t].tid, NULL);
		fsyncs += w[t].fsyncs;
	}
	/*
	 * Each thread clocks itself: main may be descheduled right after the
	 * barrier (more threads than CPUs) and would miss the start.
	 */
	for (unsigned t = 0; t < o.threads; t++) {
		if (!t || w[t].start < first)
			first = w[t].start;
		if (!t || w[t].end > last)
			last = w[t].end;
	}
	secs = last - first;

	writes = o.threads * o.count;
	total = writes * o.size;
	if (fstat(fd, &st))
		die(1, "fstat %s: %s", o.file, strerror(errno));
	if ((unsigned long long)st.st_size != total)
		die(1, "%s: size is %lld, expected %llu", o.file,
		    (long long)st.st_size, total);

	if (secs <= 0)
		secs = 1e-9;
	printf("mode=%s threads=%u direct=%d attach_wq=%d writes=%llu bytes=%llu "
	       "seconds=%.3f MBps=%.1f iops=%.0f size=%llu depth=%u "
	       "force_async=%d fsyncs=%llu\n",
	       o.sync ? "sync" : "uring", o.threads, o.direct, o.attach_wq,
	       writes, total, secs, total / secs / 1e6, writes / secs, o.size,
	       o.sync ? 0 : o.depth, o.force_async, fsyncs);

	for (unsigned t = 0; t < o.threads; t++) {
		if (!o.sync)
			io_uring_queue_exit(&w[t].ring);
		for (unsigned s = 0; s < nbuf; s++)
			free(w[t].slots[s].buf);
		free(w[t].slots);
	}
	free(w);
	if (close(fd))
		die(1, "close %s: %s", o.file, strerror(errno));
	return 0;
}

/* SPDX-License-Identifier: BSD-3-Clause */
/* aofwriter: a small RESP server whose AOF path behaves like Valkey's (see docs/aofwriter.md). */
#ifndef AOFWRITER_H
#define AOFWRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <liburing.h>
#include <pthread.h>

/* Request limits (documented in --help and docs/aofwriter.md). A request over a limit gets
 * "-ERR Protocol error: ..." and the connection is closed, as Redis does. */
#define MAX_BULK_LEN	(64LL << 20)	/* one argument: 64 MiB (Redis: proto-max-bulk-len 512mb) */
#define MAX_MULTIBULK	(1024 * 1024)	/* arguments in one command: 1M */
#define MAX_QUERYBUF	(256LL << 20)	/* unparsed input of one client: 256 MiB (Redis: 1gb) */
#define MAX_INLINE	(64 << 10)	/* one inline (telnet style) command line: 64 KiB */
#define MAX_REPLYBUF	(512LL << 20)	/* unsent replies of one client before it is dropped */
#define IOBUF_LEN	(16 * 1024)	/* bytes read per client per loop iteration (PROTO_IOBUF_LEN) */
#define REWRITE_FSYNC_BYTES (4 << 20)	/* aof-rewrite-incremental-fsync: sync_file_range every 4 MB */

enum io_mode { IO_WRITE, IO_URING, IO_URING_LINKED, IO_URING_SQPOLL };
enum fsync_policy { AOF_FSYNC_ALWAYS, AOF_FSYNC_EVERYSEC, AOF_FSYNC_NO };

/* Test-only faults (--test-fault, refused without --enable-test-faults): they lose acknowledged
 * writes on purpose so that aoftrace's durability checks can be tested. See docs/aofwriter.md. */
enum test_fault {
	FAULT_OVERWRITE		= 1 << 0,	/* every Nth flush: write below the end of file */
	FAULT_REPLY_BEFORE_SYNC	= 1 << 1,	/* every Nth flush: send replies before the fsync */
	FAULT_SKIP_FSYNC	= 1 << 2,	/* every Nth flush: no fsync at all */
	FAULT_STALE_FILE	= 1 << 3,	/* keep writing to the incr file a rewrite deletes */
};
#define NR_TEST_FAULTS 4
#define FAULTS_EVERY_NTH (FAULT_OVERWRITE | FAULT_REPLY_BEFORE_SYNC | FAULT_SKIP_FSYNC)
#define TEST_FAULT_EVERY_DEFAULT 20

#define C_OK	0
#define C_ERR	(-1)

#define AOFWRITER_VERSION "1.0"

/* What aofwriter's files share that uprobes do not look up (static before the files were split):
 * hidden keeps it out of the dynamic symbol table that -rdynamic fills, so nm -D lists what it did. */
#define HIDDEN __attribute__((visibility("hidden")))

struct buf {
	char *p;
	size_t len, cap;
};

void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(struct buf *b);

struct arg {
	const char *p;
	size_t len;
};

struct entry {
	struct entry *next;
	uint64_t hash;
	char *key;
	size_t klen;
	char *val;
	size_t vlen;
};

struct dict {
	struct entry **tab;
	size_t size, used;
};

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

struct aof_info {
	char *name;
	long long seq;
	char type;	/* 'b' base, 'h' history, 'i' incr */
};

struct manifest {
	struct aof_info base;		/* base.name == NULL: no base file */
	struct aof_info *incr;
	int nincr;
	long long cur_base_seq, cur_incr_seq;
};

struct bio_job {
	struct bio_job *next;
	int fd;
	bool fsync, close_fd;
	off_t offset;
};

struct server {
	/* options */
	int port;
	char bind[64];
	const char *dir;
	const char *aof_dirname;
	const char *aof_filename;
	enum fsync_policy fsync;
	enum io_mode io;
	unsigned ring_depth;
	unsigned uring_chunk;
	unsigned uring_inflight;
	bool uring_unlinked;
	bool uring_async;	/* --uring-async: IOSQE_ASYNC on every write SQE */
	unsigned sqpoll_idle_ms;
	bool auto_rewrite;		/* start a rewrite as soon as the previous one finished ... */
	long long auto_rewrite_bytes;	/* ... or when the incr files grew by this much (0: continuous) */
	bool verbose;
	unsigned test_faults;		/* enum test_fault bits; 0 unless --enable-test-faults */
	unsigned test_fault_every;	/* the every-Nth-flush faults hit flush N, 2N, ... */

	/* dataset (one database, db 0) */
	struct dict db;

	/* AOF state, names follow Valkey's struct redisServer */
	struct manifest manifest;
	int aof_fd;
	off_t aof_offset;		/* tracked end of the current incr file: where the next write goes */
	struct buf aof_buf;
	int aof_selected_db;
	long long aof_current_size;	/* base + incr files */
	long long aof_base_size;
	long long aof_last_incr_size_at_rewrite;
	long long aof_fsync_offset;	/* aof_offset known to be fdatasync()ed (always) */
	int aof_last_write_status;
	int aof_last_write_errno;
	int aof_last_bgrewrite_status;
	long long aof_rewrites;
	long long aof_last_rewrite_ms;
	long long rewrite_start_ms;
	pid_t child_pid;
	bool loading;
	long long last_fsync_ms;

	/* io_uring */
	struct io_uring ring;
	bool ring_ready;

	/* bio_aof thread (everysec fsync, close of old incr files) */
	pthread_t bio_thread;
	pthread_mutex_t bio_lock;
	pthread_cond_t bio_cond;
	struct bio_job *bio_head, *bio_tail;
	bool bio_stop, bio_started;
	int bio_pending;		/* atomic */
	int bio_fsync_status;		/* atomic: 0 ok, else errno */
	long long bio_fsync_offset;	/* atomic */

	/* stats, also shown in INFO */
	unsigned long long stat_flushes, stat_flush_ns, stat_flush_max_ns;
	unsigned long long stat_fsyncs, stat_fsync_ns;
	unsigned long long stat_write_calls, stat_short_writes, stat_retries;
	unsigned long long stat_bytes;
	unsigned long long stat_commands, stat_conns;

	/* test faults */
	unsigned long long fault_flushes;	/* event-loop flushes that wrote, counted for "every N" */
	unsigned long long stat_test_faults;	/* faults injected (INFO aof_test_faults_injected) */
	bool aof_fd_unlinked;			/* stale-file: aof_fd's file was deleted by a rewrite */
};

extern struct server server;

/* aofwriter.c: the command line, main() */
HIDDEN const char *io_name(enum io_mode m);
HIDDEN const char *fsync_name(enum fsync_policy f);

/* aofwriter_util.c: clocks, log, buffers (buf_* above), integer parsing */
long long mstime(void);
long long nstime(void);
void serverLog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
HIDDEN void *xrealloc(void *p, size_t n);
HIDDEN bool str2ll(const char *s, size_t len, long long *out);

/* aofwriter_db.c: the dataset */
HIDDEN struct entry *dict_find(const char *k, size_t klen);
HIDDEN void dict_set(const char *k, size_t klen, const char *v, size_t vlen);
HIDDEN bool dict_del(const char *k, size_t klen);
HIDDEN void dict_empty(void);
void dict_iter(void (*fn)(struct entry *e, void *ctx), void *ctx);

/* aofwriter_networking.c: the listener, the event loop, clients, the RESP parser, sending replies */
extern HIDDEN int signal_fd;		/* SIGTERM, SIGINT, SIGCHLD, read by the event loop */
extern HIDDEN bool shutdown_asap;
extern HIDDEN int nclients;
HIDDEN int setup_listener(void);
HIDDEN int eventLoop(void);
void handleClientsWithPendingWrites(void);
void aof_close_listeners_in_child(void);	/* the rewrite child drops the server's fds */

/* aofwriter_commands.c: replies and commands */
HIDDEN void addReplyError(struct client *c, const char *s);
HIDDEN void processCommand(struct client *c, int argc, struct arg *argv);
int exec_loaded_command(int argc, struct arg *argv, char *err, size_t errlen);

/* Valkey's AOF functions that uprobes look up by name: exported (-rdynamic) and never inlined. */
#define EXPORT __attribute__((noinline, used))

/* aofwriter_aof.c: the AOF write path, names as in Valkey's aof.c; init, cron, shutdown, INFO */
int aof_init(void);
void aof_shutdown(void);
void aof_cron(void);
void aof_info(struct buf *b);
void feedAppendOnlyFile(int argc, struct arg *argv);
void flushAppendOnlyFile(int force);
ssize_t aofWrite(int fd, const char *buf, size_t len);
HIDDEN int openNewIncrAofForAppend(void);

/* aofwriter_rewrite.c: the rewrite, parent and forked child */
int rewriteAppendOnlyFileBackground(void);
void backgroundRewriteDoneHandler(int exitcode, int bysignal);
pid_t serverFork(int purpose);
void aof_check_child(void);
HIDDEN void unlink_rewrite_temp(pid_t pid);
extern HIDDEN long long last_rewrite_fail_ms;

/* aofwriter_manifest.c: AOF file names, the manifest, the AOF directory */
HIDDEN const char *aof_path(const char *name);
HIDDEN char *aof_name(const char *type, long long seq);
HIDDEN const char *manifest_name(void);
HIDDEN long long file_size(const char *path);
HIDDEN void manifest_free(struct manifest *m);
HIDDEN void manifest_add_incr(struct manifest *m, char *name, long long seq);
HIDDEN void manifest_dup(struct manifest *dst, const struct manifest *src);
HIDDEN int persistAofManifest(const struct manifest *m);
HIDDEN int aofLoadManifestFromFile(struct manifest *m, char *err, size_t errlen);
HIDDEN void remove_temp_files(void);
HIDDEN bool dir_has_aof_files(void);

/* aofwriter_load.c: loading the AOF at startup */
HIDDEN int loadAppendOnlyFiles(struct manifest *m);

/* aofwriter_bio.c: the bio_aof thread */
HIDDEN void bio_submit(int fd, bool fsync, bool close_fd, off_t offset);
HIDDEN int bio_start(void);
HIDDEN void bio_stop(void);

static inline int bio_pending(void)
{
	return __atomic_load_n(&server.bio_pending, __ATOMIC_ACQUIRE);
}

/* aofwriter_uring.c: the io_uring write method */
HIDDEN int uring_init(void);
HIDDEN ssize_t uring_write(int fd, const char *buf, size_t len, off_t off, bool fsync);
extern HIDDEN int linked_fsync_errno;	/* set by uring_write when the linked fsync failed */
extern HIDDEN bool linked_fsync_done;

static inline bool uring_mode(void)
{
	return server.io != IO_WRITE;
}

static inline bool linked_fsync(void)
{
	return (server.io == IO_URING_LINKED || server.io == IO_URING_SQPOLL) && server.fsync == AOF_FSYNC_ALWAYS;
}

/* aofwriter_faults.c: the test faults */
extern const char *const test_fault_names[NR_TEST_FAULTS];
void test_faults_str(struct buf *b, unsigned faults);
HIDDEN ssize_t fault_pwrite(int fd, const char *buf, size_t len, off_t off);

#endif /* AOFWRITER_H */

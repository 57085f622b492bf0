// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "timeline.h"
#include "uring_stats.h"

#define MAX_NAMED 4096
#define BLOCK_TID 0x7fff0000	/* a track of its own for the device */

static FILE *tf;
static int target_pid;
static bool first = true;
static uint64_t t0;
static const char *const *comps;
static uint32_t named[MAX_NAMED];
static int nnamed;

static const char *issuer_names[ISS_MAX] = { "server", "child", "jbd2", "kworker", "other" };
static const char *rqkind_names[RQ_MAX] = { "write", "write FUA", "flush", "read", "other" };

static double ts_us(uint64_t ns)
{
	if (ns < t0)
		return 0;	/* began before the trace did */
	return (ns - t0) / 1000.0;
}

static void sep(void)
{
	fputs(first ? "\n" : ",\n", tf);
	first = false;
}

/* thread_name metadata the first time a thread shows up, from /proc while it still exists. */
static void name_thread(int pid, uint32_t tid, const char *fallback)
{
	char path[64], comm[32] = "";
	FILE *f;

	for (int i = 0; i < nnamed; i++)
		if (named[i] == tid)
			return;
	if (nnamed < MAX_NAMED)
		named[nnamed++] = tid;
	snprintf(path, sizeof(path), "/proc/%d/task/%u/comm", pid, tid);
	f = fopen(path, "r");
	if (f) {
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = 0;
		fclose(f);
	}
	if (!comm[0])
		snprintf(comm, sizeof(comm), "%s", fallback);
	for (char *c = comm; *c; c++)
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
			*c = '_';
	sep();
	fprintf(tf, "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,\"args\":{\"name\":\"%s\"}}",
		pid, tid, comm);
}

static void comp_args(const __u64 *comp)
{
	for (int c = 0; c < COMP_MAX; c++)
		if (comp[c])
			fprintf(tf, ",\"%s_us\":%.3f", comps[c], comp[c] / 1000.0);
}

int timeline_open(const char *path, int pid, const char *const comp_names[COMP_MAX], uint64_t start_ns)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);

	if (fd < 0 || !(tf = fdopen(fd, "w")))
		return -errno;
	target_pid = pid;
	comps = comp_names;
	t0 = start_ns;
	fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[", tf);
	sep();
	fprintf(tf, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"AOF server %d\"}}",
		pid, pid, pid);
	sep();
	fprintf(tf, "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"AOF device\"}}",
		pid, BLOCK_TID);
	return 0;
}

void timeline_event(const void *data, size_t len)
{
	const struct aof_flush_event *f = data;
	const struct aof_sync_event *s = data;
	const struct aof_proc_event *p = data;
	const struct aof_ureq_event *u = data;
	const struct aof_block_event *b = data;

	if (!tf || len < sizeof(__u32))
		return;
	switch (f->type) {
	case EV_FLUSH:
		name_thread(target_pid, f->tid, "main");
		sep();
		fprintf(tf, "{\"ph\":\"X\",\"name\":\"flushAppendOnlyFile\",\"cat\":\"flush\",\"pid\":%d,\"tid\":%u,"
			"\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"bytes\":%llu,\"writes\":%u,\"syncs\":%u,\"children\":%u,"
			"\"offset\":%llu,\"i_size_before\":%llu,\"i_size_after\":%llu",
			target_pid, f->tid, ts_us(f->start_ns), f->dur_ns / 1000.0,
			(unsigned long long)(f->write_bytes + f->uring_bytes), f->writes, f->syncs, f->children,
			(unsigned long long)f->first_off, (unsigned long long)f->isize_before,
			(unsigned long long)f->isize_after);
		comp_args(f->comp);
		fputs("}}", tf);
		break;
	case EV_SYNC:
		name_thread(s->pid, s->tid, s->comm);
		sep();
		fprintf(tf, "{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"sync\",\"pid\":%u,\"tid\":%u,\"ts\":%.3f,"
			"\"dur\":%.3f,\"args\":{\"ret\":%lld,\"fd\":%d,\"in_flush\":%u,\"forced_commit\":%u",
			s->kind == SYNC_FSYNC ? "fsync" : "fdatasync", s->pid, s->tid, ts_us(s->start_ns),
			s->dur_ns / 1000.0, (long long)s->ret, s->fd, s->in_flush, s->commit);
		comp_args(s->comp);
		fputs("}}", tf);
		break;
	case EV_UREQ:
		if (len < sizeof(*u))
			break;
		name_thread(target_pid, u->submitter, "submitter");
		/* submit -> complete on the submitter's track, as an async slice per request */
		sep();
		fprintf(tf, "{\"ph\":\"b\",\"name\":\"io_uring %s\",\"cat\":\"io_uring\",\"id\":\"%llx\","
			"\"pid\":%d,\"tid\":%u,\"ts\":%.3f,\"args\":{\"res\":%d,\"punted\":%d,\"hashed\":%d,\"aof\":%d}}",
			uring_op_name(u->opcode), (unsigned long long)u->submit_ns, target_pid, u->submitter,
			ts_us(u->submit_ns),
			u->res, !!(u->flags & (UF_PUNTED | UF_WORKER)), !!(u->flags & UF_HASHED),
			!!(u->flags & UF_AOF));
		sep();
		fprintf(tf, "{\"ph\":\"e\",\"name\":\"io_uring %s\",\"cat\":\"io_uring\",\"id\":\"%llx\","
			"\"pid\":%d,\"tid\":%u,\"ts\":%.3f}", uring_op_name(u->opcode), (unsigned long long)u->submit_ns,
			target_pid, u->submitter, ts_us(u->complete_ns));
		if (u->worker) {
			name_thread(target_pid, u->worker, "iou-wrk");
			if (u->punt_ns && u->start_ns > u->punt_ns) {
				sep();
				fprintf(tf, "{\"ph\":\"X\",\"name\":\"io-wq queue\",\"cat\":\"io_uring\",\"pid\":%d,"
					"\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f}", target_pid, u->worker,
					ts_us(u->punt_ns), (u->start_ns - u->punt_ns) / 1000.0);
			}
			sep();
			fprintf(tf, "{\"ph\":\"X\",\"name\":\"io-wq %s\",\"cat\":\"io_uring\",\"pid\":%d,"
				"\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"res\":%d", uring_op_name(u->opcode), target_pid,
				u->worker, ts_us(u->start_ns), (u->complete_ns - u->start_ns) / 1000.0, u->res);
			comp_args(u->comp);
			fputs("}}", tf);
		}
		break;
	case EV_BLOCK:
		if (len < sizeof(*b))
			break;
		sep();
		fprintf(tf, "{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"block\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,"
			"\"dur\":%.3f,\"args\":{\"issuer\":\"%s\",\"issuer_tid\":%u,\"bytes\":%u,\"sector\":%llu}}",
			b->kind < RQ_MAX ? rqkind_names[b->kind] : "?", target_pid, BLOCK_TID, ts_us(b->issue_ns),
			(b->complete_ns - b->issue_ns) / 1000.0, b->issuer < ISS_MAX ? issuer_names[b->issuer] : "?",
			b->issuer_tid, b->bytes, (unsigned long long)b->sector);
		break;
	case EV_FORK:
	case EV_EXIT:
		sep();
		fprintf(tf, "{\"ph\":\"i\",\"s\":\"p\",\"name\":\"%s %u\",\"cat\":\"process\",\"pid\":%d,\"tid\":%d,"
			"\"ts\":%.3f}", f->type == EV_FORK ? "fork" : "exit", p->pid, target_pid, target_pid,
			ts_us(p->ts_ns));
		break;
	}
}

int timeline_close(void)
{
	int err = 0;

	if (!tf)
		return 0;
	fputs("\n]}\n", tf);
	if (ferror(tf))
		err = -EIO;
	if (fclose(tf) && !err)
		err = -errno;
	tf = NULL;
	return err;
}

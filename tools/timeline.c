// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "names.h"
#include "timeline.h"
#include "uring_stats.h"

#define MAX_NAMED 4096
#define BLOCK_TID 0x7fff0000	/* the device's lanes: tids BLOCK_TID + 0, 1, ... */
#define EXTRA_TID 0x7ffe0000	/* the io-wq workers' extra lanes, numbered as they are needed */

/*
 * Lanes: the tracks one kind of slice is spread over so that, on each, slices never overlap. Perfetto stacks
 * the slices of a track by nesting and misdraws two that overlap without one holding the other, which block
 * requests do (queue depth > 1), as do the requests an io-wq worker took up while an earlier one had not yet
 * completed, and the queue waits of requests punted together. Records arrive in completion order, not start
 * order, so a slice goes, as it arrives, on the lane whose last slice ended latest but not after it starts
 * (best fit), or on a new lane: never more lanes than were ever in flight at once when records come in order
 * of their ends. A lane remembers only its end, so memory stays bounded by the depth, not the trace's length.
 */
struct lanes {
	uint64_t *end;		/* per lane: the end of its last slice (ns) */
	uint32_t *tid;		/* per lane: its track */
	int n, cap;
};

static FILE *tf;
static int target_pid;
static bool first = true;
static uint64_t t0;
static uint32_t named[MAX_NAMED];
static char names[MAX_NAMED][32];
static int nnamed;
static struct lanes block_lanes;
static struct worker_lanes {
	uint32_t tid;
	struct lanes l;
} wlanes[MAX_NAMED];
static int nwlanes;
static uint32_t next_extra_tid = EXTRA_TID;


static double ts_us(uint64_t ns)
{
	if (ns < t0)
		return 0;	/* began before the trace did */
	return (ns - t0) / 1000.0;
}

/* A slice as drawn: [start, end) cut at the trace's start, never ending before it starts. */
static void clip(uint64_t *start, uint64_t *end)
{
	if (*start < t0)
		*start = t0;
	if (*end < *start)
		*end = *start;
}

static void sep(void)
{
	fputs(first ? "\n" : ",\n", tf);
	first = false;
}

static void thread_name_event(int pid, uint32_t tid, const char *name)
{
	sep();
	fprintf(tf, "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,\"args\":{\"name\":\"%s\"}}",
		pid, tid, name);
}

/* thread_name metadata the first time a thread shows up, from /proc while it still exists; its name. */
static const char *name_thread(int pid, uint32_t tid, const char *fallback)
{
	char path[64], comm[32] = "";
	FILE *f;

	for (int i = 0; i < nnamed; i++)
		if (named[i] == tid)
			return names[i];
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
	thread_name_event(pid, tid, comm);
	if (nnamed < MAX_NAMED) {
		named[nnamed] = tid;
		snprintf(names[nnamed], sizeof(names[0]), "%s", comm);
		return names[nnamed++];
	}
	return fallback;
}

/*
 * The lane of `l` for a slice [start, end), a new one if none is free: its tid is first_tid for the first
 * lane, then BLOCK_TID + i for the device's lanes (named "AOF device N"), or a fresh extra tid for a
 * worker's (named "iou-wrk-S (worker T, lane N)": a worker's comm names the submitter, not the worker).
 * Returns the lane's tid.
 */
static uint32_t lane_tid(struct lanes *l, uint64_t start, uint64_t end, uint32_t first_tid, bool device,
			 const char *name)
{
	char lname[64];
	int best = -1;

	for (int i = 0; i < l->n; i++)
		if (l->end[i] <= start && (best < 0 || l->end[i] > l->end[best]))
			best = i;
	if (best < 0 && l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 8;
		uint64_t *e = realloc(l->end, cap * sizeof(*e));
		uint32_t *t = e ? realloc(l->tid, cap * sizeof(*t)) : NULL;

		if (e)
			l->end = e;
		if (t) {
			l->tid = t;
			l->cap = cap;
		}
	}
	if (best < 0 && l->n < l->cap) {
		best = l->n++;
		l->end[best] = 0;
		if (device)
			l->tid[best] = BLOCK_TID + best;
		else
			l->tid[best] = best ? next_extra_tid++ : first_tid;
		if (device || best) {
			if (device)
				snprintf(lname, sizeof(lname), "%s %d", name, best + 1);
			else
				snprintf(lname, sizeof(lname), "%s (worker %u, lane %d)", name, first_tid, best + 1);
			thread_name_event(target_pid, l->tid[best], lname);
		}
	}
	if (best < 0) {		/* out of memory: the lane that ends first, overlapping as before */
		best = 0;
		for (int i = 1; i < l->n; i++)
			if (l->end[i] < l->end[best])
				best = i;
		if (!l->n)
			return device ? BLOCK_TID : first_tid;
	}
	if (end > l->end[best])
		l->end[best] = end;
	return l->tid[best];
}

static struct lanes *worker_lanes(uint32_t tid)
{
	for (int i = 0; i < nwlanes; i++)
		if (wlanes[i].tid == tid)
			return &wlanes[i].l;
	if (nwlanes == MAX_NAMED)
		return NULL;
	wlanes[nwlanes].tid = tid;
	return &wlanes[nwlanes++].l;
}

/* A slice [start, end) on io-wq worker `tid`'s track, or on one of its extra lanes if it would overlap. */
static uint32_t worker_tid(uint32_t tid, uint64_t start, uint64_t end)
{
	const char *name = name_thread(target_pid, tid, "iou-wrk");
	struct lanes *l = worker_lanes(tid);

	return l ? lane_tid(l, start, end, tid, false, name) : tid;
}

static void comp_args(const __u64 *comp)
{
	for (int c = 0; c < COMP_MAX; c++)
		if (comp[c])
			fprintf(tf, ",\"%s_us\":%.3f", comp_names[c], comp[c] / 1000.0);
}

int timeline_open(const char *path, int pid, uint64_t start_ns)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);

	if (fd < 0 || !(tf = fdopen(fd, "w")))
		return -errno;
	target_pid = pid;
	t0 = start_ns;
	fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[", tf);
	sep();
	fprintf(tf, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"AOF server %d\"}}",
		pid, pid, pid);
	return 0;
}

void timeline_event(const void *data, size_t len)
{
	const struct aof_flush_event *f = data;
	const struct aof_sync_event *s = data;
	const struct aof_proc_event *p = data;
	const struct aof_ureq_event *u = data;
	const struct aof_block_event *b = data;
	uint64_t start, end;
	uint32_t tid;

	if (!tf || len < sizeof(__u32))
		return;
	switch (f->type) {
	case EV_FLUSH:
		name_thread(target_pid, f->tid, "main");
		start = f->start_ns;
		end = f->start_ns + f->dur_ns;
		clip(&start, &end);
		sep();
		fprintf(tf, "{\"ph\":\"X\",\"name\":\"flushAppendOnlyFile\",\"cat\":\"flush\",\"pid\":%d,\"tid\":%u,"
			"\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"bytes\":%llu,\"writes\":%u,\"syncs\":%u,\"children\":%u,"
			"\"offset\":%llu,\"i_size_before\":%llu,\"i_size_after\":%llu",
			target_pid, f->tid, ts_us(start), (end - start) / 1000.0,
			(unsigned long long)(f->write_bytes + f->uring_bytes), f->writes, f->syncs, f->children,
			(unsigned long long)f->first_off, (unsigned long long)f->isize_before,
			(unsigned long long)f->isize_after);
		comp_args(f->comp);
		fputs("}}", tf);
		break;
	case EV_SYNC:
		name_thread(s->pid, s->tid, s->comm);
		start = s->start_ns;
		end = s->start_ns + s->dur_ns;
		clip(&start, &end);
		sep();
		fprintf(tf, "{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"sync\",\"pid\":%u,\"tid\":%u,\"ts\":%.3f,"
			"\"dur\":%.3f,\"args\":{\"ret\":%lld,\"fd\":%d,\"in_flush\":%u,\"forced_commit\":%u",
			s->kind == SYNC_FSYNC ? "fsync" : "fdatasync", s->pid, s->tid, ts_us(start),
			(end - start) / 1000.0, (long long)s->ret, s->fd, s->in_flush, s->commit);
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
			/*
			 * Queued, then running, on the worker's lanes: a worker may take up a request before
			 * an earlier one completed (its CQE is posted from elsewhere), and requests punted
			 * together wait side by side.
			 */
			if (u->punt_ns && u->start_ns > u->punt_ns) {
				start = u->punt_ns;
				end = u->start_ns;
				clip(&start, &end);
				tid = worker_tid(u->worker, start, end);
				sep();
				fprintf(tf, "{\"ph\":\"X\",\"name\":\"io-wq queue\",\"cat\":\"io_uring\",\"pid\":%d,"
					"\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"worker\":%u}}", target_pid, tid,
					ts_us(start), (end - start) / 1000.0, u->worker);
			}
			start = u->start_ns;
			end = u->complete_ns;
			clip(&start, &end);
			tid = worker_tid(u->worker, start, end);
			sep();
			fprintf(tf, "{\"ph\":\"X\",\"name\":\"io-wq %s\",\"cat\":\"io_uring\",\"pid\":%d,"
				"\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"res\":%d,\"worker\":%u",
				uring_op_name(u->opcode), target_pid, tid, ts_us(start), (end - start) / 1000.0, u->res,
				u->worker);
			comp_args(u->comp);
			fputs("}}", tf);
		}
		break;
	case EV_BLOCK:
		if (len < sizeof(*b))
			break;
		start = b->issue_ns;
		end = b->complete_ns;
		clip(&start, &end);
		tid = lane_tid(&block_lanes, start, end, BLOCK_TID, true, "AOF device");
		sep();
		fprintf(tf, "{\"ph\":\"X\",\"name\":\"%s\",\"cat\":\"block\",\"pid\":%d,\"tid\":%u,\"ts\":%.3f,"
			"\"dur\":%.3f,\"args\":{\"issuer\":\"%s\",\"issuer_tid\":%u,\"bytes\":%u,\"sector\":%llu}}",
			NAME(rqkind_labels, b->kind), target_pid, tid, ts_us(start),
			(end - start) / 1000.0, NAME(issuer_labels, b->issuer),
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
	free(block_lanes.end);
	free(block_lanes.tid);
	block_lanes = (struct lanes){};
	for (int i = 0; i < nwlanes; i++) {
		free(wlanes[i].l.end);
		free(wlanes[i].l.tid);
	}
	nwlanes = 0;
	return err;
}

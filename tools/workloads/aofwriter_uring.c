// SPDX-License-Identifier: BSD-3-Clause
/* aofwriter's io_uring write method (--io uring, uring-linked, uring-sqpoll): the ring and uring_write(). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "aofwriter.h"

#define FSYNC_TAG (~0ULL)

int uring_init(void)
{
	struct io_uring_params p = { 0 };
	int ret;

	if (!uring_mode())
		return 0;
	if (server.io == IO_URING_SQPOLL) {
		p.flags |= IORING_SETUP_SQPOLL;
		p.sq_thread_idle = server.sqpoll_idle_ms;
	}
	ret = io_uring_queue_init_params(server.ring_depth, &server.ring, &p);
	if (ret < 0) {
		fprintf(stderr, "aofwriter: --io %s: io_uring setup (%u entries%s) failed: %s\n",
			server.io == IO_URING_SQPOLL ? "uring-sqpoll" : server.io == IO_URING ? "uring" : "uring-linked",
			server.ring_depth, server.io == IO_URING_SQPOLL ? ", SQPOLL" : "", strerror(-ret));
		return -1;
	}
	server.ring_ready = true;
	return 0;
}

int linked_fsync_errno;	/* set by uring_write when the linked fsync failed */
bool linked_fsync_done;

/* Writes buf at offset off through the ring, in chunks of --uring-chunk bytes, up to
 * --uring-inflight SQEs per submission, linked (IOSQE_IO_LINK) so they run in order and a short
 * write cancels the rest: the file only ever grows by a prefix of the buffer. With fsync, an
 * IORING_OP_FSYNC(DATASYNC) is linked behind the last write of the same submission. Returns the
 * length of the prefix written (len on success) or -1 with errno. */
ssize_t uring_write(int fd, const char *buf, size_t len, off_t off, bool fsync)
{
	struct req {
		size_t pos, len;
		int res;
	} req[1024];
	struct io_uring *ring = &server.ring;
	size_t done = 0;
	int stalls = 0;

	linked_fsync_done = false;
	linked_fsync_errno = 0;
	while (done < len || (fsync && !linked_fsync_done)) {
		struct io_uring_sqe *sqe = NULL;
		unsigned n = 0, nsqe, got;
		size_t pos = done, before = done;
		bool with_fsync;
		int fsync_res = 0, ret;

		while (n < server.uring_inflight && pos < len) {
			size_t chunk = len - pos;

			if (chunk > server.uring_chunk) {
				/* End chunks after a newline: a crash between two chunks then cuts the
				 * AOF at a line boundary, a tail Redis always treats as truncated. */
				const char *nl = memrchr(buf + pos, '\n', server.uring_chunk);

				chunk = nl ? (size_t)(nl - (buf + pos)) + 1 : server.uring_chunk;
			}
			sqe = io_uring_get_sqe(ring);
			if (!sqe)	/* cannot happen: ring_depth > inflight and the ring is drained */
				break;
			io_uring_prep_write(sqe, fd, buf + pos, chunk, off + pos);
			sqe->user_data = n;
			if (!server.uring_unlinked)
				sqe->flags |= IOSQE_IO_LINK;
			if (server.uring_async)	/* straight to io-wq, as a write that would block goes */
				sqe->flags |= IOSQE_ASYNC;
			req[n].pos = pos;
			req[n].len = chunk;
			req[n].res = -ECANCELED;
			pos += chunk;
			n++;
		}
		with_fsync = fsync && pos == len;
		if (with_fsync) {
			if (sqe && server.uring_unlinked)
				sqe->flags |= IOSQE_IO_LINK;
			sqe = io_uring_get_sqe(ring);
			if (!sqe) {
				errno = EBUSY;
				return done ? (ssize_t)done : -1;
			}
			io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
			sqe->user_data = FSYNC_TAG;
			if (server.uring_unlinked)	/* unlinked writes: wait for all of them */
				sqe->flags |= IOSQE_IO_DRAIN;
		} else if (sqe) {
			sqe->flags &= ~IOSQE_IO_LINK;	/* the chain ends with this batch */
		}
		nsqe = n + with_fsync;
		if (!nsqe)
			break;
		do {
			ret = io_uring_submit_and_wait(ring, nsqe);
		} while (ret == -EINTR || ret == -EAGAIN || ret == -EBUSY);
		if (ret < 0) {
			errno = -ret;
			return done ? (ssize_t)done : -1;
		}
		server.stat_write_calls += n;
		for (got = 0; got < nsqe; got++) {
			struct io_uring_cqe *cqe;

			do {
				ret = io_uring_wait_cqe(ring, &cqe);
			} while (ret == -EINTR || ret == -EAGAIN);
			if (ret < 0) {
				errno = -ret;
				return -1;
			}
			if (cqe->user_data == FSYNC_TAG)
				fsync_res = cqe->res;
			else if (cqe->user_data < n)
				req[cqe->user_data].res = cqe->res;
			io_uring_cqe_seen(ring, cqe);
		}
		/* Only a contiguous prefix counts; what follows a short or failed write is redone. */
		for (unsigned i = 0; i < n; i++) {
			int r = req[i].res;

			if (r == (int)req[i].len) {
				done += r;
				continue;
			}
			if (r >= 0) {
				done += r;
				server.stat_short_writes++;
			} else if (r == -EAGAIN || r == -EINTR || r == -ECANCELED) {
				server.stat_retries++;
			} else {
				errno = -r;
				return done ? (ssize_t)done : -1;
			}
			break;
		}
		if (with_fsync && done == len) {
			if (fsync_res == 0) {
				linked_fsync_done = true;
				server.stat_fsyncs++;
			} else if (fsync_res != -ECANCELED && fsync_res != -EINTR && fsync_res != -EAGAIN) {
				linked_fsync_errno = -fsync_res;
				return done;
			}
		}
		if (done == before && (!with_fsync || !linked_fsync_done) && ++stalls > 16) {
			errno = done < len ? ENOSPC : EIO;
			return done ? (ssize_t)done : -1;
		}
	}
	return done;
}

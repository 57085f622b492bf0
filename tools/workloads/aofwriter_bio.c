// SPDX-License-Identifier: BSD-3-Clause
/* aofwriter's bio_aof thread: the background fdatasync of appendfsync everysec and the close of old incr files. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aofwriter.h"

static void *bio_main(void *arg)
{
	pthread_mutex_lock(&server.bio_lock);
	for (;;) {
		struct bio_job *job;

		while (!server.bio_head && !server.bio_stop)
			pthread_cond_wait(&server.bio_cond, &server.bio_lock);
		job = server.bio_head;
		if (!job)
			break;
		server.bio_head = job->next;
		if (!server.bio_head)
			server.bio_tail = NULL;
		pthread_mutex_unlock(&server.bio_lock);

		if (job->fsync) {
			if (fdatasync(job->fd) < 0) {
				__atomic_store_n(&server.bio_fsync_status, errno, __ATOMIC_RELAXED);
			} else {
				__atomic_store_n(&server.bio_fsync_status, 0, __ATOMIC_RELAXED);
				__atomic_store_n(&server.bio_fsync_offset, job->offset, __ATOMIC_RELAXED);
			}
		}
		if (job->close_fd)
			close(job->fd);
		free(job);
		__atomic_sub_fetch(&server.bio_pending, 1, __ATOMIC_RELEASE);
		pthread_mutex_lock(&server.bio_lock);
	}
	pthread_mutex_unlock(&server.bio_lock);
	return NULL;
}

void bio_submit(int fd, bool fsync, bool close_fd, off_t offset)
{
	struct bio_job *job = calloc(1, sizeof(*job));

	if (!job)
		abort();
	job->fd = fd;
	job->fsync = fsync;
	job->close_fd = close_fd;
	job->offset = offset;
	__atomic_add_fetch(&server.bio_pending, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&server.bio_lock);
	if (server.bio_tail)
		server.bio_tail->next = job;
	else
		server.bio_head = job;
	server.bio_tail = job;
	pthread_cond_signal(&server.bio_cond);
	pthread_mutex_unlock(&server.bio_lock);
}


int bio_start(void)
{
	int ret;

	pthread_mutex_init(&server.bio_lock, NULL);
	pthread_cond_init(&server.bio_cond, NULL);
	ret = pthread_create(&server.bio_thread, NULL, bio_main, NULL);
	if (ret) {
		fprintf(stderr, "aofwriter: cannot start the bio_aof thread: %s\n", strerror(ret));
		return -1;
	}
	pthread_setname_np(server.bio_thread, "bio_aof");
	server.bio_started = true;
	return 0;
}

void bio_stop(void)
{
	if (!server.bio_started)
		return;
	pthread_mutex_lock(&server.bio_lock);
	server.bio_stop = true;
	pthread_cond_signal(&server.bio_cond);
	pthread_mutex_unlock(&server.bio_lock);
	pthread_join(server.bio_thread, NULL);
	server.bio_started = false;
}

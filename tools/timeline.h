/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * --timeline FILE: the records aoftrace receives, written as they arrive in the Chrome trace-event JSON
 * format (loads in Perfetto UI and chrome://tracing): flushes, fsync-family calls, io_uring requests
 * (queued and running in io-wq workers), block requests on the AOF device, forks and exits.
 */
#ifndef __TIMELINE_H
#define __TIMELINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <linux/types.h>
#include "aoftrace.h"

int timeline_open(const char *path, int pid, uint64_t start_ns);
void timeline_event(const void *data, size_t len);
int timeline_close(void);	/* 0, or -errno if the file could not be written */

#endif /* __TIMELINE_H */

// SPDX-License-Identifier: BSD-3-Clause
/* aofwriter's test faults (--test-fault, see docs/aofwriter.md): their names and the overwrite fault's pwrite. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "aofwriter.h"

/* Test fault "overwrite" in write mode: pwrite(2) below the end of file. pwrite ignores the offset
 * on an O_APPEND fd, so O_APPEND is dropped for the call and put back afterwards. */
ssize_t fault_pwrite(int fd, const char *buf, size_t len, off_t off)
{
	ssize_t n, tot = 0;

	if (fcntl(fd, F_SETFL, 0) < 0)
		return -1;
	while (len) {
		n = pwrite(fd, buf, len, off);
		server.stat_write_calls++;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len -= n;
		buf += n;
		off += n;
		tot += n;
	}
	fcntl(fd, F_SETFL, O_APPEND);
	return tot ? tot : -1;
}

const char *const test_fault_names[NR_TEST_FAULTS] = {
	"overwrite", "reply-before-sync", "skip-fsync", "stale-file",
};

/* "overwrite,skip-fsync", or "none" */
void test_faults_str(struct buf *b, unsigned faults)
{
	const char *sep = "";

	if (!faults)
		buf_printf(b, "none");
	for (int i = 0; i < NR_TEST_FAULTS; i++)
		if (faults & (1u << i)) {
			buf_printf(b, "%s%s", sep, test_fault_names[i]);
			sep = ",";
		}
}

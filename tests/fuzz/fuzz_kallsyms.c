// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libFuzzer target: the /proc/kallsyms parser and the classifier ranges built from it. The input is
 * written to a memfd and read as kallsyms; every range built must be sorted, non-empty and padded.
 */
#define _GNU_SOURCE
#include <linux/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "offcpu.h"

static const struct aof_krange *krange_at(const void *tbl, __u32 i)
{
	return i < MAX_KRANGES ? &((const struct aof_krange *)tbl)[i] : NULL;
}

#include "classify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct aof_krange r[MAX_KRANGES];
	char path[64];
	struct ksyms *ks;
	int fd, n;

	fd = memfd_create("kallsyms", 0);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	for (int filtered = 0; filtered < 2; filtered++) {
		ks = filtered ? ksyms_load_filter(path, offcpu_wanted) : ksyms_load(path);
		if (!ks)
			abort();
		n = build_kranges(ks, r, MAX_KRANGES);
		for (int i = 0; i < n; i++) {
			if (r[i].start >= r[i].end || (i && r[i].start < r[i - 1].start))
				abort();
			if (krange_comp(r, r[i].start) < 0)
				abort();
		}
		for (int i = n; i < MAX_KRANGES; i++)
			if (r[i].start != ~0ULL)
				abort();
		if (ks->n)
			(void)ksyms_find(ks, ks->syms[ks->n / 2].addr);
		ksyms_free(ks);
	}
	close(fd);
	return 0;
}

// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* From the classification table to the kernel text ranges the BPF classifier searches. */
#include <stdlib.h>
#include <string.h>
#include "offcpu.h"

static int cmp_class(const void *a, const void *b)
{
	return strcmp(((const struct offcpu_class *)a)->func, ((const struct offcpu_class *)b)->func);
}

static int cmp_krange(const void *a, const void *b)
{
	const struct aof_krange *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Is `name` (or the function it is a clone of) in the table? For ksyms_load_filter(). */
bool offcpu_wanted(const char *name)
{
	static struct offcpu_class sorted[OFFCPU_NCLASSES];
	static bool ready;
	struct offcpu_class key;
	char base[128];
	size_t len = strcspn(name, ".");

	if (!ready) {
		memcpy(sorted, offcpu_classes, sizeof(sorted));
		qsort(sorted, OFFCPU_NCLASSES, sizeof(sorted[0]), cmp_class);
		ready = true;
	}
	if (len >= sizeof(base))
		return false;
	memcpy(base, name, len);
	base[len] = 0;
	key.func = base;
	return bsearch(&key, sorted, OFFCPU_NCLASSES, sizeof(sorted[0]), cmp_class) != NULL;
}

/*
 * Turn the classification table into sorted kernel text ranges for the BPF classifier. A function's
 * range ends where the next text symbol starts; compiler clones (name.isra.0, ...) count as the
 * function itself. The rest of `out` is padded with empty ranges at ~0 (krange_comp() searches all
 * `max`). Returns the number of ranges.
 */
int build_kranges(const struct ksyms *ks, struct aof_krange *out, int max)
{
	struct offcpu_class sorted[OFFCPU_NCLASSES], key, *hit;
	char base[128];
	int n = 0;

	memcpy(sorted, offcpu_classes, sizeof(sorted));
	qsort(sorted, OFFCPU_NCLASSES, sizeof(sorted[0]), cmp_class);
	for (size_t i = 0; ks && i < ks->n && n < max; i++) {
		size_t len = strcspn(ks->syms[i].name, ".");
		size_t j = i + 1;

		if (len >= sizeof(base))
			continue;
		memcpy(base, ks->syms[i].name, len);
		base[len] = 0;
		key.func = base;
		hit = bsearch(&key, sorted, OFFCPU_NCLASSES, sizeof(sorted[0]), cmp_class);
		if (!hit)
			continue;
		out[n].start = ks->syms[i].addr;
		if (ks->addrs) {
			/* filtered: the end is the first address above, among all text symbols */
			size_t lo = 0, hi = ks->naddrs;

			while (lo < hi) {
				size_t mid = (lo + hi) / 2;

				if (ks->addrs[mid] <= out[n].start)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo == ks->naddrs)
				continue;
			out[n].end = ks->addrs[lo];
		} else {
			while (j < ks->n && ks->syms[j].addr == ks->syms[i].addr)
				j++;
			if (j == ks->n)
				continue;
			out[n].end = ks->syms[j].addr;
		}
		out[n].comp = hit->comp;
		out[n].pad = 0;
		n++;
	}
	qsort(out, n, sizeof(out[0]), cmp_krange);
	for (int i = n; i < max; i++)
		out[i] = (struct aof_krange){ .start = ~0ULL, .end = ~0ULL, .comp = COMP_MAX };
	return n;
}

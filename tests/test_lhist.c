// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Unit test of the log-linear histogram behind every latency figure: quantiles within 1/32 of the exact
 * value, exact count/sum/min/max, merge, and the libbpf-tools log2 layout (a value v lands in the row
 * "2^k -> 2^(k+1)-1" with k = floor(log2 v)). Exits T_EXIT_FAIL if any check fails (tests/helpers.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "trace_helpers.h"
#include "helpers.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int main(void)
{
	static struct lhist h, h2, m;
	static uint64_t vals[20000];
	const double qs[] = { 0.5, 0.9, 0.99, 0.999, 1.0 };
	uint64_t sum = 0;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	srand(42);
	for (int i = 0; i < 20000; i++) {
		/* spread over 1 us .. 100 ms in ns, log-uniform */
		vals[i] = (uint64_t)exp(log(1000.0) + (log(1e8) - log(1000.0)) * rand() / RAND_MAX);
		lhist_add(i % 2 ? &h : &h2, vals[i]);
		sum += vals[i];
	}
	lhist_merge(&m, &h);
	lhist_merge(&m, &h2);
	qsort(vals, 20000, sizeof(vals[0]), cmp_u64);
	CHECK(m.count == 20000 && m.sum == sum, "count/sum after merge");
	CHECK(m.min == vals[0] && m.max == vals[19999], "min/max after merge");
	for (size_t i = 0; i < T_ARRAY_SIZE(qs); i++) {
		uint64_t exact = vals[(size_t)ceil(qs[i] * 20000) - 1], got = lhist_quantile(&m, qs[i]);

		CHECK(got >= exact && got <= exact + exact / 32 + 1, "q%.3f: exact %llu, got %llu", qs[i],
		      (unsigned long long)exact, (unsigned long long)got);
	}
	/* small values are exact */
	memset(&h, 0, sizeof(h));
	for (uint64_t v = 0; v < 32; v++)
		lhist_add(&h, v);
	CHECK(lhist_quantile(&h, 0.5) == 15, "exact below 32: p50 %llu", (unsigned long long)lhist_quantile(&h, 0.5));

	/* log2 rows: 737 us goes to "512 -> 1023", 1 us to "0 -> 1", 3000 us to "2048 -> 4095" */
	memset(&h, 0, sizeof(h));
	lhist_add(&h, 737000);
	lhist_add(&h, 737999);
	lhist_add(&h, 1000);
	lhist_add(&h, 3000000);
	f = open_memstream(&buf, &len);
	lhist_print_log2(f, &h, 1000, "usecs");
	fclose(f);
	CHECK(strstr(buf, "       512 -> 1023       : 2 "), "737 us not in 512 -> 1023:\n%s", buf);
	CHECK(strstr(buf, "         0 -> 1          : 1 "), "1 us not in 0 -> 1:\n%s", buf);
	CHECK(strstr(buf, "      2048 -> 4095       : 1 "), "3000 us not in 2048 -> 4095:\n%s", buf);
	free(buf);
	return t_result("test_lhist");
}

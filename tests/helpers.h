/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What the C unit tests (tests/test_*.c) share, after liburing's test/helpers.h: the exit codes
 * (77 is automake's "skipped"; `make test` counts it as a skip, not a failure), a CHECK that
 * reports a failed condition and carries on so that one run lists every failure, and the
 * verdict at the end of main().
 */
#ifndef AOFTRACE_TEST_HELPERS_H
#define AOFTRACE_TEST_HELPERS_H

#include <stdio.h>

enum t_test_result {
	T_EXIT_PASS = 0,
	T_EXIT_FAIL = 1,
	T_EXIT_SKIP = 77,
};

#define T_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Failed CHECKs so far, in this test program. */
static int t_failed __attribute__((unused));

/* CHECK(cond, fmt, ...): if cond is false, print "FAIL: <message>" to stderr and count a failure. */
#define CHECK(cond, ...)							\
	do {									\
		if (!(cond)) {							\
			fprintf(stderr, "FAIL: " __VA_ARGS__);			\
			fputc('\n', stderr);					\
			t_failed++;						\
		}								\
	} while (0)

/* The test cannot run here (not a failure): say why and return T_EXIT_SKIP from main(). */
#define T_SKIP(...)								\
	do {									\
		fprintf(stderr, "SKIP: " __VA_ARGS__);				\
		fputc('\n', stderr);						\
		return T_EXIT_SKIP;						\
	} while (0)

/* main()'s last word: "<name>: ok" or "<name>: N failed", and the exit code to match. */
static inline int t_result(const char *name)
{
	if (t_failed) {
		printf("%s: %d failed\n", name, t_failed);
		return T_EXIT_FAIL;
	}
	printf("%s: ok\n", name);
	return T_EXIT_PASS;
}

#endif /* AOFTRACE_TEST_HELPERS_H */

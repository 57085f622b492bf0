// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libFuzzer target: aoftrace's command line. The input is split at NUL bytes into argv and parsed
 * by the very argp parser aoftrace uses (its source is included), without exiting on errors, under
 * AddressSanitizer and UBSan. `make fuzz` runs it for FUZZ_SECONDS.
 */
#define main aoftrace_main
#include "../../tools/aoftrace.c"
#undef main

#define MAX_ARGS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[4096], *argv[MAX_ARGS + 1];
	int argc = 0;

	if (size >= sizeof(buf))
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	argv[argc++] = (char *)"aoftrace";
	for (size_t i = 0; i <= size && argc < MAX_ARGS; ) {
		argv[argc++] = buf + i;
		i += strlen(buf + i) + 1;
	}
	argv[argc] = NULL;
	memset(&env, 0, sizeof(env));
	env.top = 5;
	/* ARGP_NO_EXIT: errors and --help return instead of ending the fuzzer. */
	argp_parse(&argp, argc, argv, ARGP_NO_EXIT, NULL, NULL);
	return 0;
}

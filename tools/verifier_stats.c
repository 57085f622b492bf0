// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * verifier_stats  What the kernel's verifier spends on each program of a BPF object: every program
 * loaded alone (BPF_LOG_STATS), its verification time and the instructions it walked, one line each.
 * `make bench` prints it, so that a program whose verification grows (the full mode's start-up is
 * mostly verification) shows as a regression. Programs whose tracepoint this kernel lacks: "not loaded".
 *
 * USAGE: verifier_stats OBJECT.bpf.o
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/libbpf.h>

#define LOG_SIZE (1 << 20)	/* BPF_LOG_STATS prints a few lines */

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return 0;
}

/* Loads program `name` of `path` alone; fills usec and insns from the verifier's statistics. */
static int load_one(const char *path, const char *name, char *log, long *usec, long *insns)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_program *prog;
	const char *p;
	int err;

	*usec = *insns = -1;
	if (!obj)
		return -errno;
	bpf_object__for_each_program(prog, obj) {
		bool me = !strcmp(bpf_program__name(prog), name);

		bpf_program__set_autoload(prog, me);
		if (me) {
			log[0] = 0;
			bpf_program__set_log_buf(prog, log, LOG_SIZE);
			bpf_program__set_log_level(prog, 4);	/* BPF_LOG_STATS */
		}
	}
	err = bpf_object__load(obj);
	*usec = (p = strstr(log, "verification time ")) ? atol(p + 18) : -1;
	*insns = (p = strstr(log, "processed ")) ? atol(p + 10) : -1;
	bpf_object__close(obj);
	return err;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	long usec, insns, total = 0;
	char *log = malloc(LOG_SIZE);
	int err;

	if (argc != 2 || !log) {
		fprintf(stderr, "usage: verifier_stats OBJECT.bpf.o\n");
		return 2;
	}
	libbpf_set_print(quiet);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		fprintf(stderr, "verifier_stats: cannot open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("%-26s %12s %14s\n", "program", "verify_us", "insns_walked");
	bpf_object__for_each_program(prog, obj) {
		const char *name = bpf_program__name(prog);

		if ((err = load_one(argv[1], name, log, &usec, &insns))) {
			printf("%-26s %12s %14s\n", name, "not loaded", strerror(-err));
			continue;
		}
		printf("%-26s %12ld %14ld\n", name, usec, insns);
		total += usec;
	}
	printf("%-26s %12ld\n", "total", total);
	bpf_object__close(obj);
	free(log);
	return 0;
}

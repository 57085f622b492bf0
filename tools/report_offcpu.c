// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Off-CPU stacks of the traced operations with their wakers: the longest few, and all of them folded. */
#include <errno.h>
#include <string.h>
#include "names.h"
#include "report.h"

static const char *ksym_name(const struct snapshot *s, uint64_t ip)
{
	const struct ksym *k = s->ksyms ? ksyms_find(s->ksyms, ip) : NULL;

	return k ? k->name : "[unknown]";
}

/*
 * Where a stack taken from a BPF program starts to mean something: past the BPF trampoline frames
 * (up to bpf_trace_run<N>), and for a sleeper also past the scheduler's own frames.
 */
static int first_frame(const struct snapshot *s, const uint64_t *ips, int n, bool sleeper)
{
	int i = 0;

	for (int j = 0; j < n && j < 4; j++)
		if (!strncmp(ksym_name(s, ips[j]), "bpf_trace_run", 13))
			i = j + 1;
	while (sleeper && i < n - 1) {
		const char *name = ksym_name(s, ips[i]);

		if (strcmp(name, "__schedule") && strcmp(name, "schedule") && strcmp(name, "__switch_to"))
			break;
		i++;
	}
	return i;
}

void offcpu_print_top(FILE *f, const struct snapshot *s)
{
	if (!s->top || !s->nrows)
		return;
	fprintf(f, "\nLongest off-CPU stacks inside flushes and fdatasyncs (time asleep, until the wake-up):\n");
	for (size_t i = 0; i < s->nrows && i < (size_t)s->top; i++) {
		const struct offrow *r = &s->rows[i];
		const struct aof_offkey *k = &r->key;
		int fs = first_frame(s, r->ips, r->nframes, true), ws = first_frame(s, r->wips, r->nwframes, false);

		fprintf(f, "  %.1f ms  %s, in %s, %s thread; woken by %s%s\n", r->ns / 1e6, NAME(comp_labels, k->comp),
			NAME(span_labels, k->span), NAME(role_names, k->role),
			k->waker_comm[0] ? k->waker_comm : "(wake-up not seen)",
			k->waker_pid ? "" : k->waker_comm[0] ? " (interrupt or idle)" : "");
		for (int j = fs; j < r->nframes && j < fs + 6; j++)
			fprintf(f, "      %s\n", ksym_name(s, r->ips[j]));
		if (r->nwframes > ws) {
			fprintf(f, "    waker:\n");
			for (int j = ws; j < r->nwframes && j < ws + 4; j++)
				fprintf(f, "      %s\n", ksym_name(s, r->wips[j]));
		}
	}
}

/* flamegraph.pl / inferno folded format, as bcc's offwaketime writes it: values in microseconds. */
int offcpu_write_folded(FILE *f, const struct snapshot *s)
{
	for (size_t i = 0; i < s->nrows; i++) {
		const struct offrow *r = &s->rows[i];
		const struct aof_offkey *k = &r->key;

		if (r->ns < 1000)
			continue;
		fprintf(f, "%s;%s;%s", NAME(role_names, k->role), NAME(span_names, k->span), NAME(comp_names, k->comp));
		for (int j = r->nframes - 1; j >= first_frame(s, r->ips, r->nframes, false); j--)
			fprintf(f, ";%s", ksym_name(s, r->ips[j]));
		fprintf(f, ";--");
		for (int j = first_frame(s, r->wips, r->nwframes, false); j < r->nwframes; j++)
			fprintf(f, ";%s", ksym_name(s, r->wips[j]));
		fprintf(f, ";%s %llu\n", k->waker_comm[0] ? k->waker_comm : "[unknown]",
			(unsigned long long)(r->ns / 1000));
	}
	return ferror(f) ? -EIO : 0;
}

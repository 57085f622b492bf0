/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __KFEATURES_H
#define __KFEATURES_H

#include <stdbool.h>
#include <stddef.h>

struct bpf_object;

/* root, or CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN). */
bool has_caps(void);
/*
 * Switches off (set_autoload false) every tp_btf program of a tracepoint group the kernel's BTF lacks
 * a tracepoint of. False if the BTF cannot be read.
 */
bool probe_features(struct bpf_object *bobj, const char *btf_path);
/* "jbd2 (no jbd2_start_commit tracepoint: ... off), ..." for the groups off, core or not; "" if none. */
const char *features_off(char *buf, size_t len, bool core_only);
/* The names of the groups off, each once; returns how many (at most max). */
size_t features_off_groups(const char **out, size_t max);
/* aoftrace --check: prints what the kernel offers; 0 if the core can run. */
int cmd_check(void);

#endif /* __KFEATURES_H */

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The -DAOF_FLOOR build: BPF_PROG and friends with an empty body. Included after bpf_tracing.h.
 */
#ifndef __AOF_LIB_FLOOR_BPF_H
#define __AOF_LIB_FLOOR_BPF_H

/*
 * make bench's `floor` mode (build/floor/aoftrace, -DAOF_FLOOR): every program returns at its first
 * instruction, attached where the real ones are. What such a run costs the server is the price of the
 * hooks themselves (tracepoint, syscall-tracepoint and uprobe entry paths), whatever the programs do.
 */
#ifdef AOF_FLOOR
#undef BPF_PROG
#undef BPF_KPROBE
#undef BPF_KRETPROBE
#define FLOOR_PROG(name, ctx_t, args...)					\
name(ctx_t ctx) { return 0; }							\
static __always_inline __attribute__((unused)) int ____##name(ctx_t ctx, ##args)
#define BPF_PROG(name, args...)		FLOOR_PROG(name, unsigned long long *, ##args)
#define BPF_KPROBE(name, args...)	FLOOR_PROG(name, struct pt_regs *, ##args)
#define BPF_KRETPROBE(name, args...)	FLOOR_PROG(name, struct pt_regs *, ##args)
#define FLOOR_RETURN()			return 0
#else
#define FLOOR_RETURN()			do { } while (0)
#endif

#endif /* __AOF_LIB_FLOOR_BPF_H */

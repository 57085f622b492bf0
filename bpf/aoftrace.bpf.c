// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * aoftrace: where the time of a Valkey/Redis server's AOF flushes and fdatasyncs goes.
 *
 * Stands on tp_btf (raw tracepoints with BTF: no tracefs needed) and uprobes only, because the
 * kernels we target have no kprobes and refuse fentry. Per-thread state follows each
 * flushAppendOnlyFile() call and the write and fdatasync calls inside it; every scheduler, lock
 * and wake-up event of such a thread closes an interval and charges it to one component, so the
 * components of an operation add up to its wall time. One record leaves per flush that did work
 * and one per fsync-family call; everything else is aggregated here.
 *
 * One object, one header per concern, each with the maps and globals its programs use (after
 * tetragon's bpf/process/ headers); shared helpers in lib/. A header uses only what the headers included
 * before it declare:
 *
 *   lib/        kernel constants, syscall numbers, ARRAY_SIZE, bpf_map_lookup_or_try_init, -DAOF_FLOOR
 *   events      the ring buffer to user space and the per-CPU counters
 *   tstate      per-thread state: the open operations and how their time is charged
 *   proc        which processes are traced (the target, its forked children); fork and exit
 *   aof         which file is the AOF: its inode, locks and device
 *   durability  the invariants of appendfsync always (docs/durability.md)
 *   flush       flushAppendOnlyFile() uprobes and the syscalls: write, fdatasync/fsync, fork
 *   uring       io_uring requests and the io-wq workers that run them
 *   fs          XFS and ext4 tracepoints: io_uring writes and syncs of the AOF
 *   sched       scheduler attribution: sched_switch/waking, lock contention, sleep hints
 *   journal     jbd2 commits and the XFS log
 *   block       block requests on the AOF's device
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "aoftrace.h"
#include "lib/floor.bpf.h"
#include "lib/common.bpf.h"
#include "lib/kernel_defs.bpf.h"
#include "lib/syscalls.bpf.h"
#include "lib/maps.bpf.h"

/* Settings, fixed by user space before load (rodata: the verifier prunes what they turn off). */
const volatile __u32 targ_tgid = 0;
const volatile bool timeline = false;	/* also send one record per block request (--timeline) */
/*
 * --folded: unwind every traced sleep (no hints, below) and take the waker's stack at each wake-up too.
 */
const volatile bool folded = false;
const volatile __u64 ring_size = 1 << 20;	/* the events ring buffer's size */

#include "events.bpf.h"
#include "tstate.bpf.h"
#include "proc.bpf.h"
#include "aof.bpf.h"
#include "durability.bpf.h"
#include "flush.bpf.h"
#include "uring.bpf.h"
#include "fs.bpf.h"
#include "sched.bpf.h"
#include "journal.bpf.h"
#include "block.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What leaves for user space: the ring buffer of records and the per-CPU counters (enum aof_counter).
 */
#ifndef __AOF_EVENTS_BPF_H
#define __AOF_EVENTS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);	/* user space sets it: RING_SIZE, or more for --timeline */
} events SEC(".maps");

/*
 * Records are read by user space every 100 ms: waking it at each one would cost the traced thread an
 * extra wake-up (measured here as ~15 us added to the fdatasync it just made). Wake it only when the
 * ring is a quarter full.
 */
static __always_inline __u64 rb_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > ring_size / 4 ? 0 : BPF_RB_NO_WAKEUP;
}

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += n;
}

#endif /* __AOF_EVENTS_BPF_H */

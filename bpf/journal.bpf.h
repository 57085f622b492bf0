/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The journal: jbd2 commit phases and XFS log forces and iclog writes on the AOF's device.
 */
#ifndef __AOF_JOURNAL_BPF_H
#define __AOF_JOURNAL_BPF_H

/* ---- the file systems: forced journal/log commits ------------------------------------------ */

SEC("tp_btf/xfs_log_force")
int BPF_PROG(xfs_log_force, struct xfs_mount *mp, __s64 lsn, unsigned long caller_ip)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tstate *st;

	if (!tracked(id >> 32))
		return 0;
	st = bpf_map_lookup_elem(&threads, &(__u32){ (__u32)id });
	if (st && any_span(st) && !folded)
		st->hints.next = HINT_XFS_LOG_FORCE;
	/* One force per sync: xfs_file_fsync() may trace more than one on its way. */
	if (st && st->span.start[SPAN_SYNC] && !st->sys.commit) {
		st->sys.commit = 1;
		count(CNT_JOURNAL_COMMITS, 1);
	}
	return 0;
}

/*
 * jbd2 commit phases and XFS iclog writes on the AOF's device: what a journal/log wait was made
 * of. Timestamps between the phase tracepoints, keyed by transaction id / iclog.
 */
enum jbd2_phase {
	JBD2_PH_START,		/* jbd2_start_commit */
	JBD2_PH_LOCKING,	/* jbd2_commit_locking: waiting for running handles */
	JBD2_PH_FLUSHING,	/* jbd2_commit_flushing: ordered data writeback */
	JBD2_PH_LOGGING,	/* jbd2_commit_logging: journal blocks, commit block, cache flush */
	JBD2_PH_MAX,		/* (jbd2_end_commit closes the last) */
};

struct jbd2_phases {
	__u64 ts[JBD2_PH_MAX];	/* when each phase began */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);		/* t_tid */
	__type(value, struct jbd2_phases);
} jbd2_commits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);		/* struct xlog_in_core * */
	__type(value, __u64);		/* xlog_iclog_sync time */
} iclog_writes SEC(".maps");

static __always_inline bool aof_journal(journal_t *journal)
{
	if (!aof_dev)
		return false;
	if ((__u64)journal == aof_journal_ptr)
		return true;
	if (BPF_CORE_READ(journal, j_fs_dev, bd_dev) != aof_dev)
		return false;
	aof_journal_ptr = (__u64)journal;
	return true;
}

static __always_inline void jbd2_phase(journal_t *journal, transaction_t *commit, enum jbd2_phase phase)
{
	struct jbd2_phases *ph, zero = {};
	__u32 tid;

	if (!aof_journal(journal))
		return;
	tid = BPF_CORE_READ(commit, t_tid);
	if (phase == JBD2_PH_START)
		bpf_map_update_elem(&jbd2_commits, &tid, &zero, BPF_ANY);
	ph = bpf_map_lookup_elem(&jbd2_commits, &tid);
	if (ph && phase >= 0 && phase < ARRAY_SIZE(ph->ts))
		ph->ts[phase] = bpf_ktime_get_ns();
}

SEC("tp_btf/jbd2_start_commit")
int BPF_PROG(jbd2_start_commit, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, JBD2_PH_START);
	return 0;
}

SEC("tp_btf/jbd2_commit_locking")
int BPF_PROG(jbd2_commit_locking, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, JBD2_PH_LOCKING);
	return 0;
}

SEC("tp_btf/jbd2_commit_flushing")
int BPF_PROG(jbd2_commit_flushing, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, JBD2_PH_FLUSHING);
	return 0;
}

SEC("tp_btf/jbd2_commit_logging")
int BPF_PROG(jbd2_commit_logging, journal_t *journal, transaction_t *commit)
{
	jbd2_phase(journal, commit, JBD2_PH_LOGGING);
	return 0;
}

SEC("tp_btf/jbd2_end_commit")
int BPF_PROG(jbd2_end_commit, journal_t *journal, transaction_t *commit)
{
	struct jbd2_phases *ph;
	__u64 now;
	__u32 tid;

	if (!aof_journal(journal))
		return 0;
	count(CNT_JOURNAL_COMMITS, 1);
	tid = BPF_CORE_READ(commit, t_tid);
	ph = bpf_map_lookup_elem(&jbd2_commits, &tid);
	if (!ph)
		return 0;
	now = bpf_ktime_get_ns();
	/* all four phases seen, in order: otherwise the commit began before we attached */
	if (ph->ts[JBD2_PH_START] && ph->ts[JBD2_PH_LOCKING] >= ph->ts[JBD2_PH_START] &&
	    ph->ts[JBD2_PH_FLUSHING] >= ph->ts[JBD2_PH_LOCKING] && ph->ts[JBD2_PH_LOGGING] >= ph->ts[JBD2_PH_FLUSHING]) {
		count(CNT_JBD2_COMMITS, 1);
		count(CNT_JBD2_START_NS, ph->ts[JBD2_PH_LOCKING] - ph->ts[JBD2_PH_START]);
		count(CNT_JBD2_LOCKED_NS, ph->ts[JBD2_PH_FLUSHING] - ph->ts[JBD2_PH_LOCKING]);
		count(CNT_JBD2_FLUSHING_NS, ph->ts[JBD2_PH_LOGGING] - ph->ts[JBD2_PH_FLUSHING]);
		count(CNT_JBD2_LOGGING_NS, now - ph->ts[JBD2_PH_LOGGING]);
	}
	bpf_map_delete_elem(&jbd2_commits, &tid);
	return 0;
}

static __always_inline bool aof_iclog(struct xlog_in_core *iclog)
{
	__u64 log;

	if (!aof_dev)
		return false;
	log = (__u64)BPF_CORE_READ(iclog, ic_log);
	if (log == aof_xlog)
		return true;
	if (BPF_CORE_READ((struct xlog *)log, l_mp, m_super, s_dev) != aof_dev)
		return false;
	aof_xlog = log;
	return true;
}

SEC("tp_btf/xlog_iclog_sync")
int BPF_PROG(xlog_iclog_sync, struct xlog_in_core *iclog, unsigned long caller_ip)
{
	__u64 key = (__u64)iclog, now;

	if (!aof_iclog(iclog))
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&iclog_writes, &key, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/xlog_iclog_sync_done")
int BPF_PROG(xlog_iclog_sync_done, struct xlog_in_core *iclog, unsigned long caller_ip)
{
	__u64 key = (__u64)iclog, *start;

	start = bpf_map_lookup_elem(&iclog_writes, &key);
	if (!start)
		return 0;
	count(CNT_XLOG_WRITES, 1);
	count(CNT_XLOG_WRITE_NS, bpf_ktime_get_ns() - *start);
	bpf_map_delete_elem(&iclog_writes, &key);
	return 0;
}

#endif /* __AOF_JOURNAL_BPF_H */

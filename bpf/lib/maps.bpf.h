/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Map helpers, as libbpf-tools' maps.bpf.h has them. */
#ifndef __AOF_LIB_MAPS_BPF_H
#define __AOF_LIB_MAPS_BPF_H

#ifndef EEXIST
#define EEXIST 17	/* asm-generic/errno-base.h */
#endif

/*
 * The value at `key`, inserted as a copy of `init` if absent. Another CPU may insert it between the
 * lookup and the update (-EEXIST): the second lookup finds its value.
 */
static __always_inline void *bpf_map_lookup_or_try_init(void *map, const void *key, const void *init)
{
	void *val;
	long err;

	val = bpf_map_lookup_elem(map, key);
	if (val)
		return val;

	err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return 0;

	return bpf_map_lookup_elem(map, key);
}

#endif /* __AOF_LIB_MAPS_BPF_H */

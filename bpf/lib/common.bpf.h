/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Small helpers every concern uses.
 */
#ifndef __AOF_LIB_COMMON_BPF_H
#define __AOF_LIB_COMMON_BPF_H

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#endif

/* s begins with the n characters of p (n a constant: the loop unrolls). */
static __always_inline bool prefix(const char *s, const char *p, int n)
{
	for (int i = 0; i < n; i++)
		if (s[i] != p[i])
			return false;
	return true;
}

#endif /* __AOF_LIB_COMMON_BPF_H */

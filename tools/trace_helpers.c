// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "trace_helpers.h"

static unsigned int lh_index(uint64_t v)
{
	unsigned int msb;

	if (v < LH_SUB)
		return v;
	msb = 63 - __builtin_clzll(v);
	return (msb - LH_SUB_BITS + 1) * LH_SUB + ((v >> (msb - LH_SUB_BITS)) & (LH_SUB - 1));
}

/* Largest value that falls in bucket i. */
static uint64_t lh_upper(unsigned int i)
{
	unsigned int msb, sub;

	if (i < LH_SUB)
		return i;
	msb = i / LH_SUB + LH_SUB_BITS - 1;
	sub = i % LH_SUB;
	if (msb >= 63 && sub == LH_SUB - 1)
		return UINT64_MAX;
	return ((uint64_t)(LH_SUB + sub + 1) << (msb - LH_SUB_BITS)) - 1;
}

void lhist_add(struct lhist *h, uint64_t v)
{
	if (!h->count || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
	h->slots[lh_index(v)]++;
}

void lhist_merge(struct lhist *dst, const struct lhist *src)
{
	if (!src->count)
		return;
	if (!dst->count || src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
	dst->count += src->count;
	dst->sum += src->sum;
	for (unsigned int i = 0; i < LH_BUCKETS; i++)
		dst->slots[i] += src->slots[i];
}

uint64_t lhist_quantile(const struct lhist *h, double q)
{
	uint64_t rank, seen = 0, up;

	if (!h->count)
		return 0;
	rank = (uint64_t)ceil(q * h->count);
	if (rank < 1)
		rank = 1;
	for (unsigned int i = 0; i < LH_BUCKETS; i++) {
		seen += h->slots[i];
		if (seen >= rank) {
			up = lh_upper(i);
			return up > h->max ? h->max : up;
		}
	}
	return h->max;
}

static void print_stars(FILE *f, unsigned int val, unsigned int val_max, int width)
{
	int num_stars = val_max ? (int)((uint64_t)val * width / val_max) : 0;
	int num_spaces = width - num_stars;
	bool need_plus = val > val_max;

	for (int i = 0; i < num_stars; i++)
		fputc('*', f);
	for (int i = 0; i < num_spaces; i++)
		fputc(' ', f);
	if (need_plus)
		fputc('+', f);
}

void lhist_print_log2(FILE *f, const struct lhist *h, uint64_t div, const char *unit)
{
	uint64_t log2[64] = {}, val_max = 0;
	int idx_max = -1, stars = 40;

	for (unsigned int i = 0; i < LH_BUCKETS; i++) {
		uint64_t v, lo;
		int b;

		if (!h->slots[i])
			continue;
		/* Any value of the bucket gives the same log2 slot once divided. */
		lo = i < LH_SUB ? i : lh_upper(i - 1) + 1;
		v = lo / div;
		b = v ? 63 - __builtin_clzll(v) : 0;	/* floor(log2): libbpf-tools slots */
		log2[b] += h->slots[i];
	}
	for (int i = 0; i < 64; i++) {
		if (log2[i]) {
			idx_max = i;
			if (log2[i] > val_max)
				val_max = log2[i];
		}
	}
	if (idx_max < 0)
		return;
	fprintf(f, "%*s%-*s : count    distribution\n", idx_max <= 32 ? 5 : 15, "",
		idx_max <= 32 ? 19 : 29, unit);
	for (int i = 0; i <= idx_max; i++) {
		uint64_t low = (1ULL << (i + 1)) >> 1, high = (1ULL << (i + 1)) - 1;

		if (low == high)
			low -= 1;
		fprintf(f, idx_max <= 32 ? "%10llu -> %-10llu : %-8llu |" : "%20llu -> %-20llu : %-8llu |",
			(unsigned long long)low, (unsigned long long)high, (unsigned long long)log2[i]);
		print_stars(f, log2[i], val_max, stars);
		fprintf(f, "|\n");
	}
}

static void jw_key(struct jw *w, const char *key)
{
	if (!w->first[w->depth])
		fputc(',', w->f);
	w->first[w->depth] = false;
	fprintf(w->f, "\n%*s", 2 * w->depth, "");
	if (key)
		fprintf(w->f, "\"%s\": ", key);
}

void jw_begin(struct jw *w, FILE *f)
{
	memset(w, 0, sizeof(*w));
	w->f = f;
	w->first[0] = true;
	fputc('{', f);
	w->depth = 1;
	w->first[1] = true;
}

void jw_end(struct jw *w)
{
	fputs("\n}\n", w->f);
}

void jw_obj(struct jw *w, const char *key)
{
	jw_key(w, key);
	fputc('{', w->f);
	w->depth++;
	w->first[w->depth] = true;
}

void jw_obj_end(struct jw *w)
{
	w->depth--;
	fprintf(w->f, "\n%*s}", 2 * w->depth, "");
}

void jw_arr(struct jw *w, const char *key)
{
	jw_key(w, key);
	fputc('[', w->f);
	w->depth++;
	w->first[w->depth] = true;
}

void jw_arr_end(struct jw *w)
{
	w->depth--;
	fprintf(w->f, "\n%*s]", 2 * w->depth, "");
}

void jw_u64(struct jw *w, const char *key, uint64_t v)
{
	jw_key(w, key);
	fprintf(w->f, "%llu", (unsigned long long)v);
}

void jw_i64(struct jw *w, const char *key, int64_t v)
{
	jw_key(w, key);
	fprintf(w->f, "%lld", (long long)v);
}

void jw_dbl(struct jw *w, const char *key, double v)
{
	jw_key(w, key);
	if (isfinite(v))
		fprintf(w->f, "%.3f", v);
	else
		fputs("null", w->f);
}

void jw_bool(struct jw *w, const char *key, bool v)
{
	jw_key(w, key);
	fputs(v ? "true" : "false", w->f);
}

void jw_str(struct jw *w, const char *key, const char *s)
{
	jw_key(w, key);
	fputc('"', w->f);
	for (; *s; s++) {
		unsigned char c = *s;

		if (c == '"' || c == '\\')
			fprintf(w->f, "\\%c", c);
		else if (c < 0x20)
			fprintf(w->f, "\\u%04x", c);
		else
			fputc(c, w->f);
	}
	fputc('"', w->f);
}

static int ksym_cmp(const void *a, const void *b)
{
	const struct ksym *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct ksyms *ksyms_load_filter(const char *path, bool (*keep)(const char *name))
{
	size_t cap = 0, acap = 0, strcap = 0, strlen_used = 1;
	char line[512];
	struct ksyms *ks;
	FILE *f;

	f = fopen(path ? path : "/proc/kallsyms", "r");
	if (!f)
		return NULL;
	ks = calloc(1, sizeof(*ks));
	if (!ks || !(ks->strs = calloc(1, strcap = 1 << 16)))
		goto err;
	/* ~120k lines: parsed by hand, sscanf() alone costs tens of milliseconds. */
	while (fgets(line, sizeof(line), f)) {
		char *p, *name;
		unsigned long long addr = strtoull(line, &p, 16);
		size_t len;

		if (p == line || p[0] != ' ' || (p[1] != 't' && p[1] != 'T') || p[2] != ' ' || !addr)
			continue;
		name = p + 3;
		len = strcspn(name, " \t\n");
		name[len] = 0;
		if (keep) {
			/* 8 bytes a symbol, not 16: this runs while libbpf holds the kernel's BTF. */
			if (ks->naddrs == acap) {
				void *np = realloc(ks->addrs, (acap = acap ? acap * 2 : 65536) * sizeof(*ks->addrs));

				if (!np)
					goto err;
				ks->addrs = np;
			}
			ks->addrs[ks->naddrs++] = addr;
			if (!keep(name))
				continue;
		}
		if (ks->n == cap) {
			void *np = realloc(ks->syms, (cap = cap ? cap * 2 : keep ? 256 : 65536) * sizeof(*ks->syms));

			if (!np)
				goto err;
			ks->syms = np;
		}
		ks->syms[ks->n].addr = addr;
		ks->syms[ks->n].name = NULL;	/* offset 0: "" */
		{
			len++;
			if (strlen_used + len > strcap) {
				char *np = realloc(ks->strs, strcap *= 2);

				if (!np)
					goto err;
				ks->strs = np;
			}
			memcpy(ks->strs + strlen_used, name, len);
			ks->syms[ks->n].name = (char *)(uintptr_t)strlen_used;	/* fixed up below */
			strlen_used += len;
		}
		ks->n++;
	}
	fclose(f);
	for (size_t i = 0; i < ks->n; i++)
		ks->syms[i].name = ks->strs + (uintptr_t)ks->syms[i].name;
	if (ks->n)	/* an empty file leaves syms NULL, which qsort() must not get (found by make fuzz) */
		qsort(ks->syms, ks->n, sizeof(*ks->syms), ksym_cmp);
	if (ks->naddrs)
		qsort(ks->addrs, ks->naddrs, sizeof(*ks->addrs), u64_cmp);
	return ks;
err:
	fclose(f);
	ksyms_free(ks);
	return NULL;
}

struct ksyms *ksyms_load(const char *path)
{
	return ksyms_load_filter(path, NULL);
}

const struct ksym *ksyms_find(const struct ksyms *ks, uint64_t addr)
{
	size_t lo = 0, hi = ks ? ks->n : 0;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (ks->syms[mid].addr <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? &ks->syms[lo - 1] : NULL;
}

void ksyms_free(struct ksyms *ks)
{
	if (!ks)
		return;
	free(ks->syms);
	free(ks->strs);
	free(ks->addrs);
	free(ks);
}

void jw_lhist_us(struct jw *w, const struct lhist *h, const char *suffix)
{
	static const struct {
		const char *name;
		double q;	/* < 0: not a quantile */
	} keys[] = {
		{ "total", -1 }, { "avg", -2 }, { "p50", 0.5 }, { "p90", 0.9 }, { "p99", 0.99 },
		{ "p999", 0.999 }, { "min", -3 }, { "max", -4 },
	};
	char key[32];

	jw_u64(w, "count", h->count);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		double ns;

		if (keys[i].q >= 0)
			ns = lhist_quantile(h, keys[i].q);
		else if (keys[i].q == -1)
			ns = h->sum;
		else if (keys[i].q == -2)
			ns = h->count ? (double)h->sum / h->count : 0;
		else if (keys[i].q == -3)
			ns = h->min;
		else
			ns = h->max;
		snprintf(key, sizeof(key), "%s%s", keys[i].name, suffix);
		jw_dbl(w, key, ns / 1000.0);
	}
}

/* The raw BTF header (include/uapi/linux/btf.h), native endian as /sys/kernel/btf/vmlinux is. */
struct btf_raw_header {
	uint16_t magic;
	uint8_t version;
	uint8_t flags;
	uint32_t hdr_len;
	uint32_t type_off;
	uint32_t type_len;
	uint32_t str_off;
	uint32_t str_len;
};

/* Each 0-terminated string of buf[0, len) to fn(); a last one cut short by len is not passed. */
static void for_each_string(const char *buf, size_t len, void (*fn)(const char *s, void *ctx), void *ctx)
{
	for (size_t i = 0; i < len;) {
		size_t n = strnlen(buf + i, len - i);

		if (n < BTF_STR_MAX && i + n < len)
			fn(buf + i, ctx);
		i += n + 1;
	}
}

int btf_for_each_string(const char *path, void (*fn)(const char *s, void *ctx), void *ctx)
{
	struct btf_raw_header h;
	uint64_t off, end;
	struct stat st;
	char *buf = NULL;
	void *map;
	int fd, err = 0;
	ssize_t r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != 0xeB9F || h.hdr_len < sizeof(h) ||
	    h.str_len > (64u << 20) || fstat(fd, &st)) {
		err = -EINVAL;
		goto out;
	}
	off = (uint64_t)h.hdr_len + h.str_off;
	end = off + h.str_len;
	/*
	 * Mapped where the kernel allows it (vmlinux BTF, 6.16+; a file): sysfs hands the BTF out a
	 * page per read(), 570 of them for vmlinux's 2.3 MB of strings.
	 */
	if ((uint64_t)st.st_size >= end && st.st_size > 0 &&
	    (map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) != MAP_FAILED) {
		for_each_string((const char *)map + off, h.str_len, fn, ctx);
		munmap(map, st.st_size);
		goto out;
	}
	buf = malloc((size_t)h.str_len + 1);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t got = 0; got < h.str_len; got += r) {
		r = pread(fd, buf + got, h.str_len - got, (off_t)(off + got));
		if (r <= 0) {
			err = r < 0 ? -errno : -EINVAL;	/* shorter than its header says */
			goto out;
		}
	}
	buf[h.str_len] = 0;
	for_each_string(buf, h.str_len, fn, ctx);
out:
	free(buf);
	close(fd);
	return err;
}

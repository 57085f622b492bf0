// SPDX-License-Identifier: BSD-3-Clause
/* aofwriter's dataset: one database (db 0), a chained hash table of string keys and values. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aofwriter.h"

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 29);
}

static struct entry **dict_slot(const char *k, size_t klen, uint64_t h)
{
	struct entry **pp;

	if (!server.db.size)
		return NULL;
	for (pp = &server.db.tab[h & (server.db.size - 1)]; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, k, klen) == 0)
			return pp;
	return pp;
}

struct entry *dict_find(const char *k, size_t klen)
{
	struct entry **pp = dict_slot(k, klen, hash_bytes(k, klen));

	return pp ? *pp : NULL;
}

static void dict_grow(void)
{
	size_t nsize = server.db.size ? server.db.size * 2 : 1024;
	struct entry **ntab = calloc(nsize, sizeof(*ntab));

	if (!ntab) {
		fprintf(stderr, "aofwriter: out of memory growing the dataset\n");
		abort();
	}
	for (size_t i = 0; i < server.db.size; i++) {
		struct entry *e = server.db.tab[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = ntab[e->hash & (nsize - 1)];
			ntab[e->hash & (nsize - 1)] = e;
		}
	}
	free(server.db.tab);
	server.db.tab = ntab;
	server.db.size = nsize;
}

void dict_set(const char *k, size_t klen, const char *v, size_t vlen)
{
	uint64_t h = hash_bytes(k, klen);
	struct entry **pp, *e;

	if (server.db.used >= server.db.size)
		dict_grow();
	pp = dict_slot(k, klen, h);
	e = *pp;
	if (!e) {
		e = xrealloc(NULL, sizeof(*e));
		e->next = NULL;
		e->hash = h;
		e->key = xrealloc(NULL, klen);
		memcpy(e->key, k, klen);
		e->klen = klen;
		e->val = NULL;
		*pp = e;
		server.db.used++;
	}
	e->val = xrealloc(e->val, vlen);
	memcpy(e->val, v, vlen);
	e->vlen = vlen;
}

bool dict_del(const char *k, size_t klen)
{
	struct entry **pp = dict_slot(k, klen, hash_bytes(k, klen)), *e;

	if (!pp || !*pp)
		return false;
	e = *pp;
	*pp = e->next;
	free(e->key);
	free(e->val);
	free(e);
	server.db.used--;
	return true;
}

void dict_empty(void)
{
	for (size_t i = 0; i < server.db.size; i++) {
		struct entry *e = server.db.tab[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e->key);
			free(e->val);
			free(e);
		}
	}
	free(server.db.tab);
	server.db.tab = NULL;
	server.db.size = server.db.used = 0;
}

void dict_iter(void (*fn)(struct entry *e, void *ctx), void *ctx)
{
	for (size_t i = 0; i < server.db.size; i++)
		for (struct entry *e = server.db.tab[i]; e; e = e->next)
			fn(e, ctx);
}

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __UPROBE_HELPERS_H
#define __UPROBE_HELPERS_H

#include <stddef.h>
#include <stdint.h>

/*
 * File offsets of the functions `names` in the ELF file `path`, for uprobes attached by offset: one
 * pass over .symtab and .dynsym for every name (libbpf parses the file again for each attach by
 * name). offs[i] is 0 when names[i] is not a defined function. Returns 0 or -errno (-ENOEXEC: not
 * an ELF file).
 */
int elf_func_offsets(const char *path, const char *const *names, uint64_t *offs, size_t n);

/* `off`, or the instruction after it when it is an endbr64 (x86-64): see uprobe_helpers.c. */
uint64_t uprobe_skip_endbr64(const char *path, uint64_t off);

#endif /* __UPROBE_HELPERS_H */

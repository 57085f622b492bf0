// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Function offsets in an ELF file, for uprobes (after libbpf-tools' uprobe_helpers.c). */
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <string.h>
#include <unistd.h>
#include "uprobe_helpers.h"

int elf_func_offsets(const char *path, const char *const *names, uint64_t *offs, size_t n)
{
	Elf_Scn *scn = NULL;
	Elf *elf = NULL;
	int fd, err = 0;

	for (size_t i = 0; i < n; i++)
		offs[i] = 0;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF) {
		err = -ENOEXEC;
		goto cleanup;
	}
	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr sh;
		Elf_Data *data;

		if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM) ||
		    !sh.sh_entsize || !(data = elf_getdata(scn, NULL)))
			continue;
		for (size_t s = 0; s < sh.sh_size / sh.sh_entsize; s++) {
			GElf_Sym sym;
			GElf_Shdr text;
			const char *name;
			Elf_Scn *ts;

			if (!gelf_getsym(data, s, &sym) || sym.st_shndx == SHN_UNDEF || !sym.st_value ||
			    (GELF_ST_TYPE(sym.st_info) != STT_FUNC && GELF_ST_TYPE(sym.st_info) != STT_GNU_IFUNC))
				continue;
			name = elf_strptr(elf, sh.sh_link, sym.st_name);
			if (!name)
				continue;
			for (size_t i = 0; i < n; i++) {
				if (offs[i] || strcmp(name, names[i]))
					continue;
				/* The address in the file: as libbpf's elf_sym_offset() computes it. */
				ts = elf_getscn(elf, sym.st_shndx);
				if (ts && gelf_getshdr(ts, &text) && sym.st_value >= text.sh_addr)
					offs[i] = sym.st_value - text.sh_addr + text.sh_offset;
			}
		}
	}
cleanup:
	elf_end(elf);
	close(fd);
	return err;
}

/*
 * x86-64 uprobes emulate some first instructions (push, nop, jmp, call: arch/x86/kernel/uprobes.c)
 * and single-step the others out of line: a trap more, ~13 us a hit against ~1 us on the 6.18 VM
 * this was measured on. Binaries built with -fcf-protection (Ubuntu's, say) start each function with
 * endbr64, which 6.18 single-steps; it does nothing a probe at function entry needs (no register or
 * stack change), so the probe goes on the instruction after it.
 */
uint64_t uprobe_skip_endbr64(const char *path, uint64_t off)
{
#if defined(__x86_64__)
	static const unsigned char endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };
	unsigned char insn[4];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return off;
	if (pread(fd, insn, sizeof(insn), off) == (ssize_t)sizeof(insn) && !memcmp(insn, endbr64, sizeof(insn)))
		off += sizeof(insn);
	close(fd);
#endif
	return off;
}

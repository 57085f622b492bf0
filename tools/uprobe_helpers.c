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

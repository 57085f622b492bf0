// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Unit test of the uprobe offsets: functions found by name in this very binary at the offset the
 * bytes say (what libbpf computes), endbr64 stepped over (x86-64), other first instructions kept, a
 * missing name 0, a file that is not ELF -ENOEXEC. Exits T_EXIT_FAIL if any check fails, T_EXIT_SKIP
 * off x86-64 (the two test functions are x86-64 code).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "uprobe_helpers.h"
#include "helpers.h"

#if defined(__x86_64__)
/* Two functions with known first bytes, whatever the compiler's flags. */
void with_endbr(void);
void with_push(void);
asm(".text\n"
    ".globl with_endbr\n.type with_endbr,@function\nwith_endbr:\n"
    ".byte 0xf3, 0x0f, 0x1e, 0xfa\n"	/* endbr64 */
    "push %rbp\npop %rbp\nret\n.size with_endbr, .-with_endbr\n"
    ".globl with_push\n.type with_push,@function\nwith_push:\n"
    "push %rbp\npop %rbp\nret\n.size with_push, .-with_push\n");

static int read_at(const char *path, uint64_t off, unsigned char *b, size_t n)
{
	int fd = open(path, O_RDONLY);
	ssize_t r = fd < 0 ? -1 : pread(fd, b, n, off);

	if (fd >= 0)
		close(fd);
	return r == (ssize_t)n ? 0 : -1;
}

int main(void)
{
	static const char *const names[] = { "with_endbr", "with_push", "no_such_function_here" };
	const char *self = "/proc/self/exe";
	uint64_t offs[3];
	unsigned char b[4];
	int err;

	err = elf_func_offsets(self, names, offs, 3);
	CHECK(!err, "elf_func_offsets(self) = %d", err);
	CHECK(offs[0] && offs[1] && !offs[2], "offsets %llu %llu %llu", (unsigned long long)offs[0],
	      (unsigned long long)offs[1], (unsigned long long)offs[2]);
	/* The offsets point at the functions' bytes in the file. */
	CHECK(!read_at(self, offs[0], b, 4) && !memcmp(b, "\xf3\x0f\x1e\xfa", 4), "with_endbr's bytes");
	CHECK(!read_at(self, offs[1], b, 1) && b[0] == 0x55, "with_push's first byte %#x", b[0]);
	CHECK(uprobe_skip_endbr64(self, offs[0]) == offs[0] + 4, "endbr64 not stepped over");
	CHECK(uprobe_skip_endbr64(self, offs[1]) == offs[1], "push moved");
	err = elf_func_offsets("/proc/self/status", names, offs, 3);
	CHECK(err == -ENOEXEC, "a text file: %d, not -ENOEXEC", err);
	err = elf_func_offsets("/nonexistent", names, offs, 3);
	CHECK(err == -ENOENT, "a missing file: %d, not -ENOENT", err);
	with_endbr();
	with_push();
	return t_result("test_uprobe_helpers");
}
#else
int main(void)
{
	T_SKIP("test_uprobe_helpers: its test functions are x86-64 code");
}
#endif

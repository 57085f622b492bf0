# aoftrace — the one entry point. `make` builds, `make test` installs what it needs and runs every test.
# Style after libbpf-tools: one .bpf.c, one .c and one shared .h per tool.

BUILD     ?= build
CLANG     ?= clang
CC        ?= cc
BPFTOOL   ?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
PREFIX    ?= /usr/local
DESTDIR   ?=
PYTHON    := .venv/bin/python

ARCH      := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
VMLINUX   := vmlinux/$(ARCH)/vmlinux.h

CFLAGS    ?= -g -O2 -Wall -Wextra -Wno-unused-parameter
BPF_CFLAGS := -g -O2 -Wall -target bpf -D__TARGET_ARCH_$(ARCH) -I$(dir $(VMLINUX)) -Ibpf
LIBBPF_LIBS := $(shell pkg-config --libs libbpf 2>/dev/null || echo -lbpf -lelf -lz)

BPF_OBJS  := $(patsubst bpf/%.bpf.c,$(BUILD)/%.bpf.o,$(wildcard bpf/*.bpf.c))
SKELS     := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(wildcard bpf/*.bpf.c))
TOOLS     := $(BUILD)/aoftrace $(BUILD)/aofwriter $(BUILD)/uringwriter

.PHONY: all deps kernels-deps test-kernels vmlinux test stress bench-writer install uninstall clean run-ab bench explain fuzz fuzz-deps
all: $(TOOLS)

# Keep the BPF objects: bpftool and the tests read them.
.SECONDARY: $(BPF_OBJS)

deps:
	@scripts/deps.sh

# vmlinux.h is committed so builds are reproducible; regenerate it only on request.
vmlinux:
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $(VMLINUX)

$(BUILD):
	@mkdir -p $@

$(BUILD)/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h bpf/lib/*.h) $(VMLINUX) | $(BUILD)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/%.skel.h: $(BUILD)/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@

# The report's modules (names, aggregation, reports, io_uring, durability) never touch libbpf: the C unit
# tests link them alone (REPORT_SRCS). The loader's modules (cli, features, attach, snapshot) do.
REPORT_SRCS   := tools/names.c tools/agg.c tools/report.c tools/report_ops.c tools/report_fs.c \
		 tools/report_offcpu.c tools/uring_stats.c tools/durability.c tools/trace_helpers.c
AOFTRACE_SRCS := tools/aoftrace.c tools/cli.c tools/kfeatures.c tools/attach.c tools/snapshot.c \
		 tools/uprobe_helpers.c tools/offcpu.c tools/timeline.c $(REPORT_SRCS)
AOFTRACE_HDRS := $(wildcard tools/*.h) bpf/aoftrace.h bpf/classify.h $(BUILD)/io_uring_ops.h

# io_uring opcode names, by number (a uapi ABI: numbers never change), taken from vmlinux.h into a table: parsing
# the kernel's BTF for them at report time cost ~11 MB of RSS with libbpf 1.1, more than --lite holds attached.
$(BUILD)/io_uring_ops.h: $(VMLINUX) | $(BUILD)
	awk '/^enum io_uring_op \{/ { on = 1; next } on && /^\};/ { exit } \
	     on && /IORING_OP_/ { gsub(/[\t,]/, ""); split($$0, a, " = "); n = substr(a[1], 11); \
	                          if (n != "LAST") printf "\t[%s] = \"%s\",\n", a[2], n }' $< > $@

$(BUILD)/aoftrace: $(AOFTRACE_SRCS) $(AOFTRACE_HDRS) $(SKELS) | $(BUILD)
	$(CC) $(CFLAGS) -I$(BUILD) -Ibpf -Itools $(AOFTRACE_SRCS) -o $@ $(LIBBPF_LIBS) -lelf -lm -lpthread

# C unit tests (liburing style: small programs that exit 0 on success, 1 on failure, 77 when skipped; tests/helpers.h),
# run by `make test`.
$(BUILD)/test_classify: tests/test_classify.c tests/helpers.h tools/offcpu.c tools/trace_helpers.c $(AOFTRACE_HDRS) | $(BUILD)
	$(CC) $(CFLAGS) -Itests -Ibpf -Itools tests/test_classify.c tools/offcpu.c tools/trace_helpers.c -o $@ -lm

# Valkey's AOF functions are looked up by name by uprobes: keep them exported and not inlined.
$(BUILD)/aofwriter: $(wildcard tools/workloads/aofwriter*.c tools/workloads/aofwriter*.h) | $(BUILD)
	$(CC) $(CFLAGS) -rdynamic -fno-inline-functions-called-once $(filter %.c,$^) -o $@ -luring -lpthread

# The same aofwriter with -pg (mcount) for uftrace: make run-ab UFTRACE=1 builds it; not part of `all`.
$(BUILD)/pg/aofwriter: $(wildcard tools/workloads/aofwriter*.c tools/workloads/aofwriter*.h) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -pg -rdynamic -fno-inline-functions-called-once $(filter %.c,$^) -o $@ -luring -lpthread

# The same aofwriter with an endbr64 opening every function, as CET builds (Ubuntu's) have: aoftrace must probe
# past it (tests/test_aoftrace.py). Built by `make test`, not part of `all`.
$(BUILD)/cet/aofwriter: $(wildcard tools/workloads/aofwriter*.c tools/workloads/aofwriter*.h) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fcf-protection=full -rdynamic -fno-inline-functions-called-once $(filter %.c,$^) -o $@ -luring -lpthread

# make bench's floor mode: the same aoftrace with every BPF program returning at once (-DAOF_FLOOR), so that
# a run prices the hooks alone. Built by `make bench`, not part of `all`.
$(BUILD)/floor/aoftrace.bpf.o: bpf/aoftrace.bpf.c $(wildcard bpf/*.h bpf/lib/*.h) $(VMLINUX)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -DAOF_FLOOR -c $< -o $@

$(BUILD)/floor/aoftrace.skel.h: $(BUILD)/floor/aoftrace.bpf.o
	$(BPFTOOL) gen skeleton $< > $@

$(BUILD)/floor/aoftrace: $(AOFTRACE_SRCS) $(AOFTRACE_HDRS) $(BUILD)/floor/aoftrace.skel.h
	$(CC) $(CFLAGS) -I$(BUILD)/floor -I$(BUILD) -Ibpf -Itools $(AOFTRACE_SRCS) -o $@ $(LIBBPF_LIBS) -lelf -lm -lpthread

$(BUILD)/test_lhist: tests/test_lhist.c tests/helpers.h tools/trace_helpers.c tools/trace_helpers.h | $(BUILD)
	$(CC) $(CFLAGS) -Itests -Itools tests/test_lhist.c tools/trace_helpers.c -o $@ -lm

$(BUILD)/test_uprobe_helpers: tests/test_uprobe_helpers.c tests/helpers.h tools/uprobe_helpers.c tools/uprobe_helpers.h | $(BUILD)
	$(CC) $(CFLAGS) -Itests -Itools tests/test_uprobe_helpers.c tools/uprobe_helpers.c -o $@ -lelf

# The reports rendered from snapshots built in the test (no root, no kernel, no libbpf), and every enum's names.
$(BUILD)/test_report: tests/test_report.c tests/helpers.h $(REPORT_SRCS) $(AOFTRACE_HDRS) | $(BUILD)
	$(CC) $(CFLAGS) -I$(BUILD) -Ibpf -Itools -Itests tests/test_report.c $(REPORT_SRCS) -o $@ -lm

$(BUILD)/test_names: tests/test_names.c tests/helpers.h tools/names.c tools/names.h bpf/aoftrace.h | $(BUILD)
	$(CC) $(CFLAGS) -Ibpf -Itools -Itests tests/test_names.c tools/names.c -o $@

C_TESTS := $(BUILD)/test_classify $(BUILD)/test_lhist $(BUILD)/test_uprobe_helpers $(BUILD)/test_report \
	   $(BUILD)/test_names

# The multi-threaded io_uring write pattern (one file, a ring per thread; docs/uringwriter.md).
$(BUILD)/uringwriter: tools/workloads/uringwriter.c | $(BUILD)
	$(CC) $(CFLAGS) $< -o $@ -luring -lpthread

CET_AOFWRITER := $(if $(filter x86,$(ARCH)),$(BUILD)/cet/aofwriter)	# endbr64 is x86-64's

test: deps kernels-deps all $(C_TESTS) $(CET_AOFWRITER)
	@for t in $(C_TESTS); do $$t; rc=$$?; test $$rc -eq 77 && echo "$$t: skipped"; \
	  test $$rc -eq 0 -o $$rc -eq 77 || exit 1; done
	$(PYTHON) -m pytest -ra -m "not stress" tests

# The kernel matrix (docs/kernels.md): the core tests inside other kernels (Debian 12's 6.1) booted under qemu, a
# summary per kernel; `make test` runs it too (tests/test_kernels.py). KERNELS=debian-6.1 picks some.
KERNELS :=
kernels-deps: deps
	@scripts/deps.sh kernels
test-kernels: deps kernels-deps all $(CET_AOFWRITER)
	$(PYTHON) -m aofab.vm test $(KERNELS)

# Long loops (kill/restart hundreds of times); not part of `make test`.
stress: deps all
	AOF_STRESS=1 $(PYTHON) -m pytest -ra -m stress tests

# libFuzzer under ASan/UBSan on aoftrace's option parser and its /proc/kallsyms parser, FUZZ_SECONDS
# each (clang's libFuzzer runtime comes with Debian's clang). Found crashes land in $(BUILD)/fuzz.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(BUILD)/fuzz/fuzz_args $(BUILD)/fuzz/fuzz_kallsyms
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Ibpf -Itools -I$(BUILD)
$(BUILD)/fuzz/fuzz_args: tests/fuzz/fuzz_args.c $(AOFTRACE_SRCS) $(AOFTRACE_HDRS) $(SKELS)
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) $< $(filter-out tools/aoftrace.c,$(AOFTRACE_SRCS)) -o $@ $(LIBBPF_LIBS) -lelf -lm -lpthread
$(BUILD)/fuzz/fuzz_kallsyms: tests/fuzz/fuzz_kallsyms.c tools/offcpu.c tools/trace_helpers.c $(AOFTRACE_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(FUZZ_CFLAGS) $< tools/offcpu.c tools/trace_helpers.c -o $@ -lm
fuzz-deps: deps
	@scripts/deps.sh fuzz
$(FUZZ_TARGETS): | fuzz-deps
fuzz: fuzz-deps $(FUZZ_TARGETS)
	@for t in $(FUZZ_TARGETS); do \
	  name=$$(basename $$t); mkdir -p $(BUILD)/fuzz/corpus-$$name; \
	  echo "== $$name for $(FUZZ_SECONDS) s"; \
	  (cd $(BUILD)/fuzz && ./$$name -max_total_time=$(FUZZ_SECONDS) -close_fd_mask=3 -print_final_stats=1 \
	    corpus-$$name $(CURDIR)/tests/fuzz/corpus/$${name#fuzz_} > $$name.log 2>&1); rc=$$?; \
	  grep -E "^stat::number_of_executed_units|^Done|ERROR|SUMMARY|crash-" $(BUILD)/fuzz/$$name.log; \
	  test $$rc -eq 0 || { echo "$$name failed: see $(BUILD)/fuzz/$$name.log"; exit 1; }; \
	done

# aofwriter vs redis-server on the same file system: ops/s and flush latency ratios (a benchmark, not a test).
bench-writer: deps all
	$(PYTHON) -m aofab.bench_writer $(ARGS)

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/aoftrace $(DESTDIR)$(PREFIX)/sbin/aoftrace
	install -m 0755 $(BUILD)/aofwriter $(DESTDIR)$(PREFIX)/bin/aofwriter
	install -m 0755 $(BUILD)/uringwriter $(DESTDIR)$(PREFIX)/bin/uringwriter

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/sbin/aoftrace $(DESTDIR)$(PREFIX)/bin/aofwriter $(DESTDIR)$(PREFIX)/bin/uringwriter

# A/B experiments (docs/run-ab.md): every setting may be overridden, e.g. make run-ab QUICK=1 FS=xfs CPUS=1:0
QUICK :=
FS :=
IO :=
REWRITE :=
REPS :=
REQUESTS :=
PRELOAD :=
CPUS :=
SERVER :=
SERVER_ARGS :=
OUT :=
UFTRACE :=
MODES :=
shq = '$(subst ','\'',$(1))'
run-ab: deps all $(if $(filter 1 yes true,$(UFTRACE)),$(BUILD)/pg/aofwriter)
	$(PYTHON) -m aofab.runab --quick=$(call shq,$(QUICK)) --fs=$(call shq,$(FS)) \
	  --io=$(call shq,$(IO)) --rewrite=$(call shq,$(REWRITE)) --reps=$(call shq,$(REPS)) \
	  --requests=$(call shq,$(REQUESTS)) --preload=$(call shq,$(PRELOAD)) --cpus=$(call shq,$(CPUS)) \
	  --server=$(call shq,$(SERVER)) --server-args=$(call shq,$(SERVER_ARGS)) --out=$(call shq,$(OUT)) \
	  --uftrace=$(call shq,$(UFTRACE))

# Overhead of tracing (docs/reliability.md): redis-server under redis-benchmark SET untraced vs aoftrace vs an
# equivalent bpftrace script vs the floor (aoftrace's hooks with empty programs), interleaved rounds; prints
# throughput ratios, launch-to-attached, peak RSS, events/s and lost events, then each BPF program's cost per
# flush, and writes OUT (default build/bench/bench.json). A benchmark, not a test, e.g.
# make bench REPS=7 REQUESTS=100000 CPUS=none
# Each program's verification time and instructions walked, loaded alone (make bench prints it).
$(BUILD)/verifier_stats: tools/verifier_stats.c | $(BUILD)
	$(CC) $(CFLAGS) $< -o $@ $(LIBBPF_LIBS)

bench: deps all $(BUILD)/floor/aoftrace $(BUILD)/verifier_stats
	$(PYTHON) -m aofab.bench --reps=$(call shq,$(REPS)) --requests=$(call shq,$(REQUESTS)) \
	  --cpus=$(call shq,$(CPUS)) --modes=$(call shq,$(MODES)) --out=$(call shq,$(OUT))

# Differential attribution between two aoftrace JSON reports, run directories or OUT::cell (aofab.explain).
explain:
	@test -n "$(A)" -a -n "$(B)" || { echo "usage: make explain A=a.json B=b.json" >&2; exit 2; }
	@$(PYTHON) -m aofab.explain $(call shq,$(A)) $(call shq,$(B)) $(EXPLAIN_ARGS)

clean:
	rm -rf $(BUILD)

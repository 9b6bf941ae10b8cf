# Thin front door over CMake. `make test` and `make demo` do all set-up on a fresh machine.
BUILD   ?= build
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test bench demo clean fuzz
all: build

deps:
	@./scripts/install_deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	@./bench/run_bench.sh $(BUILD)

demo: build
	@./scripts/demo.sh $(BUILD)

# libFuzzer target for the safetensors parser (clang, ASan/UBSan); not part of `make test`.
FUZZ_SECONDS ?= 60
fuzz:
	@./fuzz/run_fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)

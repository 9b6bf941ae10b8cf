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

# The demo's binary is built for this machine (-march=native: the CPU attention runs 8 or 16 lanes wide
# instead of the portable build's 4; measured 1.4x per training step, docs/perf.md "Training demo"),
# with the CUDA backend only when DSA_DEMO_DEVICE asks for a GPU. The test build stays portable.
DEMO_BUILD ?= $(BUILD)/demo
demo: deps
	@cmake -S . -B $(DEMO_BUILD) -DCMAKE_BUILD_TYPE=Release -DDSA_NATIVE=ON -DDSA_BUILD_TESTS=OFF \
	  -DDSA_BUILD_BENCH=OFF -DDSA_ENABLE_CUDA=$(if $(filter cuda%,$(DSA_DEMO_DEVICE)),ON,OFF) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(DEMO_BUILD) -j $(JOBS) --target dsa_cli
	@./scripts/demo.sh $(DEMO_BUILD)

# libFuzzer target for the safetensors parser (clang, ASan/UBSan); not part of `make test`.
FUZZ_SECONDS ?= 60
fuzz:
	@./fuzz/run_fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)

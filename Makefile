# Thin front door over CMake. `make test` and `make demo` do all set-up on a fresh machine.
BUILD   ?= build
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-sanitize bench demo clean fuzz
all: build

deps:
	@./scripts/install_deps.sh $(DEPS_ARGS)

# The Python package (python/) is built and tested when the test environment .venv exists (made by
# `make test`: scripts/install_deps.sh --python); without it ctest reports the Python tests as skipped.
PYTHON_FLAGS = -DDSA_BUILD_PYTHON=ON $(if $(wildcard $(CURDIR)/.venv/bin/python),-DPython_EXECUTABLE=$(CURDIR)/.venv/bin/python)

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(PYTHON_FLAGS) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: DEPS_ARGS = --python
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

# The CPU build and its tests (the op table, model, recipe, command line) under ASan + UBSan, every
# report fatal (docs/reliability.md). CTEST_ARGS narrows it, e.g. CTEST_ARGS='-R Reliability'.
SANITIZE_BUILD ?= $(BUILD)/sanitize
CTEST_ARGS ?=
test-sanitize: deps
	@cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSA_SANITIZE=ON -DDSA_ENABLE_CUDA=OFF \
	  -DDSA_BUILD_BENCH=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(SANITIZE_BUILD) -j $(JOBS) --target dsa_tests dsa_cli
	cd $(SANITIZE_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -LE fuzz -E install_consumer $(CTEST_ARGS)

# The libFuzzer targets (clang, ASan/UBSan): safetensors, config, tokenizer, FUZZ_SECONDS each.
# `make test` runs them too, for a bounded time (tests/CMakeLists.txt, label fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	@./fuzz/run_fuzz.sh all $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD)

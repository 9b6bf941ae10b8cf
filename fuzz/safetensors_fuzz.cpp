// safetensors_fuzz.cpp — libFuzzer target for the safetensors parser (src/model/safetensors.cpp)
// and the JSON reader under it. Any input must either parse or throw dsa::Error; a crash, a
// sanitizer report, an uncaught exception of another type or a hang is a bug.
// Build and run: fuzz/run_fuzz.sh [seconds] (clang with -fsanitize=fuzzer,address,undefined).
#include <cstddef>
#include <cstdint>

#include "dsa/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const dsa::safetensors::File f = dsa::safetensors::File::parse(data, size, "fuzz");
    double sink = 0.0;
    for (const auto& t : f.tensors()) {
      const auto d = t.dtype;
      if (d == dsa::safetensors::Dtype::kF32 || d == dsa::safetensors::Dtype::kBF16 ||
          d == dsa::safetensors::Dtype::kF16 || d == dsa::safetensors::Dtype::kF8E4M3) {
        for (const float v : f.to_float(t.name)) sink += v;
      } else {
        const uint8_t* p = f.data(t);
        for (uint64_t i = 0; i < t.end - t.begin; ++i) sink += p[i];
      }
    }
    volatile double keep = sink;
    (void)keep;
  } catch (const dsa::Error&) {
    // malformed input correctly refused
  }
  return 0;
}

// config_fuzz.cpp — libFuzzer target for config.json parsing (src/model/config.cpp over the JSON
// reader) and the size arithmetic of a config (num_params, the memory footprint). Any input must
// either give a Config or throw dsa::Error; a config that parses must round-trip through to_json and
// have a footprint (checked int64, never a wrapped size). A crash, a sanitizer report (signed
// overflow included), another exception type or a hang is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "dsa/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  dsa::model::Config c;
  try {
    c = dsa::model::Config::from_json(text, "fuzz.json");
  } catch (const dsa::Error&) {
    return 0;   // malformed input correctly refused
  }
  // A parsed config is valid, its sizes fit int64, and it round-trips.
  const dsa::model::Footprint fp = dsa::model::footprint(c);
  if (fp.param_bytes <= 0 || fp.cache_bytes_per_token <= 0 || fp.activation_bytes_per_token <= 0) std::abort();
  const dsa::model::Config back = dsa::model::Config::from_json(c.to_json(), "round-trip");
  if (back.to_json() != c.to_json() || back.num_params() != c.num_params()) std::abort();
  return 0;
}

// device.cpp — `--device cpu|cuda[:N]` (tools/device.h).
#include "device.h"

#include <cstdlib>
#include <string>

#include "dsa/ops.h"
#ifdef DSA_HAVE_CUDA
#include "dsa/model_cuda.h"
#endif

namespace dsa::cli {
namespace {

// -1 for "cpu", else the CUDA ordinal of "cuda" / "cuda:N" (checked against the visible GPUs).
int parse_ordinal(const std::string& spec, const std::string& command) {
  if (spec == "cpu") return -1;
  if (spec.rfind("cuda", 0) == 0) {
    const std::string rest = spec.substr(4);
    bool ok = rest.empty();
    [[maybe_unused]] int ordinal = 0;   // used by CUDA builds
    if (!ok && rest[0] == ':' && rest.size() > 1) {
      char* stop = nullptr;
      const long v = std::strtol(rest.c_str() + 1, &stop, 10);
      ok = *stop == '\0' && v >= 0 && v < 1024;
      ordinal = static_cast<int>(v);
    }
    if (ok) {
#ifdef DSA_HAVE_CUDA
      const int count = cuda::device_count();
      if (ordinal >= count)
        throw Error(command + ": --device " + spec + ": no such GPU (" + std::to_string(count) + " CUDA device(s) visible)");
      return ordinal;
#else
      throw Error(command + ": --device " + spec + ": this build has no CUDA backend (configure with a CUDA compiler)");
#endif
    }
  }
  throw Error(command + ": --device \"" + spec + "\" must be cpu, cuda or cuda:N");
}

}  // namespace

std::function<void(model::Model&)> parse_device(const std::string& spec, const std::string& command) {
  const int ordinal = parse_ordinal(spec, command);
  if (ordinal < 0) return {};
#ifdef DSA_HAVE_CUDA
  return [ordinal](model::Model& m) { cuda::attach_model(m, ordinal); };
#else
  return {};   // unreachable: parse_ordinal refuses cuda without the backend
#endif
}

SessionOpener parse_session_device(const std::string& spec, const std::string& command) {
  [[maybe_unused]] const int ordinal = parse_ordinal(spec, command);
#ifdef DSA_HAVE_CUDA
  if (ordinal >= 0)
    return [ordinal](const model::Model& m, const model::SessionOptions& o) { return cuda::open_session(m, o, ordinal); };
#endif
  return [](const model::Model& m, const model::SessionOptions& o) { return std::make_unique<model::Session>(m, o); };
}

BatchSessionOpener parse_batch_session_device(const std::string& spec, const std::string& command) {
  [[maybe_unused]] const int ordinal = parse_ordinal(spec, command);
#ifdef DSA_HAVE_CUDA
  if (ordinal >= 0)
    return [ordinal](const model::Model& m, const model::SessionOptions& o) { return cuda::open_batch_session(m, o, ordinal); };
#endif
  return [](const model::Model& m, const model::SessionOptions& o) { return std::make_unique<model::BatchSession>(m, o); };
}

}  // namespace dsa::cli

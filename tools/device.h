// device.h — the `--device` flag: where the model's passes (dsa train / dsa eval) or an inference
// session (dsa generate) run.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "dsa/model.h"

namespace dsa::cli {

// "cpu" → an empty hook; "cuda" or "cuda:N" → a hook that moves a model's passes onto GPU N
// (dsa::cuda::attach_model). Throws dsa::Error naming the flag for any other value, for cuda in a
// build without the CUDA backend, and for a GPU this process cannot see — before anything is written.
std::function<void(model::Model&)> parse_device(const std::string& spec, const std::string& command);

// The same flag for an inference session: opens it on the CPU or on GPU N (dsa::cuda::open_session).
using SessionOpener = std::function<std::unique_ptr<model::Session>(const model::Model&, const model::SessionOptions&)>;
SessionOpener parse_session_device(const std::string& spec, const std::string& command);
using BatchSessionOpener =
    std::function<std::unique_ptr<model::BatchSession>(const model::Model&, const model::SessionOptions&)>;
BatchSessionOpener parse_batch_session_device(const std::string& spec, const std::string& command);

}  // namespace dsa::cli

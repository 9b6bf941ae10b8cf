// device.h — the `--device` flag of dsa train / dsa eval: where the model's passes run.
#pragma once

#include <functional>
#include <string>

#include "dsa/model.h"

namespace dsa::cli {

// "cpu" → an empty hook; "cuda" or "cuda:N" → a hook that moves a model's passes onto GPU N
// (dsa::cuda::attach_model). Throws dsa::Error naming the flag for any other value, for cuda in a
// build without the CUDA backend, and for a GPU this process cannot see — before anything is written.
std::function<void(model::Model&)> parse_device(const std::string& spec, const std::string& command);

}  // namespace dsa::cli

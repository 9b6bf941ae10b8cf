// run_data.h — what `dsa train` and `dsa eval` share about a run folder's data: the --data /
// --tokenizer / --holdout flags, remembered in run/data.json so later stages need not repeat them.
#pragma once

#include <string>
#include <vector>

#include "command.h"
#include "dsa/train.h"

namespace dsa::cli {
std::vector<std::string> split_list(const std::string& s);              // "a,b" → {a, b}
train::DataOptions run_data(const Flags& f, const std::string& run_dir); // flags, else run/data.json
void record_run_data(const train::DataOptions& d, const std::string& run_dir);
}  // namespace dsa::cli

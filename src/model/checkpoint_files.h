// checkpoint_files.h — the safetensors files of a checkpoint directory and where each tensor lives
// (Model::load). Not public API.
//
// With `model.safetensors.index.json` (Hugging Face's sharded layout: {"metadata": {…},
// "weight_map": {"tensor name": "model-00001-of-00163.safetensors", …}}) the index decides: every
// shard it names must be a file of the directory (a plain file name, no path), every tensor it maps
// must be in the shard it names, and a tensor the index does not map is absent — shard files the
// index does not name are not opened. Without an index, every *.safetensors file of the directory is
// opened and a tensor name may appear in only one of them. Files are memory-mapped (safetensors.h):
// opening a checkpoint reads only the headers; a tensor's bytes are read when it is converted.
// Every problem is a dsa::Error naming the index or shard file and the tensor.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "dsa/safetensors.h"

namespace dsa::model {

class CheckpointFiles {
 public:
  static constexpr const char* kIndexFile = "model.safetensors.index.json";

  explicit CheckpointFiles(const std::string& dir);

  struct Located {
    const safetensors::File* file = nullptr;        // null: the checkpoint has no such tensor
    const safetensors::TensorInfo* info = nullptr;
  };
  Located locate(const std::string& name) const;

  bool indexed() const { return !index_path_.empty(); }
  size_t num_files() const { return files_.size(); }

 private:
  std::string dir_, index_path_;
  std::vector<safetensors::File> files_;
  std::map<std::string, Located> tensors_;
};

}  // namespace dsa::model

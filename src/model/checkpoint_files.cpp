// checkpoint_files.cpp — the files of a checkpoint directory (checkpoint_files.h).
#include "model/checkpoint_files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dsa/ops.h"
#include "model/json.h"

namespace dsa::model {
namespace fs = std::filesystem;
namespace st = dsa::safetensors;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error("load: cannot read " + p.string());
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw Error("load: cannot read " + p.string());
  return os.str();
}

// A shard named by the index: a plain file name of the checkpoint directory.
bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

}  // namespace

CheckpointFiles::CheckpointFiles(const std::string& dir) : dir_(dir) {
  const fs::path root(dir);
  const fs::path index = root / kIndexFile;
  if (fs::exists(index)) {
    index_path_ = index.string();
    const json::Value v = json::parse(read_text(index), index_path_);
    const json::Value* map = v.kind == json::Value::Kind::kObject ? v.get("weight_map") : nullptr;
    if (map == nullptr || map->kind != json::Value::Kind::kObject)
      throw Error("load: " + index_path_ + ": no \"weight_map\" object");
    std::map<std::string, size_t> shard_of_name;   // shard file name → index into files_
    std::vector<std::pair<std::string, size_t>> mapped;
    for (size_t i = 0; i < map->keys.size(); ++i) {
      const std::string& tensor = map->keys[i];
      const json::Value& shard = map->values[i];
      if (shard.kind != json::Value::Kind::kString || !plain_file_name(shard.text))
        throw Error("load: " + index_path_ + ": weight_map[\"" + tensor + "\"] must be the file name of a shard");
      auto it = shard_of_name.find(shard.text);
      if (it == shard_of_name.end()) {
        const fs::path p = root / shard.text;
        if (!fs::is_regular_file(p))
          throw Error("load: " + index_path_ + ": shard '" + shard.text + "' (of tensor '" + tensor +
                      "') is missing from " + dir);
        files_.push_back(st::File::open(p.string()));
        it = shard_of_name.emplace(shard.text, files_.size() - 1).first;
      }
      mapped.emplace_back(tensor, it->second);
    }
    // files_ no longer grows: pointers into it stay valid.
    for (const auto& [tensor, f] : mapped) {
      const st::TensorInfo* t = files_[f].find(tensor);
      if (t == nullptr)
        throw Error("load: " + files_[f].path() + ": tensor '" + tensor + "' is not in the shard " + index_path_ +
                    " maps it to");
      tensors_[tensor] = {&files_[f], t};
    }
    return;
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_regular_file() && e.path().extension() == ".safetensors") names.push_back(e.path().string());
  std::sort(names.begin(), names.end());
  if (names.empty()) throw Error("load: no *.safetensors file in " + dir);
  for (const std::string& n : names) files_.push_back(st::File::open(n));
  for (const st::File& f : files_)
    for (const st::TensorInfo& t : f.tensors()) {
      const auto [it, fresh] = tensors_.emplace(t.name, Located{&f, &t});
      if (!fresh)
        throw Error("load: tensor '" + t.name + "' is in both " + it->second.file->path() + " and " + f.path() +
                    " (without " + kIndexFile + " a tensor may be in one file only)");
    }
}

CheckpointFiles::Located CheckpointFiles::locate(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? Located{} : it->second;
}

}  // namespace dsa::model

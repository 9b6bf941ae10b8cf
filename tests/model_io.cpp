// model_io.cpp — safetensors parsing/writing and checkpoints: bit-exact round trip, BF16 and FP8
// (128×128 weight_scale_inv) loading, sharded checkpoints with model.safetensors.index.json, and
// every malformed-file case → dsa::Error naming file/tensor.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dsa/model.h"
#include "dsa/safetensors.h"
#include "model_util.h"

namespace {

namespace fs = std::filesystem;
namespace st = dsa::safetensors;
using dsa::model::Model;
using dsa::test_model::micro_config;

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("dsa_model_io_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A safetensors buffer from a header string and a data buffer of `data_bytes` zero bytes.
std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f[i] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

void expect_parse_error(const std::vector<uint8_t>& f, const std::string& needle) {
  try {
    st::File::parse(f.data(), f.size(), "bad.safetensors");
    FAIL() << "accepted; expected an error containing '" << needle << "'";
  } catch (const dsa::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("bad.safetensors"), std::string::npos) << w;
    EXPECT_NE(w.find(needle), std::string::npos) << w;
  }
}

TEST(ModelIo, SafetensorsMalformedFiles) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}})";
  const auto good = make_file(ok, 12);
  const st::File f = st::File::parse(good.data(), good.size(), "good");
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.find("b")->shape, (std::vector<int64_t>{1, 2}));
  // truncation at every length shorter than the file
  for (size_t len = 0; len < good.size(); ++len) {
    std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<long>(len));
    EXPECT_THROW(st::File::parse(t.data(), t.size(), "trunc"), dsa::Error) << len;
  }
  expect_parse_error(make_file("{\"a\":", 0), "JSON error");
  expect_parse_error(make_file("[1,2]", 0), "not a JSON object");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
                     "'b'");   // overlap
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "beyond the data buffer");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "do not match shape");
  expect_parse_error(make_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "unsupported dtype");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "shape entry");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "begin 8 > end 0");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "trailing bytes");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8), "'a'");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
                     "duplicate key \"a\"");
  // an entry holds exactly dtype, shape, data_offsets; __metadata__ stays allowed at the top level
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"scale":2}})", 4), "unknown key 'scale'");
  expect_parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"dtype":"F32"}})", 4), "duplicate key");
  const auto meta = make_file(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4);
  EXPECT_EQ(st::File::parse(meta.data(), meta.size(), "meta").metadata().at("format"), "pt");
  // header length beyond the file
  auto big = good;
  big[0] = 0xFF;
  big[1] = 0xFF;
  expect_parse_error(big, "truncated");
  // deep nesting is bounded
  expect_parse_error(make_file(std::string(200, '[') + std::string(200, ']'), 0), "nesting");
  // to_float refuses integer dtypes and wrong shapes, naming the tensor
  const auto ints = make_file(R"({"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", 8);
  const st::File fi = st::File::parse(ints.data(), ints.size(), "ints");
  EXPECT_THROW(fi.to_float("i"), dsa::Error);
  EXPECT_THROW(f.to_float("a", {3}), dsa::Error);
  EXPECT_THROW(f.to_float("zzz"), dsa::Error);
}

TEST(ModelIo, CheckpointRoundTripBitExact) {
  const fs::path dir = temp_dir("rt");
  dsa::model::Config c = micro_config();
  c.has_rope_scaling = true;
  c.rope_scaling.factor = 3.0;
  Model m(c);
  m.init_random(21);
  m.save(dir.string());
  const Model r = Model::load(dir.string());
  EXPECT_EQ(r.config().to_json(), c.to_json());
  ASSERT_EQ(r.params().size(), m.params().size());
  for (size_t p = 0; p < m.params().size(); ++p) {
    EXPECT_EQ(r.params()[p].name, m.params()[p].name);
    EXPECT_EQ(r.params()[p].shape, m.params()[p].shape);
    ASSERT_EQ(0, std::memcmp(r.params()[p].data.data(), m.params()[p].data.data(), m.params()[p].data.size() * 4));
  }
  // HF names are what is on disk
  const st::File f = st::File::open((dir / "model.safetensors").string());
  EXPECT_NE(f.find("model.layers.1.self_attn.indexer.k_norm.bias"), nullptr);
  EXPECT_NE(f.find("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), nullptr);
  EXPECT_NE(f.find("lm_head.weight"), nullptr);
  // Saving over an existing checkpoint replaces it completely and leaves no temporary directory.
  Model m2(c);
  m2.init_random(22);
  m2.save(dir.string(), Model::SaveDtype::kBf16);
  const Model r2 = Model::load(dir.string());
  for (size_t p = 0; p < m2.params().size(); ++p)
    for (size_t i = 0; i < m2.params()[p].data.size(); ++i)
      ASSERT_EQ(r2.params()[p].data[i], dsa::cpu::bf16_to_float(dsa::cpu::bf16_from_float(m2.params()[p].data[i])));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.parent_path()))
    if (e.path().filename().string().rfind(dir.filename().string(), 0) == 0) ++entries;
  EXPECT_EQ(entries, 1);
  fs::remove_all(dir);
}

TEST(ModelIo, LoadErrorsNameFileAndTensor) {
  const fs::path dir = temp_dir("bad");
  Model m(micro_config());
  m.init_random(23);
  m.save(dir.string());
  const fs::path w = dir / "model.safetensors";
  const auto bytes = read_bytes(w);
  auto expect_load_error = [&](const std::string& needle) {
    try {
      Model::load(dir.string());
      FAIL() << "loaded; expected '" << needle << "'";
    } catch (const dsa::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  {  // truncated file
    std::ofstream(w, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<long>(bytes.size() - 10));
    expect_load_error("model.safetensors");
  }
  {  // missing tensor: a file with everything but one tensor
    const st::File full = [&] {
      std::ofstream(w, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<long>(bytes.size()));
      return st::File::open(w.string());
    }();
    std::vector<st::RawTensor> raw;
    for (const auto& t : full.tensors()) {
      if (t.name == "model.layers.1.mlp.up_proj.weight") continue;
      raw.push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(full.data(t), full.data(t) + (t.end - t.begin))});
    }
    const fs::path tmp = dir / "x.tmp";
    st::write_raw(tmp.string(), raw);
    fs::rename(tmp, w);
    expect_load_error("'model.layers.1.mlp.up_proj.weight' is missing");
    // wrong shape: up_proj with its dimensions swapped
    const auto& up = m.params()[static_cast<size_t>(std::find_if(m.params().begin(), m.params().end(), [](const auto& t) {
                                                      return t.name == "model.layers.1.mlp.up_proj.weight";
                                                    }) - m.params().begin())];
    std::vector<uint8_t> ub(up.data.size() * 4);
    std::memcpy(ub.data(), up.data.data(), ub.size());
    raw.push_back({up.name, st::Dtype::kF32, {up.shape[1], up.shape[0]}, ub});
    st::write_raw(w.string(), raw);
    expect_load_error("model.layers.1.mlp.up_proj.weight': shape");
    // wrong dtype
    raw.back() = {up.name, st::Dtype::kI32, up.shape, ub};
    st::write_raw(w.string(), raw);
    expect_load_error("not a floating-point dtype");
  }
  fs::remove(dir / "config.json");
  expect_load_error("config.json");
  fs::remove_all(dir);
}

TEST(ModelIo, Fp8WeightsWithBlockScales) {
  const fs::path dir = temp_dir("fp8");
  dsa::model::Config c = micro_config();
  c.vocab_size = 200;   // lm_head [200, 16]: two 128-row scale blocks
  Model m(c);
  m.init_random(24);
  m.save(dir.string());
  const st::File f = st::File::open((dir / "model.safetensors").string());
  std::vector<st::RawTensor> raw;
  const int64_t V = c.vocab_size, D = c.hidden_size;
  std::vector<uint8_t> q(static_cast<size_t>(V * D));
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<uint8_t>((i * 37) % 0x7E);   // finite e4m3 codes
  const float scales[2] = {0.5f, 3.0f};
  for (const auto& t : f.tensors()) {
    if (t.name == "lm_head.weight") {
      raw.push_back({t.name, st::Dtype::kF8E4M3, t.shape, q});
      std::vector<uint8_t> sb(8);
      std::memcpy(sb.data(), scales, 8);
      raw.push_back({"lm_head.weight_scale_inv", st::Dtype::kF32, {2, 1}, sb});
    } else {
      raw.push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(f.data(t), f.data(t) + (t.end - t.begin))});
    }
  }
  st::write_raw((dir / "model.safetensors").string(), raw);
  Model r = Model::load(dir.string());
  const dsa::model::Tensor* lm = r.find_param("lm_head.weight");
  ASSERT_NE(lm, nullptr);
  for (int64_t i = 0; i < V; ++i)
    for (int64_t j = 0; j < D; ++j)
      ASSERT_EQ(lm->data[i * D + j], dsa::cpu::fp8_e4m3_to_float(q[i * D + j]) * scales[i / 128]) << i << "," << j;
  // without its weight_scale_inv the FP8 tensor is refused
  raw.erase(std::remove_if(raw.begin(), raw.end(), [](const auto& t) { return t.name == "lm_head.weight_scale_inv"; }), raw.end());
  st::write_raw((dir / "model.safetensors").string(), raw);
  try {
    Model::load(dir.string());
    FAIL();
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight_scale_inv"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// Hugging Face's sharded layout: the tensors split over two shards named by an index.
TEST(ModelIo, ShardedCheckpointWithIndex) {
  const fs::path dir = temp_dir("sharded");
  Model m(micro_config());
  m.init_random(25);
  m.save(dir.string());
  const fs::path single = dir / "model.safetensors";
  std::vector<st::RawTensor> shard[2];
  std::string map;
  {
    const st::File f = st::File::open(single.string());
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      const st::TensorInfo& t = f.tensors()[i];
      const int s = static_cast<int>(i % 2);
      shard[s].push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(f.data(t), f.data(t) + (t.end - t.begin))});
      map += std::string(map.empty() ? "" : ",") + "\"" + t.name + "\": \"model-0000" + std::to_string(s + 1) +
             "-of-00002.safetensors\"";
    }
  }
  fs::remove(single);
  const fs::path shard_path[2] = {dir / "model-00001-of-00002.safetensors", dir / "model-00002-of-00002.safetensors"};
  for (int s = 0; s < 2; ++s) st::write_raw(shard_path[s].string(), shard[s]);
  const fs::path index = dir / "model.safetensors.index.json";
  auto write_index = [&](const std::string& weight_map) {
    std::ofstream(index) << "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {" << weight_map << "}}";
  };
  write_index(map);
  // A stray file the index does not name is never opened (it would not even parse).
  std::ofstream(dir / "stray.safetensors") << "not a safetensors file";
  const Model r = Model::load(dir.string());
  ASSERT_EQ(r.params().size(), m.params().size());
  for (size_t p = 0; p < m.params().size(); ++p)
    ASSERT_EQ(0, std::memcmp(r.params()[p].data.data(), m.params()[p].data.data(), m.params()[p].data.size() * 4))
        << m.params()[p].name;

  auto expect_load_error = [&](const std::vector<std::string>& needles) {
    try {
      Model::load(dir.string());
      FAIL() << "loaded; expected '" << needles[0] << "'";
    } catch (const dsa::Error& e) {
      for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  };
  const std::string first = shard[0][0].name;
  // a shard the index names is missing
  fs::rename(shard_path[1], dir / "moved");
  expect_load_error({"model.safetensors.index.json", "shard 'model-00002-of-00002.safetensors'", "is missing"});
  fs::rename(dir / "moved", shard_path[1]);
  // a tensor mapped to a shard that does not hold it
  write_index(map + ",\"model.extra.weight\": \"model-00001-of-00002.safetensors\"");
  expect_load_error({"model-00001-of-00002.safetensors", "'model.extra.weight' is not in the shard"});
  // a shard name with a path
  write_index("\"" + first + "\": \"../model-00001-of-00002.safetensors\"");
  expect_load_error({"must be the file name of a shard"});
  // no weight_map
  std::ofstream(index) << "{\"metadata\": {}}";
  expect_load_error({"model.safetensors.index.json", "weight_map"});
  // a tensor the index does not map is missing, even though a shard holds it
  map.erase(0, map.find(',') + 1);
  write_index(map);
  expect_load_error({"'" + first + "' is missing"});
  // without the index, a tensor in two files is ambiguous
  fs::remove(index);
  fs::remove(dir / "stray.safetensors");
  st::write_raw((dir / "copy.safetensors").string(), {shard[0][0]});
  expect_load_error({"'" + first + "' is in both", "copy.safetensors"});
  fs::remove(dir / "copy.safetensors");
  const Model r2 = Model::load(dir.string());   // the two shards alone, found by their extension
  EXPECT_EQ(r2.params().size(), m.params().size());
  fs::remove_all(dir);
}

}  // namespace

// reliability_limits.cpp — hostile configs are refused before anything is allocated (checked int64
// sizes, a memory footprint against the limit), sessions refuse positions past the configured
// context, and the parsers are strict (duplicate JSON keys, non-finite numbers, non-finite init).
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <climits>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "dsa/model.h"
#include "model/json.h"
#include "model_util.h"

namespace {

namespace fs = std::filesystem;
using dsa::model::Config;
using dsa::model::Model;
using dsa::model::Session;
using dsa::model::SessionOptions;
using dsa::test_model::micro_config;

void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "accepted; expected an error containing '" << needles.front() << "'";
  } catch (const dsa::Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what() << " lacks " << n;
  }
}

// The memory limit of a test, restored on exit.
struct MemoryLimit {
  explicit MemoryLimit(int64_t bytes) { dsa::model::set_memory_limit(bytes); }
  ~MemoryLimit() { dsa::model::set_memory_limit(0); }
};

std::string config_json(const std::string& key, const std::string& value) {
  std::string j = micro_config().to_json();
  const std::string k = "\"" + key + "\": ";
  const size_t at = j.find(k);
  const size_t end = j.find_first_of(",\n", at + k.size());
  return j.substr(0, at + k.size()) + value + j.substr(end);
}

TEST(ReliabilityLimits, HugeConfigsAreRefusedFastNamingKeyAndBytes) {
  // 2^31 - 1 layers: refused from the config alone, in well under a second, with the numbers.
  const auto t0 = std::chrono::steady_clock::now();
  Config c = Config::from_json(config_json("num_hidden_layers", "2147483647"));
  c.first_k_dense_replace = c.num_hidden_layers;
  expect_error([&] { Model m(c); }, {"num_hidden_layers = 2147483647", "bytes", "available"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  // A size product past int64: the parameter count names the product.
  c = micro_config();
  c.hidden_size = INT_MAX;
  c.intermediate_size = INT_MAX;
  c.vocab_size = INT_MAX;
  expect_error([&] { c.validate(); }, {"overflows int64"});
  // Sums the model holds in an int (the former signed overflow of src/model/impl.h Dims).
  c = micro_config();
  c.kv_lora_rank = INT_MAX;
  expect_error([&] { c.validate(); }, {"kv_lora_rank + qk_rope_head_dim", "exceeds 2147483647"});
  c = micro_config();
  c.qk_nope_head_dim = INT_MAX - 1;
  expect_error([&] { c.validate(); }, {"qk_nope_head_dim + qk_rope_head_dim"});
  c = micro_config();
  c.num_attention_heads = 1 << 20;
  c.v_head_dim = 1 << 12;
  expect_error([&] { c.validate(); }, {"num_attention_heads x (qk_nope_head_dim + v_head_dim)"});
  // A config that fits int64 but not the memory limit: refused naming the limit's source.
  const MemoryLimit lim(1 << 20);
  c = micro_config();
  c.vocab_size = 1 << 16;
  c.hidden_size = 64;
  expect_error([&] { Model m(c); }, {"vocab_size = 65536", "set_memory_limit"});
  EXPECT_NO_THROW(Model m(micro_config()));
}

TEST(ReliabilityLimits, LoadRefusesAHugeConfigBeforeReadingWeights) {
  const fs::path dir = fs::temp_directory_path() / ("dsa_rel_load_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  Model m(micro_config());
  m.init_random(1);
  m.save(dir.string());
  std::ofstream(dir / "config.json") << config_json("num_hidden_layers", "2147483647");
  expect_error([&] { Model::load(dir.string()); }, {"num_hidden_layers = 2147483647"});
  fs::remove_all(dir);
}

TEST(ReliabilityLimits, SessionRefusesPositionsPastTheContext) {
  const Config c = micro_config();   // max_position_embeddings 64
  Model m(c);
  m.init_random(2);
  SessionOptions o;
  o.kv_format = dsa::KvCacheFormat::kFp32;
  o.max_tokens = c.max_position_embeddings + 1;
  expect_error([&] { Session s(m, o); }, {"max_tokens = 65", "max_position_embeddings = 64"});
  o.max_tokens = 0;   // the default: max_position_embeddings, so a longer prompt is refused
  Session s(m, o);
  const std::vector<int32_t> prompt(static_cast<size_t>(c.max_position_embeddings) + 1, 1);
  expect_error([&] { s.prefill(prompt, 0); }, {"65 tokens exceed max_position_embeddings = 64"});
  EXPECT_EQ(s.length(), 0);
  s.prefill(std::vector<int32_t>(prompt.begin(), prompt.end() - 1), 16);   // exactly the context fits
  EXPECT_EQ(s.length(), c.max_position_embeddings);
  expect_error([&] { s.decode(1); }, {"max_position_embeddings"});
  // Past the context only when asked for (speed measurements)
  o.max_tokens = c.max_position_embeddings + 8;
  o.allow_beyond_max_position = true;
  Session far(m, o);
  EXPECT_NO_THROW(far.prefill(prompt, 0));
}

TEST(ReliabilityLimits, SessionCachesAreCheckedAgainstTheMemoryLimit) {
  Config c = micro_config();
  c.max_position_embeddings = INT_MAX;
  Model m(c);
  m.init_random(3);
  const MemoryLimit lim(64LL << 20);
  SessionOptions o;
  o.kv_format = dsa::KvCacheFormat::kFp32;
  expect_error([&] { Session s(m, o); }, {"Session: the model and a cache of", "max_position_embeddings = 2147483647", "set_memory_limit"});
  o.max_tokens = 128;
  Session s(m, o);
  EXPECT_NO_THROW(s.prefill(std::vector<int32_t>(100, 2), 0));
}

TEST(ReliabilityLimits, FootprintAndLimitFromTheEnvironmentSyntax) {
  const auto fp = dsa::model::footprint(micro_config());
  EXPECT_EQ(fp.param_bytes % 2, 0);
  EXPECT_GE(fp.param_bytes, 8 * micro_config().num_params());
  EXPECT_EQ(fp.optimizer_bytes, 8 * micro_config().num_params());
  EXPECT_GT(fp.cache_bytes_per_token, 0);
  EXPECT_GT(fp.activation_bytes_per_token, fp.cache_bytes_per_token);
  EXPECT_GT(dsa::model::memory_limit_bytes(), 0);
  ::setenv("DSA_MAX_MEMORY", "3M", 1);
  EXPECT_EQ(dsa::model::memory_limit_bytes(), 3LL << 20);
  expect_error([] { dsa::model::check_memory(4LL << 20, "a test"); }, {"a test: 4194304 bytes (4.0 MiB) needed", "DSA_MAX_MEMORY=3M"});
  ::setenv("DSA_MAX_MEMORY", "lots", 1);
  expect_error([] { dsa::model::memory_limit_bytes(); }, {"DSA_MAX_MEMORY=lots"});
  ::unsetenv("DSA_MAX_MEMORY");
}

TEST(ReliabilityParsing, DuplicateKeysAndNonFiniteNumbersAreRefused) {
  expect_error([] { dsa::json::parse(R"({"a": 1, "b": 2, "a": 3})", "x.json"); }, {"x.json", "duplicate key \"a\""});
  expect_error([] { dsa::json::parse(R"({"o": {"k": 1, "k": 1}})", "x.json"); }, {"duplicate key \"k\""});
  EXPECT_NO_THROW(dsa::json::parse(R"({"a": {"k": 1}, "b": {"k": 1}})", "x.json"));   // same key in two objects
  std::string j = micro_config().to_json();
  j.insert(j.find("\"hidden_size\""), "\"hidden_size\": 32,\n  ");
  expect_error([&] { Config::from_json(j, "dup.json"); }, {"dup.json", "duplicate key \"hidden_size\""});
  expect_error([] { Config::from_json(config_json("rope_theta", "1e400"), "c.json"); }, {"rope_theta", "finite"});
}

TEST(ReliabilityParsing, InitThatWouldWriteNonFiniteWeightsIsRefused) {
  Config c = micro_config();
  c.initializer_range = 1e300;
  Model m(c);
  expect_error([&] { m.init_random(1); }, {"initializer_range = 1", "non-finite"});
  c.initializer_range = std::numeric_limits<double>::infinity();
  expect_error([&] { c.validate(); }, {"initializer_range"});
  c.initializer_range = 1e30;   // large but finite in fp32: accepted
  Model big(c);
  EXPECT_NO_THROW(big.init_random(1));
}

}  // namespace

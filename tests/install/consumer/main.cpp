// A downstream program on the installed library: the op contract (top-k of one causal row), then a
// model saved and loaded from disk and an inference session with default options (the cache format
// chosen from the config) whose decode step reproduces the prefill's logits bitwise.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "dsa/model.h"
#include "dsa/ops.h"
#include "dsa/tokenizer.h"

int main(int argc, char** argv) {
  const float logits[4] = {0.5f, 2.0f, -1.0f, 2.0f};
  const int32_t ks[1] = {0}, ke[1] = {4};
  int32_t idx[2] = {0, 0};
  dsa::TopkParams p;
  p.T = 1;
  p.S = 4;
  p.K = 2;
  p.logits = logits;
  p.ks = ks;
  p.ke = ke;
  p.indices = idx;
  dsa::cpu::topk_select(p);
  // Ties go to the smaller key index: 1 before 3.
  if (!(idx[0] == 1 && idx[1] == 3)) {
    std::printf("consumer: top-2 = {%d, %d} WRONG\n", idx[0], idx[1]);
    return 1;
  }

  const std::string dir = argc > 1 ? argv[1] : "consumer_model";
  dsa::model::Config c = dsa::model::Config::tiny();
  c.vocab_size = dsa::kByteVocab + 1;   // bytes + BOS
  c.index_topk = 8;                     // fewer keys than the prompt: the sparse path selects
  dsa::model::Model fresh(c);
  fresh.init_random(3);
  fresh.save(dir);
  const dsa::model::Model m = dsa::model::Model::load(dir);
  const auto tok = dsa::make_byte_tokenizer();
  const std::vector<int32_t> prompt = dsa::encode_prompt(*tok, "The pass key is 12345. Remember it.");

  dsa::model::Session a(m, dsa::model::SessionOptions{});
  const std::vector<float> all = a.prefill(prompt, 0, /*all_logits=*/true);
  dsa::model::Session b(m, dsa::model::SessionOptions{});
  b.prefill(std::vector<int32_t>(prompt.begin(), prompt.end() - 1), 7);
  const std::vector<float> last = b.decode(prompt.back());
  const size_t V = static_cast<size_t>(c.vocab_size);
  const float* want = all.data() + (prompt.size() - 1) * V;
  bool finite = true;
  for (float v : all) finite = finite && std::isfinite(v);
  const bool same = last.size() == V && std::memcmp(last.data(), want, V * sizeof(float)) == 0;
  std::printf("consumer: top-2 ok; session (%s cache) over %zu tokens: logits %s, decode %s prefill\n",
              a.options().kv_format == dsa::KvCacheFormat::kFp32 ? "fp32" : "bf16/fp8", prompt.size(), finite ? "finite" : "NOT FINITE",
              same ? "==" : "!=");
  return finite && same ? 0 : 1;
}

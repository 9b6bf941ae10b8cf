// resources.cpp — memory bounds of a config (include/dsa/model.h "Memory bounds"): what the
// parameters, caches and a training pass need, computed in checked int64 before any allocation,
// against the memory the process may use.
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <utility>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/checked_math.h"
#include "dsa/model.h"

namespace dsa::model {
namespace {

using detail::add_checked;
using detail::mul_checked;

constexpr int kTensorsPerLayer = 17;        // src/model/model.cpp Impl: the tensors of a dense layer
constexpr int kMtpTensors = 4;              // an MTP module's own: enorm, hnorm, eh_proj, shared_head.norm
constexpr int kDenseMlpTensors = 3;         // … of which gate, up, down
constexpr int kExpertTensors = 3;           // a routed or shared expert: gate, up, down
constexpr int kRouterTensors = 2;           // a MoE layer's router weight + e_score_correction_bias
constexpr int64_t kTensorBookkeeping = 256; // bytes per Tensor beyond its data (struct, name, shape)

std::atomic<int64_t> g_limit{0};            // set_memory_limit (0: none)

std::string human(int64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) v /= 1024.0, ++u;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

// "<n>[K|M|G|T]" (powers of 1024) → bytes; -1 when malformed or not positive.
int64_t parse_size(const std::string& s) {
  if (s.empty()) return -1;
  size_t used = 0;
  long double v = 0;
  try {
    v = std::stold(s, &used);
  } catch (const std::exception&) {
    return -1;
  }
  std::string unit = s.substr(used);
  if (unit.size() > 1 && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  static const std::pair<const char*, long double> kUnits[] = {{"", 1.0L}, {"K", 1024.0L}, {"M", 1048576.0L},
                                                               {"G", 1073741824.0L}, {"T", 1099511627776.0L}};
  for (const auto& [name, mul] : kUnits)
    if (unit == name || (unit.size() == 1 && std::toupper(static_cast<unsigned char>(unit[0])) == name[0])) {
      const long double b = v * mul;
      if (!(b >= 1.0L) || b > 9.0e18L) return -1;
      return static_cast<int64_t>(b);
    }
  return -1;
}

int64_t read_cgroup_limit() {
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(path);
    std::string v;
    if (in >> v && v != "max") {
      const int64_t b = parse_size(v);
      if (b > 0) return b;
    }
  }
  return 0;
}

// The limit and where it comes from.
std::pair<int64_t, std::string> limit_and_source() {
  if (const int64_t set = g_limit.load(); set > 0) return {set, "set_memory_limit"};
  if (const char* env = std::getenv("DSA_MAX_MEMORY"); env != nullptr && *env != '\0') {
    const int64_t b = parse_size(env);
    if (b <= 0) throw Error("DSA_MAX_MEMORY=" + std::string(env) + " must be a positive size in bytes (suffixes K, M, G, T)");
    return {b, "DSA_MAX_MEMORY=" + std::string(env)};
  }
  static const std::pair<int64_t, std::string> machine = [] {
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    int64_t phys = pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : INT64_MAX;
    std::string source = "the machine's physical memory; DSA_MAX_MEMORY sets a limit";
    if (const int64_t cg = read_cgroup_limit(); cg > 0 && cg < phys) {
      phys = cg;
      source = "the cgroup memory limit; DSA_MAX_MEMORY sets a limit";
    }
    return std::make_pair(phys, source);
  }();
  return machine;
}

}  // namespace

Footprint footprint(const Config& c) {
  c.validate();
  Footprint f;
  const int64_t L = c.num_hidden_layers, D = c.hidden_size, H = c.num_attention_heads, V = c.vocab_size;
  const int64_t qr = c.q_lora_rank, kvr = c.kv_lora_rank, dq = c.qk_head_dim(), Dm = c.mqa_dim();
  const int64_t dv = c.v_head_dim, F = c.intermediate_size, HI = c.index_n_heads, DI = c.index_head_dim;
  const std::string w = "config: memory footprint: ";
  const int64_t params = c.param_counts().total;   // main + the MTP modules (Model holds both)
  // a MoE layer holds the router (+ bias), the routed experts and the shared experts instead of the dense MLP
  const int64_t moe_layers = c.num_moe_layers();
  const int64_t moe_tensors = add_checked(mul_checked(kExpertTensors, c.n_routed_experts, w + "expert tensors"),
                                          kExpertTensors + kRouterTensors - kDenseMlpTensors, w + "MoE layer tensors");
  // + per MTP module: a layer and its enorm, hnorm, eh_proj, shared_head.norm
  int64_t mtp_moe_layers = 0;
  for (int k = 0; k < c.num_nextn_predict_layers; ++k) mtp_moe_layers += c.is_moe_layer(L + k) ? 1 : 0;
  const int64_t tensors = add_checked(
      add_checked(mul_checked(kTensorsPerLayer + kMtpTensors, c.num_nextn_predict_layers, w + "MTP tensors"),
                  add_checked(mul_checked(kTensorsPerLayer, L, w + "tensors"), 3, w + "tensors"), w + "tensors"),
      mul_checked(moe_tensors, moe_layers + mtp_moe_layers, w + "MoE layers x tensors"), w + "tensors");
  const int64_t one_copy = add_checked(mul_checked(params, 4, w + "parameter bytes"),
                                       mul_checked(tensors, kTensorBookkeeping, w + "tensor bookkeeping"), w + "parameter bytes");
  f.param_bytes = mul_checked(one_copy, 2, w + "parameters + gradients");
  f.optimizer_bytes = mul_checked(params, 8, w + "AdamW moments");
  f.cache_bytes_per_token = mul_checked(L, (Dm + DI) * 4, w + "num_hidden_layers x cache bytes per layer");
  // Per token and layer, the fp32 activations a training pass keeps (src/model/forward.cpp LayerActs)
  // and the indexer's per-layer buffers. Every term is a product of two ints: no overflow in int64.
  int64_t per_layer = 0;
  for (const int64_t v : {3 * D, 2 * qr, 2 * kvr, H * dq, H * Dm, H * kvr, H * dv, H, 2 * Dm, 3 * F, HI * DI, 2 * DI, HI,
                          static_cast<int64_t>(c.index_topk), static_cast<int64_t>(8)})
    per_layer = add_checked(per_layer, v, w + "activations per layer");
  int64_t layers = mul_checked(per_layer, L, w + "num_hidden_layers x activations per layer");
  if (moe_layers > 0) {
    // a MoE layer keeps, instead of the dense 3 x F: the router scores, the shared experts' 3 x Fs and
    // per routed pair the gathered row, its SwiGLU (3 x Fm) and its output
    const int64_t Fm = c.moe_intermediate_size, k = c.num_experts_per_tok;
    const int64_t moe = add_checked(add_checked(c.n_routed_experts, mul_checked(3LL * Fm, c.n_shared_experts, w + "shared experts"),
                                                w + "MoE activations"),
                                    mul_checked(k, add_checked(2 * D, 3 * Fm, w + "MoE pair"), w + "MoE pairs"), w + "MoE activations");
    layers = add_checked(layers, mul_checked(moe - 3 * F, moe_layers, w + "MoE layers x activations"), w + "activations");
  }
  const int64_t head = add_checked(mul_checked(V, 2, w + "logits"), 2 * D, w + "logits");
  f.activation_bytes_per_token = mul_checked(add_checked(layers, head, w + "activations"), 4, w + "activation bytes");
  const int64_t layer_bytes = mul_checked((params - (c.tie_word_embeddings ? 1 : 2) * V * D - D) / L, 8, w + "layer bytes");
  std::ostringstream b;
  b << "num_hidden_layers = " << L << " x " << human(layer_bytes) << " per layer + vocab_size = " << V << " x hidden_size = " << D
    << " x " << (c.tie_word_embeddings ? 1 : 2) << " embedding matrices; values and gradients in fp32";
  f.param_breakdown = b.str();
  return f;
}

InferenceCacheBytes inference_cache_bytes(const Config& c) {
  c.validate();
  InferenceCacheBytes b;
  b.fp8_mla = c.kv_lora_rank == kMlaLatentDim && c.qk_rope_head_dim == kMlaRopeDim;
  b.fp8_indexer = c.index_head_dim == kIndexerKeyDim;
  b.mla_per_layer = b.fp8_mla ? kMlaRecordBytes : static_cast<int64_t>(c.mqa_dim()) * 4;
  b.indexer_per_layer = b.fp8_indexer ? kIndexerRecordBytes : static_cast<int64_t>(c.index_head_dim) * 4;
  b.per_layer = b.mla_per_layer + b.indexer_per_layer;
  b.per_token = mul_checked(b.per_layer, c.num_hidden_layers, "config: num_hidden_layers x inference cache bytes per layer");
  return b;
}

int64_t memory_limit_bytes() { return limit_and_source().first; }

void set_memory_limit(int64_t bytes) { g_limit.store(bytes > 0 ? bytes : 0); }

void check_memory(int64_t bytes, const std::string& what) {
  const auto [limit, source] = limit_and_source();
  if (bytes <= limit) return;
  throw Error(what + ": " + std::to_string(bytes) + " bytes (" + human(bytes) + ") needed, more than the " + std::to_string(limit) +
              " bytes (" + human(limit) + ") available (" + source + ")");
}

}  // namespace dsa::model

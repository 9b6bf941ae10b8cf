// config.cpp — Config: HF config.json parsing/writing and validation (include/dsa/model.h).
#include <cmath>
#include <fstream>
#include <iomanip>
#include <limits>
#include <utility>
#include <sstream>

#include "dsa/model.h"
#include "common/checked_math.h"
#include "model/json.h"

namespace dsa::model {
namespace {

template <typename... Parts>
[[noreturn]] void fail(const std::string& label, const Parts&... parts) {
  std::ostringstream os;
  os << label << ": ";
  (os << ... << parts);
  throw Error(os.str());
}

void read_int(const json::Value& root, const char* key, int* out, const std::string& label) {
  const json::Value* v = root.get(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return;
  if (!v->is_integer() || std::fabs(v->number) > 2147483647.0) fail(label, "key '", key, "' must be an integer");
  *out = static_cast<int>(v->number);
}
void read_double(const json::Value& root, const char* key, double* out, const std::string& label) {
  const json::Value* v = root.get(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return;
  if (v->kind != json::Value::Kind::kNumber) fail(label, "key '", key, "' must be a number");
  if (!std::isfinite(v->number)) fail(label, "key '", key, "' = ", v->text, " is not a finite double");
  *out = v->number;
}
void read_bool(const json::Value& root, const char* key, bool* out, const std::string& label) {
  const json::Value* v = root.get(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return;
  if (v->kind != json::Value::Kind::kBool) fail(label, "key '", key, "' must be true or false");
  *out = v->boolean;
}

}  // namespace

Config Config::tiny() { return Config{}; }

Config Config::from_json(const std::string& text, const std::string& label) {
  const json::Value root = json::parse(text, label);
  if (root.kind != json::Value::Kind::kObject) fail(label, "top level is not a JSON object");
  Config c;
  read_int(root, "vocab_size", &c.vocab_size, label);
  read_int(root, "hidden_size", &c.hidden_size, label);
  read_int(root, "intermediate_size", &c.intermediate_size, label);
  read_int(root, "num_hidden_layers", &c.num_hidden_layers, label);
  read_int(root, "num_attention_heads", &c.num_attention_heads, label);
  read_int(root, "q_lora_rank", &c.q_lora_rank, label);
  read_int(root, "kv_lora_rank", &c.kv_lora_rank, label);
  read_int(root, "qk_nope_head_dim", &c.qk_nope_head_dim, label);
  read_int(root, "qk_rope_head_dim", &c.qk_rope_head_dim, label);
  read_int(root, "v_head_dim", &c.v_head_dim, label);
  read_int(root, "index_n_heads", &c.index_n_heads, label);
  read_int(root, "index_head_dim", &c.index_head_dim, label);
  read_int(root, "index_topk", &c.index_topk, label);
  read_double(root, "rope_theta", &c.rope_theta, label);
  read_double(root, "rms_norm_eps", &c.rms_norm_eps, label);
  read_int(root, "max_position_embeddings", &c.max_position_embeddings, label);
  // Absent first_k_dense_replace means "all layers dense" only when there are no experts.
  c.first_k_dense_replace = -1;
  read_int(root, "first_k_dense_replace", &c.first_k_dense_replace, label);
  read_int(root, "n_routed_experts", &c.n_routed_experts, label);
  if (c.first_k_dense_replace < 0) c.first_k_dense_replace = c.num_hidden_layers;
  read_bool(root, "tie_word_embeddings", &c.tie_word_embeddings, label);
  read_double(root, "initializer_range", &c.initializer_range, label);
  const json::Value* rs = root.get("rope_scaling");
  if (rs != nullptr && rs->kind != json::Value::Kind::kNull) {
    if (rs->kind != json::Value::Kind::kObject) fail(label, "key 'rope_scaling' must be an object or null");
    const json::Value* type = rs->get("type");
    if (type == nullptr) type = rs->get("rope_type");
    if (type == nullptr || type->kind != json::Value::Kind::kString || type->text != "yarn")
      fail(label, "key 'rope_scaling': only type \"yarn\" is supported");
    c.has_rope_scaling = true;
    YarnScaling& y = c.rope_scaling;
    read_double(*rs, "factor", &y.factor, label);
    read_int(*rs, "original_max_position_embeddings", &y.original_max_position, label);
    read_double(*rs, "beta_fast", &y.beta_fast, label);
    read_double(*rs, "beta_slow", &y.beta_slow, label);
    read_double(*rs, "mscale", &y.mscale, label);
    read_double(*rs, "mscale_all_dim", &y.mscale_all_dim, label);
  }
  // A V3.2 MoE config is refused for what it is before anything else is asked of it.
  if (c.n_routed_experts > 0 && c.first_k_dense_replace < c.num_hidden_layers) c.validate();
  // The keys that define the architecture have no safe default: a config that omits one is refused
  // rather than silently filled in with the tiny defaults of Config::tiny().
  static const char* const kRequired[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                          "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim",
                                          "index_topk"};
  for (const char* key : kRequired) {
    const json::Value* v = root.get(key);
    if (v == nullptr || v->kind == json::Value::Kind::kNull) fail(label, "required key '", key, "' is missing");
  }
  c.validate();
  return c;
}

Config Config::from_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("config: cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return from_json(ss.str(), path);
}

std::string Config::to_json() const {
  std::ostringstream o;
  o << std::setprecision(17);
  o << "{\n"
    << "  \"architectures\": [\"DeepseekV32ForCausalLM\"],\n"
    << "  \"model_type\": \"deepseek_v32\",\n"
    << "  \"vocab_size\": " << vocab_size << ",\n"
    << "  \"hidden_size\": " << hidden_size << ",\n"
    << "  \"intermediate_size\": " << intermediate_size << ",\n"
    << "  \"num_hidden_layers\": " << num_hidden_layers << ",\n"
    << "  \"num_attention_heads\": " << num_attention_heads << ",\n"
    << "  \"num_key_value_heads\": " << num_attention_heads << ",\n"
    << "  \"q_lora_rank\": " << q_lora_rank << ",\n"
    << "  \"kv_lora_rank\": " << kv_lora_rank << ",\n"
    << "  \"qk_nope_head_dim\": " << qk_nope_head_dim << ",\n"
    << "  \"qk_rope_head_dim\": " << qk_rope_head_dim << ",\n"
    << "  \"v_head_dim\": " << v_head_dim << ",\n"
    << "  \"index_n_heads\": " << index_n_heads << ",\n"
    << "  \"index_head_dim\": " << index_head_dim << ",\n"
    << "  \"index_topk\": " << index_topk << ",\n"
    << "  \"rope_theta\": " << rope_theta << ",\n";
  if (has_rope_scaling) {
    o << "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": " << rope_scaling.factor
      << ", \"original_max_position_embeddings\": " << rope_scaling.original_max_position
      << ", \"beta_fast\": " << rope_scaling.beta_fast << ", \"beta_slow\": " << rope_scaling.beta_slow
      << ", \"mscale\": " << rope_scaling.mscale << ", \"mscale_all_dim\": " << rope_scaling.mscale_all_dim << "},\n";
  } else {
    o << "  \"rope_scaling\": null,\n";
  }
  o << "  \"rms_norm_eps\": " << rms_norm_eps << ",\n"
    << "  \"max_position_embeddings\": " << max_position_embeddings << ",\n"
    << "  \"first_k_dense_replace\": " << first_k_dense_replace << ",\n"
    << "  \"n_routed_experts\": " << n_routed_experts << ",\n"
    << "  \"tie_word_embeddings\": " << (tie_word_embeddings ? "true" : "false") << ",\n"
    << "  \"initializer_range\": " << initializer_range << "\n"
    << "}\n";
  return o.str();
}

void Config::validate() const {
  auto positive = [](long long v, const char* key) {
    if (v <= 0) fail("config", "key '", key, "' = ", v, " must be > 0");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(q_lora_rank, "q_lora_rank");
  positive(kv_lora_rank, "kv_lora_rank");
  positive(qk_nope_head_dim, "qk_nope_head_dim");
  positive(qk_rope_head_dim, "qk_rope_head_dim");
  positive(v_head_dim, "v_head_dim");
  positive(index_n_heads, "index_n_heads");
  positive(index_head_dim, "index_head_dim");
  positive(index_topk, "index_topk");
  positive(max_position_embeddings, "max_position_embeddings");
  // Sizes derived from two keys that the model code holds in an int (src/model/impl.h Dims, the op
  // parameters): each must fit, computed in int64 (two positive ints never overflow it).
  const int64_t H = num_attention_heads, dn = qk_nope_head_dim, dr = qk_rope_head_dim, dv = v_head_dim;
  const int64_t kvr = kv_lora_rank;
  const std::pair<int64_t, const char*> derived[] = {
      {dn + dr, "qk_nope_head_dim + qk_rope_head_dim"},
      {kvr + dr, "kv_lora_rank + qk_rope_head_dim"},
      {H * (dn + dr), "num_attention_heads x (qk_nope_head_dim + qk_rope_head_dim)"},
      {H * (dn + dv), "num_attention_heads x (qk_nope_head_dim + v_head_dim)"},
      {H * (kvr + dr), "num_attention_heads x (kv_lora_rank + qk_rope_head_dim)"},
      {H * dv, "num_attention_heads x v_head_dim"},
      {static_cast<int64_t>(index_n_heads) * index_head_dim, "index_n_heads x index_head_dim"},
  };
  for (const auto& [v, what] : derived)
    if (v > std::numeric_limits<int>::max()) fail("config", what, " = ", v, " exceeds 2147483647");
  if (qk_rope_head_dim % 2 != 0) fail("config", "key 'qk_rope_head_dim' = ", qk_rope_head_dim, " must be even");
  if ((index_head_dim & (index_head_dim - 1)) != 0)
    fail("config", "key 'index_head_dim' = ", index_head_dim, " must be a power of two (Hadamard transform)");
  if (index_head_dim < qk_rope_head_dim)
    fail("config", "key 'index_head_dim' = ", index_head_dim, " must be >= qk_rope_head_dim = ", qk_rope_head_dim);
  if (index_topk > kMaxTopK) fail("config", "key 'index_topk' = ", index_topk, " exceeds kMaxTopK = ", kMaxTopK);
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) fail("config", "key 'rope_theta' = ", rope_theta, " must be finite and > 0");
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps))
    fail("config", "key 'rms_norm_eps' = ", rms_norm_eps, " must be finite and > 0");
  if (!(initializer_range >= 0) || !std::isfinite(initializer_range))
    fail("config", "key 'initializer_range' = ", initializer_range, " must be finite and >= 0");
  if (first_k_dense_replace < num_hidden_layers && n_routed_experts > 0)
    fail("config", "MoE layers are not supported: first_k_dense_replace = ", first_k_dense_replace,
         " < num_hidden_layers = ", num_hidden_layers, " with n_routed_experts = ", n_routed_experts,
         " (this implementation has dense SwiGLU MLP layers only; set first_k_dense_replace = num_hidden_layers)");
  if (has_rope_scaling && rope_scaling.factor > 1.0 && rope_scaling.original_max_position <= 0)
    fail("config", "key 'rope_scaling.original_max_position_embeddings' must be > 0");
  if (has_rope_scaling) {
    const std::pair<double, const char*> yarn[] = {{rope_scaling.factor, "factor"},       {rope_scaling.beta_fast, "beta_fast"},
                                                   {rope_scaling.beta_slow, "beta_slow"}, {rope_scaling.mscale, "mscale"},
                                                   {rope_scaling.mscale_all_dim, "mscale_all_dim"}};
    for (const auto& [v, key] : yarn)
      if (!std::isfinite(v)) fail("config", "key 'rope_scaling.", key, "' = ", v, " is not finite");
  }
  num_params();   // the parameter count fits int64 (throws naming the product otherwise)
}

float Config::softmax_scale() const {
  double mscale = 1.0;
  if (has_rope_scaling && rope_scaling.factor > 1.0) mscale = cpu::yarn_softmax_mscale(rope_scaling);
  return static_cast<float>(std::pow(static_cast<double>(qk_head_dim()), -0.5) * mscale * mscale);
}

int64_t Config::num_params() const {
  using detail::add_checked;
  using detail::mul_checked;
  const int64_t D = hidden_size, H = num_attention_heads, qr = q_lora_rank, kvr = kv_lora_rank;
  const int64_t HI = index_n_heads, DI = index_head_dim, F = intermediate_size, V = vocab_size;
  const std::string w = "config: parameter count: ";
  // Each term: [rows, cols] of one tensor of a layer (1-D tensors: cols = 1).
  const std::pair<int64_t, int64_t> layer[] = {
      {D, 1},                                         // input_layernorm
      {qr, D}, {qr, 1},                               // q_a_proj, q_a_layernorm
      {H * qk_head_dim(), qr},                        // q_b_proj
      {mqa_dim(), D}, {kvr, 1},                       // kv_a_proj_with_mqa, kv_a_layernorm
      {H * (qk_nope_head_dim + static_cast<int64_t>(v_head_dim)), kvr},   // kv_b_proj
      {D, H * v_head_dim},                            // o_proj
      {HI * DI, qr}, {DI, D}, {2 * DI, 1}, {HI, D},   // indexer wq_b, wk, k_norm, weights_proj
      {D, 1},                                         // post_attention_layernorm
      {F, D}, {F, D}, {D, F},                         // gate, up, down
  };
  int64_t per_layer = 0;
  for (const auto& [r, c] : layer) per_layer = add_checked(per_layer, mul_checked(r, c, w + "a layer tensor"), w + "one layer");
  int64_t total = mul_checked(per_layer, num_hidden_layers, w + "num_hidden_layers x parameters per layer");
  const int64_t embed = mul_checked(V, D, w + "vocab_size x hidden_size");
  total = add_checked(total, embed, w + "layers + embed_tokens");
  total = add_checked(total, D, w + "+ model.norm");
  if (!tie_word_embeddings) total = add_checked(total, embed, w + "+ lm_head");
  return total;
}

}  // namespace dsa::model

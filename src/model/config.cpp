// config.cpp — Config: HF config.json parsing/writing and validation (include/dsa/model.h).
#include <algorithm>
#include <cmath>
#include <initializer_list>
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

void read_string(const json::Value& root, const char* key, std::string* out, const std::string& label) {
  const json::Value* v = root.get(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return;
  if (v->kind != json::Value::Kind::kString) fail(label, "key '", key, "' must be a string");
  *out = v->text;
}

// "quantization_config": {"quant_method", "fmt", "activation_scheme", "weight_block_size": [r, c],
// "scale_fmt"}; other keys ignored, values checked by validate().
void read_quantization(const json::Value& root, Config::Quantization* q, const std::string& label) {
  const json::Value* v = root.get("quantization_config");
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return;
  if (v->kind != json::Value::Kind::kObject) fail(label, "key 'quantization_config' must be an object or null");
  q->present = true;
  read_string(*v, "quant_method", &q->quant_method, label);
  read_string(*v, "fmt", &q->fmt, label);
  read_string(*v, "activation_scheme", &q->activation_scheme, label);
  read_string(*v, "scale_fmt", &q->scale_fmt, label);
  const json::Value* b = v->get("weight_block_size");
  if (b != nullptr && b->kind != json::Value::Kind::kNull) {
    if (b->kind != json::Value::Kind::kArray || b->items.size() != 2 || !b->items[0].is_integer() || !b->items[1].is_integer() ||
        std::fabs(b->items[0].number) > 2147483647.0 || std::fabs(b->items[1].number) > 2147483647.0)
      fail(label, "key 'quantization_config.weight_block_size' must be an array of two integers");
    q->block_rows = static_cast<int>(b->items[0].number);
    q->block_cols = static_cast<int>(b->items[1].number);
  }
}

// MoE layers among layer indices [begin, end), in closed form (the counts come from a file: no loop
// over them): the multiples of moe_layer_freq in [max(begin, first_k_dense_replace), end).
int64_t moe_layers_in(const Config& c, int64_t begin, int64_t end) {
  if (c.n_routed_experts <= 0 || c.moe_layer_freq <= 0) return 0;
  const int64_t a = std::max<int64_t>(begin, std::max(c.first_k_dense_replace, 0));
  if (a >= end) return 0;
  const int64_t f = c.moe_layer_freq;
  const auto below = [f](int64_t n) { return (n + f - 1) / f; };   // multiples of f in [0, n), n >= 0
  return below(end) - below(a);
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
  // Absent first_k_dense_replace: num_hidden_layers (every layer dense, MoE keys or not).
  c.first_k_dense_replace = -1;
  read_int(root, "first_k_dense_replace", &c.first_k_dense_replace, label);
  const json::Value* fkd = root.get("first_k_dense_replace");
  if (fkd != nullptr && fkd->kind != json::Value::Kind::kNull && c.first_k_dense_replace < 0)
    fail(label, "key 'first_k_dense_replace' = ", c.first_k_dense_replace, " must be >= 0");
  if (c.first_k_dense_replace < 0) c.first_k_dense_replace = c.num_hidden_layers;
  read_int(root, "n_routed_experts", &c.n_routed_experts, label);
  read_int(root, "n_shared_experts", &c.n_shared_experts, label);
  read_int(root, "num_experts_per_tok", &c.num_experts_per_tok, label);
  read_int(root, "moe_intermediate_size", &c.moe_intermediate_size, label);
  read_int(root, "moe_layer_freq", &c.moe_layer_freq, label);
  read_int(root, "n_group", &c.n_group, label);
  read_int(root, "topk_group", &c.topk_group, label);
  read_double(root, "routed_scaling_factor", &c.routed_scaling_factor, label);
  read_bool(root, "norm_topk_prob", &c.norm_topk_prob, label);
  read_string(root, "scoring_func", &c.scoring_func, label);
  read_string(root, "topk_method", &c.topk_method, label);
  read_int(root, "ep_size", &c.ep_size, label);
  read_int(root, "num_nextn_predict_layers", &c.num_nextn_predict_layers, label);
  read_quantization(root, &c.quantization, label);
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
  // With MoE layers, the expert width and the routed experts per token have no safe default either.
  if (c.n_routed_experts > 0 && c.num_moe_layers() > 0)
    for (const char* key : {"moe_intermediate_size", "num_experts_per_tok"}) {
      const json::Value* v = root.get(key);
      if (v == nullptr || v->kind == json::Value::Kind::kNull)
        fail(label, "required key '", key, "' is missing (n_routed_experts = ", c.n_routed_experts, " with first_k_dense_replace = ",
             c.first_k_dense_replace, " < num_hidden_layers = ", c.num_hidden_layers, ": the config has MoE layers)");
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
    << "  \"n_routed_experts\": " << n_routed_experts << ",\n";
  if (n_routed_experts > 0) {
    o << "  \"n_shared_experts\": " << n_shared_experts << ",\n"
      << "  \"num_experts_per_tok\": " << num_experts_per_tok << ",\n"
      << "  \"moe_intermediate_size\": " << moe_intermediate_size << ",\n"
      << "  \"moe_layer_freq\": " << moe_layer_freq << ",\n"
      << "  \"n_group\": " << n_group << ",\n"
      << "  \"topk_group\": " << topk_group << ",\n"
      << "  \"routed_scaling_factor\": " << routed_scaling_factor << ",\n"
      << "  \"norm_topk_prob\": " << (norm_topk_prob ? "true" : "false") << ",\n"
      << "  \"scoring_func\": \"" << scoring_func << "\",\n"     // validate() admits fixed words only
      << "  \"topk_method\": \"" << topk_method << "\",\n"
      << "  \"ep_size\": " << ep_size << ",\n";
  }
  if (num_nextn_predict_layers > 0) o << "  \"num_nextn_predict_layers\": " << num_nextn_predict_layers << ",\n";
  if (quantization.present) {
    o << "  \"quantization_config\": {\"quant_method\": \"" << quantization.quant_method << "\", \"fmt\": \"" << quantization.fmt
      << "\", \"activation_scheme\": \"" << quantization.activation_scheme << "\", \"weight_block_size\": [" << quantization.block_rows
      << ", " << quantization.block_cols << "]";
    if (!quantization.scale_fmt.empty()) o << ", \"scale_fmt\": \"" << quantization.scale_fmt << "\"";
    o << "},\n";
  }
  o
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
  const std::pair<int, const char*> non_negative[] = {{first_k_dense_replace, "first_k_dense_replace"},
                                                      {n_routed_experts, "n_routed_experts"},
                                                      {n_shared_experts, "n_shared_experts"},
                                                      {num_nextn_predict_layers, "num_nextn_predict_layers"}};
  for (const auto& [v, key] : non_negative)
    if (v < 0) fail("config", "key '", key, "' = ", v, " must be >= 0");
  positive(moe_layer_freq, "moe_layer_freq");
  // The routing words are checked even without MoE layers: to_json writes them between quotes.
  if (scoring_func != "sigmoid" && scoring_func != "softmax")
    fail("config", "key 'scoring_func' = \"", scoring_func, "\" is not supported (\"sigmoid\" or \"softmax\")");
  if (topk_method != "noaux_tc" && topk_method != "group_limited_greedy" && topk_method != "greedy")
    fail("config", "key 'topk_method' = \"", topk_method, "\" is not a known routing (\"noaux_tc\", \"group_limited_greedy\" or \"greedy\")");
  positive(ep_size, "ep_size");
  if (moe_layers_in(*this, 0, static_cast<int64_t>(num_hidden_layers) + num_nextn_predict_layers) > 0) {
    // The routing keys of the MoE layers (main or MTP): DeepSeekMoE's gate picks topk_group of the
    // n_group expert groups per token, then num_experts_per_tok experts inside them.
    positive(moe_intermediate_size, "moe_intermediate_size");
    positive(num_experts_per_tok, "num_experts_per_tok");
    positive(n_group, "n_group");
    positive(topk_group, "topk_group");
    if (num_experts_per_tok > n_routed_experts)
      fail("config", "key 'num_experts_per_tok' = ", num_experts_per_tok, " must be <= n_routed_experts = ", n_routed_experts);
    if (topk_group > n_group) fail("config", "key 'topk_group' = ", topk_group, " must be <= n_group = ", n_group);
    if (n_routed_experts % n_group != 0)
      fail("config", "key 'n_routed_experts' = ", n_routed_experts, " must be divisible by n_group = ", n_group);
    if (n_routed_experts % ep_size != 0)
      fail("config", "key 'n_routed_experts' = ", n_routed_experts, " must be divisible by ep_size = ", ep_size);
    if (topk_method != "greedy") {
      const int64_t reachable = static_cast<int64_t>(topk_group) * (n_routed_experts / n_group);
      if (num_experts_per_tok > reachable)
        fail("config", "key 'num_experts_per_tok' = ", num_experts_per_tok, " exceeds the ", reachable,
             " experts of the topk_group = ", topk_group, " groups routing keeps (n_routed_experts / n_group = ",
             n_routed_experts / n_group, " per group)");
      if (topk_method == "noaux_tc" && n_routed_experts / n_group < 2)
        fail("config", "key 'n_group' = ", n_group, ": topk_method \"noaux_tc\" scores a group by its two best experts, so each of the ",
             n_group, " groups needs >= 2 of the n_routed_experts = ", n_routed_experts);
    }
    if (!(routed_scaling_factor > 0) || !std::isfinite(routed_scaling_factor))
      fail("config", "key 'routed_scaling_factor' = ", routed_scaling_factor, " must be finite and > 0");
    if (static_cast<int64_t>(n_shared_experts) * moe_intermediate_size > std::numeric_limits<int>::max())
      fail("config", "n_shared_experts x moe_intermediate_size = ", static_cast<int64_t>(n_shared_experts) * moe_intermediate_size,
           " exceeds 2147483647");
  }
  if (quantization.present) {
    const Quantization& q = quantization;
    if (q.quant_method != "fp8")
      fail("config", "key 'quantization_config.quant_method' = \"", q.quant_method, "\" is not supported (\"fp8\")");
    if (q.fmt != "e4m3") fail("config", "key 'quantization_config.fmt' = \"", q.fmt, "\" is not supported (\"e4m3\")");
    if (q.activation_scheme != "dynamic" && q.activation_scheme != "static")
      fail("config", "key 'quantization_config.activation_scheme' = \"", q.activation_scheme, "\" is not \"dynamic\" or \"static\"");
    if (!q.scale_fmt.empty() && q.scale_fmt != "ue8m0")
      fail("config", "key 'quantization_config.scale_fmt' = \"", q.scale_fmt, "\" is not supported (\"ue8m0\" or absent)");
    if (q.block_rows <= 0 || q.block_cols <= 0)
      fail("config", "key 'quantization_config.weight_block_size' = [", q.block_rows, ", ", q.block_cols, "] must be positive");
  }
  if (has_rope_scaling && rope_scaling.factor > 1.0 && rope_scaling.original_max_position <= 0)
    fail("config", "key 'rope_scaling.original_max_position_embeddings' must be > 0");
  if (has_rope_scaling) {
    const std::pair<double, const char*> yarn[] = {{rope_scaling.factor, "factor"},       {rope_scaling.beta_fast, "beta_fast"},
                                                   {rope_scaling.beta_slow, "beta_slow"}, {rope_scaling.mscale, "mscale"},
                                                   {rope_scaling.mscale_all_dim, "mscale_all_dim"}};
    for (const auto& [v, key] : yarn)
      if (!std::isfinite(v)) fail("config", "key 'rope_scaling.", key, "' = ", v, " is not finite");
  }
  param_counts();   // the parameter counts fit int64 (throws naming the product otherwise)
}

bool Config::is_moe_layer(int64_t layer) const {
  return n_routed_experts > 0 && layer >= first_k_dense_replace && moe_layer_freq > 0 && layer % moe_layer_freq == 0;
}

int Config::num_moe_layers() const { return static_cast<int>(moe_layers_in(*this, 0, num_hidden_layers)); }

float Config::softmax_scale() const {
  double mscale = 1.0;
  if (has_rope_scaling && rope_scaling.factor > 1.0) mscale = cpu::yarn_softmax_mscale(rope_scaling);
  return static_cast<float>(std::pow(static_cast<double>(qk_head_dim()), -0.5) * mscale * mscale);
}

int64_t Config::num_params() const { return param_counts().main; }

Config::ParamCounts Config::param_counts() const {
  using detail::add_checked;
  using detail::mul_checked;
  const int64_t D = hidden_size, H = num_attention_heads, qr = q_lora_rank, kvr = kv_lora_rank;
  const int64_t HI = index_n_heads, DI = index_head_dim, F = intermediate_size, V = vocab_size;
  const std::string w = "config: parameter count: ";
  // Σ rows x cols over [rows, cols] tensors (1-D tensors: cols = 1).
  const auto sum = [&](std::initializer_list<std::pair<int64_t, int64_t>> tensors, const std::string& what) {
    int64_t n = 0;
    for (const auto& [r, c] : tensors) n = add_checked(n, mul_checked(r, c, w + what + " tensor"), w + what);
    return n;
  };
  const int64_t attention = sum({{D, 1},                                    // input_layernorm
                                 {qr, D}, {qr, 1},                          // q_a_proj, q_a_layernorm
                                 {H * qk_head_dim(), qr},                   // q_b_proj
                                 {mqa_dim(), D}, {kvr, 1},                  // kv_a_proj_with_mqa, kv_a_layernorm
                                 {H * (qk_nope_head_dim + static_cast<int64_t>(v_head_dim)), kvr},   // kv_b_proj
                                 {D, H * v_head_dim},                       // o_proj
                                 {D, 1}},                                   // post_attention_layernorm
                                "attention");
  const int64_t indexer = sum({{HI * DI, qr}, {DI, D}, {2 * DI, 1}, {HI, D}}, "indexer");   // wq_b, wk, k_norm, weights_proj
  const int64_t dense_mlp = mul_checked(mul_checked(F, D, w + "intermediate_size x hidden_size"), 3, w + "dense MLP (gate, up, down)");
  // One MoE layer: routed and shared experts (gate, up, down of moe_intermediate_size each), the
  // router weight [n_routed_experts, D] and, with noaux_tc, its e_score_correction_bias.
  const int64_t expert = mul_checked(mul_checked(moe_intermediate_size, D, w + "moe_intermediate_size x hidden_size"), 3,
                                     w + "one expert (gate, up, down)");
  const int64_t router = add_checked(mul_checked(n_routed_experts, D, w + "router weight"),
                                     topk_method == "noaux_tc" ? n_routed_experts : 0, w + "router");
  const int64_t shared = add_checked(mul_checked(expert, n_shared_experts, w + "n_shared_experts x expert"), router, w + "MoE layer");
  const int64_t moe_layer = add_checked(mul_checked(expert, n_routed_experts, w + "n_routed_experts x expert"), shared, w + "MoE layer");
  const int64_t moe_layer_active =
      add_checked(mul_checked(expert, std::min(num_experts_per_tok, n_routed_experts), w + "num_experts_per_tok x expert"), shared,
                  w + "activated MoE layer");

  ParamCounts p;
  p.moe_layers = num_moe_layers();
  p.dense_layers = num_hidden_layers - p.moe_layers;
  p.mtp_layers = num_nextn_predict_layers;
  p.embedding = mul_checked(V, D, w + "vocab_size x hidden_size");
  p.lm_head = tie_word_embeddings ? 0 : p.embedding;
  p.attention = mul_checked(attention, num_hidden_layers, w + "num_hidden_layers x attention");
  p.indexer = mul_checked(indexer, num_hidden_layers, w + "num_hidden_layers x indexer");
  p.dense_mlp = mul_checked(dense_mlp, p.dense_layers, w + "dense layers x dense MLP");
  p.moe = mul_checked(moe_layer, p.moe_layers, w + "MoE layers x MoE layer");
  p.moe_activated = mul_checked(moe_layer_active, p.moe_layers, w + "MoE layers x activated MoE layer");
  int64_t common = add_checked(p.embedding, p.lm_head, w + "embeddings");
  common = add_checked(common, D, w + "+ model.norm");
  common = add_checked(common, p.attention, w + "+ attention");
  common = add_checked(common, p.indexer, w + "+ indexer");
  common = add_checked(common, p.dense_mlp, w + "+ dense MLP");
  p.main = add_checked(common, p.moe, w + "main model");
  p.main_activated = add_checked(common, p.moe_activated, w + "activated main model");
  // MTP module j (checkpoint layer num_hidden_layers + j): a full layer, MoE or dense by its index,
  // plus enorm, hnorm [D], eh_proj [D, 2D] and shared_head.norm [D].
  const int64_t mtp_extra = sum({{D, 1}, {D, 1}, {D, 2 * D}, {D, 1}}, "MTP enorm, hnorm, eh_proj, shared_head.norm");
  const int64_t mtp_moe = moe_layers_in(*this, num_hidden_layers, static_cast<int64_t>(num_hidden_layers) + num_nextn_predict_layers);
  const int64_t mtp_dense = num_nextn_predict_layers - mtp_moe;
  const int64_t mtp_base = add_checked(add_checked(attention, indexer, w + "MTP layer"), mtp_extra, w + "MTP layer");
  const auto mtp_sum = [&](int64_t moe_params) {
    return add_checked(add_checked(mul_checked(mtp_base, num_nextn_predict_layers, w + "num_nextn_predict_layers x MTP layer"),
                                   mul_checked(dense_mlp, mtp_dense, w + "dense MTP layers x dense MLP"), w + "MTP modules"),
                       mul_checked(moe_params, mtp_moe, w + "MoE MTP layers x MoE layer"), w + "MTP modules");
  };
  p.mtp = mtp_sum(moe_layer);
  p.mtp_activated = mtp_sum(moe_layer_active);
  p.mtp_stored_copies = mul_checked(mul_checked(p.embedding, 2, w + "MTP embed_tokens + shared_head.head"), num_nextn_predict_layers,
                                    w + "num_nextn_predict_layers x (embed_tokens + shared_head.head)");
  p.total = add_checked(p.main, p.mtp, w + "main + MTP");
  p.activated = add_checked(p.main_activated, p.mtp_activated, w + "activated main + MTP");
  p.stored = add_checked(p.total, p.mtp_stored_copies, w + "stored");
  return p;
}

}  // namespace dsa::model

// model.cpp — Model: parameter table with Hugging Face names, random init, checkpoint save/load
// (safetensors, F32/BF16/F8_E4M3 + weight_scale_inv), sampling.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "common/file_io.h"
#include "dsa/safetensors.h"
#include "model/checkpoint_files.h"
#include "model/exec.h"
#include "model/impl.h"

namespace dsa::model {
namespace fs = std::filesystem;
namespace st = dsa::safetensors;

namespace {

constexpr int kWeightScaleBlock = 128;   // V3 FP8 weights: one weight_scale_inv per 128×128 block
constexpr const char* kWeightsFile = "model.safetensors";
constexpr const char* kConfigFile = "config.json";
// Checkpoint copies of the shared tensors under each MTP module's prefix (mtp_prefix)
constexpr const char* kMtpEmbedCopy = "embed_tokens.weight";
constexpr const char* kMtpHeadCopy = "shared_head.head.weight";

std::string mtp_prefix(const Config& c, int k) { return "model.layers." + std::to_string(c.num_hidden_layers + k) + "."; }

}  // namespace

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (const int64_t s : shape) n *= s;
  return n;
}

Model::Impl::Impl(const Config& c) : cfg(c), host_pool(std::make_shared<HostPool>()) {
  cfg.validate();
  const Footprint fp = footprint(cfg);   // refused here, before the first allocation, when it cannot fit
  check_memory(fp.param_bytes, "model: parameters and gradients (" + fp.param_breakdown + ")");
  const Dims d(cfg);
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    Tensor t{name, std::move(shape), {}};
    t.data.assign(static_cast<size_t>(t.numel()), 0.0f);
    params.push_back(t);
    return static_cast<int>(params.size() - 1);
  };
  // One decoder layer's tensors under model.layers.{l}. (main layer, or an MTP module's layer)
  auto add_layer = [&](int l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    LayerParams lp{};
    lp.input_norm = add(p + "input_layernorm.weight", {d.D});
    lp.q_a = add(a + "q_a_proj.weight", {d.qr, d.D});
    lp.q_a_norm = add(a + "q_a_layernorm.weight", {d.qr});
    lp.q_b = add(a + "q_b_proj.weight", {static_cast<int64_t>(d.H) * d.dq, d.qr});
    lp.kv_a = add(a + "kv_a_proj_with_mqa.weight", {d.Dm, d.D});
    lp.kv_a_norm = add(a + "kv_a_layernorm.weight", {d.kvr});
    lp.kv_b = add(a + "kv_b_proj.weight", {static_cast<int64_t>(d.H) * (d.dn + d.dv), d.kvr});
    lp.o = add(a + "o_proj.weight", {d.D, static_cast<int64_t>(d.H) * d.dv});
    lp.idx_wq = add(a + "indexer.wq_b.weight", {static_cast<int64_t>(d.HI) * d.DI, d.qr});
    lp.idx_wk = add(a + "indexer.wk.weight", {d.DI, d.D});
    lp.idx_norm_w = add(a + "indexer.k_norm.weight", {d.DI});
    lp.idx_norm_b = add(a + "indexer.k_norm.bias", {d.DI});
    lp.idx_w = add(a + "indexer.weights_proj.weight", {d.HI, d.D});
    lp.post_norm = add(p + "post_attention_layernorm.weight", {d.D});
    if (cfg.is_moe_layer(l)) {
      // DeepSeekMoE: router (+ its bias with noaux_tc), routed experts, shared experts (HF names)
      const int64_t E = cfg.n_routed_experts, Fm = cfg.moe_intermediate_size;
      const int64_t Fs = static_cast<int64_t>(cfg.n_shared_experts) * Fm;
      lp.moe = true;
      lp.router = add(p + "mlp.gate.weight", {E, d.D});
      if (cfg.topk_method == "noaux_tc") lp.router_bias = add(p + "mlp.gate.e_score_correction_bias", {E});
      for (int e = 0; e < cfg.n_routed_experts; ++e) {
        const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
        const int g = add(x + "gate_proj.weight", {Fm, d.D});
        if (e == 0) lp.expert0 = g;
        add(x + "up_proj.weight", {Fm, d.D});
        add(x + "down_proj.weight", {d.D, Fm});
      }
      if (Fs > 0) {
        lp.shared_gate = add(p + "mlp.shared_experts.gate_proj.weight", {Fs, d.D});
        lp.shared_up = add(p + "mlp.shared_experts.up_proj.weight", {Fs, d.D});
        lp.shared_down = add(p + "mlp.shared_experts.down_proj.weight", {d.D, Fs});
      }
    } else {
      lp.gate = add(p + "mlp.gate_proj.weight", {d.F, d.D});
      lp.up = add(p + "mlp.up_proj.weight", {d.F, d.D});
      lp.down = add(p + "mlp.down_proj.weight", {d.D, d.F});
    }
    layers.push_back(lp);
  };
  embed = add("model.embed_tokens.weight", {d.V, d.D});
  for (int l = 0; l < cfg.num_hidden_layers; ++l) add_layer(l);
  final_norm = add("model.norm.weight", {d.D});
  lm_head = cfg.tie_word_embeddings ? embed : add("lm_head.weight", {d.V, d.D});
  first_mtp_param = static_cast<int>(params.size());
  for (int k = 0; k < cfg.num_nextn_predict_layers; ++k) {
    const std::string p = mtp_prefix(cfg, k);
    MtpParams mp{};
    mp.enorm = add(p + "enorm.weight", {d.D});
    mp.hnorm = add(p + "hnorm.weight", {d.D});
    mp.eh_proj = add(p + "eh_proj.weight", {d.D, 2LL * d.D});
    add_layer(cfg.num_hidden_layers + k);
    mp.head_norm = add(p + "shared_head.norm.weight", {d.D});
    mtp.push_back(mp);
  }
  grads = params;
  inv_freq.assign(static_cast<size_t>(d.dr / 2), 0.0f);
  YarnScaling yarn = cfg.rope_scaling;
  if (!cfg.has_rope_scaling) yarn.factor = 1.0;
  cpu::rope_inv_freq(d.dr, cfg.rope_theta, yarn, inv_freq.data());
  scale = cfg.softmax_scale();
}

namespace {
std::unique_ptr<Model::Impl> make_impl(const Config& config) {
  try {
    return std::make_unique<Model::Impl>(config);
  } catch (const std::bad_alloc&) {
    throw Error("model: out of memory allocating " + std::to_string(footprint(config).param_bytes) +
                " bytes of parameters and gradients (" + footprint(config).param_breakdown + ")");
  }
}
}  // namespace

Model::Model(const Config& config) : impl_(make_impl(config)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const Config& Model::config() const { return impl_->cfg; }
std::vector<Tensor>& Model::params() { return impl_->params; }
const std::vector<Tensor>& Model::params() const { return impl_->params; }
std::vector<Tensor>& Model::grads() { return impl_->grads; }

Tensor* Model::find_param(const std::string& name) {
  for (Tensor& t : impl_->params)
    if (t.name == name) return &t;
  return nullptr;
}

size_t Model::first_mtp_param() const { return static_cast<size_t>(impl_->first_mtp_param); }

bool Model::is_indexer_param(const std::string& name) { return name.find(".self_attn.indexer.") != std::string::npos; }

void Model::init_random(uint64_t seed, double shared_embedding) {
  if (!(shared_embedding >= 0) || !std::isfinite(shared_embedding))
    throw Error("init_random: shared_embedding = " + std::to_string(shared_embedding) + " must be a finite number >= 0");
  impl_->weight_dtype = WeightDtype::kF32;
  std::mt19937_64 rng(seed);
  const Config& c = impl_->cfg;
  const double sigma = c.initializer_range;
  const double resid_sigma = sigma / std::sqrt(2.0 * c.num_hidden_layers);
  for (Tensor& t : impl_->params) {
    const bool is_norm = t.shape.size() == 1;
    if (is_norm) {
      // biases (k_norm.bias, the router's e_score_correction_bias) start at 0, norm weights at 1
      const bool is_bias = t.name.size() >= 4 && t.name.compare(t.name.size() - 4, 4, "bias") == 0;
      std::fill(t.data.begin(), t.data.end(), is_bias ? 0.0f : 1.0f);
      continue;
    }
    const bool resid = t.name.find("o_proj") != std::string::npos || t.name.find("down_proj") != std::string::npos;
    std::normal_distribution<double> nd(0.0, resid ? resid_sigma : sigma);
    for (float& v : t.data) v = static_cast<float>(nd(rng));
  }
  if (shared_embedding > 0) {
    Tensor& e = impl_->params[static_cast<size_t>(impl_->embed)];
    const int64_t rows = e.shape[0], cols = e.shape[1];
    std::normal_distribution<double> nd(0.0, shared_embedding * sigma);
    std::vector<float> common(static_cast<size_t>(cols));
    for (float& v : common) v = static_cast<float>(nd(rng));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) e.data[static_cast<size_t>(r * cols + j)] += common[static_cast<size_t>(j)];
  }
  // A draw that does not fit fp32 (initializer_range near FLT_MAX) would give a model that load() refuses.
  for (const Tensor& t : impl_->params)
    for (const float v : t.data)
      if (!std::isfinite(v))
        throw Error("init_random: initializer_range = " + std::to_string(c.initializer_range) +
                    (shared_embedding > 0 ? " with shared_embedding = " + std::to_string(shared_embedding) : std::string()) +
                    " gives non-finite fp32 weights in '" + t.name + "'");
}

// ── Checkpoints ─────────────────────────────────────────────────────────────────────────────────
void Model::save(const std::string& dir, SaveDtype dtype) const {
  const fs::path target = fs::absolute(fs::path(dir).lexically_normal());
  if (fs::exists(target) && !fs::is_directory(target))
    throw Error("save: " + target.string() + " exists and is not a directory");
  const fs::path parent = target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) io::fail_errno("save", "create the folder", parent.string(), ec.value());
  io::remove_stale_temps(target.string());   // folders of a save that was killed
  const fs::path tmp = io::temp_name(target.string());
  fs::remove_all(tmp);
  fs::create_directory(tmp, ec);
  if (ec) io::fail_errno("save", "create the folder", tmp.string(), ec.value());
  try {
    io::write_file_atomic((tmp / kConfigFile).string(), impl_->cfg.to_json(), "save");
    std::vector<st::WriteTensor> ws;
    const st::Dtype dt = dtype == SaveDtype::kF32 ? st::Dtype::kF32 : st::Dtype::kBF16;
    for (const Tensor& t : impl_->params) ws.push_back({t.name, dt, t.shape, t.data.data()});
    // The MTP modules' copies of the shared embedding and output head, as the official layout stores them
    const Tensor& emb = impl_->params[static_cast<size_t>(impl_->embed)];
    const Tensor& head = impl_->params[static_cast<size_t>(impl_->lm_head)];
    for (int k = 0; k < impl_->cfg.num_nextn_predict_layers; ++k) {
      ws.push_back({mtp_prefix(impl_->cfg, k) + kMtpEmbedCopy, dt, emb.shape, emb.data.data()});
      ws.push_back({mtp_prefix(impl_->cfg, k) + kMtpHeadCopy, dt, head.shape, head.data.data()});
    }
    st::write((tmp / kWeightsFile).string(), ws, {{"format", "pt"}, {"producer", "dsa"}});
    io::fsync_path(tmp.string(), true, "save");
    if (fs::exists(target)) {
      // Atomic swap of the complete new directory with the old one, then drop the old one.
      if (::syscall(SYS_renameat2, AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), 2 /*RENAME_EXCHANGE*/) != 0)
        io::fail_errno("save", "replace", target.string(), errno);
      fs::remove_all(tmp);
    } else if (::rename(tmp.c_str(), target.c_str()) != 0) {
      io::fail_errno("save", "rename " + tmp.string() + " to", target.string(), errno);
    }
    io::fsync_path(parent.string(), true, "save");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

namespace {
// WeightDtype of the stored matrices (2-D parameters): F8_E4M3 when any is, BF16 / F16 when all are,
// else F32. `locate` finds a tensor's file and header by name.
template <class Locate>
WeightDtype stored_weight_dtype(const std::vector<Tensor>& params, Locate locate) {
  bool any_fp8 = false, all_bf16 = true, all_f16 = true;
  for (const Tensor& p : params) {
    if (p.shape.size() != 2) continue;
    const st::Dtype dt = locate(p.name).second->dtype;
    any_fp8 = any_fp8 || dt == st::Dtype::kF8E4M3;
    all_bf16 = all_bf16 && dt == st::Dtype::kBF16;
    all_f16 = all_f16 && dt == st::Dtype::kF16;
  }
  if (any_fp8) return WeightDtype::kF8E4M3;
  if (all_bf16) return WeightDtype::kBF16;
  if (all_f16) return WeightDtype::kF16;
  return WeightDtype::kF32;
}
}  // namespace

Model Model::load(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw Error("load: " + dir + " is not a directory");
  Model m(Config::from_json_file((root / kConfigFile).string()));
  const CheckpointFiles files(dir);
  auto locate = [&](const std::string& name) -> std::pair<const st::File*, const st::TensorInfo*> {
    const CheckpointFiles::Located l = files.locate(name);
    return {l.file, l.info};
  };
  for (Tensor& p : m.impl_->params) {
    auto [f, t] = locate(p.name);
    if (t == nullptr) throw Error("load: " + dir + ": tensor '" + p.name + "' is missing");
    std::vector<float> v;
    try {
      v = f->to_float(p.name, p.shape);
    } catch (const std::bad_alloc&) {
      throw Error("load: " + f->path() + ": out of memory reading tensor '" + p.name + "'");
    }
    if (t->dtype == st::Dtype::kF8E4M3) {
      // FP8 weight: W = e4m3 · weight_scale_inv[row/128, col/128]
      const std::string sname = p.name.substr(0, p.name.size() - 6) + "weight_scale_inv";
      auto [sf, si] = locate(sname);
      if (si == nullptr) throw Error("load: " + f->path() + ": F8_E4M3 tensor '" + p.name + "' has no '" + sname + "'");
      if (p.shape.size() != 2) throw Error("load: " + f->path() + ": F8_E4M3 tensor '" + p.name + "' is not 2-D");
      const int64_t R = p.shape[0], C = p.shape[1];
      const int64_t br = (R + kWeightScaleBlock - 1) / kWeightScaleBlock, bc = (C + kWeightScaleBlock - 1) / kWeightScaleBlock;
      if (si->dtype != st::Dtype::kF32 && si->dtype != st::Dtype::kBF16)
        throw Error("load: " + sf->path() + ": tensor '" + sname + "' must be F32 or BF16");
      const std::vector<float> s = sf->to_float(sname, {br, bc});
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c) v[r * C + c] *= s[(r / kWeightScaleBlock) * bc + c / kWeightScaleBlock];
    }
    for (const float x : v)
      if (!std::isfinite(x)) throw Error("load: " + f->path() + ": tensor '" + p.name + "' has a non-finite value");
    p.data = std::move(v);
  }
  m.impl_->weight_dtype = stored_weight_dtype(m.impl_->params, locate);
  // The MTP modules share the main embedding and output head; the checkpoint's copies (the official
  // layout stores them) must equal them, and may be absent.
  for (int k = 0; k < m.impl_->cfg.num_nextn_predict_layers; ++k)
    for (const auto& [suffix, shared] : {std::pair{kMtpEmbedCopy, m.impl_->embed}, std::pair{kMtpHeadCopy, m.impl_->lm_head}}) {
      const std::string name = mtp_prefix(m.impl_->cfg, k) + suffix;
      auto [f, t] = locate(name);
      if (t == nullptr) continue;
      const Tensor& p = m.impl_->params[static_cast<size_t>(shared)];
      if (t->dtype == st::Dtype::kF8E4M3) throw Error("load: " + f->path() + ": tensor '" + name + "' must be F32 or BF16");
      if (f->to_float(name, p.shape) != p.data)
        throw Error("load: " + f->path() + ": tensor '" + name + "' differs from '" + p.name +
                    "' (an MTP module shares the main model's embedding and output head)");
    }
  return m;
}

WeightDtype Model::weight_dtype() const { return impl_->weight_dtype; }

const char* weight_dtype_name(WeightDtype d) {
  switch (d) {
    case WeightDtype::kF32: return "F32";
    case WeightDtype::kF16: return "F16";
    case WeightDtype::kBF16: return "BF16";
    case WeightDtype::kF8E4M3: return "F8_E4M3";
  }
  return "?";
}

const char* numerics_name(Numerics n) {
  switch (n) {
    case Numerics::kAuto: return "auto";
    case Numerics::kFp32: return "fp32";
    case Numerics::kReference: return "reference";
  }
  return "?";
}

Numerics parse_numerics(const std::string& name) {
  for (const Numerics n : {Numerics::kAuto, Numerics::kFp32, Numerics::kReference})
    if (name == numerics_name(n)) return n;
  throw Error("numerics: unknown value '" + name + "' (expected auto, fp32 or reference)");
}

// ── Sampling ────────────────────────────────────────────────────────────────────────────────────
int32_t sample_token(const float* logits, int vocab, const SamplerOptions& opt, std::mt19937_64& rng) {
  if (logits == nullptr || vocab <= 0) throw Error("sample_token: logits is null or vocab <= 0");
  if (!std::isfinite(opt.temperature) || opt.temperature < 0.0)
    throw Error("sample_token: temperature must be finite and >= 0, got " + std::to_string(opt.temperature));
  if (!(opt.top_p > 0.0 && opt.top_p <= 1.0)) throw Error("sample_token: top_p must be in (0, 1], got " + std::to_string(opt.top_p));
  if (opt.top_k < 0) throw Error("sample_token: top_k must be >= 0, got " + std::to_string(opt.top_k));
  if (opt.temperature == 0.0 || opt.top_k == 1) {
    int best = 0;
    for (int v = 1; v < vocab; ++v)
      if (logits[v] > logits[best]) best = v;
    return best;
  }
  const float m = *std::max_element(logits, logits + vocab);
  std::vector<std::pair<double, int>> p(static_cast<size_t>(vocab));
  double z = 0.0;
  for (int v = 0; v < vocab; ++v) {
    p[v] = {std::exp((static_cast<double>(logits[v]) - m) / opt.temperature), v};
    z += p[v].first;
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  // top-k first (the k most likely), then top-p inside them (the smallest prefix holding top_p of
  // their mass), as Hugging Face's and llama.cpp's samplers apply them.
  const size_t limit = opt.top_k > 0 ? std::min(p.size(), static_cast<size_t>(opt.top_k)) : p.size();
  if (limit < p.size()) {
    z = 0.0;
    for (size_t i = 0; i < limit; ++i) z += p[i].first;
  }
  double keep = 0.0;
  size_t n = 0;
  while (n < limit && (n == 0 || keep < opt.top_p * z)) keep += p[n++].first;
  std::uniform_real_distribution<double> u(0.0, keep);
  double r = u(rng);
  for (size_t i = 0; i < n; ++i) {
    r -= p[i].first;
    if (r <= 0.0) return p[i].second;
  }
  return p[n - 1].second;
}

}  // namespace dsa::model

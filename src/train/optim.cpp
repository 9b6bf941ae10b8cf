// optim.cpp — AdamW with an indexer group and a model group, the lr schedule, stage names, and
// small file helpers of the training recipe (include/dsa/train.h).
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>

#include "common/file_io.h"
#include "dsa/ops.h"
#include "dsa/safetensors.h"
#include "dsa/train.h"

namespace fs = std::filesystem;

namespace dsa::train {

double lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double min_lr_ratio) {
  // step is 0-based: step 0 of a warm-up of W steps runs at 1/W of the peak, step W−1 at the peak.
  if (warmup_steps > 0 && step < warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const int64_t decay = total_steps - warmup_steps;
  if (decay <= 1) return 1.0;
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay - 1));
  return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

void check_group_options(const GroupOptions& g, const std::string& group) {
  auto bad = [&](const char* name, double v, const char* rule) {
    throw Error("AdamW: the " + group + " group's " + name + " = " + std::to_string(v) + " must be " + rule);
  };
  if (!(g.lr >= 0) || !std::isfinite(g.lr)) bad("lr", g.lr, "a finite number >= 0");
  if (!(g.weight_decay >= 0) || !std::isfinite(g.weight_decay)) bad("weight_decay", g.weight_decay, "a finite number >= 0");
  if (!(g.beta1 >= 0 && g.beta1 < 1)) bad("beta1", g.beta1, "in [0, 1)");
  if (!(g.beta2 >= 0 && g.beta2 < 1)) bad("beta2", g.beta2, "in [0, 1)");
  if (!(g.eps > 0) || !std::isfinite(g.eps)) bad("eps", g.eps, "a finite number > 0");
  if (std::isnan(g.clip)) bad("clip", g.clip, "a number (<= 0: no clipping)");
}

AdamW::AdamW(const model::Model& m, const GroupOptions& model_group, const GroupOptions& indexer_group)
    : model_(model_group), indexer_(indexer_group) {
  check_group_options(model_, "model");
  check_group_options(indexer_, "indexer");
  num_trained_ = m.first_mtp_param();   // the MTP modules' tensors are not trained
  for (const auto& p : m.params()) {
    names_.push_back(p.name);
    is_indexer_.push_back(model::Model::is_indexer_param(p.name));
    m_.emplace_back(p.data.size(), 0.0f);
    v_.emplace_back(p.data.size(), 0.0f);
  }
}

AdamW::StepStats AdamW::step(model::Model& m, double lr_scale, bool train_model, bool train_indexer) {
  auto& params = m.params();
  auto& grads = m.grads();
  if (params.size() != names_.size()) throw Error("AdamW::step: the model has a different parameter list");
  // Per-group global gradient norms, accumulated in a fixed order in fp64 (deterministic).
  double sq[2] = {0, 0};
  for (size_t i = 0; i < params.size(); ++i) {
    double s = 0;
    for (float g : grads[i].data) s += static_cast<double>(g) * g;
    sq[is_indexer_[i] ? 1 : 0] += s;
  }
  StepStats stats{std::sqrt(sq[0]), std::sqrt(sq[1])};
  const bool train[2] = {train_model, train_indexer};
  const GroupOptions* opt[2] = {&model_, &indexer_};
  double clip_scale[2];
  for (int g = 0; g < 2; ++g) {
    const double norm = g == 0 ? stats.model_grad_norm : stats.indexer_grad_norm;
    clip_scale[g] = (opt[g]->clip > 0 && norm > opt[g]->clip) ? opt[g]->clip / norm : 1.0;
  }
  if (train_model) ++t_model_;
  if (train_indexer) ++t_indexer_;
  ++t_;
  const int64_t t_group[2] = {t_model_, t_indexer_};
#pragma omp parallel for schedule(dynamic, 1)
  for (long i = 0; i < static_cast<long>(params.size()); ++i) {
    const int g = is_indexer_[i] ? 1 : 0;
    if (!train[g] || static_cast<size_t>(i) >= num_trained_) continue;   // frozen: not even weight decay touches it
    const GroupOptions& o = *opt[g];
    const double lr = o.lr * lr_scale;
    const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(t_group[g]));
    const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(t_group[g]));
    const bool decay = params[i].shape.size() >= 2 && o.weight_decay > 0;
    float* w = params[i].data.data();
    const float* gr = grads[i].data.data();
    float* mi = m_[i].data();
    float* vi = v_[i].data();
    for (size_t j = 0; j < params[i].data.size(); ++j) {
      const double gj = static_cast<double>(gr[j]) * clip_scale[g];
      const double mj = o.beta1 * mi[j] + (1.0 - o.beta1) * gj;
      const double vj = o.beta2 * vi[j] + (1.0 - o.beta2) * gj * gj;
      mi[j] = static_cast<float>(mj);
      vi[j] = static_cast<float>(vj);
      double wj = w[j];
      if (decay) wj -= lr * o.weight_decay * wj;
      wj -= lr * (mj / bc1) / (std::sqrt(vj / bc2) + o.eps);
      w[j] = static_cast<float>(wj);
    }
  }
  return stats;
}

void AdamW::save(const std::string& path) const {
  std::vector<safetensors::WriteTensor> ts;
  for (size_t i = 0; i < names_.size(); ++i) {
    const int64_t n = static_cast<int64_t>(m_[i].size());
    ts.push_back({"m." + names_[i], safetensors::Dtype::kF32, {n}, m_[i].data()});
    ts.push_back({"v." + names_[i], safetensors::Dtype::kF32, {n}, v_[i].data()});
  }
  safetensors::write(path, ts,
                     {{"t", std::to_string(t_)}, {"t_model", std::to_string(t_model_)}, {"t_indexer", std::to_string(t_indexer_)}});
}

void AdamW::load(const std::string& path) {
  if (!fs::exists(path)) throw Error("optimizer state " + path + " does not exist");
  const auto f = safetensors::File::open(path);
  for (size_t i = 0; i < names_.size(); ++i) {
    const int64_t n = static_cast<int64_t>(m_[i].size());
    m_[i] = f.to_float("m." + names_[i], {n});
    v_[i] = f.to_float("v." + names_[i], {n});
  }
  auto meta = [&](const char* key) -> int64_t {
    auto it = f.metadata().find(key);
    if (it == f.metadata().end()) throw Error(path + ": optimizer metadata \"" + key + "\" is missing");
    return std::stoll(it->second);
  };
  t_ = meta("t");
  t_model_ = meta("t_model");
  t_indexer_ = meta("t_indexer");
}

const char* stage_name(model::Stage s) {
  switch (s) {
    case model::Stage::kPretrain: return "pretrain";
    case model::Stage::kWarmup: return "warmup";
    case model::Stage::kSparse: return "sparse";
  }
  return "?";
}

model::Stage parse_stage(const std::string& name) {
  if (name == "pretrain") return model::Stage::kPretrain;
  if (name == "warmup") return model::Stage::kWarmup;
  if (name == "sparse") return model::Stage::kSparse;
  throw Error("--stage \"" + name + "\" is not one of pretrain, warmup, sparse");
}

void write_file_atomic(const std::string& path, const std::string& text) { io::write_file_atomic(path, text, "write"); }

bool run_gnuplot(const std::string& script_path) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return false;
  const std::string cmd = "gnuplot '" + script_path + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

}  // namespace dsa::train

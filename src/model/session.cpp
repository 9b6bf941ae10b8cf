// session.cpp — inference Session: one sequence over paged caches (pages of kCachePageTokens slots).
// Every append() of n tokens runs one step: project the n rows, write their MLA latents (fp32 / bf16 /
// 656 B FP8 record) and indexer keys (132 B FP8 paged record, or fp32) into the caches, then per
// row: indexer logits over the cached logical positions → top-k → physical slots (op 11
// paged_to_physical) → sparse attention over the cache (op 11 sparse_attention_decode when the
// latent is V3.2's 512 + 64, op 6 over the fp32 slot pool otherwise). Prefill chunks and decode steps
// run the same code on the same cache contents, so chunked ≡ one-shot and decode ≡ prefill row.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "common/checked_math.h"
#include "common/topk_policy.h"
#include "model/exec.h"

namespace dsa::model {
namespace {

constexpr size_t kIndexerPageBytes = static_cast<size_t>(kCachePageTokens) * kIndexerRecordBytes;      // 8448
constexpr size_t kIndexerPageScaleOffset = static_cast<size_t>(kCachePageTokens) * kIndexerKeyDim;     // 8192
constexpr int kV32LatentDim = kMlaLatentDim + kMlaRopeDim;                                             // 576

template <typename T>
T* grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace

struct Session::Impl {
  const Model::Impl& m;
  std::unique_ptr<Exec> ex = make_cpu_exec(/*exact=*/true);   // row-invariant matmuls: chunked ≡ one-shot
  SessionOptions opt;
  Dims d;
  int K = 0;                        // sparse / window budget
  int64_t capacity = 0, length = 0;
  int64_t limit = 0;                // the longest sequence: max_tokens, at most max_position_embeddings
  int64_t model_bytes = 0, cache_bytes = 0;   // for the memory check of a step
  int num_pages = 0;
  bool v32_latent = false;          // kv_lora_rank 512 + rope 64: the op-11 decode path
  bool fp8_indexer = false;
  std::vector<int32_t> block_table; // logical page → physical page
  std::vector<std::vector<float>> kv_f32;       // per layer [slots, Dm]
  std::vector<std::vector<uint16_t>> kv_bf16;   // per layer [slots, 576]
  std::vector<std::vector<uint8_t>> kv_fp8;     // per layer [slots, 656]
  std::vector<std::vector<uint8_t>> idx_fp8;    // per layer [pages · 8448]
  std::vector<std::vector<float>> idx_f32;      // per layer [capacity, DI] (logical order)
  // scratch, reused across steps
  std::vector<float> x, xn, qa, rstd, qan, q, kva, c_raw, cn, qm, kvm, iq, kpre, kmean, krstd, ik, iw, wfold, kscale,
      ilog, olat, lse, o, attn, hn, g, u, a, mlp, xf, logits;
  std::vector<uint8_t> qfp8, kfp8, rec;
  std::vector<int32_t> pos, ctx, tables, sel;
  std::vector<int32_t> sel_len;     // per-row k of a non-default SelectionPolicy
  int64_t selected_keys = 0, selected_rows = 0;   // Session::mean_selected_keys

  Impl(const Model::Impl& model, const SessionOptions& o) : m(model), opt(o), d(model.cfg) {
    ex->begin_run(m, nullptr);
    const Config& c = m.cfg;
    if (!opt.kv_format)   // unset: the format the config's latent fits (SessionOptions)
      opt.kv_format = d.kvr == kMlaLatentDim && d.dr == kMlaRopeDim ? KvCacheFormat::kBf16 : KvCacheFormat::kFp32;
    K = opt.topk > 0 ? opt.topk : c.index_topk;
    if (K > kMaxTopK) throw Error("Session: topk = " + std::to_string(K) + " exceeds kMaxTopK");
    for (int l = 0; l < c.num_hidden_layers; ++l)   // a bad policy fails here, not at the first step
      ::dsa::detail::validate_topk_policy(layer_topk_policy(opt.selection, l, c.num_hidden_layers, K), K, "Session: selection policy");
    const int64_t want = opt.max_tokens > 0 ? opt.max_tokens : c.max_position_embeddings;
    if (want > c.max_position_embeddings && !opt.allow_beyond_max_position)
      throw Error("Session: max_tokens = " + std::to_string(want) + " exceeds max_position_embeddings = " +
                  std::to_string(c.max_position_embeddings) + " (the longest sequence the model is configured for)");
    limit = opt.allow_beyond_max_position ? want : std::min<int64_t>(want, c.max_position_embeddings);
    num_pages = static_cast<int>((want + kCachePageTokens - 1) / kCachePageTokens);
    capacity = static_cast<int64_t>(num_pages) * kCachePageTokens;
    v32_latent = d.kvr == kMlaLatentDim && d.dr == kMlaRopeDim;
    fp8_indexer = opt.indexer_precision == Precision::kFp8;
    if (opt.kv_format != KvCacheFormat::kFp32 && !v32_latent)
      throw Error("Session: kv_format bf16/fp8 needs kv_lora_rank = 512 and qk_rope_head_dim = 64 (the V3.2 "
                  "record); this config has " + std::to_string(d.kvr) + " + " + std::to_string(d.dr) + " — use kFp32");
    if (fp8_indexer && d.DI != kIndexerKeyDim)
      throw Error("Session: the FP8 indexer cache needs index_head_dim = 128; this config has " + std::to_string(d.DI));
    if (opt.indexer_precision == Precision::kBf16) throw Error("Session: indexer_precision must be kFp32 or kFp8");
    block_table.resize(static_cast<size_t>(num_pages));
    std::iota(block_table.begin(), block_table.end(), 0);
    if (opt.page_order_seed != 0) {
      std::mt19937_64 rng(opt.page_order_seed);
      std::shuffle(block_table.begin(), block_table.end(), rng);
    }
    const int L = c.num_hidden_layers;
    const int64_t slots = capacity;
    const Footprint fp = footprint(c);
    model_bytes = fp.param_bytes;
    const int64_t cache = detail::mul_checked(capacity, cache_bytes_per_token(), "Session: cache bytes");
    check_memory(detail::add_checked(model_bytes, cache, "Session: model + cache bytes"),
                 "Session: the model and a cache of " + std::to_string(capacity) + " tokens (max_tokens, or max_position_embeddings = " +
                     std::to_string(c.max_position_embeddings) + ", x " + std::to_string(cache_bytes_per_token()) + " bytes per token)");
    cache_bytes = cache;
    if (opt.kv_format == KvCacheFormat::kFp32) kv_f32.assign(L, std::vector<float>(static_cast<size_t>(slots * d.Dm)));
    if (opt.kv_format == KvCacheFormat::kBf16) kv_bf16.assign(L, std::vector<uint16_t>(static_cast<size_t>(slots * kV32LatentDim)));
    if (opt.kv_format == KvCacheFormat::kFp8Record) kv_fp8.assign(L, std::vector<uint8_t>(static_cast<size_t>(slots * kMlaRecordBytes)));
    if (opt.mode == AttentionMode::kSparse) {
      if (fp8_indexer) idx_fp8.assign(L, std::vector<uint8_t>(static_cast<size_t>(num_pages) * kIndexerPageBytes));
      else idx_f32.assign(L, std::vector<float>(static_cast<size_t>(capacity * d.DI)));
    }
  }

  int64_t cache_bytes_per_token() const;
  bool ragged() const { return opt.mode == AttentionMode::kSparse && !opt.selection.is_default(); }
  const int32_t* row_lengths() const { return ragged() ? sel_len.data() : nullptr; }

  int64_t slot_of(int64_t logical) const {
    return static_cast<int64_t>(block_table[logical / kCachePageTokens]) * kCachePageTokens + logical % kCachePageTokens;
  }

  void write_kv(int l, int64_t n) {
    if (opt.kv_format == KvCacheFormat::kFp32) {
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(&kv_f32[l][slot_of(length + i) * d.Dm], &kvm[i * d.Dm], sizeof(float) * d.Dm);
    } else if (opt.kv_format == KvCacheFormat::kBf16) {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t* dst = &kv_bf16[l][slot_of(length + i) * kV32LatentDim];
        for (int j = 0; j < kV32LatentDim; ++j) dst[j] = cpu::bf16_from_float(kvm[i * d.Dm + j]);
      }
    } else {
      MlaCacheParams mp;
      mp.N = n;
      mp.format = ScaleFormat::kFloat;   // FlashMLA's test quantiser (amax / 448)
      mp.kv = kvm.data();
      mp.records = grow(rec, n * kMlaRecordBytes);
      cpu::mla_cache_pack(mp);
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(&kv_fp8[l][slot_of(length + i) * kMlaRecordBytes], &rec[i * kMlaRecordBytes], kMlaRecordBytes);
    }
  }

  const void* kv_cache(int l) const {
    if (opt.kv_format == KvCacheFormat::kFp32) return kv_f32[l].data();
    if (opt.kv_format == KvCacheFormat::kBf16) return kv_bf16[l].data();
    return kv_fp8[l].data();
  }

  // Selection of row i (position length + i, context ctx = length + i + 1) as logical positions.
  void select(int l, int64_t n, int next_n, int Kr) {
    const int64_t total = length + n;
    for (int64_t i = 0; i < n; ++i) ctx[i] = static_cast<int32_t>(length + i + 1);
    if (opt.mode == AttentionMode::kDense || opt.mode == AttentionMode::kWindow) {
      // dense: every cached position in ascending order; window: the newest Kr positions
      for (int64_t i = 0; i < n; ++i)
        for (int j = 0; j < Kr; ++j) {
          const int64_t p = opt.mode == AttentionMode::kDense ? j : ctx[i] - 1 - j;
          sel[i * Kr + j] = (opt.mode == AttentionMode::kDense ? p < ctx[i] : p >= 0) ? static_cast<int32_t>(p) : kInvalidIndex;
        }
      return;
    }
    indexer_project(*ex, m, l, xn.data(), qan.data(), n, pos.data(), iq.data(), kpre.data(), kmean.data(), krstd.data(),
                    ik.data(), iw.data());
    float* lg = grow(ilog, n * total);
    if (fp8_indexer) {
      IndexerQuantizeParams qp;
      qp.T = static_cast<int>(n);
      qp.S = static_cast<int>(n);
      qp.HI = d.HI;
      qp.DI = d.DI;
      qp.format = ScaleFormat::kUe8m0;   // V3.2 scale_fmt
      qp.q = iq.data();
      qp.k = ik.data();
      qp.w = iw.data();
      qp.q_fp8 = grow(qfp8, n * d.HI * d.DI);
      qp.k_fp8 = grow(kfp8, n * d.DI);
      qp.k_scale = grow(kscale, n);
      qp.w_folded = grow(wfold, n * d.HI);
      cpu::indexer_quantize_fp8(qp);
      uint8_t* cache = idx_fp8[l].data();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t s = slot_of(length + i);
        const int64_t page = s / kCachePageTokens, off = s % kCachePageTokens;
        std::memcpy(cache + page * kIndexerPageBytes + off * kIndexerKeyDim, &kfp8[i * d.DI], kIndexerKeyDim);
        std::memcpy(cache + page * kIndexerPageBytes + kIndexerPageScaleOffset + off * sizeof(float), &kscale[i], sizeof(float));
      }
      PagedIndexerParams pp;
      pp.B = static_cast<int>(n / next_n);
      pp.next_n = next_n;
      pp.HI = d.HI;
      pp.num_pages = num_pages;
      pp.max_blocks = num_pages;
      pp.max_context_len = static_cast<int>(total);
      pp.q_fp8 = qfp8.data();
      pp.cache = cache;
      pp.w = wfold.data();
      pp.context_lens = ctx.data();
      pp.block_table = tables.data();
      cpu::indexer_logits_paged(pp, lg);
    } else {
      std::memcpy(&idx_f32[l][length * d.DI], ik.data(), sizeof(float) * n * d.DI);
      std::vector<int32_t> ks(static_cast<size_t>(n), 0);
      IndexerParams ip;
      ip.T = static_cast<int>(n);
      ip.S = static_cast<int>(total);
      ip.HI = d.HI;
      ip.DI = d.DI;
      ip.q = iq.data();
      ip.k = idx_f32[l].data();
      ip.w = iw.data();
      ip.ks = ks.data();
      ip.ke = ctx.data();
      cpu::indexer_logits(ip, lg);
    }
    std::vector<int32_t> ks(static_cast<size_t>(n), 0);
    TopkParams tp;
    tp.T = static_cast<int>(n);
    tp.S = static_cast<int>(total);
    tp.K = Kr;
    tp.logits = lg;
    tp.ks = ks.data();
    tp.ke = ctx.data();
    tp.indices = sel.data();
    if (ragged()) {   // the default policy runs the op as before policies existed
      tp.policy = layer_topk_policy(opt.selection, l, m.cfg.num_hidden_layers, Kr);
      tp.topk_length = grow(sel_len, n);
    }
    cpu::topk_select(tp);
  }

  void step(const int32_t* tokens, int64_t n, int next_n, bool all_logits, std::vector<float>& out) {
    const Config& c = m.cfg;
    if (n <= 0) throw Error("Session: append needs at least one token");
    if (length + n > limit)   // limit ≤ capacity: the cache always holds the allowed positions
      throw Error("Session: " + std::to_string(length + n) + " tokens exceed " +
                  (limit == c.max_position_embeddings ? "max_position_embeddings = " : "the cache capacity max_tokens = ") +
                  std::to_string(limit));
    {  // the step's scratch: per-row buffers and the indexer logits of n rows over every cached key
      const int64_t row_floats = 6LL * d.D + 2LL * d.qr + static_cast<int64_t>(d.H) * (d.dq + d.Dm + d.kvr + d.dv + 1) + 3LL * d.Dm +
                                 2LL * d.kvr + static_cast<int64_t>(d.HI) * d.DI + 2LL * d.DI + d.HI + 3LL * d.F + K + num_pages + d.V;
      const int64_t scratch = detail::mul_checked(n, detail::add_checked(row_floats, length + n, "Session: step scratch") * 4,
                                                  "Session: step scratch bytes");
      check_memory(detail::add_checked(model_bytes + cache_bytes, scratch, "Session: step bytes"), "Session: a step of " + std::to_string(n) + " tokens after " +
                                                            std::to_string(length) + " cached");
    }
    for (int64_t i = 0; i < n; ++i)
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
        throw Error("Session: token " + std::to_string(tokens[i]) + " out of range [0, " + std::to_string(c.vocab_size) + ")");
    const float eps = static_cast<float>(c.rms_norm_eps);
    const int64_t total = length + n;
    const int Kr = opt.mode == AttentionMode::kDense ? static_cast<int>(total) : static_cast<int>(std::min<int64_t>(K, total));
    grow(pos, n);
    grow(ctx, n);
    grow(sel, n * Kr);
    int32_t* tab = grow(tables, n * num_pages);
    for (int64_t i = 0; i < n; ++i) {
      pos[i] = static_cast<int32_t>(length + i);
      std::memcpy(tab + i * num_pages, block_table.data(), sizeof(int32_t) * num_pages);
    }
    grow(x, n * d.D);
    cpu::embedding_forward(tokens, m.P(m.embed), x.data(), n, d.V, d.D);
    grow(xn, n * d.D); grow(qa, n * d.qr); grow(rstd, n); grow(qan, n * d.qr); grow(q, n * d.H * d.dq);
    grow(kva, n * d.Dm); grow(c_raw, n * d.kvr); grow(cn, n * d.kvr); grow(qm, n * d.H * d.Dm); grow(kvm, n * d.Dm);
    grow(iq, n * d.HI * d.DI); grow(kpre, n * d.DI); grow(kmean, n); grow(krstd, n); grow(ik, n * d.DI); grow(iw, n * d.HI);
    grow(olat, n * d.H * d.kvr); grow(lse, n * d.H); grow(o, n * d.H * d.dv); grow(attn, n * d.D); grow(hn, n * d.D);
    grow(g, n * d.F); grow(u, n * d.F); grow(a, n * d.F); grow(mlp, n * d.D);
    std::vector<float> rstd2(static_cast<size_t>(n));
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const LayerParams& L = m.layers[l];
      cpu::rmsnorm_forward(x.data(), m.P(L.input_norm), xn.data(), rstd.data(), n, d.D, eps);
      mla_project(*ex, m, l, xn.data(), n, pos.data(), qa.data(), rstd2.data(), qan.data(), q.data(), kva.data(),
                  c_raw.data(), rstd2.data(), cn.data(), qm.data(), kvm.data());
      write_kv(l, n);
      select(l, n, next_n, Kr);
      if (opt.mode == AttentionMode::kSparse)
        for (int64_t i = 0; i < n; ++i, ++selected_rows) selected_keys += ragged() ? sel_len[i] : std::min(Kr, ctx[i]);
      cpu::paged_to_physical(static_cast<int>(n), 1, Kr, tab, num_pages, num_pages, sel.data());
      if (v32_latent) {
        SparseDecodeParams sp;
        sp.B = static_cast<int>(n / next_n);
        sp.next_n = next_n;
        sp.H = d.H;
        sp.K = Kr;
        sp.num_slots = capacity;
        sp.scale = m.scale;
        sp.format = *opt.kv_format;
        sp.q = qm.data();
        sp.cache = kv_cache(l);
        sp.indices = sel.data();
        sp.topk_length = row_lengths();   // a ragged selection stops at each row's k
        sp.out = olat.data();
        sp.lse = lse.data();
        cpu::sparse_attention_decode(sp);
      } else {
        AttentionParams ap = mqa_attention_params(m, d, static_cast<int>(n), static_cast<int>(capacity), qm.data(),
                                                  kv_f32[l].data());
        ap.K = Kr;
        ap.indices = sel.data();
        ap.topk_length = row_lengths();
        cpu::sparse_attention_forward(ap, AttentionForwardOut{olat.data(), lse.data(), nullptr});
      }
      absorb_out(*ex, m, l, olat.data(), n, o.data());
      mm_xwt(true, n, d.H * d.dv, d.D, o.data(), d.H * d.dv, m.P(L.o), d.H * d.dv, attn.data(), d.D);
      for (int64_t i = 0; i < n * d.D; ++i) x[i] += attn[i];
      cpu::rmsnorm_forward(x.data(), m.P(L.post_norm), hn.data(), rstd.data(), n, d.D, eps);
      mm_xwt(true, n, d.D, d.F, hn.data(), d.D, m.P(L.gate), d.D, g.data(), d.F);
      mm_xwt(true, n, d.D, d.F, hn.data(), d.D, m.P(L.up), d.D, u.data(), d.F);
      cpu::swiglu_forward(g.data(), u.data(), a.data(), n * d.F);
      mm_xwt(true, n, d.F, d.D, a.data(), d.F, m.P(L.down), d.F, mlp.data(), d.D);
      for (int64_t i = 0; i < n * d.D; ++i) x[i] += mlp[i];
    }
    length = total;
    const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
    grow(xf, rows * d.D);
    cpu::rmsnorm_forward(x.data() + first * d.D, m.P(m.final_norm), xf.data(), rstd.data(), rows, d.D, eps);
    out.resize(static_cast<size_t>(rows * d.V));
    mm_xwt(true, rows, d.D, d.V, xf.data(), d.D, m.P(m.lm_head), d.D, out.data(), d.V);
  }
};

namespace {
std::unique_ptr<Session::Impl> make_session(const Model::Impl& model, const SessionOptions& options) {
  try {
    return std::make_unique<Session::Impl>(model, options);
  } catch (const std::bad_alloc&) {
    throw Error("Session: out of memory allocating the caches (max_tokens = " + std::to_string(options.max_tokens) +
                ", max_position_embeddings = " + std::to_string(model.cfg.max_position_embeddings) + ")");
  }
}
}  // namespace

Session::Session(const Model& model, const SessionOptions& options) : impl_(make_session(*model.impl_, options)) {}
Session::~Session() = default;

std::vector<float> Session::append(const std::vector<int32_t>& tokens, bool all_logits) {
  std::vector<float> out;
  impl_->step(tokens.data(), static_cast<int64_t>(tokens.size()), 1, all_logits, out);
  return out;
}

std::vector<float> Session::prefill(const std::vector<int32_t>& tokens, int chunk_size, bool all_logits) {
  if (tokens.empty()) throw Error("Session: prefill needs at least one token");
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t chunk = chunk_size > 0 ? chunk_size : n;
  std::vector<float> out, part;
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t len = std::min(chunk, n - s);
    impl_->step(tokens.data() + s, len, 1, all_logits, part);
    if (all_logits) out.insert(out.end(), part.begin(), part.end());
    else out.swap(part);
  }
  return out;
}

std::vector<float> Session::decode(int32_t token) {
  std::vector<float> out;
  impl_->step(&token, 1, 1, false, out);
  return out;
}

std::vector<float> Session::decode2(int32_t t0, int32_t t1) {
  const int32_t t[2] = {t0, t1};
  std::vector<float> out;
  impl_->step(t, 2, 2, true, out);
  return out;
}

void Session::truncate(int64_t length) {
  if (length < 0 || length > impl_->length)
    throw Error("Session: truncate(" + std::to_string(length) + ") outside [0, " + std::to_string(impl_->length) + "]");
  impl_->length = length;   // later appends overwrite the dropped slots
}

int64_t Session::length() const { return impl_->length; }
int64_t Session::capacity() const { return impl_->capacity; }
const SessionOptions& Session::options() const { return impl_->opt; }
double Session::mean_selected_keys() const {
  return impl_->selected_rows > 0 ? static_cast<double>(impl_->selected_keys) / static_cast<double>(impl_->selected_rows) : 0.0;
}

int64_t Session::cache_bytes_per_token() const { return impl_->cache_bytes_per_token(); }

int64_t Session::Impl::cache_bytes_per_token() const {
  const Impl& s = *this;
  int64_t mla = 0;
  switch (*s.opt.kv_format) {
    case KvCacheFormat::kFp32: mla = static_cast<int64_t>(s.d.Dm) * sizeof(float); break;
    case KvCacheFormat::kBf16: mla = static_cast<int64_t>(kV32LatentDim) * sizeof(uint16_t); break;
    case KvCacheFormat::kFp8Record: mla = kMlaRecordBytes; break;
  }
  int64_t idx = 0;
  if (s.opt.mode == AttentionMode::kSparse)
    idx = s.fp8_indexer ? kIndexerRecordBytes : static_cast<int64_t>(s.d.DI) * sizeof(float);
  return (mla + idx) * s.m.cfg.num_hidden_layers;
}

}  // namespace dsa::model

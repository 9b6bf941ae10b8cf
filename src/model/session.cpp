// session.cpp — inference sessions over paged caches (pages of kCachePageTokens slots): Session (one
// sequence) and BatchSession (many sequences sharing one pool of pages). Both run Session::Impl.
// Every step appends tokens to one or more sequences: project the rows, write their MLA latents
// (fp32 / bf16 / 656 B FP8 record) and indexer keys (132 B FP8 paged record, or fp32) into the
// sequences' pages, then per row: indexer logits over the sequence's cached logical positions → top-k
// → physical slots (op 11 paged_to_physical) → sparse attention over the cache (op 11
// sparse_attention_decode when the latent is V3.2's 512 + 64, op 6 over the fp32 slot pool otherwise).
// Prefill chunks and decode steps run the same code on the same cache contents, so chunked ≡ one-shot
// and decode ≡ prefill row. A sequence takes pages from the pool's free list as it grows and gives
// them back when it is removed; a step that would need more pages than are free is refused before
// anything is written.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "common/checked_math.h"
#include "common/topk_policy.h"
#include "model/moe.h"
#include "model/mtp.h"

namespace dsa::model {
namespace {

constexpr int kV32LatentDim = kMlaLatentDim + kMlaRopeDim;                                             // 576
// A step of more rows than a decode step (s_q 1 or 2) is a prefill chunk: on a GPU it runs the
// prefill kernels (fused indexer + top-k over contiguous keys, the tensor-core sparse prefill).
constexpr int64_t kMaxDecodeRows = 2;

}  // namespace

struct Session::Impl {
  const Model::Impl& m;
  // Where the step runs: the exact CPU executor (row-invariant matmuls: chunked ≡ one-shot bitwise)
  // or a GPU executor (dsa::cuda::open_session). Every buffer below lives in its memory.
  std::shared_ptr<Exec> ex;
  SessionOptions opt;
  Dims d;
  int K = 0;                        // sparse / window budget
  int64_t capacity = 0;             // slots in the pool (pages · 64)
  int64_t limit = 0;                // the longest sequence: max_tokens, at most max_position_embeddings
  int64_t model_bytes = 0, cache_bytes = 0, scratch_bytes = 0;   // for the memory check of a step
  int num_pages = 0;
  bool v32_latent = false;          // kv_lora_rank 512 + rope 64: the op-11 decode path
  bool fp8_indexer = false;
  bool gpu = false;                 // the executor is a GPU: prefill chunks take the prefill kernels
  bool bf16_decode_q = false;       // the GPU decode takes q in bf16 (its tensor-core variant)
  bool bf16_acts = false;           // Numerics::kReference: activations rounded to bf16 between ops
  StepSelections last_sel;          // Session::last_selections (record_selections)
  struct Seq {
    bool live = false;
    int64_t length = 0;
    std::vector<int32_t> pages;     // logical page → physical page
    std::vector<int32_t> tokens;    // the token at each cached position
  };
  std::vector<Seq> seqs;            // by id
  std::vector<int32_t> free_pages;  // back() is handed out next
  // One step's share of a sequence: n tokens at positions [at, at + n) of seq (a main step: at =
  // the sequence's length), rows [row0, row0 + n) of the step.
  struct Part {
    int seq;
    const int32_t* tokens;
    int64_t n, row0 = 0, at = 0;
  };
  // Caches, per layer: kv [slots, Dm] fp32 | [slots, 576] bf16 | [slots, 656] FP8 records;
  // idx [pages · 8448] FP8 pages or [slots, DI] fp32 keys. With SessionOptions::mtp, entry
  // num_hidden_layers holds the MTP module's caches (the same slots as the main positions).
  std::vector<Buf<uint8_t>> kv, idx;
  // SessionOptions::mtp: the main model's final hidden state (after model.norm) of every position
  // [capacity, D] by logical position; the MTP module's cache holds positions [0, mtp_len), the last
  // of which was computed with mtp_next as the token after it.
  FBuf hidden, mtp_e, mtp_cat;
  int64_t mtp_len = 0;
  int32_t mtp_next = 0;
  // Step buffers, grown to the largest step so far.
  FBuf x, xn, qa, rstd, rstd2, qan, q, kva, c_raw, cn, qm, kvm, iq, kpre, kmean, krstd, ik, iw, wfold, kscale, ilog, olat,
      lse, o, attn, hn, g, u, a, mlp, xf, logits;
  Buf<uint8_t> qfp8, kfp8, rec, kvb, qmb, kall;   // kall: a sequence's keys in logical order (FP8)
  FBuf kall_scale, kseq;                          // … their scales; kseq: the same for fp32 keys
  IBuf tok_d, pos_d, ctx_d, ks_d, tab_d, sel_d;
  // Host staging of the step's index arrays: unchanged until the step's logits come back.
  std::vector<int32_t> tok_h, pos_h, ctx_h, tab_h, sel_h;
  IBuf sel_len_d;                   // per-row k of a non-default SelectionPolicy
  std::vector<int32_t> sel_len_h;   // … read back for mean_selected_keys
  int64_t selected_keys = 0, selected_rows = 0;   // Session::mean_selected_keys

  // pooled: a BatchSession's pool (max_tokens is shared by the sequences and may exceed one sequence's
  // max_position_embeddings); else one sequence's cache (max_tokens past that limit is refused).
  Impl(const Model::Impl& model, const SessionOptions& o, std::shared_ptr<Exec> exec, bool pooled)
      : m(model), ex(exec ? std::move(exec) : std::shared_ptr<Exec>(make_cpu_exec(/*exact=*/true))), opt(o), d(model.cfg) {
    const Config& c = m.cfg;
    if (opt.numerics == Numerics::kAuto)   // a served (bf16 / FP8) checkpoint runs the reference's numerics
      opt.numerics = m.weight_dtype == WeightDtype::kBF16 || m.weight_dtype == WeightDtype::kF8E4M3 ? Numerics::kReference
                                                                                                    : Numerics::kFp32;
    bf16_acts = opt.numerics == Numerics::kReference;
    if (!opt.kv_format) {   // unset: the format the config's latent fits (SessionOptions)
      const bool v32 = d.kvr == kMlaLatentDim && d.dr == kMlaRopeDim;
      opt.kv_format = !v32 ? KvCacheFormat::kFp32 : bf16_acts ? KvCacheFormat::kFp8Record : KvCacheFormat::kBf16;
    }
    K = opt.topk > 0 ? opt.topk : c.index_topk;
    if (K > kMaxTopK) throw Error("Session: topk = " + std::to_string(K) + " exceeds kMaxTopK");
    for (int l = 0; l < c.num_hidden_layers; ++l)   // a bad policy fails here, not at the first step
      ::dsa::detail::validate_topk_policy(layer_topk_policy(opt.selection, l, c.num_hidden_layers, K), K, "Session: selection policy");
    const int64_t want = opt.max_tokens > 0 ? opt.max_tokens : c.max_position_embeddings;
    if (want > c.max_position_embeddings && !opt.allow_beyond_max_position && !pooled)
      throw Error("Session: max_tokens = " + std::to_string(want) + " exceeds max_position_embeddings = " +
                  std::to_string(c.max_position_embeddings) + " (the longest sequence the model is configured for)");
    limit = opt.allow_beyond_max_position ? want : std::min<int64_t>(want, c.max_position_embeddings);
    num_pages = static_cast<int>((want + kCachePageTokens - 1) / kCachePageTokens);
    capacity = static_cast<int64_t>(num_pages) * kCachePageTokens;
    v32_latent = d.kvr == kMlaLatentDim && d.dr == kMlaRopeDim;
    fp8_indexer = opt.indexer_precision == Precision::kFp8;
    gpu = !ex->host_memory();
    bf16_decode_q = gpu && v32_latent;
    if (opt.kv_format != KvCacheFormat::kFp32 && !v32_latent)
      throw Error("Session: kv_format bf16/fp8 needs kv_lora_rank = 512 and qk_rope_head_dim = 64 (the V3.2 "
                  "record); this config has " + std::to_string(d.kvr) + " + " + std::to_string(d.dr) + " — use kFp32");
    if (fp8_indexer && d.DI != kIndexerKeyDim)
      throw Error("Session: the FP8 indexer cache needs index_head_dim = 128; this config has " + std::to_string(d.DI));
    if (opt.indexer_precision == Precision::kBf16) throw Error("Session: indexer_precision must be kFp32 or kFp8");
    if (opt.mtp && c.num_nextn_predict_layers < 1)
      throw Error("Session: mtp needs a model with a multi-token-prediction module; this config has num_nextn_predict_layers = 0");
    if (opt.mtp && pooled) throw Error("BatchSession: mtp (draft) is a Session option");
    std::vector<int32_t> order(static_cast<size_t>(num_pages));
    std::iota(order.begin(), order.end(), 0);
    if (opt.page_order_seed != 0) {
      std::mt19937_64 rng(opt.page_order_seed);
      std::shuffle(order.begin(), order.end(), rng);
    }
    free_pages.assign(order.rbegin(), order.rend());   // handed out in `order`
    const int L = cache_layers();
    // Host: the model's footprint (parameters + gradients) is already held; a GPU: its parameter
    // mirror is allocated with the caches.
    model_bytes = ex->host_memory() ? footprint(c).param_bytes : ex->param_mirror_bytes(m);
    const int64_t cache = detail::mul_checked(capacity, cache_bytes_per_token(), "Session: cache bytes");
    ex->check_fits(ex->host_memory() ? model_bytes : 0,
                   detail::add_checked(ex->host_memory() ? 0 : model_bytes, cache, "Session: model + cache bytes"),
                   "Session: the model and a cache of " + std::to_string(capacity) + " tokens (max_tokens, or max_position_embeddings = " +
                       std::to_string(c.max_position_embeddings) + ", x " + std::to_string(cache_bytes_per_token()) + " bytes per token) on " +
                       ex->device_name());
    cache_bytes = cache;
    ex->begin_run(m, nullptr);
    if (opt.mtp) hidden = ex->zeros(capacity * d.D);
    int64_t kv_row = 0;
    switch (*opt.kv_format) {
      case KvCacheFormat::kFp32: kv_row = static_cast<int64_t>(d.Dm) * sizeof(float); break;
      case KvCacheFormat::kBf16: kv_row = static_cast<int64_t>(kV32LatentDim) * sizeof(uint16_t); break;
      case KvCacheFormat::kFp8Record: kv_row = kMlaRecordBytes; break;
    }
    for (int l = 0; l < L; ++l) kv.push_back(ex->bytes(capacity * kv_row));
    if (opt.mode == AttentionMode::kSparse)
      for (int l = 0; l < L; ++l)
        idx.push_back(ex->bytes(fp8_indexer ? static_cast<int64_t>(num_pages) * kIndexerPageBytes
                                            : capacity * d.DI * static_cast<int64_t>(sizeof(float))));
  }

  int64_t cache_bytes_per_token() const;
  // layers with caches: the main ones, + the MTP module's with SessionOptions::mtp
  int cache_layers() const { return m.cfg.num_hidden_layers + (opt.mtp ? 1 : 0); }
  bool ragged() const { return opt.mode == AttentionMode::kSparse && !opt.selection.is_default(); }
  const int32_t* row_lengths() const { return ragged() ? sel_len_d.data() : nullptr; }
  static int32_t* grow_host(std::vector<int32_t>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  }

  int add_sequence() {
    for (size_t i = 0; i < seqs.size(); ++i)
      if (!seqs[i].live) {
        seqs[i] = Seq{true, 0, {}, {}};
        return static_cast<int>(i);
      }
    seqs.push_back(Seq{true, 0, {}, {}});
    return static_cast<int>(seqs.size() - 1);
  }
  Seq& seq(int id, const char* what) {
    if (id < 0 || id >= static_cast<int>(seqs.size()) || !seqs[id].live)
      throw Error(std::string("BatchSession: ") + what + ": no sequence " + std::to_string(id));
    return seqs[id];
  }
  void remove_sequence(int id) {
    Seq& q = seq(id, "remove");
    free_pages.insert(free_pages.end(), q.pages.rbegin(), q.pages.rend());
    q = Seq{};
  }

  int64_t slot_of(const Seq& q, int64_t logical) const {
    return static_cast<int64_t>(q.pages[logical / kCachePageTokens]) * kCachePageTokens + logical % kCachePageTokens;
  }

  // f(i, slot, run) for the part's rows [i, i + run) (0-based in the part), at positions p.at + i,
  // whose slots [slot, slot + run) are consecutive (one page).
  template <class F>
  void for_slot_runs(const Part& p, F f) const {
    const Seq& q = seqs[p.seq];
    for (int64_t i = 0; i < p.n;) {
      const int64_t logical = p.at + i;
      const int64_t run = std::min<int64_t>(p.n - i, kCachePageTokens - logical % kCachePageTokens);
      f(i, slot_of(q, logical), run);
      i += run;
    }
  }
  // f(logical, slot, run) over the first n logical positions of a sequence, page by page.
  template <class F>
  void for_page_runs(const Seq& q, int64_t n, F f) const {
    for (int64_t lp = 0; lp < n; lp += kCachePageTokens)
      f(lp, static_cast<int64_t>(q.pages[lp / kCachePageTokens]) * kCachePageTokens, std::min<int64_t>(kCachePageTokens, n - lp));
  }

  float* grow(FBuf& b, int64_t n) {
    if (b.size() < n) b = ex->zeros(n);
    return b.data();
  }
  int32_t* grow(IBuf& b, int64_t n) {
    if (b.size() < n) b = ex->izeros(n);
    return b.data();
  }
  uint8_t* grow(Buf<uint8_t>& b, int64_t n) {
    if (b.size() < n) b = ex->bytes(n);
    return b.data();
  }

  void write_kv(int l, const std::vector<Part>& parts, int64_t n) {
    uint8_t* cache = kv[l].data();
    const float* src = kvm.data();
    int64_t row = static_cast<int64_t>(d.Dm) * sizeof(float);
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(src);
    if (opt.kv_format == KvCacheFormat::kBf16) {
      ex->to_bf16(src, reinterpret_cast<uint16_t*>(grow(kvb, n * kV32LatentDim * 2)), n * kV32LatentDim);
      bytes = kvb.data();
      row = kV32LatentDim * 2;
    } else if (opt.kv_format == KvCacheFormat::kFp8Record) {
      MlaCacheParams mp;
      mp.N = n;
      // the reference's FP8 latent (ue8m0 scales) with its numerics, else FlashMLA's test quantiser (amax / 448)
      mp.format = bf16_acts ? ScaleFormat::kUe8m0 : ScaleFormat::kFloat;
      mp.kv = kvm.data();
      mp.records = grow(rec, n * kMlaRecordBytes);
      ex->ops().mla_cache_pack(mp);
      bytes = rec.data();
      row = kMlaRecordBytes;
    }
    for (const Part& p : parts)
      for_slot_runs(p, [&](int64_t i, int64_t slot, int64_t run) {
        ex->copy_bytes(cache + slot * row, bytes + (p.row0 + i) * row, run * row);
      });
  }

  // The selection of every row (row r of part p: position length + i, context ctx_h[r]) as logical
  // positions in sel_d [n, Kr]; `longest` = the largest context of the step.
  void select(int l, const std::vector<Part>& parts, int64_t n, int next_n, int Kr, int64_t longest) {
    if (opt.mode == AttentionMode::kDense || opt.mode == AttentionMode::kWindow) {
      // dense: every cached position in ascending order; window: the newest Kr positions (sel_h, made
      // once per step; paged_to_physical rewrites sel_d in place, so every layer uploads it again)
      ex->upload_bytes(sel_d.data(), sel_h.data(), n * Kr * static_cast<int64_t>(sizeof(int32_t)));
      return;
    }
    indexer_project(*ex, m, l, xn.data(), qan.data(), n, pos_d.data(), iq.data(), kpre.data(), kmean.data(), krstd.data(),
                    ik.data(), iw.data(), bf16_acts);
    // A GPU prefill chunk (one sequence, more rows than a decode step): the fused indexer + top-k over
    // the sequence's keys made contiguous (never the n × context logits); a decode step and every CPU
    // step: logits over the cache, then top-k.
    // (the fused op has no per-row policy: a ragged selection takes the unfused path)
    const bool fused = gpu && parts.size() == 1 && n > kMaxDecodeRows && !ragged();
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
      ex->ops().indexer_quantize_fp8(qp);
      uint8_t* cache = idx[l].data();
      const uint8_t* scales = reinterpret_cast<const uint8_t*>(kscale.data());
      for (const Part& p : parts)
        for_slot_runs(p, [&](int64_t i, int64_t slot, int64_t run) {
          const int64_t page = slot / kCachePageTokens, off = slot % kCachePageTokens, r = p.row0 + i;
          ex->copy_bytes(cache + page * kIndexerPageBytes + off * kIndexerKeyDim, kfp8.data() + r * kIndexerKeyDim,
                         run * kIndexerKeyDim);
          ex->copy_bytes(cache + page * kIndexerPageBytes + kIndexerPageScaleOffset + off * sizeof(float),
                         scales + r * sizeof(float), run * static_cast<int64_t>(sizeof(float)));
        });
      if (fused) {
        IndexerParams ip;
        ip.T = static_cast<int>(n);
        ip.S = static_cast<int>(longest);
        ip.HI = d.HI;
        ip.DI = d.DI;
        ip.ks = ks_d.data();
        ip.ke = ctx_d.data();
        ex->gather_indexer_keys(cache, tab_d.data(), longest, grow(kall, longest * kIndexerKeyDim), grow(kall_scale, longest));
        ip.precision = Precision::kFp8;
        ip.q = qfp8.data();
        ip.k = kall.data();
        ip.k_scale = kall_scale.data();
        ip.w = wfold.data();
        ex->ops().indexer_topk(ip, Kr, sel_d.data());
        return;
      }
      float* lg = grow(ilog, n * longest);
      PagedIndexerParams pp;
      pp.B = static_cast<int>(n / next_n);
      pp.next_n = next_n;
      pp.HI = d.HI;
      pp.num_pages = num_pages;
      // tab_d holds one table row per step row; the op wants one per request (next_n rows): a stride
      // of next_n rows picks each request's first row
      pp.max_blocks = next_n * num_pages;
      pp.max_context_len = static_cast<int>(longest);
      pp.q_fp8 = qfp8.data();
      pp.cache = cache;
      pp.w = wfold.data();
      pp.context_lens = ctx_d.data();
      pp.block_table = tab_d.data();
      ex->ops().indexer_logits_paged(pp, lg);
      topk(l, lg, 0, n, longest, Kr);
      return;
    }
    // fp32 keys live at their physical slots; each sequence's are gathered into logical order
    float* keys = reinterpret_cast<float*>(idx[l].data());
    const int64_t key_bytes = static_cast<int64_t>(d.DI) * sizeof(float);
    for (const Part& p : parts)
      for_slot_runs(p, [&](int64_t i, int64_t slot, int64_t run) {
        ex->copy_bytes(keys + slot * d.DI, ik.data() + (p.row0 + i) * d.DI, run * key_bytes);
      });
    for (const Part& p : parts) {
      const Seq& q = seqs[p.seq];
      const int64_t total = p.at + p.n;
      float* ks_logical = grow(kseq, total * d.DI);
      for_page_runs(q, total, [&](int64_t lp, int64_t slot, int64_t run) {
        ex->copy_bytes(ks_logical + lp * d.DI, keys + slot * d.DI, run * key_bytes);
      });
      IndexerParams ip;
      ip.T = static_cast<int>(p.n);
      ip.S = static_cast<int>(total);
      ip.HI = d.HI;
      ip.DI = d.DI;
      ip.q = iq.data() + p.row0 * d.HI * d.DI;
      ip.k = ks_logical;
      ip.w = iw.data() + p.row0 * d.HI;
      ip.ks = ks_d.data() + p.row0;
      ip.ke = ctx_d.data() + p.row0;
      if (fused) {
        ex->ops().indexer_topk(ip, Kr, sel_d.data() + p.row0 * Kr);
        continue;
      }
      float* lg = grow(ilog, p.n * total);
      ex->ops().indexer_logits(ip, lg);
      topk(l, lg, p.row0, p.n, total, Kr);
    }
  }

  // top-k of rows [row0, row0 + rows) from their logits [rows, S] into sel_d (layer l's policy)
  void topk(int l, const float* lg, int64_t row0, int64_t rows, int64_t S, int Kr) {
    TopkParams tp;
    tp.T = static_cast<int>(rows);
    tp.S = static_cast<int>(S);
    tp.K = Kr;
    tp.logits = lg;
    tp.ks = ks_d.data() + row0;
    tp.ke = ctx_d.data() + row0;
    tp.indices = sel_d.data() + row0 * Kr;
    if (ragged()) {   // the default policy runs the op as before policies existed
      // the MTP layer keeps the last main layer's budget
      tp.policy = layer_topk_policy(opt.selection, std::min(l, m.cfg.num_hidden_layers - 1), m.cfg.num_hidden_layers, Kr);
      tp.topk_length = sel_len_d.data() + row0;
    }
    ex->ops().topk_select(tp);
  }

  // The step's buffers for n rows over at most `longest` cached positions with Kr keys per row.
  void size_step(int64_t n, int64_t longest, int Kr, int64_t cached) {
    const int64_t row_floats = 6LL * d.D + 2LL * d.qr + static_cast<int64_t>(d.H) * (d.dq + 2LL * d.Dm + d.kvr + d.dv + 1) +
                               3LL * d.Dm + 2LL * d.kvr + static_cast<int64_t>(d.HI) * (d.DI + 1) + 2LL * d.DI + d.HI +
                               3LL * d.F + moe_row_floats(m.cfg) + 2LL * Kr + num_pages + 2LL * d.V + 8 +
                               (opt.mtp ? 3LL * d.D : 0);   // the MTP input's embedding and concatenation
    // + the logits of n rows over `longest` keys and one sequence's keys in logical order
    const int64_t per_row = detail::add_checked(row_floats, longest, "Session: step scratch");
    const int64_t need = detail::add_checked(detail::mul_checked(n, per_row * 4, "Session: step scratch bytes"),
                                             detail::mul_checked(longest, static_cast<int64_t>(d.DI) * 4 + 4, "Session: step keys"),
                                             "Session: step scratch bytes");
    if (need > scratch_bytes) {
      ex->check_fits(detail::add_checked(model_bytes + cache_bytes, scratch_bytes, "Session: step bytes"), need - scratch_bytes,
                     "Session: a step of " + std::to_string(n) + " tokens after " + std::to_string(cached) + " cached on " +
                         ex->device_name());
      scratch_bytes = need;
    }
    grow(x, n * d.D); grow(xn, n * d.D); grow(qa, n * d.qr); grow(rstd, n); grow(rstd2, n); grow(qan, n * d.qr);
    grow(q, n * d.H * d.dq); grow(kva, n * d.Dm); grow(c_raw, n * d.kvr); grow(cn, n * d.kvr); grow(qm, n * d.H * d.Dm);
    grow(kvm, n * d.Dm); grow(iq, n * d.HI * d.DI); grow(kpre, n * d.DI); grow(kmean, n); grow(krstd, n);
    grow(ik, n * d.DI); grow(iw, n * d.HI); grow(olat, n * d.H * d.kvr); grow(lse, n * d.H); grow(o, n * d.H * d.dv);
    grow(attn, n * d.D); grow(hn, n * d.D); grow(g, n * d.F); grow(u, n * d.F); grow(a, n * d.F); grow(mlp, n * d.D);
    grow(tok_d, n); grow(pos_d, n); grow(ctx_d, n); grow(ks_d, n); grow(tab_d, n * num_pages); grow(sel_d, n * Kr);
    grow(sel_len_d, n);
  }

  // Checks a step before anything is written: the sequences exist (once each), every token is in the
  // vocabulary, every sequence stays within `limit`, and the free pages cover the new positions.
  void check_step(const std::vector<Part>& parts) {
    const Config& c = m.cfg;
    int64_t pages_needed = 0;
    std::vector<char> seen(seqs.size(), 0);
    for (const Part& p : parts) {
      if (p.seq < 0 || p.seq >= static_cast<int>(seqs.size()) || !seqs[p.seq].live)
        throw Error("Session: no sequence " + std::to_string(p.seq));
      if (seen[p.seq]++) throw Error("Session: sequence " + std::to_string(p.seq) + " appears twice in one step");
      if (p.n <= 0) throw Error("Session: append needs at least one token");
      const Seq& q = seqs[p.seq];
      if (q.length + p.n > limit)
        throw Error("Session: " + std::to_string(q.length + p.n) + " tokens exceed " +
                    (limit == c.max_position_embeddings ? "max_position_embeddings = " : "the cache capacity max_tokens = ") +
                    std::to_string(limit));
      for (int64_t i = 0; i < p.n; ++i)
        if (p.tokens[i] < 0 || p.tokens[i] >= c.vocab_size)
          throw Error("Session: token " + std::to_string(p.tokens[i]) + " out of range [0, " + std::to_string(c.vocab_size) + ")");
      const int64_t pages = (q.length + p.n + kCachePageTokens - 1) / kCachePageTokens;
      pages_needed += std::max<int64_t>(0, pages - static_cast<int64_t>(q.pages.size()));
    }
    if (pages_needed > static_cast<int64_t>(free_pages.size()))
      throw Error("Session: the step needs " + std::to_string(pages_needed) + " more cache pages of " +
                  std::to_string(kCachePageTokens) + " tokens, and " + std::to_string(free_pages.size()) + " of the pool's " +
                  std::to_string(num_pages) + " are free (max_tokens = " + std::to_string(capacity) + ")");
  }

  // The step's index arrays for its n rows (part p's row i: token p.tokens[i] at position p.at + i)
  // and the dense / window selection, host → executor memory (ks_d stays zero: every row's keys
  // start at position 0).
  void prepare(const std::vector<Part>& parts, int64_t n, int Kr) {
    tok_h.resize(static_cast<size_t>(n));
    pos_h.resize(static_cast<size_t>(n));
    ctx_h.resize(static_cast<size_t>(n));
    tab_h.assign(static_cast<size_t>(n * num_pages), 0);
    for (const Part& p : parts) {
      const Seq& q = seqs[p.seq];
      for (int64_t i = 0; i < p.n; ++i) {
        const int64_t r = p.row0 + i;
        tok_h[r] = p.tokens[i];
        pos_h[r] = static_cast<int32_t>(p.at + i);
        ctx_h[r] = static_cast<int32_t>(p.at + i + 1);
        std::copy(q.pages.begin(), q.pages.end(), tab_h.begin() + r * num_pages);
      }
    }
    if (opt.mode != AttentionMode::kSparse) {
      sel_h.resize(static_cast<size_t>(n * Kr));
      for (int64_t i = 0; i < n; ++i)
        for (int j = 0; j < Kr; ++j) {
          const int64_t p = opt.mode == AttentionMode::kDense ? j : ctx_h[i] - 1 - j;
          sel_h[i * Kr + j] = (opt.mode == AttentionMode::kDense ? p < ctx_h[i] : p >= 0) ? static_cast<int32_t>(p) : kInvalidIndex;
        }
    }
    const auto up = [&](IBuf& dst, const std::vector<int32_t>& src) {
      ex->upload_bytes(dst.data(), src.data(), static_cast<int64_t>(src.size() * sizeof(int32_t)));
    };
    up(tok_d, tok_h); up(pos_d, pos_h); up(ctx_d, ctx_h); up(tab_d, tab_h);
  }

  // Layer l (a main layer, or the MTP module's at num_hidden_layers) over the step's n rows in x:
  // writes the rows' latents and indexer keys into kv[l] / idx[l], attends, adds the MLP.
  void run_layer(int l, const std::vector<Part>& parts, int64_t n, int next_n, int Kr, int64_t longest) {
    Backend& ops = ex->ops();
    const float eps = static_cast<float>(m.cfg.rms_norm_eps);
    const bool prefill_kernels = gpu && parts.size() == 1 && n > kMaxDecodeRows;
    const LayerParams& L = m.layers[l];
    ops.rmsnorm_forward(x.data(), ex->param(L.input_norm), xn.data(), rstd.data(), n, d.D, eps);
    round_acts(xn.data(), n * d.D);
    round_acts(x.data(), n * d.D);
    mla_project(*ex, m, l, xn.data(), n, pos_d.data(), qa.data(), rstd2.data(), qan.data(), q.data(), kva.data(),
                c_raw.data(), rstd2.data(), cn.data(), qm.data(), kvm.data(), bf16_acts);
    write_kv(l, parts, n);
    select(l, parts, n, next_n, Kr, longest);
    if (opt.record_selections && l < m.cfg.num_hidden_layers)   // logical positions, before paged_to_physical
      ex->download_bytes(last_sel.layers[l].data(), sel_d.data(), n * Kr * static_cast<int64_t>(sizeof(int32_t)));
    if (opt.mode == AttentionMode::kSparse && l < m.cfg.num_hidden_layers) {   // the main layers' statistic
      if (ragged()) ex->download_bytes(grow_host(sel_len_h, n), sel_len_d.data(), n * static_cast<int64_t>(sizeof(int32_t)));
      for (int64_t i = 0; i < n; ++i, ++selected_rows) selected_keys += ragged() ? sel_len_h[i] : std::min(Kr, ctx_h[i]);
    }
    ops.paged_to_physical(static_cast<int>(n), 1, Kr, tab_d.data(), num_pages, num_pages, sel_d.data());
    if (prefill_kernels && *opt.kv_format == KvCacheFormat::kBf16) {
      // a GPU prefill chunk over the bf16 cache: the sparse prefill kernel reads the cache rows
      // [slots, 576] in place at the physical slots
      uint16_t* qb = reinterpret_cast<uint16_t*>(grow(qmb, n * d.H * d.Dm * 2));
      ex->to_bf16(qm.data(), qb, n * d.H * d.Dm);
      AttentionParams ap = mqa_attention_params(m, d, static_cast<int>(n), static_cast<int>(capacity), nullptr, nullptr);
      ap.dtype = DType::kBF16;
      ap.q_bf16 = qb;
      ap.kv_bf16 = reinterpret_cast<const uint16_t*>(kv[l].data());
      ap.K = Kr;
      ap.indices = sel_d.data();
      ap.topk_length = row_lengths();   // a ragged selection stops at each row's k
      ops.sparse_attention_forward(ap, AttentionForwardOut{olat.data(), lse.data(), nullptr});
    } else if (v32_latent) {
      SparseDecodeParams sp;
      sp.B = static_cast<int>(n / next_n);
      sp.next_n = next_n;
      sp.H = d.H;
      sp.K = Kr;
      sp.num_slots = capacity;
      sp.scale = m.scale;
      sp.format = *opt.kv_format;
      if (bf16_decode_q) {
        uint16_t* qb = reinterpret_cast<uint16_t*>(grow(qmb, n * d.H * d.Dm * 2));
        ex->to_bf16(qm.data(), qb, n * d.H * d.Dm);
        sp.q_dtype = DType::kBF16;
        sp.q_bf16 = qb;
      } else {
        sp.q = qm.data();
      }
      sp.cache = kv[l].data();
      sp.indices = sel_d.data();
      sp.topk_length = row_lengths();   // a ragged selection stops at each row's k
      sp.out = olat.data();
      sp.lse = lse.data();
      sp.bf16_probs = bf16_acts && !gpu;   // the reference's bf16 probabilities (the CPU op)
      ops.sparse_attention_decode(sp);
    } else {
      AttentionParams ap = mqa_attention_params(m, d, static_cast<int>(n), static_cast<int>(capacity), qm.data(),
                                                reinterpret_cast<const float*>(kv[l].data()));
      ap.K = Kr;
      ap.indices = sel_d.data();
      ap.topk_length = row_lengths();
      ops.sparse_attention_forward(ap, AttentionForwardOut{olat.data(), lse.data(), nullptr});
    }
    round_acts(olat.data(), n * d.H * d.kvr);
    absorb_out(*ex, m, l, olat.data(), n, o.data());
    round_acts(o.data(), n * d.H * d.dv);
    ex->mm_xwt(n, d.H * d.dv, d.D, o.data(), d.H * d.dv, ex->param(L.o), d.H * d.dv, attn.data(), d.D);
    round_acts(attn.data(), n * d.D);
    ex->add(x.data(), attn.data(), n * d.D);
    ops.rmsnorm_forward(x.data(), ex->param(L.post_norm), hn.data(), rstd.data(), n, d.D, eps);
    round_acts(hn.data(), n * d.D);
    round_acts(x.data(), n * d.D);
    if (L.moe) {
      // Routing per row: row-invariant. Reference numerics round the experts' products as the
      // reference's Expert / MLP do, and the layer's output below.
      moe_forward(*ex, m, l, hn.data(), n, mlp.data(), nullptr, bf16_acts);
    } else {
      ex->mm_xwt(n, d.D, d.F, hn.data(), d.D, ex->param(L.gate), d.D, g.data(), d.F);
      round_acts(g.data(), n * d.F);
      ex->mm_xwt(n, d.D, d.F, hn.data(), d.D, ex->param(L.up), d.D, u.data(), d.F);
      round_acts(u.data(), n * d.F);
      ops.swiglu_forward(g.data(), u.data(), a.data(), n * d.F);
      round_acts(a.data(), n * d.F);
      ex->mm_xwt(n, d.F, d.D, a.data(), d.F, ex->param(L.down), d.F, mlp.data(), d.D);
    }
    round_acts(mlp.data(), n * d.D);
    ex->add(x.data(), mlp.data(), n * d.D);
  }

  // Numerics::kReference: a bf16 tensor between ops (dsa/model.h); the norm after each residual add
  // reads the fp32 sum, then the stream is rounded (the reference's fused add + norm).
  void round_acts(float* p, int64_t count) {
    if (bf16_acts) ex->round_bf16(p, count);
  }

  // One step: parts[i].n tokens appended to sequence parts[i].seq. Several parts only as a decode
  // batch (n = next_n each). out: the logits of every row (all_logits) or of each part's last row.
  void step(std::vector<Part> parts, int next_n, bool all_logits, std::vector<float>& out) {
    const Config& c = m.cfg;
    check_step(parts);
    int64_t n = 0, longest = 0, cached = 0;
    for (Part& p : parts) {
      p.row0 = n;
      n += p.n;
      Seq& q = seqs[p.seq];
      p.at = q.length;
      longest = std::max(longest, q.length + p.n);
      cached += q.length;
      while (static_cast<int64_t>(q.pages.size()) * kCachePageTokens < q.length + p.n) {
        q.pages.push_back(free_pages.back());
        free_pages.pop_back();
      }
    }
    const float eps = static_cast<float>(c.rms_norm_eps);
    const int Kr = step_topk(longest);
    size_step(n, longest, Kr, cached);
    prepare(parts, n, Kr);
    Backend& ops = ex->ops();
    ops.embedding_forward(tok_d.data(), ex->param(m.embed), x.data(), n, d.V, d.D);
    round_acts(x.data(), n * d.D);
    if (opt.record_selections) {
      last_sel.rows = n;
      last_sel.k = Kr;
      last_sel.layers.assign(static_cast<size_t>(c.num_hidden_layers), std::vector<int32_t>(static_cast<size_t>(n * Kr)));
    }
    for (int l = 0; l < c.num_hidden_layers; ++l) run_layer(l, parts, n, next_n, Kr, longest);
    if (opt.mtp) {   // the final hidden states the MTP module reads (a Session: one part)
      float* h = hidden.data() + parts[0].at * d.D;
      ops.rmsnorm_forward(x.data(), ex->param(m.final_norm), h, rstd.data(), n, d.D, eps);
      round_acts(h, n * d.D);
    }
    // the rows whose logits are returned: all, or each part's last
    int64_t rows = n;
    const float* xs = x.data();
    if (!all_logits) {
      rows = static_cast<int64_t>(parts.size());
      if (parts.size() == 1) {
        xs = x.data() + (n - 1) * d.D;
      } else {
        float* last = grow(xf, 2 * rows * d.D);   // [rows, D] gathered here, normalised into the second half
        for (size_t i = 0; i < parts.size(); ++i)
          ex->copy(last + static_cast<int64_t>(i) * d.D, x.data() + (parts[i].row0 + parts[i].n - 1) * d.D, d.D);
        xs = last;
      }
    }
    float* xnorm = grow(xf, 2 * rows * d.D) + rows * d.D;
    grow(logits, rows * d.V);
    ops.rmsnorm_forward(xs, ex->param(m.final_norm), xnorm, rstd.data(), rows, d.D, eps);
    round_acts(xnorm, rows * d.D);   // the lm_head itself runs in fp32 (the reference's fp32 head)
    ex->mm_xwt(rows, d.D, d.V, xnorm, d.D, ex->param(m.lm_head), d.D, logits.data(), d.V);
    out.resize(static_cast<size_t>(rows * d.V));
    ex->download_bytes(out.data(), logits.data(), rows * d.V * static_cast<int64_t>(sizeof(float)));   // waits for the step
    for (const Part& p : parts) {
      Seq& q = seqs[p.seq];
      q.tokens.resize(static_cast<size_t>(q.length));
      q.tokens.insert(q.tokens.end(), p.tokens, p.tokens + p.n);
      q.length += p.n;
    }
  }

  // keys per row of a step whose longest sequence is `longest`: all (dense), else the budget
  int step_topk(int64_t longest) const {
    return opt.mode == AttentionMode::kDense ? static_cast<int>(longest) : static_cast<int>(std::min<int64_t>(K, longest));
  }

  // Session::draft: the MTP module catches up on the positions it has not seen (reusing its last entry
  // when the token after it is still the one it was computed with), its last row taking `next`.
  void draft(int32_t next, std::vector<float>& out) {
    if (!opt.mtp) throw Error("Session: draft needs SessionOptions::mtp");
    Seq& q = seqs[0];
    if (q.length == 0) throw Error("Session: draft needs at least one token in the session");
    if (next < 0 || next >= m.cfg.vocab_size)
      throw Error("Session: token " + std::to_string(next) + " out of range [0, " + std::to_string(m.cfg.vocab_size) + ")");
    int64_t start = std::min(mtp_len, q.length);
    if (start > 0 && (start < q.length ? q.tokens[static_cast<size_t>(start)] : next) != mtp_next) --start;
    const int64_t n = q.length - start, longest = q.length;
    std::vector<int32_t> toks(static_cast<size_t>(n));   // row j: the token after position start + j
    for (int64_t j = 0; j < n; ++j) toks[j] = start + j + 1 < q.length ? q.tokens[static_cast<size_t>(start + j + 1)] : next;
    const std::vector<Part> parts{{0, toks.data(), n, 0, start}};
    const int Kr = step_topk(longest);
    size_step(n, longest, Kr, start);
    prepare(parts, n, Kr);
    constexpr int kModule = 0;   // the first MTP module drafts
    mtp_input(*ex, m, kModule, tok_d.data(), hidden.data() + start * d.D, start, n, grow(mtp_e, n * d.D),
              grow(mtp_cat, 2 * n * d.D), rstd.data(), x.data(), bf16_acts);
    run_layer(m.cfg.num_hidden_layers + kModule, parts, n, 1, Kr, longest);
    mtp_logits(*ex, m, kModule, x.data() + (n - 1) * d.D, 1, hn.data(), rstd.data(), grow(logits, d.V), bf16_acts);
    out.resize(static_cast<size_t>(d.V));
    ex->download_bytes(out.data(), logits.data(), d.V * static_cast<int64_t>(sizeof(float)));   // waits for the step
    mtp_len = q.length;
    mtp_next = next;
  }
};

namespace {
std::unique_ptr<Session::Impl> make_session(const Model::Impl& model, const SessionOptions& options,
                                           std::shared_ptr<Exec> exec, bool pooled) {
  try {
    return std::make_unique<Session::Impl>(model, options, std::move(exec), pooled);
  } catch (const std::bad_alloc&) {
    throw Error("Session: out of memory allocating the caches (max_tokens = " + std::to_string(options.max_tokens) +
                ", max_position_embeddings = " + std::to_string(model.cfg.max_position_embeddings) + ")");
  }
}

// prefill of one sequence in chunks of chunk_size (≤ 0: one step)
std::vector<float> prefill_chunks(Session::Impl& s, int id, const std::vector<int32_t>& tokens, int chunk_size, bool all_logits) {
  if (tokens.empty()) throw Error("Session: prefill needs at least one token");
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t chunk = chunk_size > 0 ? chunk_size : n;
  std::vector<float> out, part;
  for (int64_t i = 0; i < n; i += chunk) {
    s.step({{id, tokens.data() + i, std::min(chunk, n - i)}}, 1, all_logits, part);
    if (all_logits) out.insert(out.end(), part.begin(), part.end());
    else out.swap(part);
  }
  return out;
}

// one decode step of next_n tokens for each of ids (tokens [ids.size() · next_n])
std::vector<float> decode_batch(Session::Impl& s, const std::vector<int>& ids, const std::vector<int32_t>& tokens, int next_n) {
  if (ids.empty()) throw Error("BatchSession: decode needs at least one sequence");
  if (tokens.size() != ids.size() * static_cast<size_t>(next_n))
    throw Error("BatchSession: decode" + std::string(next_n == 2 ? "2" : "") + " got " + std::to_string(tokens.size()) +
                " tokens for " + std::to_string(ids.size()) + " sequences (" + std::to_string(next_n) + " each)");
  std::vector<Session::Impl::Part> parts;
  for (size_t i = 0; i < ids.size(); ++i) parts.push_back({ids[i], tokens.data() + i * next_n, next_n});
  std::vector<float> out;
  s.step(parts, next_n, /*all_logits=*/true, out);
  return out;
}
}  // namespace

Session::Session(const Model& model, const SessionOptions& options) : Session(model, options, nullptr) {}
Session::Session(const Model& model, const SessionOptions& options, std::shared_ptr<Exec> exec)
    : impl_(make_session(*model.impl_, options, std::move(exec), /*pooled=*/false)) {
  impl_->add_sequence();   // sequence 0: the session's one sequence
}
Session::~Session() = default;

std::vector<float> Session::append(const std::vector<int32_t>& tokens, bool all_logits) {
  std::vector<float> out;
  impl_->step({{0, tokens.data(), static_cast<int64_t>(tokens.size())}}, 1, all_logits, out);
  return out;
}

std::vector<float> Session::prefill(const std::vector<int32_t>& tokens, int chunk_size, bool all_logits) {
  return prefill_chunks(*impl_, 0, tokens, chunk_size, all_logits);
}

std::vector<float> Session::decode(int32_t token) { return decode_batch(*impl_, {0}, {token}, 1); }

std::vector<float> Session::decode2(int32_t t0, int32_t t1) { return decode_batch(*impl_, {0}, {t0, t1}, 2); }

std::vector<float> Session::draft(int32_t next) {
  std::vector<float> out;
  impl_->draft(next, out);
  return out;
}

void Session::truncate(int64_t length) {
  Session::Impl::Seq& q = impl_->seqs[0];
  if (length < 0 || length > q.length)
    throw Error("Session: truncate(" + std::to_string(length) + ") outside [0, " + std::to_string(q.length) + "]");
  if (length < impl_->mtp_len) {   // the MTP entry at length - 1 was computed with the token at `length`
    impl_->mtp_next = q.tokens[static_cast<size_t>(length)];
    impl_->mtp_len = length;
  }
  q.length = length;   // later appends overwrite the dropped slots
  q.tokens.resize(static_cast<size_t>(length));
}

int64_t Session::length() const { return impl_->seqs[0].length; }
int64_t Session::capacity() const { return impl_->capacity; }
const SessionOptions& Session::options() const { return impl_->opt; }
const StepSelections& Session::last_selections() const { return impl_->last_sel; }
double Session::mean_selected_keys() const {
  return impl_->selected_rows > 0 ? static_cast<double>(impl_->selected_keys) / static_cast<double>(impl_->selected_rows) : 0.0;
}

BatchSession::BatchSession(const Model& model, const SessionOptions& options) : BatchSession(model, options, nullptr) {}
BatchSession::BatchSession(const Model& model, const SessionOptions& options, std::shared_ptr<Exec> exec)
    : impl_(make_session(*model.impl_, options, std::move(exec), /*pooled=*/true)) {}
BatchSession::~BatchSession() = default;

int BatchSession::add() { return impl_->add_sequence(); }
void BatchSession::remove(int id) { impl_->remove_sequence(id); }
std::vector<float> BatchSession::prefill(int id, const std::vector<int32_t>& tokens, int chunk_size, bool all_logits) {
  impl_->seq(id, "prefill");
  return prefill_chunks(*impl_, id, tokens, chunk_size, all_logits);
}
std::vector<float> BatchSession::decode(const std::vector<int>& ids, const std::vector<int32_t>& tokens) {
  return decode_batch(*impl_, ids, tokens, 1);
}
std::vector<float> BatchSession::decode2(const std::vector<int>& ids, const std::vector<int32_t>& tokens) {
  return decode_batch(*impl_, ids, tokens, 2);
}
void BatchSession::truncate(int id, int64_t length) {
  Session::Impl::Seq& q = impl_->seq(id, "truncate");
  if (length < 0 || length > q.length)
    throw Error("BatchSession: truncate(" + std::to_string(id) + ", " + std::to_string(length) + ") outside [0, " +
                std::to_string(q.length) + "]");
  q.length = length;
  q.tokens.resize(static_cast<size_t>(length));
}
int64_t BatchSession::length(int id) const { return impl_->seq(id, "length").length; }
std::vector<int> BatchSession::sequences() const {
  std::vector<int> ids;
  for (size_t i = 0; i < impl_->seqs.size(); ++i)
    if (impl_->seqs[i].live) ids.push_back(static_cast<int>(i));
  return ids;
}
int64_t BatchSession::free_tokens() const { return static_cast<int64_t>(impl_->free_pages.size()) * kCachePageTokens; }
int64_t BatchSession::capacity() const { return impl_->capacity; }
int64_t BatchSession::cache_bytes_per_token() const { return impl_->cache_bytes_per_token(); }
const SessionOptions& BatchSession::options() const { return impl_->opt; }

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
  // + with SessionOptions::mtp: the MTP layer's records and the main model's final hidden state
  return (mla + idx) * s.cache_layers() + (s.opt.mtp ? static_cast<int64_t>(s.d.D) * sizeof(float) : 0);
}

}  // namespace dsa::model

// capi.cpp — the C API of include/dsa/dsa.h over the C++ library: every entry point catches every
// exception at the boundary (no C++ exception crosses into C), maps it to a dsa_status and keeps its
// message for dsa_last_error(). Ops translate the C params structs into the ops.h structs and run on
// a dsa::Backend (the CPU backend, or dsa::cuda::make_backend in a CUDA build).
#include "dsa/dsa.h"

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "dsa/backend.h"
#include "dsa/model.h"
#include "dsa/ops.h"
#ifdef DSA_HAVE_CUDA
#include "dsa/cuda_ops.h"
#endif

#ifndef DSA_VERSION_STRING
#error "DSA_VERSION_STRING must be defined by the build (the CMake project version)"
#endif

struct dsa_model {
  dsa::model::Model model;
};
struct dsa_session {
  std::unique_ptr<dsa::model::Session> session;
  int vocab = 0;
};
struct dsa_backend {
  dsa::Backend* backend = nullptr;              // the CPU singleton or owned below
  std::unique_ptr<dsa::Backend> owned;
  std::string name;
};

namespace {

thread_local std::string g_last_error;

// Thrown inside this file for a C-level argument error (a null handle or output) with its status.
struct CallError {
  dsa_status status;
  std::string message;
};

// Runs body, mapping what it throws to a status; `fn` prefixes the message so that it names the entry
// point. `io_status`: the status of a dsa::Error (checkpoint loading reports them as I/O problems).
template <typename Body>
dsa_status guarded(const char* fn, Body&& body, dsa_status error_status = DSA_STATUS_INVALID_ARGUMENT) {
  g_last_error.clear();
  try {
    body();
    return DSA_STATUS_OK;
  } catch (const CallError& e) {
    g_last_error = std::string(fn) + ": " + e.message;
    return e.status;
  } catch (const dsa::Error& e) {
    g_last_error = std::string(fn) + ": " + e.what();
    return error_status;
  } catch (const std::bad_alloc&) {
    g_last_error = std::string(fn) + ": out of memory";
    return DSA_STATUS_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    g_last_error = std::string(fn) + ": " + e.what();
    return DSA_STATUS_INTERNAL;
  } catch (...) {
    g_last_error = std::string(fn) + ": unknown error";
    return DSA_STATUS_INTERNAL;
  }
}

void require(bool ok, const char* what) {
  if (!ok) throw CallError{DSA_STATUS_INVALID_ARGUMENT, what};
}

dsa::DType attention_dtype(int32_t d, const char* fn) {
  if (d == DSA_DTYPE_F32) return dsa::DType::kF32;
  if (d == DSA_DTYPE_BF16) return dsa::DType::kBF16;
  throw CallError{DSA_STATUS_INVALID_ARGUMENT,
                  std::string("dtype = ") + std::to_string(d) + " must be DSA_DTYPE_F32 or DSA_DTYPE_BF16 (" + fn + ")"};
}

dsa::AttentionParams to_attention(const dsa_attention_params* c, const char* fn) {
  require(c != nullptr, "params is null");
  dsa::AttentionParams p;
  p.T = c->T;
  p.S = c->S;
  p.H = c->H;
  p.Dqk = c->Dqk;
  p.Dv = c->Dv;
  p.scale = c->scale;
  p.dtype = attention_dtype(c->dtype, fn);
  if (p.dtype == dsa::DType::kF32) {
    p.q = static_cast<const float*>(c->q);
    p.kv = static_cast<const float*>(c->kv);
  } else {
    p.q_bf16 = static_cast<const uint16_t*>(c->q);
    p.kv_bf16 = static_cast<const uint16_t*>(c->kv);
  }
  p.K = c->K;
  p.indices = c->indices;
  p.topk_length = c->topk_length;
  p.ks = c->ks;
  p.ke = c->ke;
  return p;
}

dsa::IndexerParams to_indexer(const dsa_indexer_params* c) {
  require(c != nullptr, "params is null");
  dsa::IndexerParams p;
  p.T = c->T;
  p.S = c->S;
  p.HI = c->HI;
  p.DI = c->DI;
  switch (c->dtype) {
    case DSA_DTYPE_F32: p.precision = dsa::Precision::kFp32; break;
    case DSA_DTYPE_BF16: p.precision = dsa::Precision::kBf16; break;
    case DSA_DTYPE_FP8_E4M3: p.precision = dsa::Precision::kFp8; break;
    default: throw CallError{DSA_STATUS_INVALID_ARGUMENT, "dtype = " + std::to_string(c->dtype) + " is not a dsa_dtype"};
  }
  p.q = c->q;
  p.k = c->k;
  p.k_scale = c->k_scale;
  p.w = c->w;
  p.ks = c->ks;
  p.ke = c->ke;
  return p;
}

dsa::Backend& backend_of(dsa_backend* b) {
  require(b != nullptr && b->backend != nullptr, "backend is null");
  return *b->backend;
}

}  // namespace

extern "C" {

const char* dsa_last_error(void) { return g_last_error.c_str(); }

const char* dsa_status_name(dsa_status status) {
  switch (status) {
    case DSA_STATUS_OK: return "OK";
    case DSA_STATUS_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case DSA_STATUS_IO: return "IO";
    case DSA_STATUS_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case DSA_STATUS_UNSUPPORTED: return "UNSUPPORTED";
    case DSA_STATUS_INTERNAL: return "INTERNAL";
  }
  return "UNKNOWN";
}

const char* dsa_version(void) { return DSA_VERSION_STRING; }

// ── models and sessions ──────────────────────────────────────────────────────────────────────
dsa_status dsa_model_load(const char* dir, dsa_model** out) {
  return guarded("dsa_model_load", [&] {
    require(out != nullptr, "out is null");
    *out = nullptr;
    require(dir != nullptr, "dir is null");
    *out = new dsa_model{dsa::model::Model::load(dir)};
  }, DSA_STATUS_IO);
}

void dsa_model_free(dsa_model* model) { delete model; }

int32_t dsa_model_vocab_size(const dsa_model* model) { return model ? model->model.config().vocab_size : 0; }
int32_t dsa_model_num_layers(const dsa_model* model) { return model ? model->model.config().num_hidden_layers : 0; }

void dsa_session_options_init(dsa_session_options* options) {
  if (!options) return;
  *options = dsa_session_options{};
  options->mode = DSA_ATTENTION_SPARSE;
  options->kv_cache = DSA_KV_CACHE_AUTO;
}

dsa_status dsa_session_create(const dsa_model* model, const dsa_session_options* options, dsa_session** out) {
  return guarded("dsa_session_create", [&] {
    require(out != nullptr, "out is null");
    *out = nullptr;
    require(model != nullptr, "model is null");
    dsa_session_options o;
    dsa_session_options_init(&o);
    if (options) o = *options;
    dsa::model::SessionOptions so;
    require(o.mode == DSA_ATTENTION_SPARSE || o.mode == DSA_ATTENTION_DENSE, "options->mode is not a dsa_attention_mode");
    so.mode = o.mode == DSA_ATTENTION_DENSE ? dsa::model::AttentionMode::kDense : dsa::model::AttentionMode::kSparse;
    switch (o.kv_cache) {
      case DSA_KV_CACHE_AUTO: break;
      case DSA_KV_CACHE_FP32: so.kv_format = dsa::KvCacheFormat::kFp32; break;
      case DSA_KV_CACHE_BF16: so.kv_format = dsa::KvCacheFormat::kBf16; break;
      case DSA_KV_CACHE_FP8: so.kv_format = dsa::KvCacheFormat::kFp8Record; break;
      default: require(false, "options->kv_cache is not a dsa_kv_cache_format");
    }
    so.indexer_precision = o.fp8_indexer ? dsa::Precision::kFp8 : dsa::Precision::kFp32;
    so.topk = o.topk;
    so.max_tokens = o.max_tokens;
    auto s = std::make_unique<dsa_session>();
    s->session = std::make_unique<dsa::model::Session>(model->model, so);
    s->vocab = model->model.config().vocab_size;
    *out = s.release();
  });
}

void dsa_session_free(dsa_session* session) { delete session; }

dsa_status dsa_session_append(dsa_session* session, const int32_t* tokens, int64_t n, float* logits,
                              int64_t logits_capacity) {
  return guarded("dsa_session_append", [&] {
    require(session != nullptr, "session is null");
    require(tokens != nullptr, "tokens is null");
    require(logits != nullptr, "logits is null");
    if (n < 1) throw CallError{DSA_STATUS_INVALID_ARGUMENT, "n = " + std::to_string(n) + " must be >= 1"};
    if (logits_capacity < session->vocab)
      throw CallError{DSA_STATUS_INVALID_ARGUMENT, "logits_capacity = " + std::to_string(logits_capacity) +
                                                       " is less than the vocabulary size " + std::to_string(session->vocab)};
    const std::vector<int32_t> ids(tokens, tokens + n);
    const std::vector<float> row = session->session->append(ids);
    std::copy(row.begin(), row.end(), logits);
  });
}

int64_t dsa_session_length(const dsa_session* session) { return session ? session->session->length() : 0; }

dsa_status dsa_session_truncate(dsa_session* session, int64_t length) {
  return guarded("dsa_session_truncate", [&] {
    require(session != nullptr, "session is null");
    if (length < 0 || length > session->session->length())
      throw CallError{DSA_STATUS_INVALID_ARGUMENT, "length = " + std::to_string(length) + " is outside [0, " +
                                                       std::to_string(session->session->length()) + "]"};
    session->session->truncate(length);
  });
}

// ── backends ─────────────────────────────────────────────────────────────────────────────────
dsa_status dsa_backend_create_cpu(dsa_backend** out) {
  return guarded("dsa_backend_create_cpu", [&] {
    require(out != nullptr, "out is null");
    auto b = std::make_unique<dsa_backend>();
    b->backend = &dsa::cpu_backend();
    b->name = b->backend->name();
    *out = b.release();
  });
}

dsa_status dsa_backend_create_cuda(void* stream, const char* variant, dsa_backend** out) {
  return guarded("dsa_backend_create_cuda", [&] {
    require(out != nullptr, "out is null");
    *out = nullptr;
#ifdef DSA_HAVE_CUDA
    const dsa::cuda::Variant v = variant ? dsa::cuda::parse_variant(variant) : dsa::cuda::Variant::kAuto;
    auto b = std::make_unique<dsa_backend>();
    b->owned = dsa::cuda::make_backend(static_cast<cudaStream_t>(stream), v);
    b->backend = b->owned.get();
    b->name = b->backend->name();
    *out = b.release();
#else
    (void)stream;
    (void)variant;
    throw CallError{DSA_STATUS_UNSUPPORTED, "this build has no CUDA backend"};
#endif
  });
}

void dsa_backend_free(dsa_backend* backend) { delete backend; }

dsa_status dsa_backend_synchronize(dsa_backend* backend) {
  return guarded("dsa_backend_synchronize", [&] { backend_of(backend).synchronize(); }, DSA_STATUS_INTERNAL);
}

const char* dsa_backend_name(const dsa_backend* backend) { return backend ? backend->name.c_str() : ""; }

// ── ops ──────────────────────────────────────────────────────────────────────────────────────
dsa_status dsa_sparse_attention_forward(dsa_backend* b, const dsa_attention_params* p, float* out, float* lse,
                                        float* max_logits) {
  return guarded("dsa_sparse_attention_forward", [&] {
    backend_of(b).sparse_attention_forward(to_attention(p, "q, kv"), {out, lse, max_logits});
  });
}

dsa_status dsa_dense_attention_forward(dsa_backend* b, const dsa_attention_params* p, float* out, float* lse,
                                       float* max_logits) {
  return guarded("dsa_dense_attention_forward", [&] {
    backend_of(b).dense_attention_forward(to_attention(p, "q, kv"), {out, lse, max_logits});
  });
}

dsa_status dsa_sparse_attention_backward(dsa_backend* b, const dsa_attention_params* p, const float* dout,
                                         const float* out, const float* lse, float* dq, float* dkv) {
  return guarded("dsa_sparse_attention_backward", [&] {
    backend_of(b).sparse_attention_backward(to_attention(p, "q, kv"), {dout, out, lse, dq, dkv});
  });
}

dsa_status dsa_dense_attention_backward(dsa_backend* b, const dsa_attention_params* p, const float* dout,
                                        const float* out, const float* lse, float* dq, float* dkv) {
  return guarded("dsa_dense_attention_backward", [&] {
    backend_of(b).dense_attention_backward(to_attention(p, "q, kv"), {dout, out, lse, dq, dkv});
  });
}

dsa_status dsa_indexer_logits(dsa_backend* b, const dsa_indexer_params* p, float* logits) {
  return guarded("dsa_indexer_logits", [&] { backend_of(b).indexer_logits(to_indexer(p), logits); });
}

dsa_status dsa_topk_select(dsa_backend* b, int32_t T, int32_t S, int32_t K, const float* logits, const int32_t* ks,
                           const int32_t* ke, int32_t* indices) {
  return guarded("dsa_topk_select", [&] { backend_of(b).topk_select({T, S, K, logits, ks, ke, indices}); });
}

dsa_status dsa_indexer_topk(dsa_backend* b, const dsa_indexer_params* p, int32_t K, int32_t* indices) {
  return guarded("dsa_indexer_topk", [&] { backend_of(b).indexer_topk(to_indexer(p), K, indices); });
}

dsa_status dsa_indexer_backward(dsa_backend* b, const dsa_indexer_params* p, int32_t K, const int32_t* indices,
                                const float* d_logits, float* dq, float* dk, float* dw) {
  return guarded("dsa_indexer_backward", [&] {
    dsa::IndexerBackwardParams bp;
    bp.fwd = to_indexer(p);
    bp.K = K;
    bp.indices = indices;
    bp.d_logits = d_logits;
    bp.dq = dq;
    bp.dk = dk;
    bp.dw = dw;
    backend_of(b).indexer_backward(bp);
  });
}

dsa_status dsa_indexer_kl_forward(dsa_backend* b, const dsa_attention_params* p, const float* lse,
                                  const float* index_logits, float* loss) {
  return guarded("dsa_indexer_kl_forward", [&] {
    backend_of(b).indexer_kl_forward({to_attention(p, "q, kv"), lse, index_logits}, loss);
  });
}

dsa_status dsa_indexer_kl_backward(dsa_backend* b, const dsa_attention_params* p, const float* lse,
                                   const float* index_logits, const float* dloss, float* d_index_logits) {
  return guarded("dsa_indexer_kl_backward", [&] {
    backend_of(b).indexer_kl_backward({to_attention(p, "q, kv"), lse, index_logits}, dloss, d_index_logits);
  });
}

dsa_status dsa_indexer_logits_paged(dsa_backend* b, const dsa_paged_indexer_params* c, float* logits) {
  return guarded("dsa_indexer_logits_paged", [&] {
    require(c != nullptr, "params is null");
    dsa::PagedIndexerParams p;
    p.B = c->B;
    p.next_n = c->next_n;
    p.HI = c->HI;
    p.num_pages = c->num_pages;
    p.max_blocks = c->max_blocks;
    p.max_context_len = c->max_context_len;
    p.q_fp8 = c->q_fp8;
    p.cache = c->cache;
    p.w = c->w;
    p.context_lens = c->context_lens;
    p.block_table = c->block_table;
    backend_of(b).indexer_logits_paged(p, logits);
  });
}

dsa_status dsa_paged_to_physical(dsa_backend* b, int32_t B, int32_t next_n, int32_t K, const int32_t* block_table,
                                 int32_t max_blocks, int32_t num_pages, int32_t* indices) {
  return guarded("dsa_paged_to_physical", [&] {
    backend_of(b).paged_to_physical(B, next_n, K, block_table, max_blocks, num_pages, indices);
  });
}

dsa_status dsa_sparse_attention_decode(dsa_backend* b, const dsa_sparse_decode_params* c) {
  return guarded("dsa_sparse_attention_decode", [&] {
    require(c != nullptr, "params is null");
    dsa::SparseDecodeParams p;
    p.B = c->B;
    p.next_n = c->next_n;
    p.H = c->H;
    p.K = c->K;
    p.num_slots = c->num_slots;
    p.scale = c->scale;
    switch (c->kv_cache) {
      case DSA_KV_CACHE_FP32: p.format = dsa::KvCacheFormat::kFp32; break;
      case DSA_KV_CACHE_BF16: p.format = dsa::KvCacheFormat::kBf16; break;
      case DSA_KV_CACHE_FP8: p.format = dsa::KvCacheFormat::kFp8Record; break;
      default: require(false, "params->kv_cache must be DSA_KV_CACHE_FP32, _BF16 or _FP8");
    }
    p.q_dtype = attention_dtype(c->q_dtype, "q_dtype");
    if (p.q_dtype == dsa::DType::kF32)
      p.q = static_cast<const float*>(c->q);
    else
      p.q_bf16 = static_cast<const uint16_t*>(c->q);
    p.cache = c->cache;
    p.indices = c->indices;
    p.topk_length = c->topk_length;
    p.out = c->out;
    p.lse = c->lse;
    backend_of(b).sparse_attention_decode(p);
  });
}

}  // extern "C"

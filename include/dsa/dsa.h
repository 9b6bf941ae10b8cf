/* dsa/dsa.h — the C API of dsa: checkpoints, inference sessions and the ops of dsa/ops.h.
 *
 * Plain C (C99), no C++ type crosses it: opaque handles, fixed-width integers, raw pointers, and a
 * dsa_status on every call that can fail. A failed call writes nothing to its outputs and leaves a
 * message naming the function and the bad argument for dsa_last_error(), e.g.
 *   "dsa_sparse_attention_forward: sparse_attention_forward: indices[3,17] = 99 is out of range [0, 64)".
 * Link libdsa_c (CMake target dsa::dsa_c). docs/c_api.md walks through the example in examples/.
 *
 * Ops run on a backend: dsa_backend_create_cpu (host pointers, synchronous) or dsa_backend_create_cuda
 * (device pointers, asynchronous on the caller's stream; dsa_backend_synchronize waits and reports a
 * failed kernel). Shapes, dtypes and conventions are those of include/dsa/ops.h: row-major tensors,
 * invalid index −1, key ranges [ks[t], ke[t]), natural-log LSE, an explicit softmax scale.
 * Handles are not thread-safe: one thread uses a handle at a time; distinct handles are independent.
 */
#ifndef DSA_DSA_H
#define DSA_DSA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ── Errors ─────────────────────────────────────────────────────────────────────────────────── */
typedef enum dsa_status {
  DSA_STATUS_OK = 0,
  DSA_STATUS_INVALID_ARGUMENT = 1, /* a null pointer, a bad shape, dtype, range or index */
  DSA_STATUS_IO = 2,               /* a checkpoint that cannot be read or parsed */
  DSA_STATUS_OUT_OF_MEMORY = 3,    /* an allocation failed or exceeds the memory limit */
  DSA_STATUS_UNSUPPORTED = 4,      /* the build lacks what was asked for (e.g. the CUDA backend) */
  DSA_STATUS_INTERNAL = 5          /* anything else (a failed kernel, a broken invariant) */
} dsa_status;

/* The message of the last failed call on this thread ("" after a successful one). Valid until the
 * thread's next dsa_* call. */
const char* dsa_last_error(void);
/* "OK", "INVALID_ARGUMENT", … */
const char* dsa_status_name(dsa_status status);
/* The library version, "MAJOR.MINOR.PATCH" (the CMake project version). */
const char* dsa_version(void);

/* ── Checkpoints and inference sessions ─────────────────────────────────────────────────────── */
typedef struct dsa_model dsa_model;
typedef struct dsa_session dsa_session;

/* dir: a checkpoint folder (config.json + *.safetensors, F32/BF16/F8_E4M3). */
dsa_status dsa_model_load(const char* dir, dsa_model** out);
void dsa_model_free(dsa_model* model); /* null: no-op */
int32_t dsa_model_vocab_size(const dsa_model* model);
int32_t dsa_model_num_layers(const dsa_model* model);

typedef enum dsa_attention_mode { DSA_ATTENTION_SPARSE = 0, DSA_ATTENTION_DENSE = 1 } dsa_attention_mode;
typedef enum dsa_kv_cache_format {
  DSA_KV_CACHE_AUTO = 0, /* bf16 for the V3.2 latent (512 + 64), fp32 otherwise */
  DSA_KV_CACHE_FP32 = 1,
  DSA_KV_CACHE_BF16 = 2,
  DSA_KV_CACHE_FP8 = 3   /* the 656 B record; needs kv_lora_rank 512 and qk_rope_head_dim 64 */
} dsa_kv_cache_format;

typedef struct dsa_session_options {
  int32_t mode;          /* dsa_attention_mode */
  int32_t kv_cache;      /* dsa_kv_cache_format */
  int32_t fp8_indexer;   /* nonzero: the paged 132 B FP8 indexer cache (index_head_dim 128) */
  int32_t topk;          /* <= 0: the config's index_topk */
  int32_t max_tokens;    /* cache capacity; <= 0: max_position_embeddings */
} dsa_session_options;

/* Fills the defaults: sparse attention, automatic cache format, fp32 indexer, config top-k and capacity. */
void dsa_session_options_init(dsa_session_options* options);
/* options may be null (the defaults). The model must outlive the session. */
dsa_status dsa_session_create(const dsa_model* model, const dsa_session_options* options, dsa_session** out);
void dsa_session_free(dsa_session* session); /* null: no-op */
/* Appends n >= 1 token ids at positions [length, length + n) (chunked prefill when n > 1, decode when
 * n == 1) and writes the logits of the last appended row into logits[0, vocab); logits_capacity is the
 * number of floats logits can hold (>= vocab) — checked before anything is appended. */
dsa_status dsa_session_append(dsa_session* session, const int32_t* tokens, int64_t n, float* logits,
                              int64_t logits_capacity);
int64_t dsa_session_length(const dsa_session* session);
/* Drops cached positions >= length (length <= the current length). */
dsa_status dsa_session_truncate(dsa_session* session, int64_t length);

/* ── Backends ───────────────────────────────────────────────────────────────────────────────── */
typedef struct dsa_backend dsa_backend;

dsa_status dsa_backend_create_cpu(dsa_backend** out);
/* The CUDA backend on the current device; stream is a cudaStream_t (null: a stream the backend
 * creates); variant: null or "auto", "exact", "mma", "wgmma", "cublas" (include/dsa/cuda_ops.h).
 * DSA_STATUS_UNSUPPORTED in a build without the CUDA backend. */
dsa_status dsa_backend_create_cuda(void* stream, const char* variant, dsa_backend** out);
void dsa_backend_free(dsa_backend* backend); /* null: no-op */
/* Waits for every op called so far (a no-op on the CPU); reports a failed kernel. */
dsa_status dsa_backend_synchronize(dsa_backend* backend);
/* "cpu", "cuda:0", … (valid while the backend lives). */
const char* dsa_backend_name(const dsa_backend* backend);

/* ── Op parameters (C mirrors of the ops.h structs) ─────────────────────────────────────────── */
typedef enum dsa_dtype {
  DSA_DTYPE_F32 = 0,
  DSA_DTYPE_BF16 = 1,     /* uint16 bit patterns */
  DSA_DTYPE_FP8_E4M3 = 2  /* bytes, e4m3 "fn" */
} dsa_dtype;

/* Attention (ops 6–9). q [T, H, Dqk] and kv [S, Dqk] in dtype (F32 or BF16). Sparse ops read
 * indices [T, K] and optional topk_length [T]; dense ops read ks, ke [T]. */
typedef struct dsa_attention_params {
  int32_t T, S, H, Dqk, Dv;
  float scale;
  int32_t dtype;               /* dsa_dtype of q and kv */
  const void* q;
  const void* kv;
  int32_t K;
  const int32_t* indices;      /* [T, K] */
  const int32_t* topk_length;  /* [T], may be null */
  const int32_t* ks;           /* [T] */
  const int32_t* ke;           /* [T] */
} dsa_attention_params;

/* Indexer (ops 3, 5, 10). q [T, HI, DI], k [S, DI] in dtype; k_scale [S] for FP8 only; w [T, HI]. */
typedef struct dsa_indexer_params {
  int32_t T, S, HI, DI;
  int32_t dtype;               /* dsa_dtype of q and k */
  const void* q;
  const void* k;
  const float* k_scale;
  const float* w;
  const int32_t* ks;
  const int32_t* ke;
} dsa_indexer_params;

/* Paged decode indexer (op 11): q_fp8 [B, next_n, HI, 128], cache pages of 64 × 132 B. */
typedef struct dsa_paged_indexer_params {
  int32_t B, next_n, HI;
  int32_t num_pages, max_blocks, max_context_len;
  const uint8_t* q_fp8;
  const uint8_t* cache;
  const float* w;              /* [B·next_n, HI] */
  const int32_t* context_lens; /* [B, next_n] */
  const int32_t* block_table;  /* [B, max_blocks] */
} dsa_paged_indexer_params;

/* Sparse decode (op 11): q [B, next_n, H, 576] (F32 or BF16), cache slots in kv_cache format
 * (FP32 / BF16: [slots, 576]; FP8: [slots, 656] records), indices [B, next_n, K] physical slots. */
typedef struct dsa_sparse_decode_params {
  int32_t B, next_n, H, K;
  int64_t num_slots;
  float scale;
  int32_t kv_cache;            /* dsa_kv_cache_format other than AUTO */
  int32_t q_dtype;             /* dsa_dtype of q */
  const void* q;
  const void* cache;
  const int32_t* indices;
  const int32_t* topk_length;  /* [B·next_n], may be null */
  float* out;                  /* [B, next_n, H, 512] */
  float* lse;                  /* [B, H, next_n] */
} dsa_sparse_decode_params;

/* ── Ops (pointers in the backend's memory) ─────────────────────────────────────────────────── */
/* out [T, H, Dv], lse [T, H]; max_logits [T, H] may be null. */
dsa_status dsa_sparse_attention_forward(dsa_backend* b, const dsa_attention_params* p, float* out, float* lse,
                                        float* max_logits);
dsa_status dsa_dense_attention_forward(dsa_backend* b, const dsa_attention_params* p, float* out, float* lse,
                                       float* max_logits);
/* dq [T, H, Dqk] and dkv [S, Dqk] are written. */
dsa_status dsa_sparse_attention_backward(dsa_backend* b, const dsa_attention_params* p, const float* dout,
                                         const float* out, const float* lse, float* dq, float* dkv);
dsa_status dsa_dense_attention_backward(dsa_backend* b, const dsa_attention_params* p, const float* dout,
                                        const float* out, const float* lse, float* dq, float* dkv);
/* logits [T, S], −inf outside [ks, ke). */
dsa_status dsa_indexer_logits(dsa_backend* b, const dsa_indexer_params* p, float* logits);
/* indices [T, K]: descending score, ties to the smaller key, −1 fill. */
dsa_status dsa_topk_select(dsa_backend* b, int32_t T, int32_t S, int32_t K, const float* logits, const int32_t* ks,
                           const int32_t* ke, int32_t* indices);
dsa_status dsa_indexer_topk(dsa_backend* b, const dsa_indexer_params* p, int32_t K, int32_t* indices);
/* F32 only. K > 0 with indices: d_logits [T, K] at the selection; K == 0: dense d_logits [T, S]. */
dsa_status dsa_indexer_backward(dsa_backend* b, const dsa_indexer_params* p, int32_t K, const int32_t* indices,
                                const float* d_logits, float* dq, float* dk, float* dw);
/* Indexer KL (op 9): p.indices null → dense mode over [ks, ke) with index_logits [T, S]; else sparse mode
 * with index_logits [T, K]. loss [T]; dloss [T] may be null (≡ 1). */
dsa_status dsa_indexer_kl_forward(dsa_backend* b, const dsa_attention_params* p, const float* lse,
                                  const float* index_logits, float* loss);
dsa_status dsa_indexer_kl_backward(dsa_backend* b, const dsa_attention_params* p, const float* lse,
                                   const float* index_logits, const float* dloss, float* d_index_logits);
/* logits [B·next_n, max_context_len], −inf beyond each row's context length. */
dsa_status dsa_indexer_logits_paged(dsa_backend* b, const dsa_paged_indexer_params* p, float* logits);
/* indices [B·next_n, K] logical → physical slots in place through block_table [B, max_blocks]. */
dsa_status dsa_paged_to_physical(dsa_backend* b, int32_t B, int32_t next_n, int32_t K, const int32_t* block_table,
                                 int32_t max_blocks, int32_t num_pages, int32_t* indices);
dsa_status dsa_sparse_attention_decode(dsa_backend* b, const dsa_sparse_decode_params* p);

#ifdef __cplusplus
}
#endif

#endif /* DSA_DSA_H */

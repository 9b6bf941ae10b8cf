/* c_api_demo.c — the C API of dsa (include/dsa/dsa.h) from plain C.
 *
 *   c_api_demo CHECKPOINT_DIR [N_NEW_TOKENS]
 *
 * 1. Loads a checkpoint, prefills a prompt of token ids in one call, decodes greedily, and checks that
 *    feeding the same ids one at a time in a second session gives the same logits (the session's
 *    chunked-prefill ≡ decode invariant, bitwise).
 * 2. Runs sparse attention on the CPU backend with every causal key selected and checks it against
 *    dense attention over the same keys (equal up to summation order).
 * 3. Shows the error path: an out-of-range index is refused with a message, and the output is untouched.
 * Exits 0 when every check holds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsa/dsa.h"

#define PROMPT_LEN 6
#define DEFAULT_NEW_TOKENS 8
/* Sparse vs dense attention differ only in summation order: a few fp32 ulps of O(1) outputs. */
#define ATTENTION_TOLERANCE 1e-5f

static int fail(const char* what, dsa_status st) {
  fprintf(stderr, "%s failed: %s: %s\n", what, dsa_status_name(st), dsa_last_error());
  return 1;
}

static int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

static int session_demo(const char* dir, int n_new) {
  dsa_model* model = NULL;
  dsa_status st = dsa_model_load(dir, &model);
  if (st != DSA_STATUS_OK) return fail("dsa_model_load", st);
  const int vocab = dsa_model_vocab_size(model);
  printf("loaded %s: %d layers, vocabulary %d\n", dir, dsa_model_num_layers(model), vocab);

  dsa_session_options opt;
  dsa_session_options_init(&opt);
  dsa_session *a = NULL, *b = NULL;
  if ((st = dsa_session_create(model, &opt, &a)) != DSA_STATUS_OK) return fail("dsa_session_create", st);
  if ((st = dsa_session_create(model, &opt, &b)) != DSA_STATUS_OK) return fail("dsa_session_create", st);

  const int total = PROMPT_LEN + n_new;
  int32_t* ids = malloc(sizeof(int32_t) * (size_t)total);
  float* la = malloc(sizeof(float) * (size_t)vocab);
  float* lb = malloc(sizeof(float) * (size_t)vocab);
  for (int i = 0; i < PROMPT_LEN; ++i) ids[i] = (int32_t)((i * 37 + 1) % vocab);

  /* a: the prompt in one call, then one token per call (greedy). */
  if ((st = dsa_session_append(a, ids, PROMPT_LEN, la, vocab)) != DSA_STATUS_OK) return fail("dsa_session_append", st);
  for (int i = PROMPT_LEN; i < total; ++i) {
    ids[i] = argmax(la, vocab);
    if (i + 1 < total && (st = dsa_session_append(a, &ids[i], 1, la, vocab)) != DSA_STATUS_OK)
      return fail("dsa_session_append", st);
  }
  printf("greedy continuation:");
  for (int i = PROMPT_LEN; i < total; ++i) printf(" %d", ids[i]);
  printf("\n");

  /* b: every id one at a time; the logits after the last one must equal a's, bitwise. */
  for (int i = 0; i < total - 1; ++i)
    if ((st = dsa_session_append(b, &ids[i], 1, lb, vocab)) != DSA_STATUS_OK) return fail("dsa_session_append", st);
  int ok = dsa_session_length(a) == dsa_session_length(b) && memcmp(la, lb, sizeof(float) * (size_t)vocab) == 0;
  printf("prefill + decode == token-by-token (length %lld): %s\n", (long long)dsa_session_length(a), ok ? "yes" : "NO");

  /* A too-small logits buffer is refused before anything is appended. */
  const int64_t before = dsa_session_length(b);
  st = dsa_session_append(b, ids, 1, lb, vocab - 1);
  ok = ok && st == DSA_STATUS_INVALID_ARGUMENT && dsa_session_length(b) == before;
  printf("small logits buffer refused: %s\n", dsa_last_error());

  free(ids);
  free(la);
  free(lb);
  dsa_session_free(a);
  dsa_session_free(b);
  dsa_model_free(model);
  return ok ? 0 : 1;
}

enum { T = 5, H = 2, DQK = 16, DV = 8 };

static int ops_demo(void) {
  dsa_backend* cpu = NULL;
  dsa_status st = dsa_backend_create_cpu(&cpu);
  if (st != DSA_STATUS_OK) return fail("dsa_backend_create_cpu", st);
  printf("backend: %s\n", dsa_backend_name(cpu));

  float q[T * H * DQK], kv[T * DQK];
  for (int i = 0; i < T * H * DQK; ++i) q[i] = sinf(0.37f * (float)i);
  for (int i = 0; i < T * DQK; ++i) kv[i] = cosf(0.23f * (float)i);
  /* Row t selects keys 0..t (every causal key), the rest −1; the dense form uses [0, t + 1). */
  int32_t indices[T * T], ks[T], ke[T];
  for (int t = 0; t < T; ++t) {
    ks[t] = 0;
    ke[t] = t + 1;
    for (int k = 0; k < T; ++k) indices[t * T + k] = k <= t ? k : -1;
  }
  dsa_attention_params p;
  memset(&p, 0, sizeof p);
  p.T = T;
  p.S = T;
  p.H = H;
  p.Dqk = DQK;
  p.Dv = DV;
  p.scale = 1.0f / sqrtf((float)DQK);
  p.dtype = DSA_DTYPE_F32;
  p.q = q;
  p.kv = kv;
  p.K = T;
  p.indices = indices;
  p.ks = ks;
  p.ke = ke;
  float out_s[T * H * DV], lse_s[T * H], out_d[T * H * DV], lse_d[T * H];
  if ((st = dsa_sparse_attention_forward(cpu, &p, out_s, lse_s, NULL)) != DSA_STATUS_OK)
    return fail("dsa_sparse_attention_forward", st);
  if ((st = dsa_dense_attention_forward(cpu, &p, out_d, lse_d, NULL)) != DSA_STATUS_OK)
    return fail("dsa_dense_attention_forward", st);
  float worst = 0.0f;
  for (int i = 0; i < T * H * DV; ++i) worst = fmaxf(worst, fabsf(out_s[i] - out_d[i]));
  for (int i = 0; i < T * H; ++i) worst = fmaxf(worst, fabsf(lse_s[i] - lse_d[i]));
  int ok = worst <= ATTENTION_TOLERANCE;
  printf("sparse (all causal keys) vs dense attention: max |diff| = %g\n", (double)worst);

  /* An index outside [0, S) is refused by name and nothing is written. */
  indices[3 * T + 1] = 99;
  const float sentinel = -12345.0f;
  for (int i = 0; i < T * H * DV; ++i) out_s[i] = sentinel;
  st = dsa_sparse_attention_forward(cpu, &p, out_s, lse_s, NULL);
  int untouched = 1;
  for (int i = 0; i < T * H * DV; ++i) untouched = untouched && out_s[i] == sentinel;
  ok = ok && st == DSA_STATUS_INVALID_ARGUMENT && untouched && strstr(dsa_last_error(), "indices") != NULL;
  printf("bad index refused (%s, output untouched: %s): %s\n", dsa_status_name(st), untouched ? "yes" : "no",
         dsa_last_error());

  /* The indexer: logits then top-k equals the fused indexer + top-k (bit-identical by contract). */
  enum { HI = 2, DI = 8, TOPK = 3 };
  float iq[T * HI * DI], ik[T * DI], iw[T * HI], logits[T * T];
  for (int i = 0; i < T * HI * DI; ++i) iq[i] = sinf(0.11f * (float)i + 1.0f);
  for (int i = 0; i < T * DI; ++i) ik[i] = cosf(0.07f * (float)i);
  for (int i = 0; i < T * HI; ++i) iw[i] = 0.5f + 0.1f * (float)i;
  dsa_indexer_params ip;
  memset(&ip, 0, sizeof ip);
  ip.T = T;
  ip.S = T;
  ip.HI = HI;
  ip.DI = DI;
  ip.dtype = DSA_DTYPE_F32;
  ip.q = iq;
  ip.k = ik;
  ip.w = iw;
  ip.ks = ks;
  ip.ke = ke;
  int32_t sel[T * TOPK], fused[T * TOPK];
  if ((st = dsa_indexer_logits(cpu, &ip, logits)) != DSA_STATUS_OK) return fail("dsa_indexer_logits", st);
  if ((st = dsa_topk_select(cpu, T, T, TOPK, logits, ks, ke, sel)) != DSA_STATUS_OK) return fail("dsa_topk_select", st);
  if ((st = dsa_indexer_topk(cpu, &ip, TOPK, fused)) != DSA_STATUS_OK) return fail("dsa_indexer_topk", st);
  const int same = memcmp(sel, fused, sizeof sel) == 0 && sel[0 * TOPK + 1] == -1;   /* row 0 has one key */
  ok = ok && same;
  printf("indexer logits + top-k == fused indexer top-k (-1 fill in short rows): %s\n", same ? "yes" : "NO");

  /* A CUDA backend in a build without one is refused with DSA_STATUS_UNSUPPORTED, never a crash. */
  dsa_backend* gpu = NULL;
  st = dsa_backend_create_cuda(NULL, NULL, &gpu);
  printf("cuda backend: %s\n", st == DSA_STATUS_OK ? dsa_backend_name(gpu) : dsa_last_error());
  dsa_backend_free(gpu);
  dsa_backend_free(cpu);
  return ok ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s CHECKPOINT_DIR [N_NEW_TOKENS]\n", argv[0]);
    return 2;
  }
  const int n_new = argc == 3 ? atoi(argv[2]) : DEFAULT_NEW_TOKENS;
  if (n_new < 1) {
    fprintf(stderr, "N_NEW_TOKENS = %s must be a positive integer\n", argv[2]);
    return 2;
  }
  printf("dsa %s\n", dsa_version());
  const int rc = session_demo(argv[1], n_new) | ops_demo();
  printf(rc == 0 ? "all checks passed\n" : "a check FAILED\n");
  return rc;
}

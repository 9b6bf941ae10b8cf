// dsa/model.h — the DeepSeek-V3.2 model (MLA + a lightning indexer in every layer) on the CPU:
// config, parameters with Hugging Face names, checkpoints, training forward/backward per stage,
// evaluation in dense / DSA / sliding-window mode, indexer recall, and an inference session with
// chunked prefill and paged-cache decode. docs/model.md describes the architecture line by line.
//
// Architecture of one layer (x [T, D] = hidden_size, packed sequences, positions restart at 0 per
// sequence, causal inside each sequence):
//   h    = RMSNorm(x; input_layernorm)
//   qr   = RMSNorm(h · q_a_projᵀ; q_a_layernorm)                       [T, q_lora_rank]
//   q    = qr · q_b_projᵀ → [T, H, nope | rope]; interleaved RoPE on the LAST rope dims
//   kva  = h · kv_a_proj_with_mqaᵀ → [c (kv_lora_rank) | k_pe (rope)]; c ← RMSNorm(c; kv_a_layernorm);
//          interleaved RoPE on k_pe (shared by all heads)
//   kv_b_proj [H·(nope + v), kv_lora_rank] = per head [W_UK (nope rows); W_UV (v rows)]
//   MQA mode (training, DSA, inference): q_lat[h] = [q_nope[h]·W_UK[h] | q_pe[h]], kv = [c | k_pe],
//          attention over latents (ops 6–8), out[h] = o_lat[h]·W_UV[h]ᵀ
//   MHA mode (evaluation only, an oracle): k[h] = [c·W_UK[h]ᵀ | k_pe], v[h] = c·W_UV[h]ᵀ
//   softmax scale = (nope + rope)^-0.5 · yarn_softmax_mscale²
//   x   += (out [T, H·v]) · o_projᵀ
//   x   += SwiGLU MLP(RMSNorm(x; post_attention_layernorm)), or in a MoE layer the routed + shared
//          experts (src/model/moe.h)
// Indexer (per layer, inputs DETACHED in training): qi = qr · wq_bᵀ [T, HI, DI]; ki = LayerNorm(h·wkᵀ;
//   k_norm weight+bias); rotate-half RoPE on the FIRST rope dims of qi and ki; Hadamard on both;
//   w = h · weights_projᵀ · HI^-0.5 · DI^-0.5; I = Σ_h w·ReLU(qi·ki) (op 3); top-k of min(index_topk,
//   available keys) (op 4). FP8 (op 3 kFp8, paged cache) in the inference session, fp32 in training.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "dsa/ops.h"

namespace dsa::model {

// ── Configuration (Hugging Face config.json keys of DeepSeek-V3.2) ──────────────────────────────
struct Config {
  int vocab_size = 256;
  int hidden_size = 128;
  int intermediate_size = 384;
  int num_hidden_layers = 2;
  int num_attention_heads = 4;
  int q_lora_rank = 96;
  int kv_lora_rank = 64;
  int qk_nope_head_dim = 32;
  int qk_rope_head_dim = 16;
  int v_head_dim = 32;
  int index_n_heads = 4;
  int index_head_dim = 32;           // power of two (Hadamard), > qk_rope_head_dim
  int index_topk = 64;
  double rope_theta = 10000.0;
  YarnScaling rope_scaling;          // "rope_scaling": {"type": "yarn", "factor", ...}; factor ≤ 1: none
  bool has_rope_scaling = false;     // whether config.json carried a rope_scaling object
  double rms_norm_eps = 1e-6;
  int max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;   // std of the random init of matrices

  // Mixture of experts (DeepSeekMoE). Layer i is a MoE layer when n_routed_experts > 0,
  // i >= first_k_dense_replace and i % moe_layer_freq == 0; every other layer has the dense SwiGLU MLP
  // of intermediate_size. A MoE layer's MLP: the router (mlp.gate) picks num_experts_per_tok of the
  // n_routed_experts SwiGLU experts per token (src/model/moe.h has the rule), their outputs are summed
  // with the router's weights, and the shared experts (one SwiGLU of n_shared_experts ·
  // moe_intermediate_size) are added. e_score_correction_bias (noaux_tc) steers the choice only; it is
  // a fixed parameter here (zero gradient: DeepSeek updates it by a load-balancing rule, not by
  // gradient), and no auxiliary balance loss is trained.
  int first_k_dense_replace = 2;     // absent from config.json: num_hidden_layers
  int n_routed_experts = 0;          // 0: no experts
  int n_shared_experts = 0;          // always-on experts of moe_intermediate_size each
  int num_experts_per_tok = 0;       // routed experts per token (required with MoE layers)
  int moe_intermediate_size = 0;     // one expert's SwiGLU width (required with MoE layers)
  int moe_layer_freq = 1;
  int n_group = 1;                   // expert groups; routing keeps topk_group of them per token
  int topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;        // sigmoid routing: the k weights renormalised to sum 1
  std::string scoring_func = "sigmoid";   // "sigmoid" or "softmax"
  // "noaux_tc" (V3: group score = sum of the two best biased scores, gate has e_score_correction_bias),
  // "group_limited_greedy" (V2: group score = best score) or "greedy" (no groups).
  std::string topk_method = "noaux_tc";
  int ep_size = 1;                   // expert-parallel ranks the checkpoint was made for; divides n_routed_experts
  // Multi-token prediction (MTP) modules: checkpoint layers num_hidden_layers … + num_nextn_predict_layers
  // - 1, each enorm, hnorm, eh_proj, a decoder layer (dense or MoE by its index) and shared_head.norm,
  // sharing the main embedding and output head (docs/model.md "Multi-token prediction"). Model holds
  // and loads them; Session::draft runs the first for speculative decoding; no pass trains them.
  int num_nextn_predict_layers = 0;

  // "quantization_config" of an FP8 checkpoint (V3: e4m3 weights, one fp32 weight_scale_inv per
  // 128 x 128 block, activations quantised dynamically per 128 values, V3.2: ue8m0 scales).
  struct Quantization {
    bool present = false;                 // config.json carried a quantization_config object
    std::string quant_method = "fp8";     // the only method known
    std::string fmt = "e4m3";             // the only format known
    std::string activation_scheme = "dynamic";   // "dynamic" or "static"
    std::string scale_fmt;                // "" (absent or null: fp32 scales) or "ue8m0"
    int block_rows = 128, block_cols = 128;      // weight_block_size [rows, cols]
  };
  Quantization quantization;

  // A small config for tests and the CPU demo (the defaults above).
  static Config tiny();
  // Parses config.json text / file. Unknown keys are ignored (V3.2 configs carry many); missing keys
  // keep the defaults above. Throws dsa::Error naming the file and the key on a bad value.
  static Config from_json(const std::string& text, const std::string& label = "config.json");
  static Config from_json_file(const std::string& path);
  std::string to_json() const;       // HF keys, round-trips through from_json
  // Throws dsa::Error naming the key: non-positive sizes, odd rope dims, index_head_dim not a power
  // of two or < qk_rope_head_dim, inconsistent MoE routing (topk_group > n_group, num_experts_per_tok
  // > n_routed_experts, n_routed_experts not divisible by n_group or ep_size, unknown scoring_func or
  // topk_method), an unknown quantization_config, etc.
  void validate() const;

  bool is_moe_layer(int64_t layer) const;   // layers ≥ num_hidden_layers are the MTP modules
  int num_moe_layers() const;                // among the num_hidden_layers main layers

  // Sums in int64 (validate() refuses configs whose sums do not fit an int).
  int qk_head_dim() const { return static_cast<int>(static_cast<int64_t>(qk_nope_head_dim) + qk_rope_head_dim); }
  int mqa_dim() const { return static_cast<int>(static_cast<int64_t>(kv_lora_rank) + qk_rope_head_dim); }   // Dqk of the MQA-mode ops
  float softmax_scale() const;       // qk_head_dim^-0.5 · mscale² (YaRN), explicit (dsa-spec §2.4)
  // Parameter count of the main model (embeddings, num_hidden_layers layers with indexer and dense or
  // MoE MLP, final norm, lm_head), checked int64: param_counts().main. Model holds param_counts().total
  // (main + the MTP modules).
  int64_t num_params() const;
  struct ParamCounts;
  ParamCounts param_counts() const;   // the breakdown below (checked int64; throws naming the product)
};

// Parameter counts from the config alone (Config::param_counts). Tensors as in the Hugging Face
// checkpoint; FP8 weight_scale_inv tensors are scales, not parameters, and are not counted.
struct Config::ParamCounts {
  int dense_layers = 0, moe_layers = 0, mtp_layers = 0;
  int64_t embedding = 0;          // model.embed_tokens
  int64_t lm_head = 0;            // 0 when tie_word_embeddings
  int64_t attention = 0;          // main layers: MLA (q_a, q_a_layernorm, q_b, kv_a, kv_a_layernorm,
                                  // kv_b, o_proj) + input/post_attention layernorms
  int64_t indexer = 0;            // main layers: wq_b, wk, k_norm (weight + bias), weights_proj
  int64_t dense_mlp = 0;          // main dense layers: gate, up, down
  int64_t moe = 0;                // main MoE layers: routed + shared experts (gate, up, down each),
                                  // router weight + e_score_correction_bias (noaux_tc)
  int64_t moe_activated = 0;      // the same with num_experts_per_tok routed experts per layer
  int64_t main = 0;               // embedding + layers + model.norm + lm_head
  int64_t main_activated = 0;     // per token: main with only the routed experts a token uses
  // Per MTP module: one full layer (attention + indexer + the MLP that layer index has), enorm, hnorm,
  // eh_proj [D, 2D] and shared_head.norm. Its embed_tokens and shared_head.head are the main model's
  // (shared), so they are not in mtp; the checkpoint stores a copy of each (mtp_stored_copies).
  int64_t mtp = 0;
  int64_t mtp_activated = 0;
  int64_t mtp_stored_copies = 0;  // num_nextn_predict_layers x (embed_tokens + lm_head)
  int64_t total = 0;              // main + mtp (unique parameters)
  int64_t activated = 0;          // main_activated + mtp_activated
  int64_t stored = 0;             // total + mtp_stored_copies: the tensors a full checkpoint holds
};

// ── Memory bounds (src/model/resources.cpp) ─────────────────────────────────────────────────────
// What a config needs, from the config alone, in checked int64 bytes, so that a config that cannot
// fit is refused (dsa::Error naming the keys and the numbers) before anything is allocated.
struct Footprint {
  int64_t param_bytes = 0;                // fp32 parameters + their gradients + per-tensor bookkeeping
  int64_t cache_bytes_per_token = 0;      // inference caches, all layers (fp32 latent + fp32 indexer key)
  int64_t activation_bytes_per_token = 0; // a training pass: what every layer keeps for the backward,
                                          // + logits and their gradient (a lower bound)
  int64_t optimizer_bytes = 0;            // AdamW moments (two fp32 copies of the parameters)
  std::string param_breakdown;            // "num_hidden_layers = L x N bytes + vocab_size = V x …"
};
Footprint footprint(const Config& c);
// Inference cache per token in the formats of a V3.2 inference session: the 656 B FP8 MLA record
// (kMlaRecordBytes) when kv_lora_rank = 512 and qk_rope_head_dim = 64, else the fp32 latent; the
// 132 B FP8 paged indexer record (kIndexerRecordBytes) when index_head_dim = 128, else fp32 keys.
// Main layers only (an MTP module used for speculative decoding keeps one more layer's worth).
struct InferenceCacheBytes {
  int64_t mla_per_layer = 0, indexer_per_layer = 0;
  bool fp8_mla = false, fp8_indexer = false;
  int64_t per_layer = 0;          // mla + indexer
  int64_t per_token = 0;          // per_layer x num_hidden_layers
};
InferenceCacheBytes inference_cache_bytes(const Config& c);
// The memory a process may use: set_memory_limit(), else DSA_MAX_MEMORY (bytes, or with a K/M/G/T
// suffix, powers of 1024), else the machine's physical memory (or its cgroup limit when lower).
int64_t memory_limit_bytes();
void set_memory_limit(int64_t bytes);     // <= 0: back to the default
// Throws dsa::Error "<what>: N bytes (X GiB) needed, more than the L bytes (Y GiB) available (<source>)"
// when bytes > memory_limit_bytes().
void check_memory(int64_t bytes, const std::string& what);

// ── Parameters, batches, stages ─────────────────────────────────────────────────────────────────
// A parameter or gradient in fp32. `shape` is the HF shape ([out, in] for linear weights).
struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
  int64_t numel() const;
};

enum class AttentionMode {
  kDense,    // every causal key
  kSparse,   // DSA: indexer → top-k → sparse attention (MQA mode)
  kWindow,   // baseline: the last k causal keys (sliding window of k = index_topk or the override)
};

// How the checkpoint stored the model's weight matrices (Model::weight_dtype): kF8E4M3 when any matrix
// is F8_E4M3 (block-scaled), else kBF16 / kF16 when every matrix is, else kF32 (also a random init).
enum class WeightDtype { kF32, kF16, kBF16, kF8E4M3 };
const char* weight_dtype_name(WeightDtype d);   // "F32", "F16", "BF16", "F8_E4M3"

// Rounding of an inference session's activations (SessionOptions::numerics).
//   kFp32: every activation between ops stays fp32 (the oracle; the session's behaviour on fp32 weights).
//   kReference: DeepSeek's reference inference (DeepSeek-V3.2-Exp inference/model.py with the
//     rotate-half indexer RoPE): activations are bf16 between ops, each op computes in fp32 and rounds
//     its output to bf16 (round to nearest even) where the reference holds a bf16 tensor — every
//     linear output, each RMSNorm / LayerNorm, RoPE and Hadamard output, the absorbed query latent,
//     the attention output before and after W_UV, the SwiGLU product, and the residual stream after
//     each add (the norm that follows an add reads the fp32 sum, as the reference's fused add + norm
//     does); in MoE layers each expert's (and the shared experts') linear outputs and SwiGLU product,
//     the weighted routed outputs summed in fp32 in expert order, the shared experts' output added
//     last, then the layer's output rounded (router logits and weights fp32); the MTP module's norm
//     and eh_proj outputs; the attention probabilities before the value product on the CPU's V3.2-latent decode op
//     (SparseDecodeParams::bf16_probs; GPU kernels and other latent dims keep them fp32). Kept fp32
//     as in the reference: the indexer head weights (weights_proj output and its HI^-0.5 · DI^-0.5
//     scaling), the indexer logits, the attention logits and the final logits (the lm_head runs in
//     fp32 on the bf16 output of the final norm). The reference's FP8 indexer is indexer_precision
//     kFp8, set separately. docs/model.md "Parity with DeepSeek's reference" gives measured numbers.
//   kAuto: kReference when the weights were stored as BF16 or F8_E4M3 (a served checkpoint), else kFp32.
enum class Numerics { kAuto, kFp32, kReference };
const char* numerics_name(Numerics n);              // "auto", "fp32", "reference"
Numerics parse_numerics(const std::string& name);   // the names above; dsa::Error names the bad value

enum class Stage {
  kPretrain, // dense attention, LM loss → non-indexer params; indexer grads stay 0
  kWarmup,   // dense attention, model frozen (non-indexer grads exactly 0); indexer gets the gradient
             // of the dense KL(head-summed attention ‖ softmax(I)) (op 9 dense mode)
  kSparse,   // top-k on: LM loss through sparse attention → non-indexer params; the indexer gets only
             // the selected-set KL gradient (op 9 sparse mode); indexer inputs detached
};

// Packed sequences: tokens and targets have the same length Σ seq_lens; target −1 = not scored.
// Positions restart at 0 at each sequence start; attention never crosses sequences.
struct Batch {
  std::vector<int32_t> tokens, targets;
  std::vector<int> seq_lens;
};

struct Losses {
  double lm_loss = 0;   // mean cross-entropy over scored targets (nats)
  double kl_loss = 0;   // Σ over layers of the mean over query rows of the indexer KL (0 in kPretrain)
  int64_t tokens = 0;   // scored targets
  // kSparse passes: k_histogram[l][k] = query rows of layer l that attended k selected keys
  // (k ≤ the pass's top-k budget); empty in other modes.
  std::vector<std::vector<int64_t>> k_histogram;
};

// ── Per-row top-k budget (ops.h §4 TopkPolicy) ──────────────────────────────────────────────────
// How many of its indexer's top keys each query row keeps in kSparse mode. The pass's budget k (the
// topk argument, else index_topk) is the buffer width and the largest k a row may get; the rule's
// k_min / k_max are clamped to it (and to the batch's longest sequence, as k itself is).
//   default: kFixed, every row min(k, its keys) — the model's selection before policies existed;
//   kMass / kEntropy: each row's own k from the indexer's score distribution (ops.h);
//   layer_k (kFixed only): a calibrated table, layer l keeps min(layer_k[l], k) keys per row.
// Training with a policy trains the indexer's selected-set KL over each row's own (ragged) set.
struct SelectionPolicy {
  TopkPolicy rule;
  std::vector<int> layer_k;
  bool is_default() const { return rule.kind == TopkPolicyKind::kFixed && rule.k_max == 0 && layer_k.empty(); }
};
// The op-level policy of layer l for a pass with budget K (clamps as above). Throws dsa::Error when
// layer_k is set with a non-fixed rule, has the wrong length or a non-positive entry.
TopkPolicy layer_topk_policy(const SelectionPolicy& s, int layer, int num_layers, int K);
// "fixed", "mass p=0.9 k=4..64", "entropy a=1.5 b=1 k=1..K", "table 32/16" (reports, CSVs; no commas).
std::string describe(const SelectionPolicy& s);

// ── Inference session options ───────────────────────────────────────────────────────────────────
struct SessionOptions {
  AttentionMode mode = AttentionMode::kSparse;      // kDense attends every cached key
  // MLA latent cache: kFp32 (any dims), kBf16 or kFp8Record (656 B; need kv_lora_rank 512, rope 64).
  // Unset: chosen from the config — for the V3.2 latent (512 + 64) kFp8Record with the reference
  // numerics (the reference's FP8 latent cache), else kBf16; kFp32 for other dims — so a default
  // SessionOptions works on every model Model accepts. Session::options() reports the choice. With the
  // reference numerics the record's scales are ue8m0 (powers of two, as the reference quantises the
  // latent), else amax / 448.
  std::optional<KvCacheFormat> kv_format;
  // Indexer: kFp8 uses the paged 132 B cache (needs index_head_dim 128; V3.2 inference, ue8m0
  // scales); kFp32 keeps fp32 keys (any index_head_dim; equals the training path's selection).
  Precision indexer_precision = Precision::kFp32;
  int topk = 0;                                      // ≤ 0: config.index_topk
  SelectionPolicy selection;                         // per-row budget within topk (kSparse)
  int max_tokens = 0;                                // cache capacity; ≤ 0: max_position_embeddings
  // Positions ≥ max_position_embeddings are refused (with max_tokens above it: at construction) unless
  // this is set: speed measurements that run past the trained context (RoPE extrapolation).
  bool allow_beyond_max_position = false;
  uint64_t page_order_seed = 0;                      // ≠ 0: pages handed out in a shuffled order
                                                     // (tests that indices really are physical)
  // Activation rounding (Numerics above). Session::options() reports the resolved kFp32 / kReference.
  Numerics numerics = Numerics::kAuto;
  // Keep the last step's per-layer selections (Session::last_selections; costs a copy per layer).
  bool record_selections = false;
  // Run the first multi-token-prediction module alongside (Session only; the model needs
  // num_nextn_predict_layers ≥ 1): every step also keeps the main model's final hidden state of its
  // positions, and Session::draft runs the module over its own caches (one more layer's records).
  bool mtp = false;
};

// The keys every row of the last step selected, per layer (SessionOptions::record_selections):
// layers[l][r·k + j] = the j-th selected logical position of row r (−1: none), in the indexer's top-k
// order; rows = the step's rows, k = its selection width (min(topk, longest context) in kSparse, the
// context in kDense, the window in kWindow). Empty before the first recorded step.
struct StepSelections {
  int64_t rows = 0;
  int k = 0;
  std::vector<std::vector<int32_t>> layers;
};

// Sampling for generation: temperature 0 (or top_k 1) → greedy (argmax, smallest id on ties); else
// softmax(logits / temperature) restricted to the top_k most likely ids (0: all), then to the
// smallest most-likely prefix of those holding top_p of their mass. sample_token throws dsa::Error
// for a negative or non-finite temperature, top_p outside (0, 1] or a negative top_k.
struct SamplerOptions {
  double temperature = 0.0;
  double top_p = 1.0;
  int top_k = 0;
};
int32_t sample_token(const float* logits, int vocab, const SamplerOptions& opt, std::mt19937_64& rng);

class Session;
class Exec;   // where a pass runs (src/model/exec.h); the CPU unless set_exec installs another

// ── The model ───────────────────────────────────────────────────────────────────────────────────
class Model {
 public:
  explicit Model(const Config& config);          // validates; parameters zero until init/load
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // Matrices ~ N(0, initializer_range²) (o_proj/down_proj scaled by 1/√(2·layers)), norm weights 1,
  // k_norm bias and e_score_correction_bias 0. Deterministic for a seed.
  // shared_embedding = a > 0 then adds ONE vector c ~ N(0, (a·initializer_range)²) to every row of
  // embed_tokens (drawn after everything else, so the other tensors are the same as with a = 0).
  // Why: V3.2 has no biases, so layer 0 can attend by position alone (previous token, recent window)
  // only through a component that every token's normed embedding shares. Trained LLM embeddings grow
  // such a common direction; a tiny model trained for minutes does not, and its layer 0 stays
  // near-uniform. With tied embeddings c shifts every output logit by the same h·c, which softmax
  // ignores. Measured effect: docs/perf.md "Training demo". Cost, measured there too: at a = 1–2 the
  // common part dwarfs the token identity that in-context copying needs, and retrieval stops forming.
  void init_random(uint64_t seed, double shared_embedding = 0.0);

  // Checkpoint directory: config.json + model.safetensors (HF names). load accepts F32/BF16/F8_E4M3
  // (+ 128×128 weight_scale_inv) and Hugging Face's sharded layout (model.safetensors.index.json
  // naming model-XXXXX-of-YYYYY.safetensors shards; without an index, every *.safetensors file of the
  // directory, a tensor in one file only). The MTP modules' tensors are loaded like the others; their
  // copies of the shared tensors (model.layers.{i}.embed_tokens.weight, …shared_head.head.weight, which
  // save writes too, as the official layout has them) may be absent and, when present, must equal
  // model.embed_tokens / lm_head. Files are memory-mapped and each tensor is converted straight into its parameter; any
  // problem throws dsa::Error naming the file and the tensor, and no Model is returned. save writes F32 (bit-exact round trip) or BF16,
  // into a temporary directory that is fsynced and then renamed over `dir` (never a partial write).
  static Model load(const std::string& dir);
  // The dtype the weights were stored in (load), kF32 after init_random; SessionOptions::numerics
  // kAuto follows it.
  WeightDtype weight_dtype() const;
  enum class SaveDtype { kF32, kBf16 };
  void save(const std::string& dir, SaveDtype dtype = SaveDtype::kF32) const;

  const Config& config() const;
  // Same order, same names, same shapes. Names: model.embed_tokens.weight, model.layers.{i}.…,
  // model.norm.weight, lm_head.weight (absent when tie_word_embeddings), then per MTP module
  // model.layers.{num_hidden_layers + k}.{enorm, hnorm, eh_proj, <the layer's tensors>, shared_head.norm}.
  std::vector<Tensor>& params();
  const std::vector<Tensor>& params() const;
  std::vector<Tensor>& grads();
  Tensor* find_param(const std::string& name);
  static bool is_indexer_param(const std::string& name);   // "….self_attn.indexer.…"
  // params() [first_mtp_param(), end) are the MTP modules' (none without them): inference only, no
  // pass computes their gradients (they stay zero) and the optimizer leaves them as they are.
  size_t first_mtp_param() const;

  // Zeroes every grad, then runs forward + backward per the stage's rules (see Stage). topk ≤ 0:
  // config.index_topk (kSparse only). Gradients are of the reported means (lm_loss, kl_loss).
  Losses forward_backward(const Batch& batch, Stage stage, int topk = 0);

  // Forward only. MQA-mode attention; mha = true runs the MHA-mode oracle instead (kDense only).
  Losses evaluate(const Batch& batch, AttentionMode mode, int topk = 0, bool mha = false) const;
  // logits [Σ seq_lens, vocab] of a forward pass (tests and tools).
  std::vector<float> logits(const Batch& batch, AttentionMode mode, int topk = 0, bool mha = false) const;

  // For every layer and query row: the share of the head-summed dense attention mass
  // (Σ_h P_h / H) on the indexer's top-k selection, and |selection ∩ dense-attention top-k| / k
  // (k = min(topk, available keys)). Averaged over layers and rows.
  struct RecallStats {
    // mass_in_selected: head-mean dense attention mass inside the indexer's top-k (the recall);
    // oracle_mass: the same for the dense attention's own top-k (the ceiling any selector of k keys has);
    // topk_overlap: share of the indexer's selection that is in the dense attention's top-k.
    double mass_in_selected = 0, oracle_mass = 0, topk_overlap = 0;
    int64_t rows = 0;
    // The same two masses per layer (the totals above are their mean): a tiny model's layers differ
    // widely (a positional layer holds ~0.9 in top-k/8, a layer of broad context heads far less).
    std::vector<double> layer_mass, layer_oracle;
    // With need_mass > 0, per layer and query row (rows of ≥ 2 keys): the entropy (nats) of the
    // indexer's softmax over the row, and the smallest k whose indexer top-k holds need_mass of the
    // head-mean dense attention (capped at the pass's k) — what a perfect per-row budget would keep:
    // the data the entropy policy is fitted to (train::calibrate_topk_policy).
    std::vector<std::vector<float>> row_entropy;
    std::vector<std::vector<int32_t>> row_need;
  };
  RecallStats indexer_recall(const Batch& batch, int topk = 0, double need_mass = 0) const;

  // Where forward_backward / evaluate / logits run: the CPU (the default, exec = null) or the GPU
  // executor that dsa::cuda::attach_model (dsa/model_cuda.h, the dsa_cuda library) installs — the same
  // model code (src/model/forward.cpp) over the CUDA ops. Parameters stay in params() on the host (the
  // optimizer and checkpoints use them) and are copied to the executor at every pass; gradients come
  // back into grads(). indexer_recall and the MHA oracle always run on the CPU; a Session runs where
  // it is opened (the CPU, or a GPU through dsa::cuda::open_session).
  void set_exec(std::shared_ptr<Exec> exec);
  bool has_exec() const;

  // The per-row top-k budget of every kSparse pass (forward_backward, evaluate, logits,
  // indexer_recall); default: fixed k. Checked against the layer count here.
  void set_selection_policy(const SelectionPolicy& s);
  const SelectionPolicy& selection_policy() const;

  struct Impl;
 private:
  friend class Session;
  friend class BatchSession;
  std::unique_ptr<Impl> impl_;
};

// ── Inference session: one sequence, paged caches, chunked prefill, decode ─────────────────────
class BatchSession;
// BOS rule: every training and evaluation sequence starts with the tokenizer's BOS id (dsa::Tokenizer
// ::bos_id), so a prompt must too — the logits of a prompt without it differ from what the model
// learned. dsa::encode_prompt (dsa/tokenizer.h) is the one place that applies the rule; feed its
// output to prefill / append.
// Every call appends n tokens at positions [length(), length() + n) in one step: their latents are
// written to the caches (pages of kCachePageTokens slots), then each row attends over the cache
// (indexer top-k over logical positions → physical slots → sparse attention). Prefill in chunks ≡
// one shot and decode at position t ≡ prefill row t, bitwise on the CPU: the session's projections
// use a row-invariant matmul and every op works per row, on the same cache contents. A GPU session
// (dsa::cuda::open_session) runs the same steps on the device — caches, weights and step buffers in
// device memory — with cuBLAS matmuls and the default (fastest) kernel variants, so it equals the
// CPU session within the tolerance of those kernels, not bitwise.
// The Session keeps a reference to the model's parameters: the Model must outlive it.
class Session {
 public:
  // Throws dsa::Error before allocating when the caches do not fit memory_limit_bytes() or when
  // max_tokens exceeds max_position_embeddings (see allow_beyond_max_position).
  Session(const Model& model, const SessionOptions& options);
  // The same session on another executor: dsa::cuda::open_session (dsa/model_cuda.h) passes a GPU one.
  Session(const Model& model, const SessionOptions& options, std::shared_ptr<Exec> exec);
  ~Session();
  // Appends tokens (n ≥ 1) and returns the logits of the last row [vocab], or all rows [n, vocab].
  std::vector<float> append(const std::vector<int32_t>& tokens, bool all_logits = false);
  // prefill in chunks of chunk_size (≤ 0: one step); returns the last row's logits (or all rows).
  std::vector<float> prefill(const std::vector<int32_t>& tokens, int chunk_size, bool all_logits = false);
  std::vector<float> decode(int32_t token);                 // s_q = 1: logits [vocab]
  std::vector<float> decode2(int32_t t0, int32_t t1);       // s_q = 2 (MTP verification): [2, vocab]
  void truncate(int64_t length);                            // drop cached positions ≥ length
  // SessionOptions::mtp: the MTP module's logits [vocab] for the token at position length() + 1, given
  // `next` as the token at position length() (the one the caller will append next). The module sees
  // position j as (final hidden state of j, token at j + 1): a call runs it over the positions it has
  // not seen yet, the last with `next`, and keeps their records for the following calls (entries
  // that a truncate or a different `next` made stale are recomputed). For s_q = 2 speculative
  // decoding: d = argmax draft(t); decode2(t, d); accept d when row 0's argmax is d, else truncate.
  std::vector<float> draft(int32_t next);
  int64_t length() const;
  int64_t capacity() const;
  // Cache bytes per token summed over layers: MLA record + indexer record (with SessionOptions::mtp
  // also the MTP layer's records and the main model's final hidden state, hidden_size fp32).
  int64_t cache_bytes_per_token() const;
  const SessionOptions& options() const;
  // Keys attended per query row and layer, averaged over every step so far (kSparse; 0 before any).
  double mean_selected_keys() const;
  // The last step's selections when options().record_selections is set (else empty).
  const StepSelections& last_selections() const;

  struct Impl;
 private:
  std::unique_ptr<Impl> impl_;
};

// ── Many sequences over one pool of cache pages (what an engine embedding the library runs) ──────
// options.max_tokens is the pool's capacity in tokens, shared by every sequence: a sequence takes
// pages of kCachePageTokens slots from the pool as it grows and gives them back when removed, so
// sequences of different lengths join and leave between steps (max_tokens may exceed
// max_position_embeddings here). Each sequence is limited to max_position_embeddings (unless
// allow_beyond_max_position) and to the pool. Prefill runs one sequence at a
// time (in chunks); decode / decode2 run one step for several sequences at once — one row per
// sequence (s_q 1) or two (s_q 2) — and return every row's logits. A sequence's results equal a
// Session's over the same tokens (the steps are per row). A step that names an unknown or repeated
// sequence, a bad token, a position past the limit or more pages than are free is refused before
// anything is written. The Model must outlive it; dsa::cuda::open_batch_session opens one on a GPU.
class BatchSession {
 public:
  BatchSession(const Model& model, const SessionOptions& options);
  BatchSession(const Model& model, const SessionOptions& options, std::shared_ptr<Exec> exec);
  ~BatchSession();
  int add();                                      // a new empty sequence; returns its id
  void remove(int id);                            // frees its pages (the id may be handed out again)
  std::vector<float> prefill(int id, const std::vector<int32_t>& tokens, int chunk_size = 0, bool all_logits = false);
  // tokens[i] is appended to ids[i]; logits [ids.size(), vocab]
  std::vector<float> decode(const std::vector<int>& ids, const std::vector<int32_t>& tokens);
  // tokens[2i], tokens[2i + 1] are appended to ids[i] (MTP verification); logits [ids.size(), 2, vocab]
  std::vector<float> decode2(const std::vector<int>& ids, const std::vector<int32_t>& tokens);
  void truncate(int id, int64_t length);          // drop the sequence's cached positions ≥ length
  int64_t length(int id) const;
  std::vector<int> sequences() const;             // live ids, ascending
  int64_t free_tokens() const;                    // free pages × kCachePageTokens
  int64_t capacity() const;                       // the pool, in tokens
  int64_t cache_bytes_per_token() const;
  const SessionOptions& options() const;

 private:
  std::unique_ptr<Session::Impl> impl_;
};

}  // namespace dsa::model

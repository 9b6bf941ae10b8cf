// `dsa kernels` — per op with kernel variants, the variant the default (kAuto) runs on this machine at
// DeepSeek-V3.2's shapes, and the op's variants with why each one can or cannot run here.
#include <cstdio>
#include <functional>
#include <string>

#include "command.h"
#include "dsa/ops.h"
#ifdef DSA_HAVE_CUDA
#include "dsa/cuda_ops.h"
#include "dsa/model_cuda.h"
#endif

namespace {

#ifdef DSA_HAVE_CUDA
// V3.2's shapes (no data is read: the pointers only carry an alignment for the checks).
constexpr int kT = 4096, kS = 8192, kH = 128, kHI = 64, kDI = 128, kK = 2048;
alignas(256) const unsigned char kAligned[256] = {};

// One op: what the default runs, then each variant and why it can or cannot run (resolve throws the reason).
void report(const char* op, const char* inputs, const dsa::cuda::OpVariants& o,
            const std::function<dsa::cuda::Variant(dsa::cuda::Variant)>& resolve) {
  const auto why = [&](dsa::cuda::Variant v) -> std::string {
    try {
      return dsa::cuda::variant_name(resolve(v));
    } catch (const std::exception& e) {
      return e.what();
    }
  };
  std::printf("%s (%s): default runs %s\n", op, inputs, why(dsa::cuda::Variant::kAuto).c_str());
  for (int i = 0; i < o.count; ++i) {
    const std::string r = why(o.variants[i]);
    std::printf("    %-7s %s\n", dsa::cuda::variant_name(o.variants[i]),
                r == dsa::cuda::variant_name(o.variants[i]) ? "runs here" : r.c_str());
  }
}
#endif

const dsa::cli::Register kKernels(
    "kernels", "print which kernel variant each op runs on this machine at DeepSeek-V3.2's shapes",
    [](const dsa::cli::Args& args) {
      const dsa::cli::Flags f(args, {}, {});
#ifndef DSA_HAVE_CUDA
      std::printf("this build has no CUDA backend: every op runs on the CPU backend (dsa::cpu)\n");
      return 0;
#else
      if (dsa::cuda::device_count() == 0) {
        std::printf("no GPU found: every op runs on the CPU backend (dsa::cpu)\n");
        return 0;
      }
      std::printf("device: %s\n", dsa::cuda::device_description().c_str());
      const void* any = kAligned;
      const auto* f32 = static_cast<const float*>(any);
      const auto* b16 = static_cast<const uint16_t*>(any);
      const auto* i32 = static_cast<const int32_t*>(any);
      int n = 0;
      const dsa::cuda::OpVariants* ops = dsa::cuda::op_variants(&n);
      for (int i = 0; i < n; ++i) {
        const std::string op = ops[i].op;
        if (op == "indexer_logits" || op == "indexer_topk") {
          dsa::IndexerParams p{kT, kS, kHI, kDI, dsa::Precision::kFp8, any, any, f32, f32, i32, i32};
          report(ops[i].op, "e4m3 q/k, HI 64, DI 128", ops[i],
                 [&](dsa::cuda::Variant v) { return dsa::cuda::resolve_variant(p, v, ops[i].op); });
        } else if (op == "indexer_logits_paged") {
          dsa::PagedIndexerParams p;
          p.B = 64; p.next_n = 2; p.HI = kHI; p.num_pages = 64 * 512; p.max_blocks = 512; p.max_context_len = 32768;
          p.q_fp8 = kAligned; p.cache = kAligned; p.w = f32; p.context_lens = i32; p.block_table = i32;
          report(ops[i].op, "e4m3 q, 132-byte paged cache, next_n 2, HI 64", ops[i],
                 [&](dsa::cuda::Variant v) { return dsa::cuda::resolve_variant(p, v); });
        } else if (op == "sparse_attention_decode") {
          dsa::SparseDecodeParams p;
          p.B = 64; p.H = kH; p.K = kK; p.num_slots = 32768; p.scale = 0.1f; p.q_dtype = dsa::DType::kBF16;
          p.q_bf16 = b16; p.cache = any; p.indices = i32;
          report(ops[i].op, "bf16 q, FP8 656-byte cache, H 128, K 2048", ops[i],
                 [&](dsa::cuda::Variant v) { return dsa::cuda::resolve_variant(p, v); });
        } else {
          dsa::AttentionParams p;
          p.T = kT; p.S = kS; p.H = kH; p.Dqk = 576; p.Dv = 512; p.scale = 0.1f; p.K = kK; p.indices = i32;
          p.dtype = dsa::DType::kBF16; p.q_bf16 = b16; p.kv_bf16 = b16;
          report(ops[i].op, "bf16 q/kv, H 128, 576/512, K 2048", ops[i],
                 [&](dsa::cuda::Variant v) { return dsa::cuda::resolve_variant(p, v, ops[i].op); });
        }
      }
      return 0;
#endif
    });

}  // namespace

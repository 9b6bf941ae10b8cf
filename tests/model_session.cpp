// model_session.cpp — the inference Session: chunked prefill ≡ one-shot, decode ≡ prefill row,
// s_q = 2 ≡ two decodes, session ≡ the training forward, the V3.2 paged caches (bf16 latent,
// 656 B FP8 record, 132 B FP8 indexer keys) with pages handed out in a shuffled order, and the
// BatchSession (many sequences over one page pool) ≡ one Session per sequence.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "dsa/model.h"
#include "model_util.h"

namespace {

using dsa::model::AttentionMode;
using dsa::model::Model;
using dsa::model::Session;
using dsa::model::SessionOptions;
using dsa::test_model::max_diff;
using dsa::test_model::micro_config;
using dsa::test_model::random_tokens;
using dsa::test_model::v32_record_config;

// The session's projections are row-invariant (mm_xwt exact) and every op works per row, so
// chunked ≡ one-shot and decode ≡ prefill row hold bitwise: difference exactly 0.
constexpr double kExact = 0.0;
// Session vs the training-path forward (BLAS projections, different summation order) and sparse
// (descending-score order) vs dense (ascending order) sums: fp32 reassociation, 1e-4 absolute on
// logits of magnitude ≲ 10.
constexpr double kRowTol = 1e-4;

std::vector<float> session_logits(const Model& m, const SessionOptions& o, const std::vector<int32_t>& toks, int chunk) {
  Session s(m, o);
  return s.prefill(toks, chunk, true);
}

TEST(ModelSession, ChunkedPrefillDecodeAndTrainingPathAgree) {
  const auto c = micro_config();
  Model m(c);
  m.init_random(31);
  const int n = 23;
  const auto toks = random_tokens(c.vocab_size, n, 32);
  for (const AttentionMode mode : {AttentionMode::kSparse, AttentionMode::kDense, AttentionMode::kWindow}) {
    SessionOptions o;
    o.mode = mode;
    o.kv_format = dsa::KvCacheFormat::kFp32;
    o.max_tokens = 40;
    o.page_order_seed = 5;
    const auto one = session_logits(m, o, toks, 0);
    ASSERT_EQ(one.size(), static_cast<size_t>(n * c.vocab_size));
    for (int chunk : {1, 4, 7}) EXPECT_EQ(max_diff(one, session_logits(m, o, toks, chunk)), kExact) << chunk;
    // the training-path forward over the same tokens (fp32 indexer, same top-k)
    dsa::model::Batch b;
    b.tokens = toks;
    b.targets.assign(toks.size(), -1);
    b.seq_lens = {n};
    EXPECT_LT(max_diff(one, m.logits(b, mode)), kRowTol);
    // decode token by token after a prefill of 10; s_q = 2 for the last pair
    Session s(m, o);
    s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 10), 3);
    for (int t = 10; t < n - 2; ++t) {
      const auto row = s.decode(toks[t]);
      EXPECT_EQ(max_diff(row, one, 0, static_cast<size_t>(t) * c.vocab_size, c.vocab_size), kExact) << t;
    }
    const auto two = s.decode2(toks[n - 2], toks[n - 1]);
    EXPECT_EQ(max_diff(two, one, 0, static_cast<size_t>(n - 2) * c.vocab_size), kExact);
    EXPECT_EQ(s.length(), n);
    // truncate + re-append reproduces the same rows (speculative rejection)
    s.truncate(n - 2);
    const auto again = s.decode2(toks[n - 2], toks[n - 1]);
    EXPECT_EQ(max_diff(again, two), 0.0);
  }
}

TEST(ModelSession, V32RecordCaches) {
  const auto c = v32_record_config();
  Model m(c);
  m.init_random(33);
  const int n = 70;   // spans two cache pages
  const auto toks = random_tokens(c.vocab_size, n, 34);
  SessionOptions ref;
  ref.kv_format = dsa::KvCacheFormat::kFp32;
  ref.max_tokens = 200;
  ref.page_order_seed = 7;
  // bf16 latent cache: chunked and decode rows equal to the one-shot prefill with the same cache
  SessionOptions bf = ref;
  bf.kv_format = dsa::KvCacheFormat::kBf16;
  const auto b16 = session_logits(m, bf, toks, 0);
  EXPECT_EQ(max_diff(b16, session_logits(m, bf, toks, 9)), kExact);
  {
    Session s(m, bf);
    s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 60), 0);
    for (int t = 60; t < n; ++t)
      EXPECT_EQ(max_diff(s.decode(toks[t]), b16, 0, static_cast<size_t>(t) * c.vocab_size, c.vocab_size), kExact) << t;
  }
  // FP8 record + FP8 indexer (K = 8 < 70: real selection): decode ≡ prefill row on the same cache
  SessionOptions f8 = ref;
  f8.kv_format = dsa::KvCacheFormat::kFp8Record;
  f8.indexer_precision = dsa::Precision::kFp8;
  const auto e4 = session_logits(m, f8, toks, 0);
  {
    Session s(m, f8);
    s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 64), 5);
    for (int t = 64; t < n - 2; ++t)
      EXPECT_EQ(max_diff(s.decode(toks[t]), e4, 0, static_cast<size_t>(t) * c.vocab_size, c.vocab_size), kExact) << t;
    EXPECT_EQ(max_diff(s.decode2(toks[n - 2], toks[n - 1]), e4, 0, static_cast<size_t>(n - 2) * c.vocab_size), kExact);
  }
  // Precision of the caches against fp32, in dense mode (in sparse mode a cache rounding that flips a
  // layer-2 top-k choice moves a logit by O(1), which says nothing about the cache). Logits here are
  // <= 1 (initializer_range 0.05). bf16: 8-bit mantissa (2^-9 relative) -> observed 1.3e-3, bound 5e-3.
  // FP8 record: e4m3 latent (2^-4 relative near the block max, coarser below) -> observed 3e-2, bound 0.1.
  SessionOptions dense = ref;
  dense.mode = AttentionMode::kDense;
  const auto d32 = session_logits(m, dense, toks, 0);
  dense.kv_format = dsa::KvCacheFormat::kBf16;
  EXPECT_LT(max_diff(session_logits(m, dense, toks, 0), d32), 5e-3);
  dense.kv_format = dsa::KvCacheFormat::kFp8Record;
  EXPECT_LT(max_diff(session_logits(m, dense, toks, 0), d32), 0.1);
  // The FP8 indexer with K >= context selects everything: equal to dense over the same FP8 cache.
  SessionOptions all = f8;
  all.topk = n;
  EXPECT_LT(max_diff(session_logits(m, all, toks, 0), session_logits(m, dense, toks, 0)), kRowTol);
  Session s(m, f8);
  EXPECT_EQ(s.cache_bytes_per_token(), (dsa::kMlaRecordBytes + dsa::kIndexerRecordBytes) * c.num_hidden_layers);
  // capacity and bad tokens
  EXPECT_THROW(s.prefill(std::vector<int32_t>(static_cast<size_t>(s.capacity() + 1), 0), 0), dsa::Error);
  EXPECT_THROW(s.decode(c.vocab_size), dsa::Error);
  // record formats need the V3.2 latent dims
  Model small(micro_config());
  EXPECT_THROW(Session(small, bf), dsa::Error);
}

// A BatchSession runs every sequence's rows exactly as a Session does (the steps work per row), so each
// sequence's logits equal a Session's over the same tokens bitwise — whatever else is in the batch,
// whatever order its pages came in, and after other sequences left and new ones took their pages.
TEST(ModelSession, BatchSessionEqualsOneSessionPerSequence) {
  const auto c = v32_record_config();
  Model m(c);
  m.init_random(35);
  for (const bool fp8 : {false, true}) {
    SessionOptions o;
    o.kv_format = fp8 ? dsa::KvCacheFormat::kFp8Record : dsa::KvCacheFormat::kBf16;
    o.indexer_precision = fp8 ? dsa::Precision::kFp8 : dsa::Precision::kFp32;
    o.max_tokens = 200;
    o.page_order_seed = 11;
    const std::vector<std::vector<int32_t>> seqs = {random_tokens(c.vocab_size, 37, 1), random_tokens(c.vocab_size, 80, 2),
                                                    random_tokens(c.vocab_size, 5, 3)};
    const int prompt[3] = {30, 70, 2};
    // one Session per sequence: prefill, then decode token by token (the last two with s_q = 2)
    std::vector<std::vector<float>> want(3);
    for (int i = 0; i < 3; ++i) {
      SessionOptions one = o;
      Session s(m, one);
      s.prefill(std::vector<int32_t>(seqs[i].begin(), seqs[i].begin() + prompt[i]), 16);
      const int n = static_cast<int>(seqs[i].size());
      for (int t = prompt[i]; t < n - 2; ++t) {
        const auto r = s.decode(seqs[i][t]);
        want[i].insert(want[i].end(), r.begin(), r.end());
      }
      const auto r = s.decode2(seqs[i][n - 2], seqs[i][n - 1]);
      want[i].insert(want[i].end(), r.begin(), r.end());
    }
    // the batch: sequence 1 joins after a throwaway sequence took and returned pages; decode steps
    // run every sequence that still has tokens, then the s_q = 2 steps together
    dsa::model::BatchSession b(m, o);
    const int junk = b.add();
    b.prefill(junk, random_tokens(c.vocab_size, 100, 9), 0);
    const int id0 = b.add();
    b.remove(junk);
    EXPECT_EQ(b.free_tokens(), b.capacity());
    const int id1 = b.add(), id2 = b.add();
    const int ids[3] = {id0, id1, id2};
    for (int i = 0; i < 3; ++i) b.prefill(ids[i], std::vector<int32_t>(seqs[i].begin(), seqs[i].begin() + prompt[i]), 16);
    std::vector<std::vector<float>> got(3);
    std::vector<int> next = {prompt[0], prompt[1], prompt[2]};
    for (;;) {
      std::vector<int> step_ids, who;
      std::vector<int32_t> toks;
      for (int i = 0; i < 3; ++i)
        if (next[i] < static_cast<int>(seqs[i].size()) - 2) {
          step_ids.push_back(ids[i]);
          who.push_back(i);
          toks.push_back(seqs[i][next[i]++]);
        }
      if (step_ids.empty()) break;
      const auto r = b.decode(step_ids, toks);
      ASSERT_EQ(r.size(), step_ids.size() * static_cast<size_t>(c.vocab_size));
      for (size_t j = 0; j < who.size(); ++j)
        got[who[j]].insert(got[who[j]].end(), r.begin() + j * c.vocab_size, r.begin() + (j + 1) * c.vocab_size);
    }
    std::vector<int32_t> pairs;
    for (int i = 0; i < 3; ++i) pairs.insert(pairs.end(), seqs[i].end() - 2, seqs[i].end());
    const auto r2 = b.decode2({id0, id1, id2}, pairs);
    for (int i = 0; i < 3; ++i) {
      got[i].insert(got[i].end(), r2.begin() + i * 2 * c.vocab_size, r2.begin() + (i + 1) * 2 * c.vocab_size);
      EXPECT_EQ(b.length(ids[i]), static_cast<int64_t>(seqs[i].size()));
      ASSERT_EQ(got[i].size(), want[i].size()) << i;
      EXPECT_EQ(max_diff(got[i], want[i]), kExact) << "sequence " << i << (fp8 ? " (fp8)" : " (bf16)");
    }
  }
}

// A step is checked whole before anything is written: unknown or repeated sequences, bad tokens,
// positions past the limit and a pool without enough free pages are refused, and the sequences keep
// their lengths (a later valid step gives the same logits as if the bad one never happened).
TEST(ModelSession, BatchSessionRefusesBadStepsWithoutWriting) {
  const auto c = micro_config();
  Model m(c);
  m.init_random(36);
  SessionOptions o;
  o.kv_format = dsa::KvCacheFormat::kFp32;
  o.max_tokens = 3 * dsa::kCachePageTokens;   // a pool of three pages
  o.allow_beyond_max_position = true;
  dsa::model::BatchSession b(m, o);
  const int a = b.add(), z = b.add();
  b.prefill(a, random_tokens(c.vocab_size, 100, 4), 0);   // two pages
  b.prefill(z, random_tokens(c.vocab_size, 10, 5), 0);    // one page: the pool is full
  EXPECT_EQ(b.free_tokens(), 0);
  EXPECT_THROW(b.prefill(a, random_tokens(c.vocab_size, 40, 6), 0), dsa::Error);   // needs a fourth page
  EXPECT_EQ(b.length(a), 100);
  EXPECT_THROW(b.decode({a, a}, {1, 2}), dsa::Error);         // repeated
  EXPECT_THROW(b.decode({a, 7}, {1, 2}), dsa::Error);         // unknown
  EXPECT_THROW(b.decode({a, z}, {1, c.vocab_size}), dsa::Error);   // bad token
  EXPECT_THROW(b.decode({a, z}, {1}), dsa::Error);            // token count
  EXPECT_THROW(b.decode({}, {}), dsa::Error);
  EXPECT_EQ(b.length(a), 100);
  EXPECT_EQ(b.length(z), 10);
  const auto after = b.decode({a, z}, {1, 2});
  dsa::model::BatchSession fresh(m, o);
  const int a2 = fresh.add(), z2 = fresh.add();
  fresh.prefill(a2, random_tokens(c.vocab_size, 100, 4), 0);
  fresh.prefill(z2, random_tokens(c.vocab_size, 10, 5), 0);
  EXPECT_EQ(max_diff(after, fresh.decode({a2, z2}, {1, 2})), kExact);
  b.remove(a);
  EXPECT_EQ(b.free_tokens(), 2 * dsa::kCachePageTokens);
  EXPECT_THROW(b.length(a), dsa::Error);
  EXPECT_THROW(b.remove(a), dsa::Error);
}

TEST(ModelSession, SamplerIsSeededAndRespectsTopP) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 3.0f, -2.0f};
  std::mt19937_64 r1(1), r2(1);
  dsa::model::SamplerOptions greedy;
  EXPECT_EQ(dsa::model::sample_token(logits.data(), 5, greedy, r1), 1);   // ties → smaller id
  dsa::model::SamplerOptions t;
  t.temperature = 1.0;
  t.top_p = 0.5;   // the two 3.0 logits carry > 50 % of the mass → only ids 1 and 3 remain
  for (int i = 0; i < 200; ++i) {
    const int a = dsa::model::sample_token(logits.data(), 5, t, r1);
    EXPECT_TRUE(a == 1 || a == 3) << a;
    EXPECT_EQ(a, dsa::model::sample_token(logits.data(), 5, t, r2));
  }
}

}  // namespace

// A ragged selection (mass policy) in the session: chunked prefill ≡ one shot, decode ≡ prefill row,
// both bitwise, and the training path under the same policy agrees.
TEST(ModelSession, RaggedSelectionKeepsEveryEquivalence) {
  const auto c = micro_config();
  Model m(c);
  m.init_random(33);
  const int n = 23;
  const auto toks = random_tokens(c.vocab_size, n, 34);
  SessionOptions o;
  o.kv_format = dsa::KvCacheFormat::kFp32;
  o.max_tokens = 40;
  o.topk = 6;
  o.selection.rule.kind = dsa::TopkPolicyKind::kMass;
  o.selection.rule.p = 0.7;
  const auto one = session_logits(m, o, toks, 0);
  for (int chunk : {1, 5}) EXPECT_EQ(max_diff(one, session_logits(m, o, toks, chunk)), kExact) << chunk;
  Session s(m, o);
  s.prefill(std::vector<int32_t>(toks.begin(), toks.begin() + 12), 4);
  for (int t = 12; t < n; ++t)
    EXPECT_EQ(max_diff(s.decode(toks[t]), one, 0, static_cast<size_t>(t) * c.vocab_size, c.vocab_size), kExact) << t;
  EXPECT_GT(s.mean_selected_keys(), 0.0);
  EXPECT_LT(s.mean_selected_keys(), 6.0);   // rows keep fewer than the budget on average
  m.set_selection_policy(o.selection);
  dsa::model::Batch b;
  b.tokens = toks;
  b.targets.assign(toks.size(), -1);
  b.seq_lens = {n};
  EXPECT_LT(max_diff(one, m.logits(b, AttentionMode::kSparse, 6)), kRowTol);
  // A bad policy is refused at construction, naming it.
  SessionOptions bad = o;
  bad.selection.rule.p = 1.5;
  try {
    Session refused(m, bad);
    FAIL() << "p = 1.5 accepted";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mass"), std::string::npos) << e.what();
  }
}

// data.cpp — corpus loading (whole-document split, token cache), synthetic long-range tasks, and
// the stateless batch loader of the training recipe (include/dsa/train.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/file_io.h"
#include "dsa/ops.h"
#include "dsa/train.h"
#include "train/rng.h"

namespace fs = std::filesystem;

namespace dsa::train {

int64_t Corpus::train_tokens() const {
  int64_t n = 0;
  for (const auto& d : train) n += static_cast<int64_t>(d.tokens.size());
  return n;
}
int64_t Corpus::val_tokens() const {
  int64_t n = 0;
  for (const auto& d : val) n += static_cast<int64_t>(d.tokens.size());
  return n;
}

namespace {

constexpr uint32_t kCacheMagic = 0x4b4f5444;   // "DTOK"

// Cache key: the tokenizer (its file bytes, or "byte") and every document's path and size.
uint64_t corpus_key(const std::vector<std::string>& files, const DataOptions& o) {
  uint64_t h = fnv1a(o.tokenizer);
  if (o.tokenizer != "byte") h = fnv1a(read_file(o.tokenizer), h);
  for (const auto& f : files) {
    h = fnv1a(f, h);
    h = fnv1a(std::to_string(fs::file_size(f)), h);
  }
  for (const auto& p : o.holdout) h = fnv1a("holdout:" + p, h);
  if (o.holdout.empty()) h = fnv1a("tail:" + std::to_string(o.holdout_share), h);
  return h;
}

bool is_holdout(const std::string& path, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns)
    if (!p.empty() && path.find(p) != std::string::npos) return true;
  return false;
}

void write_docs(io::AtomicFile& out, const std::vector<Document>& docs) {
  const uint64_t n = docs.size();
  out.write(&n, sizeof n);
  for (const auto& d : docs) {
    const uint64_t len = d.name.size(), count = d.tokens.size();
    out.write(&len, sizeof len);
    out.write(d.name.data(), len);
    out.write(&count, sizeof count);
    out.write(d.tokens.data(), count * sizeof(int32_t));
  }
}

// Reads what write_docs wrote; false on a short or inconsistent file. Every count is checked against
// the bytes left in the file before anything is allocated for it.
bool read_docs(std::ifstream& in, uint64_t& left, std::vector<Document>& docs) {
  auto take = [&](void* p, uint64_t bytes) {
    if (bytes > left || !in.read(static_cast<char*>(p), static_cast<std::streamsize>(bytes))) return false;
    left -= bytes;
    return true;
  };
  uint64_t n = 0;
  if (!take(&n, sizeof n) || n > left / (2 * sizeof(uint64_t))) return false;
  docs.resize(n);
  for (auto& d : docs) {
    uint64_t len = 0, count = 0;
    if (!take(&len, sizeof len) || len > left) return false;
    d.name.resize(len);
    if (!take(d.name.data(), len)) return false;
    if (!take(&count, sizeof count) || count > left / sizeof(int32_t)) return false;
    d.tokens.resize(count);
    if (!take(d.tokens.data(), count * sizeof(int32_t))) return false;
  }
  return true;
}

}  // namespace

Corpus load_corpus(const DataOptions& o, const std::string& cache_dir) {
  if (o.paths.empty()) throw Error("load_corpus: no data path (--data)");
  if (!(o.holdout_share > 0 && o.holdout_share <= 0.5))
    throw Error("load_corpus: holdout_share = " + std::to_string(o.holdout_share) + " must be in (0, 0.5]");
  const auto tok = load_tokenizer(o.tokenizer);
  const auto files = list_documents(o.paths);
  Corpus c;
  c.vocab_size = tok->vocab_size();
  c.bos_id = tok->bos_id();
  const uint64_t key = corpus_key(files, o);
  const std::string cache = cache_dir.empty() ? "" : (fs::path(cache_dir) / "tokens.bin").string();
  if (!cache.empty()) io::remove_stale_temps(cache);   // a cache write that was killed
  if (!cache.empty() && fs::exists(cache)) {
    std::ifstream in(cache, std::ios::binary);
    std::error_code ec;
    const uint64_t size = fs::file_size(cache, ec);
    uint64_t left = ec ? 0 : size;
    uint32_t magic = 0;
    uint64_t stored = 0;
    const bool head = left >= sizeof magic + sizeof stored && in.read(reinterpret_cast<char*>(&magic), sizeof magic) &&
                      in.read(reinterpret_cast<char*>(&stored), sizeof stored);
    if (head) left -= sizeof magic + sizeof stored;
    if (head && magic == kCacheMagic && stored == key && read_docs(in, left, c.train) && read_docs(in, left, c.val)) return c;
    c.train.clear();
    c.val.clear();
  }
  // Tokenize documents in parallel; the order of the result is the sorted file order.
  std::vector<Document> docs(files.size());
  std::vector<std::string> errors(files.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, o.threads))
  for (long i = 0; i < static_cast<long>(files.size()); ++i) {
    try {
      docs[i].name = files[i];
      docs[i].tokens = tok->encode(read_file(files[i]));
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  for (const auto& e : errors)
    if (!e.empty()) throw Error("load_corpus: " + e);
  if (o.holdout.empty()) {   // the tail of every document (DataOptions::holdout)
    for (auto& d : docs) {
      const size_t n = d.tokens.size();
      const size_t tail = std::min(n / 2, static_cast<size_t>(std::ceil(static_cast<double>(n) * o.holdout_share)));
      if (tail == 0) {
        if (n > 0) c.train.push_back(std::move(d));
        continue;
      }
      Document v{d.name + " (held-out tail)", std::vector<int32_t>(d.tokens.end() - static_cast<std::ptrdiff_t>(tail), d.tokens.end())};
      d.tokens.resize(n - tail);
      c.train.push_back(std::move(d));
      c.val.push_back(std::move(v));
    }
    if (c.val.empty())
      throw Error("load_corpus: the documents under --data are too short to hold out a validation tail (need 2 tokens or more)");
  } else {
    for (const auto& p : o.holdout) {
      bool found = false;
      for (const auto& d : docs) found = found || (!d.tokens.empty() && is_holdout(d.name, {p}));
      if (!found) throw Error("load_corpus: no document under --data matches --holdout \"" + p + "\" (leave --holdout out to hold out the tail of every document)");
    }
    for (auto& d : docs) {
      if (d.tokens.empty()) continue;
      (is_holdout(d.name, o.holdout) ? c.val : c.train).push_back(std::move(d));
    }
  }
  if (c.train.empty()) throw Error("load_corpus: no training document left after the hold-out (--data, --holdout)");
  if (!cache.empty()) {
    io::CreatedFolders folders(cache_dir, "load_corpus");
    io::AtomicFile out(cache, "load_corpus");
    out.write(&kCacheMagic, sizeof kCacheMagic);
    out.write(&key, sizeof key);
    write_docs(out, c.train);
    write_docs(out, c.val);
    out.commit();
    folders.keep();
  }
  return c;
}

// ── Synthetic tasks ────────────────────────────────────────────────────────────────────────────
namespace {

constexpr int kPasskeyDigits = 5;
constexpr uint64_t kEvalKeyModulus = 7;      // eval keys are multiples of 7, training keys never
constexpr const char* kNeedleHead = " The pass key is ";
constexpr const char* kNeedleTail = ". Remember it. ";
constexpr const char* kPasskeyQuestion = "\nWhat is the pass key? The pass key is ";
constexpr const char* const kKvNames[] = {"owl", "fox", "elk", "yak", "emu", "cat", "dog", "bee", "ant", "cod",
                                          "eel", "hen", "jay", "koi", "ram", "asp", "bat", "cow", "doe", "gnu"};
constexpr int kNumKvNames = sizeof kKvNames / sizeof kKvNames[0];
constexpr int kKvPairs = 6;
constexpr int kCopyMinSegment = 16, kCopyMaxSegment = 48;

std::string random_key(Rng& rng, PasskeySplit split) {
  const uint64_t lo = 10000, span = 90000;
  uint64_t key = lo + rng.below(span);
  if (split == PasskeySplit::kEval) {
    key -= key % kEvalKeyModulus;
    if (key < lo) key += kEvalKeyModulus;
  } else if (key % kEvalKeyModulus == 0) {
    key += 1;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "%0*llu", kPasskeyDigits, static_cast<unsigned long long>(key));
  return buf;
}

void append(std::vector<int32_t>& dst, const std::vector<int32_t>& src) { dst.insert(dst.end(), src.begin(), src.end()); }

// Copies `count` filler tokens starting at a seeded offset (wrapping around the stream).
std::vector<int32_t> filler_tokens(const std::vector<int32_t>& filler, int64_t count, Rng& rng) {
  if (filler.empty()) throw Error("synthetic task: the filler stream is empty");
  std::vector<int32_t> out(static_cast<size_t>(std::max<int64_t>(0, count)));
  size_t at = static_cast<size_t>(rng.below(filler.size()));
  for (auto& t : out) {
    t = filler[at];
    at = (at + 1) % filler.size();
  }
  return out;
}

}  // namespace

PasskeySample make_passkey(const Tokenizer& tok, const std::vector<int32_t>& filler, int length, double depth,
                           PasskeySplit split, uint64_t seed) {
  Rng rng(seed);
  const std::string key = random_key(rng, split);
  // The key is encoded on its own in both places, so the answer tokens equal the needle's tokens.
  const auto key_ids = tok.encode(key);
  std::vector<int32_t> needle = tok.encode(kNeedleHead);
  append(needle, key_ids);
  append(needle, tok.encode(kNeedleTail));
  std::vector<int32_t> question = tok.encode(kPasskeyQuestion);
  const int64_t fill = static_cast<int64_t>(length) - static_cast<int64_t>(needle.size() + question.size() + key_ids.size());
  if (fill < 0) throw Error("make_passkey: length " + std::to_string(length) + " is too short for the needle and question");
  const auto hay = filler_tokens(filler, fill, rng);
  const int64_t at = std::clamp<int64_t>(static_cast<int64_t>(depth * static_cast<double>(fill) + 0.5), 0, fill);
  PasskeySample s;
  s.tokens.reserve(static_cast<size_t>(length));
  s.tokens.insert(s.tokens.end(), hay.begin(), hay.begin() + at);
  append(s.tokens, needle);
  s.tokens.insert(s.tokens.end(), hay.begin() + at, hay.end());
  append(s.tokens, question);
  s.answer_begin = static_cast<int>(s.tokens.size());
  s.answer_len = static_cast<int>(key_ids.size());
  append(s.tokens, key_ids);
  return s;
}

PasskeySample make_kv_recall(const Tokenizer& tok, const std::vector<int32_t>& filler, int length, uint64_t seed) {
  Rng rng(seed);
  std::vector<int> names(kNumKvNames);
  for (int i = 0; i < kNumKvNames; ++i) names[i] = i;
  for (int i = 0; i < kKvPairs; ++i) std::swap(names[i], names[i + static_cast<int>(rng.below(kNumKvNames - i))]);
  std::vector<std::vector<int32_t>> items;
  std::vector<std::vector<int32_t>> values;
  size_t item_tokens = 0;
  for (int i = 0; i < kKvPairs; ++i) {
    values.push_back(tok.encode(random_key(rng, PasskeySplit::kTrain)));
    std::vector<int32_t> item = tok.encode(std::string(" [") + kKvNames[names[i]] + " = ");
    append(item, values.back());
    append(item, tok.encode("] "));
    item_tokens += item.size();
    items.push_back(std::move(item));
  }
  const int q = static_cast<int>(rng.below(kKvPairs));
  std::vector<int32_t> question = tok.encode(std::string("\nRecall: [") + kKvNames[names[q]] + " = ");
  const int64_t fill = static_cast<int64_t>(length) - static_cast<int64_t>(item_tokens + question.size() + values[q].size());
  if (fill < 0) throw Error("make_kv_recall: length " + std::to_string(length) + " is too short");
  const auto hay = filler_tokens(filler, fill, rng);
  std::vector<int64_t> cuts(kKvPairs);
  for (auto& c : cuts) c = static_cast<int64_t>(rng.below(static_cast<uint64_t>(fill) + 1));
  std::sort(cuts.begin(), cuts.end());
  PasskeySample s;
  int64_t prev = 0;
  for (int i = 0; i < kKvPairs; ++i) {
    s.tokens.insert(s.tokens.end(), hay.begin() + prev, hay.begin() + cuts[i]);
    append(s.tokens, items[i]);
    prev = cuts[i];
  }
  s.tokens.insert(s.tokens.end(), hay.begin() + prev, hay.end());
  append(s.tokens, question);
  s.answer_begin = static_cast<int>(s.tokens.size());
  s.answer_len = static_cast<int>(values[q].size());
  append(s.tokens, values[q]);
  return s;
}

PasskeySample make_copy(const std::vector<int32_t>& filler, int length, uint64_t seed) {
  Rng rng(seed);
  const int m = std::min(kCopyMinSegment + static_cast<int>(rng.below(kCopyMaxSegment - kCopyMinSegment + 1)), length / 4);
  if (m < 2) throw Error("make_copy: length " + std::to_string(length) + " is too short");
  if (filler.empty()) throw Error("synthetic task: the filler stream is empty");
  std::vector<int32_t> segment(static_cast<size_t>(m));
  for (auto& t : segment) t = filler[rng.below(filler.size())];
  const auto hay = filler_tokens(filler, length - 2 * m, rng);
  // first copy in the first half of the filler, the repeat anywhere after it
  const int64_t fill = static_cast<int64_t>(hay.size());
  const int64_t a = static_cast<int64_t>(rng.below(static_cast<uint64_t>(fill / 2 + 1)));
  const int64_t b = a + static_cast<int64_t>(rng.below(static_cast<uint64_t>(fill - a + 1)));
  PasskeySample s;
  s.tokens.reserve(static_cast<size_t>(length));
  s.tokens.insert(s.tokens.end(), hay.begin(), hay.begin() + a);
  append(s.tokens, segment);
  s.tokens.insert(s.tokens.end(), hay.begin() + a, hay.begin() + b);
  s.answer_begin = static_cast<int>(s.tokens.size());
  s.answer_len = m;
  append(s.tokens, segment);
  s.tokens.insert(s.tokens.end(), hay.begin() + b, hay.end());
  return s;
}

int synthetic_min_length(SyntheticTask task, const Tokenizer& tok) {
  auto n = [&](const std::string& text) { return static_cast<int>(tok.encode(text).size()); };
  // A key is at most the sum of its digits encoded one by one (merges only shorten it).
  int digit = 0;
  for (char c = '0'; c <= '9'; ++c) digit = std::max(digit, n(std::string(1, c)));
  const int key = kPasskeyDigits * digit;
  switch (task) {
    case SyntheticTask::kPasskey: return n(kNeedleHead) + n(kNeedleTail) + n(kPasskeyQuestion) + 2 * key;
    case SyntheticTask::kKvRecall: {
      int item = 0, question = 0;
      for (const char* name : kKvNames) {
        item = std::max(item, n(std::string(" [") + name + " = ") + key + n("] "));
        question = std::max(question, n(std::string("\nRecall: [") + name + " = ") + key);
      }
      return kKvPairs * item + question;
    }
    case SyntheticTask::kCopy: return 8;   // make_copy's segment (length / 4) needs ≥ 2 tokens
  }
  return 0;
}

// ── Loader ─────────────────────────────────────────────────────────────────────────────────────
namespace {
std::vector<int32_t> join(const std::vector<Document>& docs, int32_t bos) {
  std::vector<int32_t> s;
  for (const auto& d : docs) {
    s.push_back(bos);
    s.insert(s.end(), d.tokens.begin(), d.tokens.end());
  }
  return s;
}
}  // namespace

void check_loader_options(const LoaderOptions& o) {
  if (o.batch_size <= 0) throw Error("loader: --batch = " + std::to_string(o.batch_size) + " must be > 0");
  if (o.seq_len <= 1) throw Error("loader: --seq-len = " + std::to_string(o.seq_len) + " must be > 1");
  if (!(o.synthetic_share >= 0 && o.synthetic_share <= 1))
    throw Error("loader: --synthetic = " + std::to_string(o.synthetic_share) + " must be in [0, 1]");
  double mix = 0;
  for (const double w : o.synthetic_mix) {
    if (!(w >= 0) || !std::isfinite(w)) throw Error("loader: --synthetic-mix weights must be finite and >= 0");
    mix += w;
  }
  if (!(mix > 0)) throw Error("loader: --synthetic-mix weights must not all be 0");
  if (o.synthetic_min_len < 0 || o.synthetic_min_len > o.seq_len)
    throw Error("loader: --synthetic-min-len = " + std::to_string(o.synthetic_min_len) + " must be in [0, --seq-len = " +
                std::to_string(o.seq_len) + "]");
  if (o.synthetic_first_steps < 0) throw Error("loader: --synthetic-first = " + std::to_string(o.synthetic_first_steps) + " must be >= 0");
  if (o.synthetic_ramp_steps < 0) throw Error("loader: --synthetic-ramp = " + std::to_string(o.synthetic_ramp_steps) + " must be >= 0");
  if (o.synthetic_ramp_steps > 0 && o.synthetic_min_len == 0)
    throw Error("loader: --synthetic-ramp needs --synthetic-min-len (the length the ramp starts from)");
}

void check_synthetic_lengths(const LoaderOptions& o, const Tokenizer& tok) {
  if (!(o.synthetic_share > 0) && o.synthetic_first_steps <= 0) return;
  static const char* kNames[kNumSyntheticTasks] = {"passkey", "key-value recall", "copy"};
  for (int t = 0; t < kNumSyntheticTasks; ++t) {
    if (!(o.synthetic_mix[t] > 0)) continue;
    const int need = synthetic_min_length(static_cast<SyntheticTask>(t), tok);
    if (o.seq_len < need)
      throw Error("loader: --seq-len = " + std::to_string(o.seq_len) + " is too short for the synthetic " + kNames[t] + " task (" +
                  std::to_string(need) + " tokens with this tokenizer): raise --seq-len, give that task weight 0 in "
                  "--synthetic-mix P,K,C, or turn synthetic tasks off with --synthetic 0");
  }
}

Loader::Loader(const Corpus& corpus, const Tokenizer& tok, const LoaderOptions& options)
    : tok_(tok), o_(options), bos_(corpus.bos_id), train_stream_(join(corpus.train, corpus.bos_id)),
      val_stream_(join(corpus.val, corpus.bos_id)) {
  check_loader_options(o_);
  check_synthetic_lengths(o_, tok_);
  if (static_cast<int64_t>(train_stream_.size()) <= o_.seq_len + 1)
    throw Error("loader: the training split (" + std::to_string(train_stream_.size()) + " tokens) is shorter than --seq-len + 1");
  for (int t = 0; t < kNumSyntheticTasks; ++t) task_min_len_[t] = synthetic_min_length(static_cast<SyntheticTask>(t), tok_);
}

SyntheticTask Loader::pick_task(double u) const {
  double total = 0;
  for (const double w : o_.synthetic_mix) total += w;
  double at = 0;
  for (int t = 0; t < kNumSyntheticTasks - 1; ++t) {
    at += o_.synthetic_mix[t] / total;
    if (u < at) return static_cast<SyntheticTask>(t);
  }
  return static_cast<SyntheticTask>(kNumSyntheticTasks - 1);
}

PasskeySample Loader::synthetic_sample(SyntheticTask task, int length, double depth, uint64_t seed) const {
  switch (task) {
    case SyntheticTask::kPasskey: return make_passkey(tok_, train_stream_, length, depth, PasskeySplit::kTrain, seed);
    case SyntheticTask::kKvRecall: return make_kv_recall(tok_, train_stream_, length, seed);
    case SyntheticTask::kCopy: return make_copy(train_stream_, length, seed);
  }
  return {};
}

namespace {
// Appends one sequence (BOS + body) to the batch: inputs BOS..body[n−2], targets body.
void append_sequence(model::Batch& b, int32_t bos, const std::vector<int32_t>& body) {
  b.tokens.push_back(bos);
  b.tokens.insert(b.tokens.end(), body.begin(), body.end() - 1);
  b.targets.insert(b.targets.end(), body.begin(), body.end());
  b.seq_lens.push_back(static_cast<int>(body.size()));
}
std::vector<int32_t> text_window(const std::vector<int32_t>& stream, uint64_t off, int length) {
  return {stream.begin() + static_cast<int64_t>(off), stream.begin() + static_cast<int64_t>(off) + length};
}
}  // namespace

void Loader::pack_synthetic(int64_t step, uint64_t slot_seed, model::Batch& b) const {
  const int L = o_.seq_len, lo = o_.synthetic_min_len;
  double cap = L;
  if (o_.synthetic_ramp_steps > 0)
    cap = std::min<double>(L, lo * std::exp2(static_cast<double>(step) / static_cast<double>(o_.synthetic_ramp_steps)));
  Rng rng(slot_seed);
  for (int left = L; left > 0;) {
    const SyntheticTask task = pick_task(rng.uniform());
    const int task_lo = std::max(lo, task_min_len_[static_cast<int>(task)]);
    const double hi = std::min<double>(left, std::max<double>(cap, task_lo));
    if (left < task_lo) {   // the remainder: a window of text
      append_sequence(b, bos_, text_window(train_stream_, rng.below(train_stream_.size() - static_cast<size_t>(left)), left));
      break;
    }
    const double u = rng.uniform();
    const int len = std::clamp(static_cast<int>(std::lround(std::exp(std::log(task_lo) + u * (std::log(hi) - std::log(task_lo))))), task_lo, left);
    Rng task_rng(rng.next());
    const uint64_t task_seed = task_rng.next();   // drawn in sequence: seed, then the needle's depth
    const double depth = task == SyntheticTask::kPasskey ? task_rng.uniform() : 0.0;
    append_sequence(b, bos_, synthetic_sample(task, len, depth, task_seed).tokens);
    left -= len;
  }
}

model::Batch Loader::batch(int64_t step) const {
  model::Batch b;
  const int L = o_.seq_len;
  for (int i = 0; i < o_.batch_size; ++i) {
    Rng rng(mix_seed(o_.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(i)));
    // L + 1 tokens, the first one BOS: every sequence starts the way an inference prompt does, so
    // the model has one fixed first key (where idle heads park their attention: an attention sink)
    const double share = step < o_.synthetic_first_steps ? 1.0 : o_.synthetic_share;
    if (rng.uniform() < share) {
      const uint64_t task_seed = rng.next();
      if (o_.synthetic_min_len > 0) {
        pack_synthetic(step, task_seed, b);
        continue;
      }
      const SyntheticTask task = pick_task(rng.uniform());
      const double depth = task == SyntheticTask::kPasskey ? rng.uniform() : 0.0;
      append_sequence(b, bos_, synthetic_sample(task, L, depth, task_seed).tokens);
    } else {
      append_sequence(b, bos_, text_window(train_stream_, rng.below(train_stream_.size() - static_cast<size_t>(L)), L));
    }
  }
  return b;
}

model::Batch Loader::val_batch(int n, int seq_len, uint64_t salt) const {
  if (static_cast<int64_t>(val_stream_.size()) <= seq_len + 1)
    throw Error("loader: the validation split (" + std::to_string(val_stream_.size()) + " tokens) is shorter than the context " +
                std::to_string(seq_len) + " + 1");
  model::Batch b;
  const size_t room = val_stream_.size() - static_cast<size_t>(seq_len) - 1;
  for (int i = 0; i < n; ++i) {
    // Evenly spread windows, shifted by the salt so different evaluations can use different text.
    const size_t off = (room * static_cast<size_t>(i) / static_cast<size_t>(std::max(1, n)) + salt * 7919) % (room + 1);
    // BOS, then seq_len − 1 tokens of text (as in training); the targets are the text itself
    b.tokens.push_back(bos_);
    b.tokens.insert(b.tokens.end(), val_stream_.begin() + static_cast<int64_t>(off), val_stream_.begin() + static_cast<int64_t>(off) + seq_len - 1);
    b.targets.insert(b.targets.end(), val_stream_.begin() + static_cast<int64_t>(off),
                     val_stream_.begin() + static_cast<int64_t>(off) + seq_len);
    b.seq_lens.push_back(seq_len);
  }
  return b;
}

}  // namespace dsa::train

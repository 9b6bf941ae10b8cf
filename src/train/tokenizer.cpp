// tokenizer.cpp — byte-level and SentencePiece BPE tokenizers (include/dsa/tokenizer.h).
#include "dsa/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/file_io.h"
#include "dsa/ops.h"

namespace fs = std::filesystem;

namespace dsa {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  int vocab_size() const override { return kByteVocab + 1; }
  int32_t bos_id() const override { return kByteBosId; }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    out.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id > kByteBosId) throw Error("tokenizer decode: id " + std::to_string(id) + " is out of range [0, 257)");
      if (id != kByteBosId) out.push_back(static_cast<char>(id));
    }
    return out;
  }
  std::string spec() const override { return "byte"; }
  std::string save_to(const std::string&) const override { return "byte"; }
};

// SentencePiece's escaped space "▁" (U+2581).
const std::string kSpaceMarker = "\xe2\x96\x81";

// Length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629: no overlongs, no surrogates,
// ≤ U+10FFFF), or 0 when s[i] does not start one. NUL is treated as a stray byte too.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;   // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;
  else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) n = 3;
  else if (c == 0xED) n = 3, hi = 0x9F;
  else if (c == 0xF0) n = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else if (c == 0xF4) n = 4, hi = 0x8F;
  else return 0;
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

// SentencePiece encodes line by line (encoding a whole book as one string is ~7× slower, corpus.md
// §4) and newlines, which SPM never sees in training, become the byte piece <0x0A>. The model is
// trained without a dummy prefix, so concatenating per-line encodings decodes to the original text.
class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(const std::string& path) : path_(path) {
    if (!fs::is_regular_file(path)) throw Error("tokenizer: model file " + path + " does not exist");
    const auto status = sp_.Load(path);
    if (!status.ok()) throw Error("tokenizer: cannot load " + path + ": " + status.ToString());
    for (int b = 0; b < kByteVocab; ++b) {
      char piece[8];
      std::snprintf(piece, sizeof piece, "<0x%02X>", b);
      byte_ids_[b] = sp_.PieceToId(piece);
      if (byte_ids_[b] == sp_.unk_id()) throw Error("tokenizer: " + path + " was trained without byte fallback");
    }
    if (sp_.bos_id() < 0) throw Error("tokenizer: " + path + " has no BOS piece");
  }
  int vocab_size() const override { return sp_.GetPieceSize(); }
  int32_t bos_id() const override { return sp_.bos_id(); }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3);
    size_t begin = 0;
    while (begin <= text.size()) {
      size_t end = text.find('\n', begin);
      const bool has_newline = end != std::string_view::npos;
      if (!has_newline) end = text.size();
      encode_line(text.substr(begin, end - begin), ids);
      if (!has_newline) break;
      ids.push_back(byte_ids_['\n']);
      begin = end + 1;
    }
    return ids;
  }
  // Decoding is done piece by piece (not by SentencePiece's Decode, which turns byte pieces that do
  // not form valid UTF-8 into U+FFFD): byte pieces give their byte, ▁ gives a space, control pieces
  // (unk, bos, eos) give nothing.
  std::string decode(const std::vector<int32_t>& ids) const override {
    const int n = vocab_size();
    std::string out;
    out.reserve(ids.size() * 3);
    for (int32_t id : ids) {
      if (id < 0 || id >= n)
        throw Error("tokenizer decode: id " + std::to_string(id) + " is out of range [0, " + std::to_string(n) + ")");
      if (sp_.IsByte(id)) {
        out.push_back(static_cast<char>(std::stoi(sp_.IdToPiece(id).substr(3, 2), nullptr, 16)));   // "<0xHH>"
      } else if (!sp_.IsControl(id) && !sp_.IsUnknown(id)) {
        const std::string piece = sp_.IdToPiece(id);
        for (size_t i = 0; i < piece.size();) {
          if (piece.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
            out.push_back(' ');
            i += kSpaceMarker.size();
          } else {
            out.push_back(piece[i++]);
          }
        }
      }
    }
    return out;
  }
  std::string spec() const override { return path_; }
  std::string save_to(const std::string& dir) const override {
    const fs::path dst = fs::path(dir) / "tokenizer.model";
    if (fs::absolute(dst) != fs::absolute(path_)) fs::copy_file(path_, dst, fs::copy_options::overwrite_existing);
    return dst.string();
  }

 private:
  // SentencePiece replaces bytes that are not valid UTF-8 by U+FFFD, so a line is cut into valid
  // UTF-8 runs (encoded by SentencePiece) and stray bytes (encoded as their byte pieces).
  void encode_line(std::string_view line, std::vector<int32_t>& ids) const {
    std::vector<int> run_ids;
    size_t run_begin = 0, i = 0;
    auto flush = [&](size_t end) {
      if (end > run_begin) {
        const auto status = sp_.Encode(line.substr(run_begin, end - run_begin), &run_ids);
        if (!status.ok()) throw Error("tokenizer encode: " + status.ToString());
        ids.insert(ids.end(), run_ids.begin(), run_ids.end());
      }
    };
    while (i < line.size()) {
      const size_t len = utf8_sequence_length(line, i);
      // A literal "▁" in the text would come back as a space (SentencePiece's own space marker): its
      // three bytes go in as byte pieces instead, so the round trip stays lossless.
      if (len > 0 && line.compare(i, kSpaceMarker.size(), kSpaceMarker) != 0) {
        i += len;
        continue;
      }
      flush(i);
      ids.push_back(byte_ids_[static_cast<unsigned char>(line[i])]);
      run_begin = ++i;
    }
    flush(line.size());
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  int byte_ids_[kByteVocab] = {};
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  if (spec == "byte") return make_byte_tokenizer();
  return std::make_unique<SpmTokenizer>(spec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> list_documents(const std::vector<std::string>& paths) {
  std::vector<std::string> docs;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) {
      docs.push_back(p);
      continue;
    }
    if (!fs::is_directory(p, ec)) throw Error("data path " + p + " does not exist");
    std::vector<std::string> found;
    for (const auto& e : fs::recursive_directory_iterator(p))
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') found.push_back(e.path().string());
    if (found.empty()) throw Error("data path " + p + " holds no file");
    std::sort(found.begin(), found.end());
    docs.insert(docs.end(), found.begin(), found.end());
  }
  return docs;
}

void train_sentencepiece(const SpmTrainOptions& o) {
  if (o.vocab_size <= kByteVocab + 3)
    throw Error("tokenizer train: --vocab-size = " + std::to_string(o.vocab_size) + " must be > 259 (256 byte pieces + unk/bos/eos)");
  if (o.model_prefix.empty()) throw Error("tokenizer train: --out is empty");
  if (o.inputs.empty()) throw Error("tokenizer train: no input (--data)");
  const auto files = list_documents(o.inputs);

  // One training file: every line ≤ kSpmMaxSentenceBytes (SPM silently skips longer ones), and at
  // most max_training_lines lines taken at a fixed stride, so training is deterministic.
  std::vector<std::string> lines;
  for (const auto& f : files) {
    std::istringstream in(read_file(f));
    std::string line;
    while (std::getline(in, line)) {
      for (size_t at = 0; at < line.size(); at += kSpmMaxSentenceBytes) lines.push_back(line.substr(at, kSpmMaxSentenceBytes));
    }
  }
  if (lines.empty()) throw Error("tokenizer train: the inputs hold no text");
  const size_t stride = std::max<size_t>(1, lines.size() / static_cast<size_t>(std::max(1LL, o.max_training_lines)));
  // SentencePiece reads the sampled lines from memory and hands the model back serialised; the model
  // and vocabulary files are then written here, each to a temporary name that is checked, fsynced
  // and renamed (a full disk fails with its cause, never with a short model file).
  class Lines final : public sentencepiece::SentenceIterator {
   public:
    Lines(const std::vector<std::string>& l, size_t stride) : l_(l), stride_(stride) {}
    bool done() const override { return i_ >= l_.size(); }
    void Next() override { i_ += stride_; }
    const std::string& value() const override { return l_[i_]; }
    sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

   private:
    const std::vector<std::string>& l_;
    size_t stride_, i_ = 0;
  } sample(lines, stride);
  std::ostringstream args;
  args << "--vocab_size=" << o.vocab_size
       << " --model_type=bpe --normalization_rule_name=identity --remove_extra_whitespaces=false"
       << " --add_dummy_prefix=false --byte_fallback=true --split_digits=true --character_coverage=1.0"
       << " --max_sentence_length=" << kSpmMaxSentenceBytes << " --num_threads=" << o.threads
       << " --input_sentence_size=0 --shuffle_input_sentence=false --minloglevel=1";
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args.str(), &sample, &model);
  if (!status.ok()) throw Error("tokenizer train: " + status.ToString());
  sentencepiece::SentencePieceProcessor sp;
  const auto loaded = sp.LoadFromSerializedProto(model);
  if (!loaded.ok()) throw Error("tokenizer train: the trained model does not load: " + loaded.ToString());
  std::ostringstream vocab;
  for (int id = 0; id < sp.GetPieceSize(); ++id) vocab << sp.IdToPiece(id) << '\t' << sp.GetScore(id) << '\n';
  const fs::path prefix(o.model_prefix);
  io::CreatedFolders folders(prefix.has_parent_path() ? prefix.parent_path().string() : "", "tokenizer train");
  io::AtomicFile model_file(o.model_prefix + ".model", "tokenizer train");
  io::AtomicFile vocab_file(o.model_prefix + ".vocab", "tokenizer train");
  model_file.write(model);
  vocab_file.write(vocab.str());
  model_file.commit();
  vocab_file.commit();
  folders.keep();
}

std::vector<int32_t> encode_prompt(const Tokenizer& tok, std::string_view text) {
  std::vector<int32_t> ids = tok.encode(text);
  ids.insert(ids.begin(), tok.bos_id());
  return ids;
}

}  // namespace dsa

// dsa/tokenizer.h — text ↔ token ids for training and evaluation.
//
// Two tokenizers, one interface, both lossless (decode(encode(x)) == x byte for byte):
//   * ByteTokenizer: ids 0..255 are the bytes, id 256 is the document separator (BOS). No files.
//   * SentencePiece BPE (Debian libsentencepiece), trained by train_sentencepiece() with identity
//     normalisation, no dummy prefix, no whitespace folding and byte fallback, so any byte string
//     round-trips; digits are split into single tokens (passkeys are read digit by digit).
// A tokenizer is named by a spec string: "byte", or the path of a SentencePiece .model file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsa {

inline constexpr int kByteVocab = 256;          // raw byte ids 0..255
inline constexpr int32_t kByteBosId = 256;      // ByteTokenizer's document separator
inline constexpr int kSpmMaxSentenceBytes = 16384;   // longer training lines are split before SPM

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;           // separates packed documents
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Throws dsa::Error for an id outside [0, vocab_size).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string spec() const = 0;         // "byte" or the .model path it was loaded from
  // Writes what load_tokenizer needs into dir; returns the spec string that reloads it from there.
  virtual std::string save_to(const std::string& dir) const = 0;
};

// The model's input for a prompt: bos_id() followed by encode(text). Every training and evaluation
// sequence starts with BOS (dsa/train.h Loader), so inference must too; this is the one place that
// applies the rule (dsa generate, the evaluation's passkey prompts and library users call it).
std::vector<int32_t> encode_prompt(const Tokenizer& tok, std::string_view text);

std::unique_ptr<Tokenizer> make_byte_tokenizer();
// "byte" → ByteTokenizer; otherwise a SentencePiece model file (dsa::Error names a missing file).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

struct SpmTrainOptions {
  std::vector<std::string> inputs;              // text files (or folders, searched for *.txt etc.)
  std::string model_prefix;                     // writes <prefix>.model and <prefix>.vocab
  int vocab_size = 4096;                        // > kByteVocab + 3 (unk, bos, eos, 256 byte pieces)
  int threads = 2;
  long long max_training_lines = 400000;        // SPM samples at most this many lines
};
// Trains a lossless BPE model; throws dsa::Error naming a missing input or a bad vocab size.
void train_sentencepiece(const SpmTrainOptions& options);

// Lists the text documents under each path (a file is itself; a folder is searched recursively for
// regular files), sorted by path so every run sees the same order. Throws dsa::Error naming a
// path that does not exist or holds no file.
std::vector<std::string> list_documents(const std::vector<std::string>& paths);
std::string read_file(const std::string& path);  // dsa::Error naming the file when unreadable

}  // namespace dsa

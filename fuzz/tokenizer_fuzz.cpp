// tokenizer_fuzz.cpp — libFuzzer target for the tokenizer paths (src/train/tokenizer.cpp): the first
// byte picks
//   0: text → encode → decode with the byte tokenizer and a SentencePiece BPE trained once at start-up
//      (in memory, written through the atomic writer): the round trip must be lossless for ANY bytes;
//   1: the rest read as token ids → decode: every id in range decodes, any other throws dsa::Error;
//   2: the rest written as a tokenizer model file → load_tokenizer: loads or throws dsa::Error.
// A crash, a sanitizer report, a lossy round trip, another exception type or a hang is a bug.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "dsa/ops.h"
#include "dsa/tokenizer.h"

namespace {
namespace fs = std::filesystem;

std::unique_ptr<dsa::Tokenizer> g_spm, g_byte;
fs::path g_dir;

void train_once() {
  g_dir = fs::temp_directory_path() / ("dsa_tokenizer_fuzz_" + std::to_string(::getpid()));
  fs::create_directories(g_dir);
  std::string text;
  const char* lines[] = {"It is a truth universally acknowledged, that a single man in possession of a good fortune",
                         "The pass key is 48213. Remember it. What is the pass key?", "caf\xc3\xa9 \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac",
                         "    indented() { return 42; }\t tabs\r\n"};
  for (int i = 0; i < 200; ++i) text += std::string(lines[i % 4]) + " " + std::to_string(i * 31) + "\n";
  std::ofstream(g_dir / "corpus.txt") << text;
  dsa::SpmTrainOptions o;
  o.inputs = {(g_dir / "corpus.txt").string()};
  o.model_prefix = (g_dir / "tok").string();
  o.vocab_size = 400;
  o.threads = 1;
  dsa::train_sentencepiece(o);
  g_spm = dsa::load_tokenizer(o.model_prefix + ".model");
  g_byte = dsa::make_byte_tokenizer();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  train_once();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      for (const dsa::Tokenizer* t : {g_byte.get(), g_spm.get()})
        if (t->decode(t->encode(rest)) != rest) std::abort();   // lossless for any bytes
      break;
    case 1: {
      std::vector<int32_t> ids(rest.size() / 4);
      if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * 4);
      for (const dsa::Tokenizer* t : {g_byte.get(), g_spm.get()}) {
        bool in_range = true;
        for (const int32_t id : ids) in_range = in_range && id >= 0 && id < t->vocab_size();
        try {
          (void)t->decode(ids);
          if (!in_range) std::abort();   // an out-of-range id must be refused
        } catch (const dsa::Error&) {
          if (in_range) std::abort();
        }
      }
      break;
    }
    default: {
      const fs::path p = g_dir / "input.model";
      std::ofstream(p, std::ios::binary | std::ios::trunc) << rest;
      try {
        const auto t = dsa::load_tokenizer(p.string());
        (void)t->decode(t->encode("round trip \xff\xfe text"));
      } catch (const dsa::Error&) {
        // a malformed model file correctly refused
      }
    }
  }
  return 0;
}

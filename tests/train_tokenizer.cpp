// train_tokenizer.cpp — the tokenizers are lossless, and bad inputs give errors naming the flag/file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dsa/ops.h"
#include "dsa/tokenizer.h"

namespace fs = std::filesystem;

namespace {

// Strings that break naive tokenizers: runs of spaces, tabs, CR/LF, leading/trailing whitespace,
// multi-byte UTF-8, digits, an empty line, and bytes that are not valid UTF-8 (byte fallback).
const std::vector<std::string> kHardStrings = {
    "",
    " ",
    "\n",
    "Hello,  world!\n\tindented line\r\n",
    "  leading and trailing spaces  ",
    "\n\n\nthree newlines first",
    "caf\xc3\xa9 \xe2\x80\x94 \xc3\x9c" "ber \xe6\x97\xa5\xe6\x9c\xac",
    "The pass key is 48213. Remember it.",
    std::string("nul\0byte", 8),
    "invalid utf-8: \xff\xfe\x80 end",
    "truncated \xe2\x96 and overlong \xc0\xaf and surrogate \xed\xa0\x80",
    "stray bytes at the end \xc3",
    "a literal space marker \xe2\x96\x81 (U+2581) stays itself \xe2\x96\x81\xe2\x96\x81",
};

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("dsa_train_tok_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string sample_text() {
  std::string s;
  const char* lines[] = {"In the beginning was the word, and the word was with the tokenizer.",
                         "It is a truth universally acknowledged that a single byte must round-trip.",
                         "The pass key is 12345. Remember it. What is the pass key?",
                         "    Indented code() { return 42; }", "Emma Woodhouse, handsome, clever, and rich."};
  for (int i = 0; i < 60; ++i) s += std::string(lines[i % 5]) + " " + std::to_string(i * 37) + "\n";
  return s;
}

TEST(TrainTokenizer, ByteRoundTripIsLossless) {
  const auto tok = dsa::make_byte_tokenizer();
  EXPECT_EQ(tok->vocab_size(), dsa::kByteVocab + 1);
  for (const auto& s : kHardStrings) {
    const auto ids = tok->encode(s);
    EXPECT_EQ(ids.size(), s.size());
    EXPECT_EQ(tok->decode(ids), s);
  }
  // The separator decodes to nothing; out-of-range ids are an error naming the id.
  EXPECT_EQ(tok->decode({'a', tok->bos_id(), 'b'}), "ab");
  try {
    tok->decode({300});
    FAIL() << "expected dsa::Error";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("300"), std::string::npos) << e.what();
  }
}

TEST(TrainTokenizer, SentencePieceRoundTripIsLossless) {
  const fs::path dir = temp_dir("spm");
  {
    std::ofstream(dir / "a.txt") << sample_text();
  }
  dsa::SpmTrainOptions o;
  o.inputs = {(dir / "a.txt").string()};
  o.model_prefix = (dir / "tok").string();
  o.vocab_size = 320;   // 259 fixed pieces + ~60 learned: enough for merges on this small text
  dsa::train_sentencepiece(o);
  const auto tok = dsa::load_tokenizer((dir / "tok.model").string());
  EXPECT_EQ(tok->vocab_size(), 320);
  for (const auto& s : kHardStrings) EXPECT_EQ(tok->decode(tok->encode(s)), s) << "input: " << s;
  const std::string text = sample_text();
  const auto ids = tok->encode(text);
  EXPECT_LT(ids.size(), text.size());   // BPE merges something on its own training text
  EXPECT_EQ(tok->decode(ids), text);
  // Digits are single tokens (split_digits), so a 5-digit key is 5 tokens.
  EXPECT_EQ(tok->encode("48213").size(), 5u);
  // Deterministic: training again gives the same vocabulary (the model file also records the
  // training paths, so compare what the tokenizer does, not the bytes).
  o.model_prefix = (dir / "tok2").string();
  dsa::train_sentencepiece(o);
  const auto tok2 = dsa::load_tokenizer((dir / "tok2.model").string());
  EXPECT_EQ(tok2->encode(text), ids);
  std::vector<int32_t> all(static_cast<size_t>(tok->vocab_size()));
  for (int i = 0; i < tok->vocab_size(); ++i) all[static_cast<size_t>(i)] = i;
  EXPECT_EQ(tok2->decode(all), tok->decode(all));
  fs::remove_all(dir);
}

TEST(TrainTokenizer, BadInputsNameTheFlagOrFile) {
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      FAIL() << "expected dsa::Error mentioning " << needle;
    } catch (const dsa::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([] { dsa::load_tokenizer("/nonexistent/tok.model"); }, "/nonexistent/tok.model");
  expect_error([] { dsa::list_documents({"/nonexistent/corpus"}); }, "/nonexistent/corpus");
  expect_error([] { dsa::read_file("/nonexistent/file.txt"); }, "/nonexistent/file.txt");
  const fs::path dir = temp_dir("bad");
  {
    std::ofstream(dir / "a.txt") << sample_text();
  }
  dsa::SpmTrainOptions o;
  o.inputs = {(dir / "a.txt").string()};
  o.model_prefix = (dir / "tok").string();
  o.vocab_size = 100;
  expect_error([&] { dsa::train_sentencepiece(o); }, "--vocab-size");
  o.vocab_size = 320;
  o.inputs = {(dir / "missing.txt").string()};
  expect_error([&] { dsa::train_sentencepiece(o); }, "missing.txt");
  // A file that is not a SentencePiece model.
  expect_error([&] { dsa::load_tokenizer((dir / "a.txt").string()); }, "a.txt");
  fs::remove_all(dir);
}

}  // namespace

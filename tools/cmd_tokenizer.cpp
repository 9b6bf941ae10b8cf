// `dsa tokenizer train|encode|decode` — train a lossless SentencePiece BPE, inspect it.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "command.h"
#include "dsa/ops.h"
#include "dsa/tokenizer.h"

namespace {

const char* kUsage =
    "usage: dsa tokenizer train --data PATH[,PATH…] --out PREFIX [--vocab-size N] [--threads N] [--max-lines N]\n"
    "       dsa tokenizer encode --tokenizer SPEC --text STRING     (SPEC: byte | file.model)\n"
    "       dsa tokenizer decode --tokenizer SPEC --ids \"1 2 3\"\n";

int run_tokenizer(const dsa::cli::Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf("%s", kUsage);
    return args.empty() ? 2 : 0;
  }
  const std::string sub = args[0];
  const dsa::cli::Args rest(args.begin() + 1, args.end());
  if (sub == "train") {
    dsa::cli::Flags f(rest, {"data", "out", "vocab-size", "threads", "max-lines"}, {}, {{"-o", "out"}, {"-t", "threads"}});
    dsa::SpmTrainOptions o;
    std::stringstream ss(f.require("data"));
    for (std::string p; std::getline(ss, p, ',');)
      if (!p.empty()) o.inputs.push_back(p);
    o.model_prefix = f.require("out");
    o.vocab_size = f.get_i32("vocab-size", o.vocab_size, 1, 1 << 24);
    o.threads = f.get_i32("threads", o.threads, 1, 4096);
    o.max_training_lines = f.get_int("max-lines", o.max_training_lines, 1, 1LL << 40);
    const auto t0 = std::chrono::steady_clock::now();
    dsa::train_sentencepiece(o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto tok = dsa::load_tokenizer(o.model_prefix + ".model");
    std::printf("tokenizer: %s.model, %d pieces, trained in %.1f s\n", o.model_prefix.c_str(), tok->vocab_size(), s);
    return 0;
  }
  if (sub == "encode") {
    dsa::cli::Flags f(rest, {"tokenizer", "text"}, {});
    const auto tok = dsa::load_tokenizer(f.get("tokenizer", "byte"));
    for (int32_t id : tok->encode(f.require("text"))) std::printf("%d ", id);
    std::printf("\n");
    return 0;
  }
  if (sub == "decode") {
    dsa::cli::Flags f(rest, {"tokenizer", "ids"}, {});
    const auto tok = dsa::load_tokenizer(f.get("tokenizer", "byte"));
    std::vector<int32_t> ids;
    std::stringstream ss(f.require("ids"));
    for (std::string id; ss >> id;)
      ids.push_back(static_cast<int32_t>(dsa::cli::parse_int("--ids item", id, 0, tok->vocab_size() - 1)));
    std::cout << tok->decode(ids) << "\n";
    return 0;
  }
  throw dsa::Error("tokenizer: unknown subcommand \"" + sub + "\" (train, encode, decode)");
}

const dsa::cli::Register kTokenizer("tokenizer", "train / use a lossless SentencePiece BPE tokenizer", run_tokenizer, kUsage);

}  // namespace

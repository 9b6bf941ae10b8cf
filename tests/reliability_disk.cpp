// reliability_disk.cpp — disk faults: a full disk (injected ENOSPC, and the kernel's own from
// /dev/full) or a read-only one (injected EROFS) gives an error naming the path and the cause, leaves
// the previous file (or nothing) and no temporary behind — for plain files, checkpoints, tokenizer
// outputs and the token cache. Temporaries of a killed writer are removed by the next write.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "common/file_io.h"
#include "dsa/model.h"
#include "dsa/tokenizer.h"
#include "dsa/train.h"
#include "model_util.h"

namespace {

namespace fs = std::filesystem;
using dsa::model::Model;

class ReliabilityDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    root = fs::temp_directory_path() / ("dsa_rel_disk_" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
  }
  void TearDown() override {
    dsa::io::inject_write_fault(-1, 0);
    fs::remove_all(root);
  }
  // Names in `dir` (recursively), sorted.
  static std::string listing(const fs::path& dir) {
    std::vector<std::string> v;
    if (fs::exists(dir))
      for (const auto& e : fs::recursive_directory_iterator(dir)) v.push_back(fs::relative(e.path(), dir).string());
    std::sort(v.begin(), v.end());
    std::string s;
    for (const auto& n : v) s += n + "\n";
    return s;
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // Runs f with the fault armed after `bytes`; expects a dsa::Error with every needle.
  static void expect_fault(int64_t bytes, int err, const std::function<void()>& f, const std::vector<std::string>& needles) {
    dsa::io::inject_write_fault(bytes, err);
    try {
      f();
      ADD_FAILURE() << "no error with the fault armed after " << bytes << " bytes";
    } catch (const dsa::Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
    dsa::io::inject_write_fault(-1, 0);
  }
  fs::path root;
};

TEST_F(ReliabilityDisk, AtomicWriteKeepsThePreviousFileOnAFullDisk) {
  const fs::path p = root / "state.json";
  dsa::io::write_file_atomic(p.string(), "old contents\n", "test");
  const std::string big(100000, 'x');
  for (int64_t at : {0, 1, 4096, 99999}) {
    expect_fault(at, ENOSPC, [&] { dsa::io::write_file_atomic(p.string(), big, "test"); },
                 {"test: cannot", p.string(), "No space left on device", "the disk is full"});
    EXPECT_EQ(read(p), "old contents\n") << at;
    EXPECT_EQ(listing(root), "state.json\n") << at;   // no temporary left
  }
  expect_fault(0, EROFS, [&] { dsa::io::write_file_atomic(p.string(), big, "test"); }, {"Read-only file system", p.string()});
  EXPECT_EQ(read(p), "old contents\n");
  dsa::io::write_file_atomic(p.string(), big, "test");   // the fault disarmed: the write goes through
  EXPECT_EQ(read(p), big);
}

TEST_F(ReliabilityDisk, TheKernelsFullDiskErrorIsNamed) {
  // /dev/full fails every write with ENOSPC: the same message as the injected fault.
  const int fd = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (fd < 0) GTEST_SKIP() << "no /dev/full";
  try {
    dsa::io::write_all(fd, "data", 4, "/dev/full", "test");
    ADD_FAILURE() << "a write to /dev/full succeeded";
  } catch (const dsa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("test: cannot write /dev/full: No space left on device (the disk is full)"), std::string::npos)
        << e.what();
  }
  ::close(fd);
}

TEST_F(ReliabilityDisk, CheckpointSaveOnAFullDiskLeavesTheOldCheckpoint) {
  Model m(dsa::test_model::micro_config());
  m.init_random(1);
  const fs::path dir = root / "ckpt";
  for (int64_t at : {0, 100, 5000}) {
    expect_fault(at, ENOSPC, [&] { m.save(dir.string()); }, {"No space left on device"});
    EXPECT_EQ(listing(root), "") << at;   // neither the checkpoint nor a temporary
  }
  m.save(dir.string());
  const std::string before = listing(root), weights = read(dir / "model.safetensors");
  m.init_random(2);
  expect_fault(3000, ENOSPC, [&] { m.save(dir.string()); }, {"No space left on device"});
  EXPECT_EQ(listing(root), before);
  EXPECT_EQ(read(dir / "model.safetensors"), weights);   // the previous checkpoint, intact
  EXPECT_NO_THROW(Model::load(dir.string()));
}

TEST_F(ReliabilityDisk, TokenizerTrainingOnAFullDiskWritesNothing) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "It is a truth universally acknowledged, line " + std::to_string(i) + ".\n";
  std::ofstream(root / "corpus.txt") << text;
  dsa::SpmTrainOptions o;
  o.inputs = {(root / "corpus.txt").string()};
  o.model_prefix = (root / "out" / "tok").string();
  o.vocab_size = 320;
  o.threads = 1;
  for (int64_t at : {0, 10, 2000}) {
    expect_fault(at, ENOSPC, [&] { dsa::train_sentencepiece(o); }, {"tokenizer train: cannot", "tok.", "No space left on device"});
    EXPECT_EQ(listing(root), "corpus.txt\n") << at;   // no tok.model/tok.vocab, no out/ folder
  }
  dsa::train_sentencepiece(o);
  EXPECT_EQ(listing(root), "corpus.txt\nout\nout/tok.model\nout/tok.vocab\n");
  EXPECT_EQ(dsa::load_tokenizer(o.model_prefix + ".model")->vocab_size(), 320);
  std::istringstream vocab(read(root / "out" / "tok.vocab"));
  int lines = 0;
  for (std::string l; std::getline(vocab, l);) ++lines;
  EXPECT_EQ(lines, 320);
}

TEST_F(ReliabilityDisk, TokenCacheOnAFullDiskLeavesNoFolderOrTemporary) {
  fs::create_directories(root / "data");
  std::ofstream(root / "data" / "train.txt") << std::string(4000, 'a');
  std::ofstream(root / "data" / "held.txt") << std::string(1000, 'b');
  dsa::train::DataOptions d;
  d.paths = {(root / "data").string()};
  d.holdout = {"held"};
  d.tokenizer = "byte";
  const fs::path cache = root / "run" / "tokens";
  expect_fault(100, ENOSPC, [&] { dsa::train::load_corpus(d, cache.string()); }, {"load_corpus: cannot write", "tokens.bin"});
  EXPECT_FALSE(fs::exists(root / "run"));
  const auto c = dsa::train::load_corpus(d, cache.string());
  EXPECT_EQ(c.train_tokens(), 4000);
  EXPECT_EQ(listing(cache), "tokens.bin\n");
  // A truncated cache is not trusted: it is rebuilt from the documents.
  fs::resize_file(cache / "tokens.bin", fs::file_size(cache / "tokens.bin") / 2);
  EXPECT_EQ(dsa::train::load_corpus(d, cache.string()).train_tokens(), 4000);
}

// A pid that ran and has exited (so no process has it).
long dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  ::waitpid(p, nullptr, 0);
  return p;
}

TEST_F(ReliabilityDisk, TemporariesOfAKilledWriterAreRemovedByTheNextWrite) {
  const fs::path out = root / "model";
  const std::string dead = out.string() + ".tmp-" + std::to_string(dead_pid()) + "-0";
  const std::string live = out.string() + ".tmp-" + std::to_string(::getppid()) + "-3";   // a running writer
  const std::string other = out.string() + ".tmp-notapid";                               // not ours: kept
  fs::create_directories(dead + "/sub");
  std::ofstream(dead + "/sub/model.safetensors") << "partial";
  fs::create_directories(live);
  std::ofstream(other) << "x";
  Model m(dsa::test_model::micro_config());
  m.init_random(1);
  m.save(out.string());
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  // The same for single files (checkpoint state, tokenizer outputs, token caches).
  const fs::path f = root / "latest";
  const std::string stale = f.string() + ".tmp-" + std::to_string(dead_pid()) + "-7";
  std::ofstream(stale) << "half";
  dsa::io::write_file_atomic(f.string(), "ckpt-2\n", "test");
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_EQ(read(f), "ckpt-2\n");
}

}  // namespace

// file_io.cpp — atomic, checked file writes (file_io.h).
#include "common/file_io.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "dsa/ops.h"

namespace dsa::io {
namespace fs = std::filesystem;
namespace {

constexpr const char* kTempTag = ".tmp-";

// Injected fault: budget < 0 = off; otherwise the bytes that may still be written.
std::atomic<int64_t> g_fault_budget{-1};
std::atomic<int> g_fault_errno{0};
std::once_flag g_fault_env_once;

void set_fault(int64_t bytes_left, int err) {
  g_fault_errno.store(err);
  g_fault_budget.store(bytes_left < 0 ? -1 : bytes_left);
}

void read_fault_env() {
  std::call_once(g_fault_env_once, [] {
    const char* env = std::getenv("DSA_INJECT_WRITE_FAULT");
    if (env == nullptr || *env == '\0') return;
    char* end = nullptr;
    const long long bytes = std::strtoll(env, &end, 10);
    int err = ENOSPC;
    if (end != nullptr && *end == ':') {
      const std::string name(end + 1);
      if (name == "EROFS") err = EROFS;
      else if (name == "EIO") err = EIO;
      else if (name != "ENOSPC") throw Error("DSA_INJECT_WRITE_FAULT=" + std::string(env) + ": the error must be ENOSPC, EROFS or EIO");
    } else if (end == env || *end != '\0') {
      throw Error("DSA_INJECT_WRITE_FAULT=" + std::string(env) + " must be <bytes>[:ENOSPC|EROFS|EIO]");
    }
    if (bytes >= 0) set_fault(bytes, err);
  });
}

// Bytes of an n-byte write that may go through before the injected fault (n when none).
size_t fault_allowance(size_t n) {
  read_fault_env();
  const int64_t budget = g_fault_budget.load();
  if (budget < 0) return n;
  const size_t allowed = std::min<size_t>(n, static_cast<size_t>(budget));
  g_fault_budget.fetch_sub(static_cast<int64_t>(allowed));
  return allowed;
}

bool fault_active_and_spent() {
  read_fault_env();
  return g_fault_budget.load() == 0;
}

int open_for_write(const std::string& path, const std::string& who) {
  if (fault_active_and_spent()) fail_errno(who, "create", path, g_fault_errno.load());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno(who, "create", path, errno);
  return fd;
}

bool process_runs(long pid) {
  if (pid <= 0) return false;
  if (pid == static_cast<long>(::getpid())) return true;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace

void fail_errno(const std::string& who, const std::string& what, const std::string& path, int err) {
  std::string msg = who + ": cannot " + what + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) msg += " (the disk is full)";
  if (err == EROFS) msg += " (the file system is mounted read-only)";
  throw Error(msg);
}

std::string temp_name(const std::string& path) {
  static std::atomic<int> counter{0};
  return path + kTempTag + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

int remove_stale_temps(const std::string& path) {
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + kTempTag;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  int removed = 0;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    // <prefix><pid>-<n>: both decimal
    const std::string rest = name.substr(prefix.size());
    const size_t dash = rest.find('-');
    if (dash == std::string::npos || dash == 0 || dash + 1 == rest.size()) continue;
    if (rest.find_first_not_of("0123456789-") != std::string::npos || rest.find('-', dash + 1) != std::string::npos) continue;
    if (dash > 9) continue;   // not a pid
    if (process_runs(std::stol(rest.substr(0, dash)))) continue;
    std::error_code rm;
    fs::remove_all(e.path(), rm);
    if (!rm) ++removed;
  }
  return removed;
}

void write_all(int fd, const void* data, size_t n, const std::string& path, const std::string& who) {
  const char* c = static_cast<const char*>(data);
  while (n > 0) {
    const size_t allowed = fault_allowance(n);
    if (allowed == 0) fail_errno(who, "write", path, g_fault_errno.load());
    const ssize_t w = ::write(fd, c, allowed);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail_errno(who, "write", path, errno);
    }
    if (w == 0) fail_errno(who, "write", path, EIO);
    c += w;
    n -= static_cast<size_t>(w);
  }
}

void fsync_path(const std::string& path, bool directory, const std::string& who) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) fail_errno(who, "open to fsync", path, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // A folder on a file system without folder fsync (EINVAL) has nothing more to flush.
  if (rc != 0 && !(directory && err == EINVAL)) fail_errno(who, "fsync", path, err);
}

void rename_durable(const std::string& from, const std::string& to, const std::string& who) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail_errno(who, "rename " + from + " to", to, errno);
  const fs::path parent = fs::path(to).has_parent_path() ? fs::path(to).parent_path() : fs::path(".");
  fsync_path(parent.string(), true, who);
}

AtomicFile::AtomicFile(const std::string& path, const std::string& who) : path_(path), who_(who) {
  remove_stale_temps(path_);
  tmp_ = temp_name(path_);
  fd_ = open_for_write(tmp_, who_);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t size) {
  if (fd_ < 0) throw Error(who_ + ": " + path_ + " is already committed");
  write_all(fd_, data, size, tmp_, who_);
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error(who_ + ": " + path_ + " is already committed");
  if (::fsync(fd_) != 0) fail_errno(who_, "fsync", tmp_, errno);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail_errno(who_, "close", tmp_, errno);
  rename_durable(tmp_, path_, who_);
  tmp_.clear();
}

CreatedFolders::CreatedFolders(const std::string& dir, const std::string& who) {
  if (dir.empty()) return;
  fs::path p = fs::absolute(fs::path(dir)).lexically_normal();
  std::error_code ec;
  fs::path top;
  for (fs::path q = p; !q.empty() && !fs::exists(q, ec); q = q.parent_path()) {
    top = q;
    if (q == q.parent_path()) break;
  }
  fs::create_directories(p, ec);
  if (ec) {
    const int err = ec.value();
    if (!top.empty()) fs::remove_all(top, ec);
    fail_errno(who, "create the folder", p.string(), err);
  }
  top_ = top.string();
}

CreatedFolders::~CreatedFolders() {
  if (top_.empty()) return;
  std::error_code ec;
  fs::remove_all(top_, ec);
}

void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& who) {
  AtomicFile f(path, who);
  f.write(bytes);
  f.commit();
}

void inject_write_fault(int64_t bytes_left, int err) {
  read_fault_env();   // the environment's setting is read first, so this call overrides it
  set_fault(bytes_left, err);
}

}  // namespace dsa::io

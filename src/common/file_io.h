// file_io.h — how every file the project writes reaches the disk: a temporary name next to the
// target (<target>.tmp-<pid>-<n>), written in full, fsynced, closed, renamed over the target, and the
// folder fsynced. A failed step removes the temporary and throws dsa::Error naming the path and the
// cause ("No space left on device (the disk is full)", "Read-only file system", …), so a full disk
// leaves the previous version of the target (or nothing), never a short file. Temporaries left by a
// killed writer are removed when the same target is written again (the writer's pid no longer runs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsa::io {

// Throws dsa::Error "<who>: cannot <what> <path>: <strerror(err)>[ (the disk is full)]".
[[noreturn]] void fail_errno(const std::string& who, const std::string& what, const std::string& path, int err);

// "<path>.tmp-<pid>-<n>", unique within the process.
std::string temp_name(const std::string& path);

// Removes the temporaries "<path>.tmp-<pid>-<n>" (files or folders) whose pid is not a running
// process. Returns how many were removed.
int remove_stale_temps(const std::string& path);

// Streams one file to a temporary and commits it by rename. Destroyed without commit(): the
// temporary is removed and the target is untouched.
class AtomicFile {
 public:
  AtomicFile(const std::string& path, const std::string& who);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();
  void write(const void* data, size_t size);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();   // fsync, close, rename over the target, fsync the folder
  const std::string& temp_path() const { return tmp_; }

 private:
  std::string path_, tmp_, who_;
  int fd_ = -1;
};

// Creates a folder and its missing parents; destroyed without keep(), removes what it created (so a
// write that fails on a full disk leaves no empty folders behind).
class CreatedFolders {
 public:
  CreatedFolders(const std::string& dir, const std::string& who);
  CreatedFolders(const CreatedFolders&) = delete;
  CreatedFolders& operator=(const CreatedFolders&) = delete;
  ~CreatedFolders();
  void keep() { top_.clear(); }

 private:
  std::string top_;   // the outermost folder created here ("" = none)
};

// The whole of `bytes` to `path` through an AtomicFile.
void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& who);

// Writes all n bytes to fd (EINTR retried); a failure throws fail_errno(who, "write", path, errno).
void write_all(int fd, const void* data, size_t n, const std::string& path, const std::string& who);
// fsync of a file or a folder; a failure throws naming the path.
void fsync_path(const std::string& path, bool directory, const std::string& who);
// Renames `from` over `to` and fsyncs the folder of `to`.
void rename_durable(const std::string& from, const std::string& to, const std::string& who);

// Fault injection for tests: after `bytes_left` more bytes written through this module, every
// open-for-writing and write fails with `err` (ENOSPC: a full disk; EROFS: a read-only one).
// bytes_left < 0 turns it off. The environment variable DSA_INJECT_WRITE_FAULT=<bytes>:<ENOSPC|EROFS>
// sets the same at the first write of a process (the command-line tests use it).
void inject_write_fault(int64_t bytes_left, int err);

}  // namespace dsa::io

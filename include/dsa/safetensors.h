// dsa/safetensors.h — reading (memory-mapped) and writing safetensors files.
//
// Format: 8-byte little-endian header length N, then N bytes of JSON
//   {"__metadata__": {"k": "v", …}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, …}
// then the data buffer; offsets are relative to the buffer start. Every byte of the buffer must be
// covered by exactly one tensor (no gaps, no overlaps), e − b = numel · dtype size.
// A tensor entry holds exactly dtype, shape and data_offsets; the only other top-level entry allowed
// is "__metadata__" (string values).
// Any malformed file (truncated, bad JSON, unknown dtype, unknown keys in an entry, offsets out of
// range / overlapping / with gaps, sizes that disagree with shapes, duplicated names) throws dsa::Error whose message names the
// file and, where there is one, the tensor. Parsing never reads outside the mapped bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsa/ops.h"

namespace dsa::safetensors {

enum class Dtype { kF32, kF16, kBF16, kF8E4M3, kI32, kI64, kU8, kBool };
const char* dtype_name(Dtype d);           // "F32", "BF16", "F8_E4M3", …
size_t dtype_size(Dtype d);

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;             // byte offsets inside the data buffer
  int64_t numel() const;
};

// A parsed file. open() memory-maps the file; parse() reads a caller's buffer (kept by reference:
// it must outlive the File) — the fuzz target uses parse().
class File {
 public:
  static File open(const std::string& path);
  static File parse(const uint8_t* data, size_t size, const std::string& label);
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  ~File();

  const std::string& path() const;
  const std::vector<TensorInfo>& tensors() const;      // in data-offset order
  const TensorInfo* find(const std::string& name) const;  // null when absent
  const std::map<std::string, std::string>& metadata() const;
  const uint8_t* data(const TensorInfo& t) const;      // raw bytes of a tensor
  // Converts a F32 / F16 / BF16 / F8_E4M3 tensor to fp32 (no scales applied). Throws naming the file
  // and tensor for other dtypes or when expected_shape (if non-empty) differs.
  std::vector<float> to_float(const std::string& name, const std::vector<int64_t>& expected_shape = {}) const;

 private:
  File();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One tensor to write: fp32 values stored as `dtype` (kF32 exact, kBF16 rounded to nearest even).
struct WriteTensor {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};
// Writes the file (tensors in the given order, 8-byte aligned header) to a temporary name next to
// `path`, fsyncs it and renames it over `path`: a failed write (a full disk) leaves no partial file and
// throws dsa::Error naming the path and the cause.
void write(const std::string& path, const std::vector<WriteTensor>& tensors,
           const std::map<std::string, std::string>& metadata = {});

// Writes raw bytes with an explicit dtype (tests build F8_E4M3 files with it).
struct RawTensor {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
void write_raw(const std::string& path, const std::vector<RawTensor>& tensors,
               const std::map<std::string, std::string>& metadata = {});

}  // namespace dsa::safetensors

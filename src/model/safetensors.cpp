// safetensors.cpp — memory-mapped safetensors reader and writer (include/dsa/safetensors.h).
// The parser trusts nothing in the file: every length, offset and shape is checked (with overflow
// checks) before a byte of tensor data is touched.
#include "dsa/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <cstring>
#include <sstream>

#include "common/file_io.h"
#include "model/json.h"

namespace dsa::safetensors {
namespace {

constexpr uint64_t kHeaderLengthBytes = 8;
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;   // the reference implementation's limit (100 MB)
constexpr size_t kHeaderAlign = 8;                   // we pad headers so the data starts 8-aligned

template <typename... Parts>
[[noreturn]] void fail(const std::string& file, const Parts&... parts) {
  std::ostringstream os;
  os << "safetensors: " << file << ": ";
  (os << ... << parts);
  throw Error(os.str());
}

bool parse_dtype(const std::string& s, Dtype* d) {
  static const std::pair<const char*, Dtype> kNames[] = {
      {"F32", Dtype::kF32}, {"F16", Dtype::kF16}, {"BF16", Dtype::kBF16}, {"F8_E4M3", Dtype::kF8E4M3},
      {"I32", Dtype::kI32}, {"I64", Dtype::kI64}, {"U8", Dtype::kU8},     {"BOOL", Dtype::kBool}};
  for (const auto& [name, dt] : kNames)
    if (s == name) { *d = dt; return true; }
  return false;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31) v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else v = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

}  // namespace

const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::kF32: return "F32";
    case Dtype::kF16: return "F16";
    case Dtype::kBF16: return "BF16";
    case Dtype::kF8E4M3: return "F8_E4M3";
    case Dtype::kI32: return "I32";
    case Dtype::kI64: return "I64";
    case Dtype::kU8: return "U8";
    case Dtype::kBool: return "BOOL";
  }
  return "?";
}

size_t dtype_size(Dtype d) {
  switch (d) {
    case Dtype::kF32: case Dtype::kI32: return 4;
    case Dtype::kF16: case Dtype::kBF16: return 2;
    case Dtype::kI64: return 8;
    case Dtype::kF8E4M3: case Dtype::kU8: case Dtype::kBool: return 1;
  }
  return 1;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (const int64_t s : shape) n *= s;
  return n;
}

struct File::Impl {
  std::string path;
  void* map = nullptr;           // owned mapping (open) or null (parse)
  size_t map_size = 0;
  const uint8_t* bytes = nullptr;
  size_t size = 0;
  const uint8_t* buffer = nullptr;   // data buffer start
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;

  ~Impl() {
    if (map != nullptr) ::munmap(map, map_size);
  }

  void parse_header() {
    if (size < kHeaderLengthBytes) fail(path, "truncated: ", size, " bytes, shorter than the 8-byte header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
    if (n > kMaxHeaderBytes) fail(path, "header length ", n, " exceeds the 100 MB limit");
    if (n > size - kHeaderLengthBytes)
      fail(path, "truncated: header length ", n, " but only ", size - kHeaderLengthBytes, " bytes follow");
    const char* h = reinterpret_cast<const char*>(bytes + kHeaderLengthBytes);
    const json::Value root = json::parse(h, n, "safetensors: " + path + ": header");
    if (root.kind != json::Value::Kind::kObject) fail(path, "header is not a JSON object");
    buffer = bytes + kHeaderLengthBytes + n;
    const uint64_t buffer_size = size - kHeaderLengthBytes - n;
    for (size_t m = 0; m < root.keys.size(); ++m) {
      const std::string& name = root.keys[m];
      const json::Value& v = root.values[m];
      if (name == "__metadata__") {
        if (v.kind != json::Value::Kind::kObject) fail(path, "__metadata__ is not an object");
        for (size_t j = 0; j < v.keys.size(); ++j) {
          const std::string& k = v.keys[j];
          const json::Value& mv = v.values[j];
          if (mv.kind != json::Value::Kind::kString) fail(path, "__metadata__ value of '", k, "' is not a string");
          metadata[k] = mv.text;
        }
        continue;
      }
      if (v.kind != json::Value::Kind::kObject) fail(path, "tensor '", name, "': entry is not an object");
      for (const std::string& k : v.keys)
        if (k != "dtype" && k != "shape" && k != "data_offsets")
          fail(path, "tensor '", name, "': unknown key '", k, "' (an entry holds exactly dtype, shape, data_offsets)");
      TensorInfo t;
      t.name = name;
      const json::Value* dt = v.get("dtype");
      if (dt == nullptr || dt->kind != json::Value::Kind::kString) fail(path, "tensor '", name, "': missing dtype");
      if (!parse_dtype(dt->text, &t.dtype)) fail(path, "tensor '", name, "': unsupported dtype '", dt->text, "'");
      const json::Value* sh = v.get("shape");
      if (sh == nullptr || sh->kind != json::Value::Kind::kArray) fail(path, "tensor '", name, "': missing shape");
      constexpr uint64_t kMaxElems = 1ull << 62;
      uint64_t numel = 1;
      for (const json::Value& d : sh->items) {
        if (!d.is_integer() || d.number < 0 || d.number > 9.0e15)
          fail(path, "tensor '", name, "': shape entry '", d.text, "' is not a non-negative integer");
        const uint64_t e = static_cast<uint64_t>(d.number);
        if (e != 0 && numel > kMaxElems / e) fail(path, "tensor '", name, "': shape overflows");
        numel *= e;
        t.shape.push_back(static_cast<int64_t>(e));
      }
      const json::Value* off = v.get("data_offsets");
      if (off == nullptr || off->kind != json::Value::Kind::kArray || off->items.size() != 2)
        fail(path, "tensor '", name, "': data_offsets must be [begin, end]");
      for (const json::Value& o : off->items)
        if (!o.is_integer() || o.number < 0 || o.number > 9.0e15)
          fail(path, "tensor '", name, "': data_offsets entry is not a non-negative integer");
      t.begin = static_cast<uint64_t>(off->items[0].number);
      t.end = static_cast<uint64_t>(off->items[1].number);
      if (t.begin > t.end) fail(path, "tensor '", name, "': data_offsets begin ", t.begin, " > end ", t.end);
      if (t.end > buffer_size)
        fail(path, "tensor '", name, "': data_offsets end ", t.end, " is beyond the data buffer (", buffer_size,
             " bytes; file truncated?)");
      const uint64_t esz = dtype_size(t.dtype);
      if (numel > kMaxElems / esz || numel * esz != t.end - t.begin)
        fail(path, "tensor '", name, "': ", t.end - t.begin, " bytes do not match shape (", numel, " elements of ",
             dtype_name(t.dtype), ")");
      tensors.push_back(std::move(t));
    }
    std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t cursor = 0;
    for (const TensorInfo& t : tensors) {
      if (t.begin < cursor) fail(path, "tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end, ") overlap the previous tensor");
      if (t.begin > cursor) fail(path, "tensor '", t.name, "': gap before data_offsets begin ", t.begin);
      cursor = t.end;
    }
    if (cursor != buffer_size) fail(path, "data buffer has ", buffer_size - cursor, " trailing bytes not owned by any tensor");
  }
};

File::File() : impl_(std::make_unique<Impl>()) {}
File::File(File&&) noexcept = default;
File& File::operator=(File&&) noexcept = default;
File::~File() = default;

File File::open(const std::string& path) {
  File f;
  f.impl_->path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(path, "cannot stat: ", std::strerror(e));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      fail(path, "mmap failed: ", std::strerror(e));
    }
    f.impl_->map = m;
    f.impl_->map_size = size;
    f.impl_->bytes = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  f.impl_->size = size;
  f.impl_->parse_header();
  return f;
}

File File::parse(const uint8_t* data, size_t size, const std::string& label) {
  File f;
  f.impl_->path = label;
  f.impl_->bytes = data;
  f.impl_->size = size;
  f.impl_->parse_header();
  return f;
}

const std::string& File::path() const { return impl_->path; }
const std::vector<TensorInfo>& File::tensors() const { return impl_->tensors; }
const std::map<std::string, std::string>& File::metadata() const { return impl_->metadata; }
const uint8_t* File::data(const TensorInfo& t) const { return impl_->buffer + t.begin; }

const TensorInfo* File::find(const std::string& name) const {
  for (const TensorInfo& t : impl_->tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<float> File::to_float(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) fail(impl_->path, "tensor '", name, "' is missing");
  if (!expected_shape.empty() && t->shape != expected_shape) {
    std::ostringstream a, b;
    for (auto s : t->shape) a << s << ",";
    for (auto s : expected_shape) b << s << ",";
    fail(impl_->path, "tensor '", name, "': shape [", a.str(), "] but the config needs [", b.str(), "]");
  }
  const int64_t n = t->numel();
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = data(*t);
  switch (t->dtype) {
    case Dtype::kF32:
      std::memcpy(out.data(), p, static_cast<size_t>(n) * sizeof(float));
      break;
    case Dtype::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t bits = static_cast<uint32_t>(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
        std::memcpy(&out[i], &bits, sizeof bits);
      }
      break;
    case Dtype::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      break;
    case Dtype::kF8E4M3:
      for (int64_t i = 0; i < n; ++i) out[i] = cpu::fp8_e4m3_to_float(p[i]);
      break;
    default:
      fail(impl_->path, "tensor '", name, "': dtype ", dtype_name(t->dtype), " is not a floating-point dtype");
  }
  return out;
}

void write_raw(const std::string& path, const std::vector<RawTensor>& tensors,
               const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (!first) h += ",";
      first = false;
      h += json::quote(k) + ":" + json::quote(v);
    }
    h += "}";
  }
  uint64_t offset = 0;
  for (const RawTensor& t : tensors) {
    int64_t numel = 1;
    for (auto s : t.shape) numel *= s;
    if (static_cast<uint64_t>(numel) * dtype_size(t.dtype) != t.bytes.size())
      fail(path, "tensor '", t.name, "': ", t.bytes.size(), " bytes do not match its shape");
    h += first ? "" : ",";
    first = false;
    h += json::quote(t.name) + ":{\"dtype\":\"" + dtype_name(t.dtype) + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i) h += ',';
      h += std::to_string(t.shape[i]);
    }
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.bytes.size()) + "]}";
    offset += t.bytes.size();
  }
  h += "}";
  while ((h.size() + kHeaderLengthBytes) % kHeaderAlign != 0) h += ' ';
  io::AtomicFile out(path, "safetensors");
  uint8_t len[kHeaderLengthBytes];
  const uint64_t n = h.size();
  for (size_t i = 0; i < kHeaderLengthBytes; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  out.write(len, sizeof len);
  out.write(h);
  for (const RawTensor& t : tensors) out.write(t.bytes.data(), t.bytes.size());
  out.commit();
}

void write(const std::string& path, const std::vector<WriteTensor>& tensors,
           const std::map<std::string, std::string>& metadata) {
  std::vector<RawTensor> raw;
  raw.reserve(tensors.size());
  for (const WriteTensor& t : tensors) {
    if (t.dtype != Dtype::kF32 && t.dtype != Dtype::kBF16)
      fail(path, "tensor '", t.name, "': write supports F32 and BF16, not ", dtype_name(t.dtype));
    RawTensor r;
    r.name = t.name;
    r.dtype = t.dtype;
    r.shape = t.shape;
    int64_t n = 1;
    for (auto s : t.shape) n *= s;
    if (n > 0 && t.data == nullptr) fail(path, "tensor '", t.name, "': data is null");
    r.bytes.resize(static_cast<size_t>(n) * dtype_size(t.dtype));
    if (t.dtype == Dtype::kF32) {
      if (n > 0) std::memcpy(r.bytes.data(), t.data, r.bytes.size());
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t b = cpu::bf16_from_float(t.data[i]);
        r.bytes[2 * i] = static_cast<uint8_t>(b & 0xFF);
        r.bytes[2 * i + 1] = static_cast<uint8_t>(b >> 8);
      }
    }
    raw.push_back(std::move(r));
  }
  write_raw(path, raw, metadata);
}

}  // namespace dsa::safetensors

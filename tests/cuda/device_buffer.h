// device_buffer.h — device copies of host test buffers, with guard regions (sentinels) on the
// device side so an out-of-bounds kernel write is caught even when the host copy looks fine.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.h"

namespace dsa::test {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#define DSA_CUDA_TEST_CHECK(x) ::dsa::test::cuda_check((x), #x)

// Whether a CUDA device is present; clears the "no device" error so later calls start clean. GPU
// tests skip without one (CI compiles them on a machine with no GPU).
inline bool have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();
    return false;
  }
  return true;
}

// A device array of n elements with kGuard sentinel elements on each side. Built from a host
// pointer (uploaded; may be null → no allocation, data() null, so "may be null" params stay null).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const T* host, size_t n) : n_(n) {
    if (host == nullptr) return;
    std::vector<T> staged(n + 2 * kGuard, sentinel_value<T>());
    if (n) std::memcpy(staged.data() + kGuard, host, n * sizeof(T));
    DSA_CUDA_TEST_CHECK(cudaMalloc(&base_, staged.size() * sizeof(T)));
    DSA_CUDA_TEST_CHECK(cudaMemcpy(base_, staged.data(), staged.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (base_) cudaFree(base_);
  }
  T* data() const { return base_ ? base_ + kGuard : nullptr; }

  // Copies the body back to host (if host is non-null) and checks both device guard regions.
  void download(T* host, const char* name) const {
    if (!base_) return;
    std::vector<T> staged(n_ + 2 * kGuard);
    DSA_CUDA_TEST_CHECK(cudaMemcpy(staged.data(), base_, staged.size() * sizeof(T), cudaMemcpyDeviceToHost));
    const T s = sentinel_value<T>();
    for (size_t i = 0; i < kGuard; ++i) {
      EXPECT_EQ(std::memcmp(&staged[i], &s, sizeof(T)), 0) << "device write before " << name;
      EXPECT_EQ(std::memcmp(&staged[kGuard + n_ + i], &s, sizeof(T)), 0) << "device write after " << name;
    }
    if (host && n_) std::memcpy(host, staged.data() + kGuard, n_ * sizeof(T));
  }

 private:
  size_t n_ = 0;
  T* base_ = nullptr;
};

// Raw device scratch for an op's workspace (no guards: the op owns all of it).
class DeviceScratch {
 public:
  explicit DeviceScratch(size_t bytes) : bytes_(bytes) {
    if (bytes) DSA_CUDA_TEST_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DeviceScratch() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Runs after every wrapped op: surfaces asynchronous kernel errors at the op that caused them.
inline void sync_and_check(const char* op) {
  DSA_CUDA_TEST_CHECK(cudaGetLastError());
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) throw std::runtime_error(std::string(op) + ": " + cudaGetErrorString(e));
}

}  // namespace dsa::test

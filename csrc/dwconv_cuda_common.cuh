// Shared by the CUDA depthwise files: dwconv_cuda.cu (forward, grad_input) and dwconv_cuda_wgrad.cu
// (grad_weight). Launch constants, float conversion and vector loads / stores of the element type T, and the
// host-side launch helpers. Everything here is inline or a template, so both translation units may include it.
#pragma once
#include "deps_fast.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // the current stream (at::cuda::getCurrentCUDAStream is this function)

#include <cstdint>
#include <limits>
#include <type_traits>

namespace deps_fast {
namespace dwcuda {

constexpr int kThreads = 256;            // threads per block of every depthwise kernel
constexpr int64_t kMaxSmem = 48 * 1024;  // dynamic shared memory we allow without opt-in
constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();

// Outputs per thread along W in the channels_last and weight-gradient kernels (register blocking);
// host and device both use this function, so OWG computed on the host matches the kernel.
__host__ __device__ constexpr int reg_block_w(int ks) { return (ks == 3 || ks == 5) ? 4 : 2; }

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return static_cast<float>(v);
}
template <typename T>
__device__ __forceinline__ T from_f(float v) {
  return static_cast<T>(v);
}

// Loads VEC consecutive elements (VEC * sizeof(T) aligned when VEC > 1) as float.
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = to_f(*p);
  } else {
    const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
    for (int c = 0; c < VEC; ++c) out[c] = to_f(pk.v[c]);
  }
}

// The zero padding of a window: callers write `if (inside) load_vec(..); else zero_vec(..);` (the load stays
// under the branch, as the kernels were first written and compiled).
template <int VEC>
__device__ __forceinline__ void zero_vec(float (&out)[VEC]) {
#pragma unroll
  for (int c = 0; c < VEC; ++c) out[c] = 0.f;
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[VEC]) {
  if constexpr (VEC == 1) {
    *p = from_f<T>(in[0]);
  } else {
    Pack<T, VEC> pk;
#pragma unroll
    for (int c = 0; c < VEC; ++c) pk.v[c] = from_f<T>(in[c]);
    *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
  }
}

// An output position of a work item: image n, output row oy, group og of V outputs along W.
struct OutPos {
  int n, oy, og;
};

// Output group g of the channels_last kernels (groups run along W, then rows, then images).
__device__ __forceinline__ OutPos nhwc_out_pos(int g, int OWG, int Ho) {
  const int og = g % OWG;
  const int r = g / OWG;
  return {r / Ho, r % Ho, og};
}

// ---- host side ------------------------------------------------------------------------------------------------
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// The KS template argument the kernels get for k: KS_SWITCH (static_switch.h) decides, so host-side sizes
// derived from KS (reg_block_w) always match the kernel that runs.
inline int ks_of(int64_t k) {
  return KS_SWITCH(k, KS, [&] { return KS; });
}

// Shapes are narrowed to int once, after check_int_range / check_index_range.
inline int i32(int64_t v) { return static_cast<int>(v); }

inline bool aligned_to(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

inline void check_int_range(const char* fn, const char* what, int64_t v) {
  TORCH_CHECK(v <= kIntMax, fn, ": ", what, "=", v, " exceeds the 32-bit index range of this kernel");
}

// The 32-bit index range every entry point needs: one plane (H * W of the larger side) and the channel count.
inline void check_index_range(const char* fn, int64_t H, int64_t W, int64_t C) {
  check_int_range(fn, "H * W", H * W);
  check_int_range(fn, "c", C);
}

// Channels per thread of the channels_last kernels: 2 (bf16x2 / half2 loads) when every pixel's channel row
// of both tensors is aligned to two elements; float stays scalar.
template <typename T>
int channel_vec(int64_t C, const T* a, const T* b) {
  return (!std::is_same<T, float>::value && C % 2 == 0 && aligned_to(a, 2 * sizeof(T)) &&
          aligned_to(b, 2 * sizeof(T)))
             ? 2
             : 1;
}

}  // namespace dwcuda
}  // namespace deps_fast

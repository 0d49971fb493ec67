// CUDA kernels of the fused elastic BatchNorm + activation (the contract: deps_fast.h; the Triton twin with the
// same formulas: kernels/bn_act.py). No autograd here. z = x * scale + shift, dz = grad_y * act'(z); all math
// and accumulation in float32, x / grad_y / outputs in float32, bfloat16 or float16.
//
// One index rule for both layouts: element (r, c, p) lives at (r * C + c) * HW + p, where channels_last (and any
// 1x1 plane) is N * H * W rows of one pixel (HW = 1). Tensors above 2^31 elements run as several launches over
// row segments, so every in-kernel index fits 32 bits.
//
//   * bn_act_elementwise_kernel  forward, backward-input (eval and training): a flat grid-stride loop over
//     vectors of VEC elements (16-byte loads and stores: float4, 8 x bf16 / half) of the contiguous memory. The
//     channel of the first element comes from two multiply-shift divisions (FastDivmod), the next VEC - 1 follow
//     by counting (a vector may cross planes), so both layouts and every plane size vectorise.
//   * bn_act_reduce_planes_kernel  statistics / backward-reduce for NCHW (HW > 1): block (channel, chunk) walks a
//     fixed chunk of that channel's N * HW pixels, VEC per thread-step when HW % VEC == 0, and reduces over the
//     block with warp shuffles then shared memory.
//   * bn_act_reduce_rows_kernel  the same for channels_last: a block is TX threads across channels (VEC each,
//     vector loads when C % VEC == 0) by TY threads down a chunk of rows; partials meet in a shared-memory tree.
//   * bn_act_merge_kernel  the second pass: one thread per channel merges the chunks' partials in chunk order.
// Statistics carry (count, mean, M2) and merge with Chan's formula (per element, per vector, per warp, per
// chunk), never E[x^2] - E[x]^2. The chunking depends only on the shapes and the device: the same partials are
// merged in the same order on every run (bitwise reproducible, no atomics).
#include "deps_fast.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cusparse.h, absent from some toolkits
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace deps_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxChunks = 1024;  // partials per channel: enough to fill any GPU, few enough to merge fast
constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();

enum Mode : int { kForward = 0, kBackwardEval = 1, kBackwardTrain = 2 };

// ---- device helpers -------------------------------------------------------------------------------------------
// n / d for 0 <= n < 2^31 as a multiply-high and a shift (the magic number is computed once on the host):
// m = ceil(2^p / d) with p = 31 + ceil(log2 d) makes (n * m) >> p exact over that range.
struct FastDivmod {
  uint32_t d = 1, m = 0;
  int s = 0;
  FastDivmod() = default;
  explicit FastDivmod(uint32_t divisor) : d(divisor) {
    if (d != 1) {
      int l = 0;
      while ((uint64_t(1) << l) < d) ++l;
      const int p = 31 + l;
      m = static_cast<uint32_t>(((uint64_t(1) << p) + d - 1) / d);
      s = p - 32;
    }
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return d == 1 ? n : (__umulhi(n, m) >> s); }
};

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// VEC consecutive elements as float; p is VEC * sizeof(T) aligned.
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int j = 0; j < VEC; ++j) out[j] = static_cast<float>(pk.v[j]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[VEC]) {
  Pack<T, VEC> pk;
#pragma unroll
  for (int j = 0; j < VEC; ++j) pk.v[j] = static_cast<T>(in[j]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
}

// Activations 0 none, 1 relu, 2 relu6, 3 hswish; comparisons are false for NaN, so NaN passes through as in torch.
template <int ACT>
__device__ __forceinline__ float act_forward(float z) {
  if constexpr (ACT == 1) {
    return z < 0.f ? 0.f : z;
  } else if constexpr (ACT == 2) {
    return z < 0.f ? 0.f : (z > 6.f ? 6.f : z);
  } else if constexpr (ACT == 3) {
    return z * (z < -3.f ? 0.f : (z > 3.f ? 6.f : z + 3.f)) * (1.f / 6.f);
  } else {
    return z;
  }
}

// gy * act'(z) with torch's one-sided choices at the kinks: relu [z > 0], relu6 = hardtanh(0, 6) [0 < z < 6],
// hswish 0 for z <= -3, z / 3 + 1/2 below 3, 1 from 3 on. gy is selected (not multiplied by 0) where torch does.
template <int ACT>
__device__ __forceinline__ float act_backward(float gy, float z) {
  if constexpr (ACT == 1) {
    return z > 0.f ? gy : 0.f;
  } else if constexpr (ACT == 2) {
    return (z > 0.f && z < 6.f) ? gy : 0.f;
  } else if constexpr (ACT == 3) {
    return z <= -3.f ? 0.f : (z < 3.f ? gy * (z * (1.f / 3.f) + 0.5f) : gy);
  } else {
    return gy;
  }
}

// The float32 [c] vectors; mean ... sum_dzx are read in training backward only.
struct ChannelVectors {
  const float* scale;
  const float* shift;
  const float* mean;
  const float* invstd;
  const float* weight;
  const float* sum_dz;
  const float* sum_dzx;
  float inv_count;
};

// One channel's coefficients: z = x * scale + shift; training grad x = a * dz - (x - mean) * b - d with
// a = w * invstd, b = a * invstd^2 * sum_dzx / count, d = a * sum_dz / count.
struct Coef {
  float scale, shift, mean, a, b, d;
};

template <int MODE>
__device__ __forceinline__ Coef load_coef(const ChannelVectors& v, int c) {
  Coef k{__ldg(v.scale + c), __ldg(v.shift + c), 0.f, 0.f, 0.f, 0.f};
  if constexpr (MODE == kBackwardTrain) {
    const float invstd = __ldg(v.invstd + c);
    k.mean = __ldg(v.mean + c);
    k.a = __ldg(v.weight + c) * invstd;
    k.b = k.a * invstd * invstd * __ldg(v.sum_dzx + c) * v.inv_count;
    k.d = k.a * __ldg(v.sum_dz + c) * v.inv_count;
  }
  return k;
}

template <int ACT, int MODE>
__device__ __forceinline__ float elementwise_value(const Coef& k, float x, float gy) {
  const float z = fmaf(x, k.scale, k.shift);
  if constexpr (MODE == kForward) {
    return act_forward<ACT>(z);
  } else {
    const float dz = act_backward<ACT>(gy, z);
    if constexpr (MODE == kBackwardEval) {
      return dz * k.scale;
    } else {
      return k.a * dz - (x - k.mean) * k.b - k.d;
    }
  }
}

// Partial statistics (count, mean, M2) and Chan's merge; an empty side (n = 0) leaves the other unchanged.
struct Welford {
  float n, mean, m2;
};

__device__ __forceinline__ void merge(Welford& a, const Welford& b) {
  if (b.n == 0.f) return;
  const float n = a.n + b.n;
  const float w = b.n / n;
  const float delta = b.mean - a.mean;
  a.mean += delta * w;
  a.m2 += b.m2 + delta * delta * (a.n * w);
  a.n = n;
}

struct Sums {
  float dz, dzx;
};

__device__ __forceinline__ void merge(Sums& a, const Sums& b) {
  a.dz += b.dz;
  a.dzx += b.dzx;
}

__device__ __forceinline__ Welford shfl_down(const Welford& v, int o) {
  return {__shfl_down_sync(0xffffffffu, v.n, o), __shfl_down_sync(0xffffffffu, v.mean, o),
          __shfl_down_sync(0xffffffffu, v.m2, o)};
}

__device__ __forceinline__ Sums shfl_down(const Sums& v, int o) {
  return {__shfl_down_sync(0xffffffffu, v.dz, o), __shfl_down_sync(0xffffffffu, v.dzx, o)};
}

// The block's merged partial, valid in thread 0 (a fixed tree: the same order every run). 1-D blocks of kThreads.
template <typename S>
__device__ __forceinline__ S block_reduce(S v) {
  __shared__ S warp_part[kWarps];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) merge(v, shfl_down(v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_part[lane] : S{};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) merge(v, shfl_down(v, o));
  }
  return v;
}

// ---- elementwise: forward and backward-input ------------------------------------------------------------------
template <typename T>
struct ElementwiseArgs {
  const T* x;
  const T* gy;  // backward only
  T* out;
  ChannelVectors v;
  uint32_t total;  // elements of this launch (< 2^31)
  int C, HW;
  FastDivmod by_hw, by_c;  // element -> plane, plane -> image (so plane % C is the channel)
};

template <typename T, int VEC, int ACT, int MODE>
__global__ void __launch_bounds__(kThreads) bn_act_elementwise_kernel(const ElementwiseArgs<T> a) {
  const uint32_t n_vec = (a.total + VEC - 1) / VEC;
  for (uint32_t vi = blockIdx.x * kThreads + threadIdx.x; vi < n_vec; vi += gridDim.x * kThreads) {
    const uint32_t i = vi * VEC;
    const bool full = i + VEC <= a.total;  // only the last vector of a launch can be partial
    float xs[VEC], gs[VEC], out[VEC];
    if (full) {
      load_vec<T, VEC>(a.x + i, xs);
      if constexpr (MODE != kForward) load_vec<T, VEC>(a.gy + i, gs);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        xs[j] = i + j < a.total ? static_cast<float>(a.x[i + j]) : 0.f;
        gs[j] = (MODE != kForward && i + j < a.total) ? static_cast<float>(a.gy[i + j]) : 0.f;
      }
    }
    // channel and pixel of element i; the following elements step through pixels, then channels
    const uint32_t plane = a.by_hw.div(i);
    int p = static_cast<int>(i - plane * static_cast<uint32_t>(a.HW));
    int c = static_cast<int>(plane - a.by_c.div(plane) * static_cast<uint32_t>(a.C));
    int c_loaded = c;
    Coef k = load_coef<MODE>(a.v, c);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      if (c != c_loaded) {
        k = load_coef<MODE>(a.v, c);
        c_loaded = c;
      }
      out[j] = elementwise_value<ACT, MODE>(k, xs[j], gs[j]);
      if (++p == a.HW) {
        p = 0;
        if (++c == a.C) c = 0;
      }
    }
    if (full) {
      store_vec<T, VEC>(a.out + i, out);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j)
        if (i + j < a.total) a.out[i + j] = static_cast<T>(out[j]);
    }
  }
}

// ---- reductions: statistics and backward-reduce ---------------------------------------------------------------
template <typename T>
struct ReduceArgs {
  const T* x;
  const T* gy;  // backward-reduce only
  const float* scale;
  const float* shift;
  const float* mean;
  float* part;    // [2, total_chunks, C]: (mean, M2) or (sum dz, sum dz (x - mean)) per chunk and channel
  float* counts;  // [total_chunks]: pixels per channel in each chunk (statistics only)
  int C, HW;
  uint32_t work;   // planes kernel: vectors per channel in this launch (rows * HW / VEC); rows kernel: rows
  uint32_t per;    // work items per chunk
  int chunk0;      // this launch's first chunk in part
  int total_chunks;
  FastDivmod by_hw;  // planes kernel: column element -> row
};

template <bool GRAD>
using Partial = std::conditional_t<GRAD, Sums, Welford>;

template <typename T, bool GRAD>
__device__ __forceinline__ void write_partial(const ReduceArgs<T>& a, int chunk, int c, const Partial<GRAD>& s,
                                              bool write_count) {
  const int64_t k = a.chunk0 + chunk;
  if constexpr (GRAD) {
    a.part[k * a.C + c] = s.dz;
    a.part[(a.total_chunks + k) * a.C + c] = s.dzx;
  } else {
    a.part[k * a.C + c] = s.mean;
    a.part[(a.total_chunks + k) * a.C + c] = s.m2;
    if (write_count) a.counts[k] = s.n;
  }
}

// NCHW: block (channel blockIdx.x, chunk blockIdx.y); VEC pixels per step (HW % VEC == 0, so a vector stays in
// one plane). Element i of the channel's column is row i / HW, pixel i % HW.
template <typename T, int VEC, int ACT, bool GRAD>
__global__ void __launch_bounds__(kThreads) bn_act_reduce_planes_kernel(const ReduceArgs<T> a) {
  const int c = blockIdx.x;
  const uint32_t begin = blockIdx.y * a.per;
  const uint32_t end = min(begin + a.per, a.work);
  float scale = 0.f, shift = 0.f, mean = 0.f;
  if constexpr (GRAD) {
    scale = a.scale[c];
    shift = a.shift[c];
    mean = a.mean[c];
  }
  Partial<GRAD> acc{};
  for (uint32_t q = begin + threadIdx.x; q < end; q += kThreads) {
    const uint32_t i = q * VEC;
    const uint32_t r = a.by_hw.div(i);
    const uint32_t p = i - r * static_cast<uint32_t>(a.HW);
    const int64_t off = (static_cast<int64_t>(r) * a.C + c) * a.HW + p;
    float xs[VEC];
    load_vec<T, VEC>(a.x + off, xs);
    if constexpr (GRAD) {
      float gs[VEC];
      load_vec<T, VEC>(a.gy + off, gs);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float dz = act_backward<ACT>(gs[j], fmaf(xs[j], scale, shift));
        acc.dz += dz;
        acc.dzx += dz * (xs[j] - mean);
      }
    } else {
      // the vector's exact two-pass (mean, M2), merged into the thread's running partial
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < VEC; ++j) sum += xs[j];
      const float vmean = sum * (1.f / VEC);
      float m2 = 0.f;
#pragma unroll
      for (int j = 0; j < VEC; ++j) m2 += (xs[j] - vmean) * (xs[j] - vmean);
      merge(acc, Welford{static_cast<float>(VEC), vmean, m2});
    }
  }
  acc = block_reduce(acc);
  if (threadIdx.x == 0) write_partial<T, GRAD>(a, blockIdx.y, c, acc, c == 0);
}

// channels_last: block (TX, TY) = (channel groups of VEC, rows); blockIdx.x: channel group block, blockIdx.y: chunk
// of rows. Dynamic shared memory: [2][TY][TX * VEC] floats, then [TY] counts.
template <typename T, int VEC, int ACT, bool GRAD>
__global__ void __launch_bounds__(kThreads) bn_act_reduce_rows_kernel(const ReduceArgs<T> a) {
  extern __shared__ float smem[];
  const int TX = blockDim.x, TY = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
  const int c0 = (blockIdx.x * TX + tx) * VEC;
  const bool active = c0 < a.C;  // C % VEC == 0 when VEC > 1, so an active thread owns VEC real channels
  const uint32_t begin = blockIdx.y * a.per;
  const uint32_t end = min(begin + a.per, a.work);
  float acc1[VEC], acc2[VEC], scale[VEC], shift[VEC], mean[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    acc1[j] = acc2[j] = 0.f;  // statistics: running mean and M2; backward: sum dz and sum dz (x - mean)
    scale[j] = shift[j] = mean[j] = 0.f;
    if (GRAD && active) {
      scale[j] = a.scale[c0 + j];
      shift[j] = a.shift[c0 + j];
      mean[j] = a.mean[c0 + j];
    }
  }
  float n = 0.f;
  if (active) {
    for (uint32_t r = begin + ty; r < end; r += TY) {
      const int64_t off = static_cast<int64_t>(r) * a.C + c0;
      float xs[VEC];
      load_vec<T, VEC>(a.x + off, xs);
      if constexpr (GRAD) {
        float gs[VEC];
        load_vec<T, VEC>(a.gy + off, gs);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float dz = act_backward<ACT>(gs[j], fmaf(xs[j], scale[j], shift[j]));
          acc1[j] += dz;
          acc2[j] += dz * (xs[j] - mean[j]);
        }
      } else {
        n += 1.f;
        const float inv_n = 1.f / n;  // one reciprocal for the VEC channels of the row
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float delta = xs[j] - acc1[j];
          acc1[j] += delta * inv_n;
          acc2[j] += delta * (xs[j] - acc1[j]);
        }
      }
    }
  }
  // tree over ty in shared memory: step s merges row ty + s into row ty
  const int width = TX * VEC;
  float* s1 = smem;
  float* s2 = smem + TY * width;
  float* sn = smem + 2 * TY * width;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    s1[ty * width + tx * VEC + j] = acc1[j];
    s2[ty * width + tx * VEC + j] = acc2[j];
  }
  if (tx == 0) {  // the rows this ty walked: the same for every tx, active or not
    sn[ty] = end > begin + ty ? static_cast<float>((end - begin - ty + TY - 1) / TY) : 0.f;
  }
  __syncthreads();
  for (int s = TY / 2; s > 0; s >>= 1) {
    if (ty < s) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const int mine = ty * width + tx * VEC + j, other = (ty + s) * width + tx * VEC + j;
        if constexpr (GRAD) {
          s1[mine] += s1[other];
          s2[mine] += s2[other];
        } else {
          Welford w{sn[ty], s1[mine], s2[mine]};
          merge(w, Welford{sn[ty + s], s1[other], s2[other]});
          s1[mine] = w.mean;
          s2[mine] = w.m2;
        }
      }
    }
    __syncthreads();  // every tx has read sn[ty] and sn[ty + s] before they change
    if (!GRAD && tx == 0 && ty < s) sn[ty] += sn[ty + s];
    __syncthreads();
  }
  if (ty == 0 && active) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      Partial<GRAD> out{};
      if constexpr (GRAD) {
        out = Sums{s1[tx * VEC + j], s2[tx * VEC + j]};
      } else {
        out = Welford{sn[0], s1[tx * VEC + j], s2[tx * VEC + j]};
      }
      write_partial<T, GRAD>(a, blockIdx.y, c0 + j, out, c0 + j == 0);
    }
  }
}

// Second pass: channel c merges its total_chunks partials in chunk order.
template <bool GRAD>
__global__ void __launch_bounds__(kThreads) bn_act_merge_kernel(const float* __restrict__ part,
                                                                const float* __restrict__ counts,
                                                                float* __restrict__ out1, float* __restrict__ out2,
                                                                int C, int chunks) {
  const int c = blockIdx.x * kThreads + threadIdx.x;
  if (c >= C) return;
  Partial<GRAD> acc{};
  for (int k = 0; k < chunks; ++k) {
    const float v1 = part[static_cast<int64_t>(k) * C + c], v2 = part[static_cast<int64_t>(chunks + k) * C + c];
    if constexpr (GRAD) {
      merge(acc, Sums{v1, v2});
    } else {
      merge(acc, Welford{counts[k], v1, v2});
    }
  }
  if constexpr (GRAD) {
    out1[c] = acc.dz;
    out2[c] = acc.dzx;
  } else {
    out1[c] = acc.mean;
    out2[c] = acc.m2 / acc.n;  // biased variance; n >= 1 (x has elements)
  }
}

// ---- host side ------------------------------------------------------------------------------------------------
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int sm_count(const at::Tensor& t) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, t.get_device()));
  return std::max(sms, 1);
}

// The index rule's geometry of a dense x: (rows, C, HW), channels_last (or 1x1 planes) as HW = 1.
struct Geometry {
  int64_t rows, C, HW;
};

Geometry geometry(const at::Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const bool cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (cl || HW == 1) return {N * HW, C, 1};
  return {N, C, HW};
}

// Rows per launch so that one launch's elements fit 32-bit indices.
int64_t rows_per_launch(const char* fn, const Geometry& g) {
  TORCH_CHECK(g.C * g.HW <= kIntMax, fn, ": one image of x has C*H*W=", g.C * g.HW,
              " elements; at most 2^31 - 1 are supported");
  return std::max<int64_t>(1, kIntMax / (g.C * g.HW));
}

// Widest vector (16 bytes at most) every pointer is aligned to and `unit` is a multiple of.
template <typename T>
int vector_width(int64_t unit, std::initializer_list<const void*> ptrs) {
  for (int vec = static_cast<int>(16 / sizeof(T)); vec > 1; vec /= 2) {
    bool ok = unit % vec == 0;
    for (const void* p : ptrs) ok = ok && (p == nullptr || aligned(p, vec * static_cast<int64_t>(sizeof(T))));
    if (ok) return vec;
  }
  return 1;
}

template <typename F>
void act_switch(int64_t act, F&& f) {
  const bool found = int_switch<0, 1, 2, 3>(static_cast<int>(act), std::forward<F>(f));
  TORCH_CHECK(found, "bn_act: activation code must be 0..3, got ", act);  // validated earlier: a bug guard
}

template <typename F>
void vec_switch(int vec, F&& f) {
  const bool found = int_switch<1, 2, 4, 8>(vec, std::forward<F>(f));
  TORCH_CHECK(found, "bn_act: unsupported vector width ", vec);
}

// ---- argument checks (one contract for the four entry points) -------------------------------------------------
void check_x(const char* fn, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.dim() == 4, fn, ": ", name, " must be 4-D [N, c, H, W], got ", t.dim(), "-D shape ", t.sizes());
  check_float_dtype(fn, name, t);
}

void check_vector(const char* fn, const char* name, const at::Tensor& v, const at::Tensor& x) {
  TORCH_CHECK(v.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(v.device() == x.device(), fn, ": ", name, " must be on x's device (", x.device(), "), got ",
              v.device());
  TORCH_CHECK(v.scalar_type() == at::kFloat, fn, ": ", name, " must be float32, got ", v.scalar_type());
  TORCH_CHECK(v.dim() == 1 && v.size(0) == x.size(1) && v.is_contiguous(), fn, ": ", name,
              " must be a contiguous [", x.size(1), "] tensor (one value per channel of x), got shape ", v.sizes(),
              " strides ", v.strides());
}

void check_act(const char* fn, int64_t act) {
  TORCH_CHECK(act >= 0 && act <= 3, fn, ": act must be 0 (none), 1 (relu), 2 (relu6) or 3 (hswish), got ", act);
}

// grad_y in x's layout (a copy only when they differ) after checking it matches x.
at::Tensor grad_like(const char* fn, const at::Tensor& grad_y, const at::Tensor& x) {
  check_x(fn, "grad_y", grad_y);
  TORCH_CHECK(grad_y.sizes() == x.sizes(), fn, ": grad_y must have x's shape ", x.sizes(), ", got ",
              grad_y.sizes());
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type(), fn, ": grad_y dtype ", grad_y.scalar_type(),
              " must match x dtype ", x.scalar_type());
  TORCH_CHECK(grad_y.device() == x.device(), fn, ": grad_y must be on x's device (", x.device(), "), got ",
              grad_y.device());
  return grad_y.contiguous(dw_memory_format(x));
}

// ---- launches -------------------------------------------------------------------------------------------------
template <int MODE>
void launch_elementwise(const at::Tensor& x, const at::Tensor& gy, at::Tensor& out, const ChannelVectors& v,
                        int64_t act, const char* fn) {
  const Geometry g = geometry(x);
  const int64_t seg_rows = rows_per_launch(fn, g);
  const int64_t max_blocks = static_cast<int64_t>(sm_count(x)) * 32;  // grid-stride beyond that
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FLOAT_TYPE_SWITCH(x.scalar_type(), fn, T, [&] {
    const T* xp = x.data_ptr<T>();
    const T* gp = MODE == kForward ? nullptr : gy.data_ptr<T>();
    T* op = out.data_ptr<T>();
    // several launches: each one's start (a multiple of seg_rows * C * HW elements) must keep the alignment.
    // 16-byte vectors or scalars: only a misaligned view would allow less than 16 bytes, not worth the kernels.
    int vec = vector_width<T>(g.rows > seg_rows ? seg_rows * g.C * g.HW : 16, {xp, gp, op});
    if (vec * sizeof(T) != 16) vec = 1;
    for (int64_t r0 = 0; r0 < g.rows; r0 += seg_rows) {
      const int64_t total = std::min(seg_rows, g.rows - r0) * g.C * g.HW;
      const int64_t base = r0 * g.C * g.HW;  // a multiple of C * HW: the segment starts at channel 0, pixel 0
      ElementwiseArgs<T> a{xp + base, gp ? gp + base : nullptr, op + base, v, static_cast<uint32_t>(total),
                           static_cast<int>(g.C), static_cast<int>(g.HW),
                           FastDivmod(static_cast<uint32_t>(g.HW)), FastDivmod(static_cast<uint32_t>(g.C))};
      act_switch(act, [&](auto act_c) {
        vec_switch(vec, [&](auto vec_c) {
          constexpr int ACT = decltype(act_c)::value, VEC = decltype(vec_c)::value;
          if constexpr (VEC == 1 || VEC * sizeof(T) == 16) {  // the two widths chosen above
            const int64_t blocks = std::min(ceil_div(ceil_div(total, VEC), kThreads), max_blocks);
            bn_act_elementwise_kernel<T, VEC, ACT, MODE><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        });
      });
    }
  });
}

// One launch of a reduction over rows [r0, r0 + rows): its grid and the work per chunk.
struct ReducePlan {
  int64_t r0, rows;
  uint32_t work, per;
  int chunks, chunk0;
};

// Both reductions: partials per (chunk, channel) in `part`, then the merge. GRAD: backward-reduce.
template <bool GRAD>
std::tuple<at::Tensor, at::Tensor> reduce(const at::Tensor& x, const at::Tensor& gy, const at::Tensor& scale,
                                          const at::Tensor& shift, const at::Tensor& mean, int64_t act,
                                          const char* fn) {
  const Geometry g = geometry(x);
  const int64_t seg_rows = rows_per_launch(fn, g);
  const int64_t target = 4 * static_cast<int64_t>(sm_count(x));  // blocks to fill the GPU ~4 times
  auto out1 = at::empty({g.C}, x.options().dtype(at::kFloat));
  auto out2 = at::empty({g.C}, x.options().dtype(at::kFloat));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FLOAT_TYPE_SWITCH(x.scalar_type(), fn, T, [&] {
    const T* xp = x.data_ptr<T>();
    const T* gp = GRAD ? gy.data_ptr<T>() : nullptr;
    const bool planes = g.HW > 1;
    const int vec = vector_width<T>(planes ? g.HW : g.C, {xp, gp});
    // rows kernel block shape: TX threads across channel groups, TY down the rows
    const int64_t groups = ceil_div(g.C, vec);
    int tx = 1;
    while (tx < 32 && tx < groups) tx *= 2;
    const int ty = kThreads / tx;
    const int64_t channel_blocks = planes ? g.C : ceil_div(groups, tx);
    std::vector<ReducePlan> plans;
    int total_chunks = 0;
    for (int64_t r0 = 0; r0 < g.rows; r0 += seg_rows) {
      const int64_t rows = std::min(seg_rows, g.rows - r0);
      const int64_t work = planes ? rows * g.HW / vec : rows;
      const int64_t min_per = planes ? 4 * kThreads : 4 * ty;  // at least ~4 steps per thread
      int64_t chunks = std::clamp<int64_t>(ceil_div(target, channel_blocks), 1, kMaxChunks);
      chunks = std::max<int64_t>(1, std::min(chunks, ceil_div(work, min_per)));
      const int64_t per = ceil_div(work, chunks);
      chunks = ceil_div(work, per);  // no empty chunk
      plans.push_back({r0, rows, static_cast<uint32_t>(work), static_cast<uint32_t>(per), static_cast<int>(chunks),
                       total_chunks});
      total_chunks += static_cast<int>(chunks);
    }
    auto part = at::empty({2, total_chunks, g.C}, x.options().dtype(at::kFloat));
    auto counts = at::empty({GRAD ? 1 : total_chunks}, x.options().dtype(at::kFloat));
    for (const ReducePlan& pl : plans) {
      const int64_t base = pl.r0 * g.C * g.HW;
      ReduceArgs<T> a{xp + base, gp ? gp + base : nullptr,
                      GRAD ? scale.data_ptr<float>() : nullptr, GRAD ? shift.data_ptr<float>() : nullptr,
                      GRAD ? mean.data_ptr<float>() : nullptr, part.data_ptr<float>(), counts.data_ptr<float>(),
                      static_cast<int>(g.C), static_cast<int>(g.HW), pl.work, pl.per, pl.chunk0, total_chunks,
                      FastDivmod(static_cast<uint32_t>(g.HW))};
      act_switch(GRAD ? act : 0, [&](auto act_c) {
        vec_switch(vec, [&](auto vec_c) {
          constexpr int ACT = decltype(act_c)::value, VEC = decltype(vec_c)::value;
          if constexpr ((GRAD || ACT == 0) && VEC * sizeof(T) <= 16) {  // statistics ignore the activation
            if (planes) {
              const dim3 grid(static_cast<unsigned>(g.C), static_cast<unsigned>(pl.chunks));
              bn_act_reduce_planes_kernel<T, VEC, ACT, GRAD><<<grid, kThreads, 0, stream>>>(a);
            } else {
              const dim3 grid(static_cast<unsigned>(channel_blocks), static_cast<unsigned>(pl.chunks));
              const size_t smem = (2 * static_cast<size_t>(ty) * tx * VEC + ty) * sizeof(float);
              bn_act_reduce_rows_kernel<T, VEC, ACT, GRAD><<<grid, dim3(tx, ty), smem, stream>>>(a);
            }
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        });
      });
    }
    bn_act_merge_kernel<GRAD><<<static_cast<unsigned>(ceil_div(g.C, kThreads)), kThreads, 0, stream>>>(
        part.data_ptr<float>(), counts.data_ptr<float>(), out1.data_ptr<float>(), out2.data_ptr<float>(),
        static_cast<int>(g.C), total_chunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out1, out2};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> bn_act_stats_cuda(const at::Tensor& x_in) {
  const char* fn = "bn_act_stats_cuda";
  check_x(fn, "x", x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous(dw_memory_format(x_in));
  if (x.numel() == 0) {  // the statistics of nothing
    auto nan = at::empty({x.size(1)}, x.options().dtype(at::kFloat)).fill_(std::numeric_limits<float>::quiet_NaN());
    return {nan, nan.clone()};
  }
  return reduce<false>(x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), 0, fn);
}

at::Tensor bn_act_forward_cuda(const at::Tensor& x_in, const at::Tensor& scale, const at::Tensor& shift,
                               int64_t act) {
  const char* fn = "bn_act_forward_cuda";
  check_x(fn, "x", x_in);
  check_vector(fn, "scale", scale, x_in);
  check_vector(fn, "shift", shift, x_in);
  check_act(fn, act);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous(dw_memory_format(x_in));
  auto y = at::empty_like(x);
  if (x.numel() == 0) return y;
  const ChannelVectors v{scale.data_ptr<float>(), shift.data_ptr<float>(), nullptr, nullptr, nullptr, nullptr,
                         nullptr, 0.f};
  launch_elementwise<kForward>(x, at::Tensor(), y, v, act, fn);
  return y;
}

std::tuple<at::Tensor, at::Tensor> bn_act_backward_reduce_cuda(const at::Tensor& grad_y, const at::Tensor& x_in,
                                                               const at::Tensor& scale, const at::Tensor& shift,
                                                               const at::Tensor& mean, int64_t act) {
  const char* fn = "bn_act_backward_reduce_cuda";
  check_x(fn, "x", x_in);
  check_vector(fn, "scale", scale, x_in);
  check_vector(fn, "shift", shift, x_in);
  check_vector(fn, "mean", mean, x_in);
  check_act(fn, act);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous(dw_memory_format(x_in));
  const auto gy = grad_like(fn, grad_y, x);
  if (x.numel() == 0) {
    auto zero = at::empty({x.size(1)}, x.options().dtype(at::kFloat)).zero_();
    return {zero, zero.clone()};
  }
  return reduce<true>(x, gy, scale, shift, mean, act, fn);
}

at::Tensor bn_act_backward_input_cuda(const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& scale,
                                      const at::Tensor& shift, const c10::optional<at::Tensor>& mean,
                                      const c10::optional<at::Tensor>& invstd,
                                      const c10::optional<at::Tensor>& weight_c,
                                      const c10::optional<at::Tensor>& sum_dz,
                                      const c10::optional<at::Tensor>& sum_dz_xmu, double count, int64_t act,
                                      bool training) {
  const char* fn = "bn_act_backward_input_cuda";
  check_x(fn, "x", x_in);
  check_vector(fn, "scale", scale, x_in);
  check_vector(fn, "shift", shift, x_in);
  check_act(fn, act);
  ChannelVectors v{scale.data_ptr<float>(), shift.data_ptr<float>(), nullptr, nullptr, nullptr, nullptr, nullptr,
                   0.f};
  if (training) {
    const std::pair<const char*, const c10::optional<at::Tensor>*> needed[] = {
        {"mean", &mean}, {"invstd", &invstd}, {"weight_c", &weight_c}, {"sum_dz", &sum_dz},
        {"sum_dz_xmu", &sum_dz_xmu}};
    for (const auto& [name, t] : needed) {
      TORCH_CHECK(t->has_value(), fn, ": ", name, " is required in training, got None");
      check_vector(fn, name, **t, x_in);
    }
    TORCH_CHECK(count > 0, fn, ": count must be positive in training, got ", count);
    v = ChannelVectors{scale.data_ptr<float>(), shift.data_ptr<float>(), mean->data_ptr<float>(),
                       invstd->data_ptr<float>(), weight_c->data_ptr<float>(), sum_dz->data_ptr<float>(),
                       sum_dz_xmu->data_ptr<float>(), static_cast<float>(1.0 / count)};
  }
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous(dw_memory_format(x_in));
  const auto gy = grad_like(fn, grad_y, x);
  auto gx = at::empty_like(x);
  if (x.numel() == 0) return gx;
  if (training) {
    launch_elementwise<kBackwardTrain>(x, gy, gx, v, act, fn);
  } else {
    launch_elementwise<kBackwardEval>(x, gy, gx, v, act, fn);
  }
  return gx;
}

}  // namespace deps_fast

// CUDA kernels of the elastic depthwise 2-D convolution (OFA supernet style).
//
// The shared weight is [C_w, K, K] float32; a call uses channels [0, c) and the center k x k window
// (offset off = (K - k) / 2) in place: kernels get the base pointer, K, k and off, never a cropped copy.
// Padding p = k / 2, stride s in {1, 2}, H' = (H + 2p - k) / s + 1. Accumulation is float32.
//
// Kernel families (each templated on the element type T, on KS in {3, 5, 7} with a generic runtime-k
// variant KS = 0, and on the stride):
//   * dw_tile_nchw_kernel  NCHW forward and backward-input. A block owns bz planes (n, ch) x a tile of
//     by output rows x (bx * 4) output columns. The input tile plus halo is staged in shared memory as
//     float, each thread computes 4 consecutive outputs along W from a register window read with
//     float4 loads. Backward-input is the same computation: grad_in is a stride-1 correlation of the
//     zero-upsampled grad_out (G[y, x] = grad_out[y / s, x / s] when both are divisible by s) with the
//     flipped window, so the tile fill samples that virtual input and the weights are stored flipped.
//   * dw_nhwc_kernel       channels_last forward and backward-input. Threads run along channels (2
//     channels per thread with bf16x2 / half2 / float2 loads when c is even and pointers are aligned,
//     scalar otherwise), each thread computes V consecutive outputs along W, the block's k x k x
//     channel weights live in shared memory. Backward-input uses the same virtual-input relation.
//   * dw_wgrad_nchw_kernel / dw_wgrad_nhwc_kernel  weight gradient. A block owns one channel (NCHW) or
//     a vector of channels (channels_last) and a fixed chunk of the N * H' output rows (NCHW) or output
//     pixel groups (channels_last); every thread keeps all k * k taps in registers, the block reduces
//     them in a fixed order (warp shuffles + shared memory) and either stores per-chunk partials into a
//     workspace [chunks, c, k * k] (deterministic; summed in chunk order by dw_sum_chunks_kernel) or
//     atomically adds them into a zeroed result.
// The chunking depends only on shapes and layout, never on timing, so deterministic=true is bitwise
// reproducible.
#include "deps_fast.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // the current stream (at::cuda::getCurrentCUDAStream is this function)

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace deps_fast {
namespace {

constexpr int kThreads = 256;                    // threads per block of every kernel here
constexpr int kTileV = 4;                        // outputs per thread along W in the NCHW tile kernel
constexpr int64_t kMaxSmem = 48 * 1024;          // dynamic shared memory we allow without opt-in
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

// VEC floats from shared memory (8-byte aligned when VEC == 2).
template <int VEC>
__device__ __forceinline__ void load_smem_vec(const float* p, float (&out)[VEC]) {
  if constexpr (VEC == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    out[0] = t.x;
    out[1] = t.y;
  } else {
#pragma unroll
    for (int c = 0; c < VEC; ++c) out[c] = p[c];
  }
}

// Maps a coordinate v of the virtual input to the source tensor. US == 1: the source itself (forward);
// US == s > 1: the zero-upsampled grad_out of backward-input, nonzero only where v is divisible by s.
template <int US>
__device__ __forceinline__ bool map_coord(int v, int limit, int& out) {
  if constexpr (US == 1) {
    out = v;
    return v >= 0 && v < limit;
  } else {
    if (v < 0 || (v % US) != 0) return false;
    out = v / US;
    return out < limit;
  }
}

// ---------------------------------------------------------------------------------------------------------
// NCHW: tiled forward / backward-input
// ---------------------------------------------------------------------------------------------------------
template <typename T>
struct TileParams {
  const T* src;     // [planes, Hs, Ws]
  T* dst;           // [planes, Ho, Wo]
  const float* w;   // [C_w, KW, KW]
  int64_t planes;   // N * C
  int C;
  int Hs, Ws, Ho, Wo;
  int k, pad, off, KW;
  int tiles_w, tiles_h;
  int in_rows, pitch;  // shared tile of one plane: in_rows x pitch floats, pitch % 4 == 0
  bool vec_store;      // Wo % 4 == 0 and dst aligned: store 4 outputs at once
};

// CS: compute stride (the conv stride for forward, 1 for backward-input). US: upsampling factor of the
// virtual input (1 forward, the conv stride for backward-input). FLIP: use the flipped window.
// Block (bx, by, bz): thread (tx, ty, tz) computes outputs [ox0 + 4 tx, ox0 + 4 tx + 4) of row oy0 + ty of
// plane plane0 + tz.
template <typename T, int KS, int CS, int US, bool FLIP>
__global__ void __launch_bounds__(kThreads) dw_tile_nchw_kernel(const TileParams<T> prm) {
  extern __shared__ float4 smem_f4[];
  float* smem = reinterpret_cast<float*>(smem_f4);
  const int k = KS > 0 ? KS : prm.k;
  const int kk = k * k;
  const int bx = blockDim.x, by = blockDim.y, bz = blockDim.z;
  const int nthreads = bx * by * bz;
  const int tid = (threadIdx.z * by + threadIdx.y) * bx + threadIdx.x;

  int64_t b = blockIdx.x;
  const int tw = static_cast<int>(b % prm.tiles_w);
  b /= prm.tiles_w;
  const int th = static_cast<int>(b % prm.tiles_h);
  b /= prm.tiles_h;
  const int64_t plane0 = b * bz;
  const int oy0 = th * by;
  const int ox0 = tw * bx * kTileV;
  const int vy0 = oy0 * CS - prm.pad;  // virtual-input coordinates of the tile's (0, 0)
  const int vx0 = ox0 * CS - prm.pad;
  const int pitch = prm.pitch;
  const int tile_elems = prm.in_rows * pitch;
  float* wsm = smem + bz * tile_elems;  // [bz][k * k]

  for (int e = tid; e < bz * kk; e += nthreads) {
    const int z = e / kk;
    const int t = e - z * kk;
    const int64_t plane = plane0 + z;
    float val = 0.f;
    if (plane < prm.planes) {
      const int ch = static_cast<int>(plane % prm.C);
      int i = t / k;
      int j = t - i * k;
      if (FLIP) {
        i = k - 1 - i;
        j = k - 1 - j;
      }
      val = prm.w[static_cast<int64_t>(ch) * prm.KW * prm.KW + static_cast<int64_t>(prm.off + i) * prm.KW +
                  (prm.off + j)];
    }
    wsm[e] = val;
  }

  for (int z = 0; z < bz; ++z) {
    const int64_t plane = plane0 + z;
    if (plane >= prm.planes) break;  // same for all threads; no barrier inside this loop
    const T* __restrict__ src = prm.src + plane * prm.Hs * prm.Ws;
    float* tile = smem + z * tile_elems;
    for (int e = tid; e < tile_elems; e += nthreads) {
      const int row = e / pitch;
      const int col = e - row * pitch;
      int sy, sx;
      float val = 0.f;
      if (map_coord<US>(vy0 + row, prm.Hs, sy) && map_coord<US>(vx0 + col, prm.Ws, sx)) {
        val = to_f(src[static_cast<int64_t>(sy) * prm.Ws + sx]);
      }
      tile[e] = val;
    }
  }
  __syncthreads();

  const int64_t plane = plane0 + threadIdx.z;
  const int oy = oy0 + threadIdx.y;
  const int oxb = ox0 + threadIdx.x * kTileV;
  if (plane >= prm.planes || oy >= prm.Ho || oxb >= prm.Wo) return;

  // Row ty * CS, column tx * 4 * CS of this plane's tile: the first input of this thread's window.
  const float* tile = smem + threadIdx.z * tile_elems + (threadIdx.y * CS) * pitch + threadIdx.x * (kTileV * CS);
  const float* wz = wsm + threadIdx.z * kk;
  float acc[kTileV];
#pragma unroll
  for (int v = 0; v < kTileV; ++v) acc[v] = 0.f;

  if constexpr (KS > 0) {
    constexpr int WIN = (kTileV - 1) * CS + KS;  // inputs under 4 consecutive outputs
    constexpr int NQ = (WIN + 3) / 4;            // float4 loads per row (pitch covers them)
#pragma unroll
    for (int i = 0; i < KS; ++i) {
      const float4* rp = reinterpret_cast<const float4*>(tile + i * pitch);
      float win[NQ * 4];
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        const float4 t4 = rp[q];
        win[4 * q + 0] = t4.x;
        win[4 * q + 1] = t4.y;
        win[4 * q + 2] = t4.z;
        win[4 * q + 3] = t4.w;
      }
#pragma unroll
      for (int j = 0; j < KS; ++j) {
        const float wv = wz[i * KS + j];
#pragma unroll
        for (int v = 0; v < kTileV; ++v) acc[v] = fmaf(win[v * CS + j], wv, acc[v]);
      }
    }
  } else {
    for (int i = 0; i < k; ++i) {
      const float* rp = tile + i * pitch;
      for (int j = 0; j < k; ++j) {
        const float wv = wz[i * k + j];
#pragma unroll
        for (int v = 0; v < kTileV; ++v) acc[v] = fmaf(rp[v * CS + j], wv, acc[v]);
      }
    }
  }

  T* dst = prm.dst + plane * prm.Ho * prm.Wo + static_cast<int64_t>(oy) * prm.Wo + oxb;
  if (prm.vec_store) {
    store_vec<T, kTileV>(dst, acc);
  } else {
#pragma unroll
    for (int v = 0; v < kTileV; ++v) {
      if (oxb + v < prm.Wo) dst[v] = from_f<T>(acc[v]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// channels_last: forward / backward-input
// ---------------------------------------------------------------------------------------------------------
template <typename T>
struct NhwcParams {
  const T* src;    // [N, Hs, Ws, C]
  T* dst;          // [N, Ho, Wo, C]
  const float* w;  // [C_w, KW, KW]
  int C, Hs, Ws, Ho, Wo;
  int k, pad, off, KW;
  int CV;      // C / VEC channel vectors
  int OWG;     // ceil(Wo / V) output groups per row
  int groups;  // N * Ho * OWG
  int gpt;     // output groups per thread
};

// Row pitch of the shared weight table of cw channels: even (float2 reads) and 2 mod 4, so the fill's stores
// down a column (consecutive taps of one channel) are at most 2-way bank conflicted.
__host__ __device__ constexpr int wtab_pitch(int cw) { return (cw + 3) / 4 * 4 + 2; }

// Output group g (V consecutive outputs along W of one output row) for channels [ch0, ch0 + VEC).
// wthr: this thread's column of the shared weight table wsm[tap][channel] (row pitch wp).
template <typename T, int KS, int CS, int US, int VEC>
__device__ __forceinline__ void nhwc_group(const NhwcParams<T>& prm, const float* wthr, int wp, int g, int ch0) {
  constexpr int V = reg_block_w(KS);
  const int k = KS > 0 ? KS : prm.k;
  const int owg = g % prm.OWG;
  const int r = g / prm.OWG;
  const int oy = r % prm.Ho;
  const int n = r / prm.Ho;
  const int ox0 = owg * V;
  const T* __restrict__ src = prm.src;
  const int64_t C = prm.C;

  float acc[V][VEC];
#pragma unroll
  for (int v = 0; v < V; ++v)
#pragma unroll
    for (int c = 0; c < VEC; ++c) acc[v][c] = 0.f;

#pragma unroll
  for (int i = 0; i < k; ++i) {
    int sy;
    if (!map_coord<US>(oy * CS - prm.pad + i, prm.Hs, sy)) continue;
    const T* srow = src + (static_cast<int64_t>(n) * prm.Hs + sy) * prm.Ws * C + ch0;
    const float* wrow = wthr + i * k * wp;
    if constexpr (KS > 0) {
      constexpr int WIN = (V - 1) * CS + KS;
      float win[WIN][VEC];
#pragma unroll
      for (int t = 0; t < WIN; ++t) {
        int sx;
        if (map_coord<US>(ox0 * CS - prm.pad + t, prm.Ws, sx)) {
          load_vec<T, VEC>(srow + sx * C, win[t]);
        } else {
#pragma unroll
          for (int c = 0; c < VEC; ++c) win[t][c] = 0.f;
        }
      }
#pragma unroll
      for (int j = 0; j < KS; ++j) {
        float wv[VEC];
        load_smem_vec<VEC>(wrow + j * wp, wv);
#pragma unroll
        for (int v = 0; v < V; ++v)
#pragma unroll
          for (int c = 0; c < VEC; ++c) acc[v][c] = fmaf(win[v * CS + j][c], wv[c], acc[v][c]);
      }
    } else {
      for (int j = 0; j < k; ++j) {
        float wv[VEC];
        load_smem_vec<VEC>(wrow + j * wp, wv);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          int sx;
          if (map_coord<US>((ox0 + v) * CS - prm.pad + j, prm.Ws, sx)) {
            float xv[VEC];
            load_vec<T, VEC>(srow + sx * C, xv);
#pragma unroll
            for (int c = 0; c < VEC; ++c) acc[v][c] = fmaf(xv[c], wv[c], acc[v][c]);
          }
        }
      }
    }
  }

  T* drow = prm.dst + (static_cast<int64_t>(n) * prm.Ho + oy) * prm.Wo * C + ch0;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    if (ox0 + v < prm.Wo) store_vec<T, VEC>(drow + (ox0 + v) * C, acc[v]);
  }
}

// Block (bx, by): thread (tx, ty) owns channels [VEC * (blockIdx.y * bx + tx), + VEC) and the output groups
// (blockIdx.x * gpt + m) * by + ty for m < gpt. The block's k x k weights of its bx * VEC channels are staged
// (flipped for backward-input) in shared memory as wsm[tap][channel].
template <typename T, int KS, int CS, int US, bool FLIP, int VEC>
__global__ void __launch_bounds__(kThreads) dw_nhwc_kernel(const NhwcParams<T> prm) {
  extern __shared__ float4 smem_f4[];
  float* wsm = reinterpret_cast<float*>(smem_f4);  // [k * k][wp]
  const int k = KS > 0 ? KS : prm.k;
  const int kk = k * k;
  const int bx = blockDim.x, by = blockDim.y;
  const int nthreads = bx * by;
  const int tid = threadIdx.y * bx + threadIdx.x;
  const int cw = bx * VEC;  // channels of this block
  const int wp = wtab_pitch(cw);
  const int cbase = blockIdx.y * cw;

  // Consecutive threads read consecutive taps of one channel (coalesced global reads).
  for (int e = tid; e < kk * cw; e += nthreads) {
    const int cl = e / kk;
    const int t = e - cl * kk;
    const int ch = cbase + cl;
    int i = t / k;
    int j = t - i * k;
    if (FLIP) {
      i = k - 1 - i;
      j = k - 1 - j;
    }
    wsm[t * wp + cl] = ch < prm.C ? prm.w[static_cast<int64_t>(ch) * prm.KW * prm.KW +
                                          static_cast<int64_t>(prm.off + i) * prm.KW + (prm.off + j)]
                                  : 0.f;
  }
  __syncthreads();

  const int cv = blockIdx.y * bx + threadIdx.x;
  if (cv >= prm.CV) return;  // no barrier below
  for (int m = 0; m < prm.gpt; ++m) {
    const int64_t g = (static_cast<int64_t>(blockIdx.x) * prm.gpt + m) * by + threadIdx.y;
    if (g >= prm.groups) break;
    nhwc_group<T, KS, CS, US, VEC>(prm, wsm + threadIdx.x * VEC, wp, static_cast<int>(g), cv * VEC);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Weight gradient
// ---------------------------------------------------------------------------------------------------------
template <typename T>
struct WgradNchwParams {
  const T* go;  // [N, C, Ho, Wo]
  const T* x;   // [N, C, H, W]
  float* out;   // deterministic: [chunks, C, k * k]; else [C, k * k] (zeroed)
  int C, H, W, Ho, Wo;
  int k, pad;
  int OWG;   // ceil(Wo / V)
  int rows;  // N * Ho
  int rpc;   // rows per chunk
  bool deterministic;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Emits one tap's block total (already reduced) for channel ch of chunk `chunk`.
__device__ __forceinline__ void emit_wgrad(float* out, bool deterministic, int64_t chunk, int C, int ch, int kk,
                                           int t, float s) {
  if (deterministic) {
    out[(chunk * C + ch) * kk + t] = s;
  } else {
    atomicAdd(out + static_cast<int64_t>(ch) * kk + t, s);
  }
}

// 1-D block of kThreads threads; block b owns channel b % C and rows [rpc * (b / C), + rpc) of the N * Ho
// output rows. Work item e = (row, group of V outputs along W).
template <typename T, int KS, int CS>
__global__ void __launch_bounds__(kThreads) dw_wgrad_nchw_kernel(const WgradNchwParams<T> prm) {
  constexpr int V = reg_block_w(KS);
  __shared__ float red[kThreads / 32];
  extern __shared__ float4 smem_f4[];
  float* red_taps = reinterpret_cast<float*>(smem_f4);  // [warps][k * k], specialised kernels only
  const int k = KS > 0 ? KS : prm.k;
  const int kk = k * k;
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  constexpr int kWarps = kThreads / 32;

  const int64_t b = blockIdx.x;
  const int ch = static_cast<int>(b % prm.C);
  const int64_t chunk = b / prm.C;
  const int r0 = static_cast<int>(chunk * prm.rpc);
  const int r1 = static_cast<int>(min(static_cast<int64_t>(prm.rows), static_cast<int64_t>(r0) + prm.rpc));
  const int nel = (r1 - r0) * prm.OWG;
  const T* __restrict__ gop = prm.go;
  const T* __restrict__ xp = prm.x;

  if constexpr (KS > 0) {
    constexpr int KK = KS * KS;
    constexpr int WIN = (V - 1) * CS + KS;
    float acc[KK];
#pragma unroll
    for (int t = 0; t < KK; ++t) acc[t] = 0.f;

    for (int e = tid; e < nel; e += kThreads) {
      const int rl = e / prm.OWG;
      const int og = e - rl * prm.OWG;
      const int r = r0 + rl;
      const int n = r / prm.Ho;
      const int oy = r - n * prm.Ho;
      const int64_t plane = static_cast<int64_t>(n) * prm.C + ch;
      const int ox0 = og * V;
      const int vcount = min(V, prm.Wo - ox0);
      const T* grow = gop + (plane * prm.Ho + oy) * prm.Wo + ox0;
      float gv[V];
#pragma unroll
      for (int v = 0; v < V; ++v) gv[v] = v < vcount ? to_f(grow[v]) : 0.f;
      const T* xplane = xp + plane * prm.H * prm.W;
#pragma unroll
      for (int i = 0; i < KS; ++i) {
        const int iy = oy * CS - prm.pad + i;
        if (iy < 0 || iy >= prm.H) continue;
        const T* xrow = xplane + static_cast<int64_t>(iy) * prm.W;
        float win[WIN];
#pragma unroll
        for (int t = 0; t < WIN; ++t) {
          const int ix = ox0 * CS - prm.pad + t;
          win[t] = (ix >= 0 && ix < prm.W) ? to_f(xrow[ix]) : 0.f;
        }
#pragma unroll
        for (int j = 0; j < KS; ++j)
#pragma unroll
          for (int v = 0; v < V; ++v)
            if (v < vcount) acc[i * KS + j] = fmaf(gv[v], win[v * CS + j], acc[i * KS + j]);
      }
    }

#pragma unroll
    for (int t = 0; t < KK; ++t) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) red_taps[warp * KK + t] = s;
    }
    __syncthreads();
    for (int t = tid; t < KK; t += kThreads) {
      float s = 0.f;
      for (int wi = 0; wi < kWarps; ++wi) s += red_taps[wi * KK + t];
      emit_wgrad(prm.out, prm.deterministic, chunk, prm.C, ch, KK, t, s);
    }
  } else {
    // Generic k: one pass over the chunk per tap.
    for (int t = 0; t < kk; ++t) {
      const int i = t / k;
      const int j = t - i * k;
      float acc = 0.f;
      for (int e = tid; e < nel; e += kThreads) {
        const int rl = e / prm.OWG;
        const int og = e - rl * prm.OWG;
        const int r = r0 + rl;
        const int n = r / prm.Ho;
        const int oy = r - n * prm.Ho;
        const int iy = oy * CS - prm.pad + i;
        if (iy < 0 || iy >= prm.H) continue;
        const int64_t plane = static_cast<int64_t>(n) * prm.C + ch;
        const int ox0 = og * V;
        const T* grow = gop + (plane * prm.Ho + oy) * prm.Wo;
        const T* xrow = xp + (plane * prm.H + iy) * prm.W;
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const int ox = ox0 + v;
          const int ix = ox * CS - prm.pad + j;
          if (ox < prm.Wo && ix >= 0 && ix < prm.W) acc = fmaf(to_f(grow[ox]), to_f(xrow[ix]), acc);
        }
      }
      const float s = warp_sum(acc);
      __syncthreads();  // red is reused across taps
      if (lane == 0) red[warp] = s;
      __syncthreads();
      if (tid == 0) {
        float tot = 0.f;
        for (int wi = 0; wi < kWarps; ++wi) tot += red[wi];
        emit_wgrad(prm.out, prm.deterministic, chunk, prm.C, ch, kk, t, tot);
      }
    }
  }
}

template <typename T>
struct WgradNhwcParams {
  const T* go;  // [N, Ho, Wo, C]
  const T* x;   // [N, H, W, C]
  float* out;   // deterministic: [chunks, C, k * k]; else [C, k * k] (zeroed)
  int C, H, W, Ho, Wo;
  int k, pad;
  int CV;      // C / VEC
  int OWG;     // ceil(Wo / V)
  int groups;  // N * Ho * OWG
  int gpc;     // groups per chunk
  bool deterministic;
};

// Sums red[0..by)[cl] in order for this thread's VEC channels (ty == 0 only) and emits tap t.
template <int VEC>
__device__ __forceinline__ void reduce_emit_nhwc(float* red, const float (&acc)[VEC], bool valid_c, int cw, int ch0,
                                                 int64_t chunk, int C, int kk, int t, float* out, bool deterministic) {
  const int by = blockDim.y;
  const int cl = threadIdx.x * VEC;
  __syncthreads();  // red is reused across taps
#pragma unroll
  for (int c = 0; c < VEC; ++c) red[threadIdx.y * cw + cl + c] = acc[c];
  __syncthreads();
  if (threadIdx.y == 0 && valid_c) {
#pragma unroll
    for (int c = 0; c < VEC; ++c) {
      float s = 0.f;
      for (int y = 0; y < by; ++y) s += red[y * cw + cl + c];
      emit_wgrad(out, deterministic, chunk, C, ch0 + c, kk, t, s);
    }
  }
}

// Block (bx, by): thread (tx, ty) owns channels [VEC * (blockIdx.y * bx + tx), + VEC) and the output groups
// blockIdx.x * gpc + ty + m * by (m = 0, 1, ...) below the chunk end.
template <typename T, int KS, int CS, int VEC>
__global__ void __launch_bounds__(kThreads) dw_wgrad_nhwc_kernel(const WgradNhwcParams<T> prm) {
  constexpr int V = reg_block_w(KS);
  extern __shared__ float4 smem_f4[];
  float* red = reinterpret_cast<float*>(smem_f4);  // [by][cw]
  const int k = KS > 0 ? KS : prm.k;
  const int kk = k * k;
  const int bx = blockDim.x, by = blockDim.y;
  const int cw = bx * VEC;
  const int cv = blockIdx.y * bx + threadIdx.x;
  const bool valid_c = cv < prm.CV;
  const int ch0 = cv * VEC;
  const int64_t chunk = blockIdx.x;
  const int g0 = static_cast<int>(chunk * prm.gpc);
  const int g1 = static_cast<int>(min(static_cast<int64_t>(prm.groups), static_cast<int64_t>(g0) + prm.gpc));
  const T* __restrict__ gop = prm.go;
  const T* __restrict__ xp = prm.x;
  const int64_t C = prm.C;

  if constexpr (KS > 0) {
    constexpr int KK = KS * KS;
    constexpr int WIN = (V - 1) * CS + KS;
    float acc[KK][VEC];
#pragma unroll
    for (int t = 0; t < KK; ++t)
#pragma unroll
      for (int c = 0; c < VEC; ++c) acc[t][c] = 0.f;

    if (valid_c) {
      for (int g = g0 + static_cast<int>(threadIdx.y); g < g1; g += by) {
        const int owg = g % prm.OWG;
        const int r = g / prm.OWG;
        const int oy = r % prm.Ho;
        const int n = r / prm.Ho;
        const int ox0 = owg * V;
        const int vcount = min(V, prm.Wo - ox0);
        const T* grow = gop + (static_cast<int64_t>(n) * prm.Ho + oy) * prm.Wo * C + ch0;
        float gv[V][VEC];
#pragma unroll
        for (int v = 0; v < V; ++v) {
          if (v < vcount) {
            load_vec<T, VEC>(grow + (ox0 + v) * C, gv[v]);
          } else {
#pragma unroll
            for (int c = 0; c < VEC; ++c) gv[v][c] = 0.f;
          }
        }
#pragma unroll
        for (int i = 0; i < KS; ++i) {
          const int iy = oy * CS - prm.pad + i;
          if (iy < 0 || iy >= prm.H) continue;
          const T* xrow = xp + (static_cast<int64_t>(n) * prm.H + iy) * prm.W * C + ch0;
          float win[WIN][VEC];
#pragma unroll
          for (int t = 0; t < WIN; ++t) {
            const int ix = ox0 * CS - prm.pad + t;
            if (ix >= 0 && ix < prm.W) {
              load_vec<T, VEC>(xrow + ix * C, win[t]);
            } else {
#pragma unroll
              for (int c = 0; c < VEC; ++c) win[t][c] = 0.f;
            }
          }
#pragma unroll
          for (int j = 0; j < KS; ++j)
#pragma unroll
            for (int v = 0; v < V; ++v)
              if (v < vcount)
#pragma unroll
                for (int c = 0; c < VEC; ++c)
                  acc[i * KS + j][c] = fmaf(gv[v][c], win[v * CS + j][c], acc[i * KS + j][c]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < KK; ++t)
      reduce_emit_nhwc<VEC>(red, acc[t], valid_c, cw, ch0, chunk, prm.C, KK, t, prm.out, prm.deterministic);
  } else {
    for (int t = 0; t < kk; ++t) {
      const int i = t / k;
      const int j = t - i * k;
      float acc[VEC];
#pragma unroll
      for (int c = 0; c < VEC; ++c) acc[c] = 0.f;
      if (valid_c) {
        for (int g = g0 + static_cast<int>(threadIdx.y); g < g1; g += by) {
          const int owg = g % prm.OWG;
          const int r = g / prm.OWG;
          const int oy = r % prm.Ho;
          const int n = r / prm.Ho;
          const int iy = oy * CS - prm.pad + i;
          if (iy < 0 || iy >= prm.H) continue;
          const T* grow = gop + (static_cast<int64_t>(n) * prm.Ho + oy) * prm.Wo * C + ch0;
          const T* xrow = xp + (static_cast<int64_t>(n) * prm.H + iy) * prm.W * C + ch0;
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const int ox = owg * V + v;
            const int ix = ox * CS - prm.pad + j;
            if (ox < prm.Wo && ix >= 0 && ix < prm.W) {
              float gvv[VEC], xv[VEC];
              load_vec<T, VEC>(grow + ox * C, gvv);
              load_vec<T, VEC>(xrow + ix * C, xv);
#pragma unroll
              for (int c = 0; c < VEC; ++c) acc[c] = fmaf(gvv[c], xv[c], acc[c]);
            }
          }
        }
      }
      reduce_emit_nhwc<VEC>(red, acc, valid_c, cw, ch0, chunk, prm.C, kk, t, prm.out, prm.deterministic);
    }
  }
}

// out[i] = sum over q in order of ws[q * n + i].
__global__ void __launch_bounds__(kThreads) dw_sum_chunks_kernel(const float* __restrict__ ws, float* __restrict__ out,
                                                                 int64_t n, int64_t chunks) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float s = 0.f;
  for (int64_t q = 0; q < chunks; ++q) s += ws[q * n + i];
  out[i] = s;
}

// ---------------------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------------------
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// k in {3, 5, 7} selects a specialised kernel; anything else the generic one (KS = 0).
int ks_of(int64_t k) { return (k == 3 || k == 5 || k == 7) ? static_cast<int>(k) : 0; }

bool aligned_to(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

void check_tensor_common(const char* fn, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK(t.dim() == 4, fn, ": ", name, " must be 4-D [N, c, H, W], got ", t.dim(), "-D shape ", t.sizes());
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, fn, ": ", name,
              " must be float32, bfloat16 or float16, got ", st);
}

// Validates w, k and stride for c channels; returns K.
int64_t check_weight(const char* fn, const at::Tensor& w, const at::Tensor& ref, int64_t c, int64_t k,
                     int64_t stride) {
  TORCH_CHECK(w.defined(), fn, ": w is undefined");
  TORCH_CHECK(w.is_cuda(), fn, ": w must be a CUDA tensor, got device ", w.device());
  TORCH_CHECK(w.device() == ref.device(), fn, ": w must be on the same device as the activation (", ref.device(),
              "), got ", w.device());
  TORCH_CHECK(w.dim() == 3, fn, ": w must be 3-D [C_w, K, K], got ", w.dim(), "-D shape ", w.sizes());
  TORCH_CHECK(w.scalar_type() == at::kFloat, fn, ": w must be float32, got ", w.scalar_type());
  TORCH_CHECK(w.is_contiguous(), fn, ": w must be contiguous, got strides ", w.strides());
  const int64_t K = w.size(1);
  TORCH_CHECK(w.size(2) == K, fn, ": w must be [C_w, K, K] with square windows, got shape ", w.sizes());
  TORCH_CHECK(K % 2 == 1, fn, ": w's window size K must be odd, got K=", K);
  TORCH_CHECK(c <= w.size(0), fn, ": the activation has c=", c, " channels but w only C_w=", w.size(0));
  TORCH_CHECK(k >= 1 && k % 2 == 1 && k <= K, fn, ": k must be odd with 1 <= k <= K=", K, ", got k=", k);
  TORCH_CHECK(stride == 1 || stride == 2, fn, ": stride must be 1 or 2, got stride=", stride);
  return K;
}

at::MemoryFormat format_of(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast ? at::MemoryFormat::ChannelsLast
                                                                      : at::MemoryFormat::Contiguous;
}

void check_int_range(const char* fn, const char* what, int64_t v) {
  TORCH_CHECK(v <= kIntMax, fn, ": ", what, "=", v, " exceeds the 32-bit index range of this kernel");
}

// Calls f(T*) with a null pointer of the element type: float, c10::BFloat16 or c10::Half only (the callers
// validated the dtype; double is rejected there and never instantiated here).
template <typename F>
void dispatch_dtype(const char* fn, at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat:
      f(static_cast<float*>(nullptr));
      break;
    case at::kBFloat16:
      f(static_cast<c10::BFloat16*>(nullptr));
      break;
    case at::kHalf:
      f(static_cast<c10::Half*>(nullptr));
      break;
    default:
      TORCH_CHECK(false, fn, ": unsupported dtype ", st);
  }
}

// Forward (FLIP = false, US = 1, CS = stride) or backward-input (FLIP = true, CS = 1, US = stride) on NCHW
// planes: dst [planes, Ho, Wo] from src [planes, Hs, Ws].
template <typename T, int CS, int US, bool FLIP>
void launch_tile_nchw(const char* fn, const T* src, T* dst, const float* w, int64_t planes, int64_t C, int64_t Hs,
                      int64_t Ws, int64_t Ho, int64_t Wo, int64_t k, int64_t K, cudaStream_t stream) {
  const int64_t nthr_w = ceil_div(Wo, kTileV);
  int64_t tiles_w = ceil_div(nthr_w, 32);
  int64_t bx = ceil_div(nthr_w, tiles_w);
  int64_t by = std::min<int64_t>(Ho, std::max<int64_t>(1, kThreads / bx));
  int64_t tiles_h = ceil_div(Ho, by);
  by = ceil_div(Ho, tiles_h);
  int64_t bz = std::min<int64_t>({std::max<int64_t>(1, kThreads / (bx * by)), 64, planes});

  auto geometry = [&](int64_t& in_rows, int64_t& pitch) {
    in_rows = (by - 1) * CS + k;
    const int64_t win = (kTileV - 1) * CS + k;
    pitch = round_up((bx - 1) * kTileV * CS + round_up(win, 4), 4);
    return (bz * in_rows * pitch + bz * k * k) * static_cast<int64_t>(sizeof(float));
  };
  int64_t in_rows = 0, pitch = 0;
  while (geometry(in_rows, pitch) > kMaxSmem && bz > 1) bz = std::max<int64_t>(1, bz / 2);
  while (geometry(in_rows, pitch) > kMaxSmem && by > 1) {
    tiles_h = ceil_div(Ho, ceil_div(by, 2));
    by = ceil_div(Ho, tiles_h);
  }
  while (geometry(in_rows, pitch) > kMaxSmem && bx > 1) {
    tiles_w = ceil_div(nthr_w, ceil_div(bx, 2));
    bx = ceil_div(nthr_w, tiles_w);
  }
  const int64_t smem = geometry(in_rows, pitch);
  TORCH_CHECK(smem <= kMaxSmem, fn, ": k=", k, " needs ", smem, " bytes of shared memory per tile, more than ",
              kMaxSmem);
  const int64_t blocks = ceil_div(planes, bz) * tiles_h * tiles_w;
  check_int_range(fn, "number of blocks", blocks);

  TileParams<T> prm;
  prm.src = src;
  prm.dst = dst;
  prm.w = w;
  prm.planes = planes;
  prm.C = static_cast<int>(C);
  prm.Hs = static_cast<int>(Hs);
  prm.Ws = static_cast<int>(Ws);
  prm.Ho = static_cast<int>(Ho);
  prm.Wo = static_cast<int>(Wo);
  prm.k = static_cast<int>(k);
  prm.pad = static_cast<int>(k / 2);
  prm.off = static_cast<int>((K - k) / 2);
  prm.KW = static_cast<int>(K);
  prm.tiles_w = static_cast<int>(tiles_w);
  prm.tiles_h = static_cast<int>(tiles_h);
  prm.in_rows = static_cast<int>(in_rows);
  prm.pitch = static_cast<int>(pitch);
  prm.vec_store = (Wo % kTileV == 0) && aligned_to(dst, kTileV * sizeof(T));

  const dim3 grid(static_cast<unsigned>(blocks));
  const dim3 block(static_cast<unsigned>(bx), static_cast<unsigned>(by), static_cast<unsigned>(bz));
  switch (ks_of(k)) {
    case 3:
      dw_tile_nchw_kernel<T, 3, CS, US, FLIP><<<grid, block, smem, stream>>>(prm);
      break;
    case 5:
      dw_tile_nchw_kernel<T, 5, CS, US, FLIP><<<grid, block, smem, stream>>>(prm);
      break;
    case 7:
      dw_tile_nchw_kernel<T, 7, CS, US, FLIP><<<grid, block, smem, stream>>>(prm);
      break;
    default:
      dw_tile_nchw_kernel<T, 0, CS, US, FLIP><<<grid, block, smem, stream>>>(prm);
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int KS, int CS, int US, bool FLIP>
void launch_nhwc_vec(const NhwcParams<T>& prm, int vec, dim3 grid, dim3 block, int64_t smem, cudaStream_t stream) {
  if (vec == 2) {
    if constexpr (!std::is_same<T, float>::value) {
      dw_nhwc_kernel<T, KS, CS, US, FLIP, 2><<<grid, block, smem, stream>>>(prm);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  dw_nhwc_kernel<T, KS, CS, US, FLIP, 1><<<grid, block, smem, stream>>>(prm);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Channels-last analogue of launch_tile_nchw: dst [N, Ho, Wo, C] from src [N, Hs, Ws, C].
template <typename T, int CS, int US, bool FLIP>
void launch_nhwc(const char* fn, const T* src, T* dst, const float* w, int64_t N, int64_t C, int64_t Hs, int64_t Ws,
                 int64_t Ho, int64_t Wo, int64_t k, int64_t K, cudaStream_t stream) {
  // Two channels per thread (bf16x2 / half2) when every pixel's channel row is aligned; float stays scalar.
  const int vec = (!std::is_same<T, float>::value && C % 2 == 0 && aligned_to(src, 2 * sizeof(T)) &&
                   aligned_to(dst, 2 * sizeof(T)))
                      ? 2
                      : 1;
  const int ks = ks_of(k);
  const int64_t V = reg_block_w(ks);
  const int64_t CV = C / vec;
  int64_t bx = std::min<int64_t>(32, CV);
  auto smem_of = [&](int64_t bx_) { return k * k * wtab_pitch(static_cast<int>(bx_ * vec)) * int64_t(sizeof(float)); };
  while (smem_of(bx) > kMaxSmem && bx > 1) bx = ceil_div(bx, 2);
  const int64_t smem = smem_of(bx);
  TORCH_CHECK(smem <= kMaxSmem, fn, ": k=", k, " needs ", smem, " bytes of shared memory, more than ", kMaxSmem);
  const int64_t by = std::max<int64_t>(1, kThreads / bx);
  const int64_t OWG = ceil_div(Wo, V);
  const int64_t groups = N * Ho * OWG;
  check_int_range(fn, "N * H_out * ceil(W_out / V)", groups);
  const int64_t cblocks = ceil_div(CV, bx);
  TORCH_CHECK(cblocks <= 65535, fn, ": too many channels (c=", C, ")");
  // Several output groups per thread amortise the block's weight staging, as long as >= ~1024 blocks remain.
  int64_t gpt = 1;
  while (gpt < 8 && ceil_div(groups, by * gpt * 2) * cblocks >= 1024) gpt *= 2;

  NhwcParams<T> prm;
  prm.src = src;
  prm.dst = dst;
  prm.w = w;
  prm.C = static_cast<int>(C);
  prm.Hs = static_cast<int>(Hs);
  prm.Ws = static_cast<int>(Ws);
  prm.Ho = static_cast<int>(Ho);
  prm.Wo = static_cast<int>(Wo);
  prm.k = static_cast<int>(k);
  prm.pad = static_cast<int>(k / 2);
  prm.off = static_cast<int>((K - k) / 2);
  prm.KW = static_cast<int>(K);
  prm.CV = static_cast<int>(CV);
  prm.OWG = static_cast<int>(OWG);
  prm.groups = static_cast<int>(groups);
  prm.gpt = static_cast<int>(gpt);

  const dim3 grid(static_cast<unsigned>(ceil_div(groups, by * gpt)), static_cast<unsigned>(cblocks));
  const dim3 block(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  switch (ks) {
    case 3:
      launch_nhwc_vec<T, 3, CS, US, FLIP>(prm, vec, grid, block, smem, stream);
      break;
    case 5:
      launch_nhwc_vec<T, 5, CS, US, FLIP>(prm, vec, grid, block, smem, stream);
      break;
    case 7:
      launch_nhwc_vec<T, 7, CS, US, FLIP>(prm, vec, grid, block, smem, stream);
      break;
    default:
      launch_nhwc_vec<T, 0, CS, US, FLIP>(prm, vec, grid, block, smem, stream);
      break;
  }
}

// Runs the conv-shaped op: forward when FLIP is false (src = x, dst = out), backward-input when true
// (src = grad_out, dst = grad_in), in the layout `fmt` of both tensors.
template <bool BWD>
void run_conv(const char* fn, const at::Tensor& src, at::Tensor& dst, const at::Tensor& w, int64_t k, int64_t stride,
              at::MemoryFormat fmt) {
  const int64_t N = dst.size(0), C = dst.size(1);
  const int64_t Hs = src.size(2), Ws = src.size(3), Ho = dst.size(2), Wo = dst.size(3);
  const int64_t K = w.size(1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float* wp = w.data_ptr<float>();
  dispatch_dtype(fn, src.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* sp = src.data_ptr<T>();
    T* dp = dst.data_ptr<T>();
    if (fmt == at::MemoryFormat::ChannelsLast) {
      if (!BWD) {
        if (stride == 1)
          launch_nhwc<T, 1, 1, false>(fn, sp, dp, wp, N, C, Hs, Ws, Ho, Wo, k, K, stream);
        else
          launch_nhwc<T, 2, 1, false>(fn, sp, dp, wp, N, C, Hs, Ws, Ho, Wo, k, K, stream);
      } else {
        if (stride == 1)
          launch_nhwc<T, 1, 1, true>(fn, sp, dp, wp, N, C, Hs, Ws, Ho, Wo, k, K, stream);
        else
          launch_nhwc<T, 1, 2, true>(fn, sp, dp, wp, N, C, Hs, Ws, Ho, Wo, k, K, stream);
      }
    } else {
      const int64_t planes = N * C;
      if (!BWD) {
        if (stride == 1)
          launch_tile_nchw<T, 1, 1, false>(fn, sp, dp, wp, planes, C, Hs, Ws, Ho, Wo, k, K, stream);
        else
          launch_tile_nchw<T, 2, 1, false>(fn, sp, dp, wp, planes, C, Hs, Ws, Ho, Wo, k, K, stream);
      } else {
        if (stride == 1)
          launch_tile_nchw<T, 1, 1, true>(fn, sp, dp, wp, planes, C, Hs, Ws, Ho, Wo, k, K, stream);
        else
          launch_tile_nchw<T, 1, 2, true>(fn, sp, dp, wp, planes, C, Hs, Ws, Ho, Wo, k, K, stream);
      }
    }
  });
}

template <typename T, int KS, int CS>
void launch_wgrad_nhwc_vec(const WgradNhwcParams<T>& prm, int vec, dim3 grid, dim3 block, int64_t smem,
                           cudaStream_t stream) {
  if (vec == 2) {
    if constexpr (!std::is_same<T, float>::value) {
      dw_wgrad_nhwc_kernel<T, KS, CS, 2><<<grid, block, smem, stream>>>(prm);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  dw_wgrad_nhwc_kernel<T, KS, CS, 1><<<grid, block, smem, stream>>>(prm);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int CS>
void run_wgrad_typed(const char* fn, const at::Tensor& go, const at::Tensor& x, int64_t k, at::MemoryFormat fmt,
                     bool deterministic, at::Tensor& result, cudaStream_t stream) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = go.size(2), Wo = go.size(3);
  const int64_t kk = k * k;
  const int ks = ks_of(k);
  const int64_t V = reg_block_w(ks);
  const int64_t OWG = ceil_div(Wo, V);
  const T* gp = go.data_ptr<T>();
  const T* xp = x.data_ptr<T>();

  int64_t chunks = 0;
  dim3 grid, block;
  int64_t smem = 0;
  int vec = 1;
  if (fmt == at::MemoryFormat::ChannelsLast) {
    vec = (!std::is_same<T, float>::value && C % 2 == 0 && aligned_to(gp, 2 * sizeof(T)) &&
           aligned_to(xp, 2 * sizeof(T)))
              ? 2
              : 1;
    const int64_t CV = C / vec;
    const int64_t bx = std::min<int64_t>(32, CV);
    const int64_t by = std::max<int64_t>(1, kThreads / bx);
    const int64_t groups = N * Ho * OWG;
    check_int_range(fn, "N * H_out * ceil(W_out / V)", groups);
    const int64_t gpc = by * 8;  // 8 output groups per thread
    chunks = ceil_div(groups, gpc);
    const int64_t cblocks = ceil_div(CV, bx);
    check_int_range(fn, "number of chunks", chunks);
    TORCH_CHECK(cblocks <= 65535, fn, ": too many channels (c=", C, ")");
    grid = dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(cblocks));
    block = dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
    smem = by * bx * vec * static_cast<int64_t>(sizeof(float));
  } else {
    const int64_t rows = N * Ho;
    check_int_range(fn, "N * H_out", rows);
    const int64_t rpc = std::max<int64_t>(1, 8192 / Wo);  // ~8K outputs per block
    chunks = ceil_div(rows, rpc);
    check_int_range(fn, "number of blocks", chunks * C);
    grid = dim3(static_cast<unsigned>(chunks * C));
    block = dim3(kThreads);
    smem = (ks > 0 ? (kThreads / 32) * kk : 0) * static_cast<int64_t>(sizeof(float));
  }

  at::Tensor ws;
  float* out = nullptr;
  if (deterministic) {
    ws = at::empty({chunks, C, kk}, x.options().dtype(at::kFloat));
    out = ws.data_ptr<float>();
  } else {
    out = result.data_ptr<float>();  // zeroed by the caller
  }

  if (fmt == at::MemoryFormat::ChannelsLast) {
    WgradNhwcParams<T> prm;
    prm.go = gp;
    prm.x = xp;
    prm.out = out;
    prm.C = static_cast<int>(C);
    prm.H = static_cast<int>(H);
    prm.W = static_cast<int>(W);
    prm.Ho = static_cast<int>(Ho);
    prm.Wo = static_cast<int>(Wo);
    prm.k = static_cast<int>(k);
    prm.pad = static_cast<int>(k / 2);
    prm.CV = static_cast<int>(C / vec);
    prm.OWG = static_cast<int>(OWG);
    prm.groups = static_cast<int>(N * Ho * OWG);
    prm.gpc = static_cast<int>(block.y * 8);
    prm.deterministic = deterministic;
    switch (ks) {
      case 3:
        launch_wgrad_nhwc_vec<T, 3, CS>(prm, vec, grid, block, smem, stream);
        break;
      case 5:
        launch_wgrad_nhwc_vec<T, 5, CS>(prm, vec, grid, block, smem, stream);
        break;
      case 7:
        launch_wgrad_nhwc_vec<T, 7, CS>(prm, vec, grid, block, smem, stream);
        break;
      default:
        launch_wgrad_nhwc_vec<T, 0, CS>(prm, vec, grid, block, smem, stream);
        break;
    }
  } else {
    WgradNchwParams<T> prm;
    prm.go = gp;
    prm.x = xp;
    prm.out = out;
    prm.C = static_cast<int>(C);
    prm.H = static_cast<int>(H);
    prm.W = static_cast<int>(W);
    prm.Ho = static_cast<int>(Ho);
    prm.Wo = static_cast<int>(Wo);
    prm.k = static_cast<int>(k);
    prm.pad = static_cast<int>(k / 2);
    prm.OWG = static_cast<int>(OWG);
    prm.rows = static_cast<int>(N * Ho);
    prm.rpc = static_cast<int>(std::max<int64_t>(1, 8192 / Wo));
    prm.deterministic = deterministic;
    switch (ks) {
      case 3:
        dw_wgrad_nchw_kernel<T, 3, CS><<<grid, block, smem, stream>>>(prm);
        break;
      case 5:
        dw_wgrad_nchw_kernel<T, 5, CS><<<grid, block, smem, stream>>>(prm);
        break;
      case 7:
        dw_wgrad_nchw_kernel<T, 7, CS><<<grid, block, smem, stream>>>(prm);
        break;
      default:
        dw_wgrad_nchw_kernel<T, 0, CS><<<grid, block, smem, stream>>>(prm);
        break;
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  if (deterministic) {
    const int64_t n = C * kk;
    dw_sum_chunks_kernel<<<static_cast<unsigned>(ceil_div(n, kThreads)), kThreads, 0, stream>>>(
        out, result.data_ptr<float>(), n, chunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

at::Tensor dwconv_forward_cuda(const at::Tensor& x, const at::Tensor& w, int64_t k, int64_t stride) {
  constexpr const char* fn = "dwconv_forward_cuda";
  check_tensor_common(fn, "x", x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_weight(fn, w, x, C, k, stride);
  TORCH_CHECK(H >= 1 && W >= 1, fn, ": x must have positive spatial size, got H=", H, ", W=", W);
  const int64_t p = k / 2;
  const int64_t Ho = (H + 2 * p - k) / stride + 1;
  const int64_t Wo = (W + 2 * p - k) / stride + 1;
  TORCH_CHECK(Ho >= 1 && Wo >= 1, fn, ": non-positive output size ", Ho, "x", Wo);
  check_int_range(fn, "H * W", H * W);
  check_int_range(fn, "c", C);

  const at::cuda::CUDAGuard device_guard(x.device());
  const at::MemoryFormat fmt = format_of(x);
  at::Tensor out = at::empty({N, C, Ho, Wo}, x.options().memory_format(fmt));
  if (N == 0 || C == 0) return out;
  const at::Tensor xc = x.contiguous(fmt);
  run_conv<false>(fn, xc, out, w, k, stride, fmt);
  return out;
}

at::Tensor dwconv_backward_input_cuda(const at::Tensor& grad_out, const at::Tensor& w, int64_t k, int64_t stride,
                                      int64_t H, int64_t W) {
  constexpr const char* fn = "dwconv_backward_input_cuda";
  check_tensor_common(fn, "grad_out", grad_out);
  const int64_t N = grad_out.size(0), C = grad_out.size(1), Ho = grad_out.size(2), Wo = grad_out.size(3);
  check_weight(fn, w, grad_out, C, k, stride);
  TORCH_CHECK(H >= 1 && W >= 1, fn, ": the input size must be positive, got H=", H, ", W=", W);
  const int64_t p = k / 2;
  const int64_t eHo = (H + 2 * p - k) / stride + 1;
  const int64_t eWo = (W + 2 * p - k) / stride + 1;
  TORCH_CHECK(Ho == eHo && Wo == eWo, fn, ": grad_out has spatial size ", Ho, "x", Wo, " but an input of ", H, "x",
              W, " with k=", k, ", stride=", stride, " gives ", eHo, "x", eWo);
  check_int_range(fn, "H * W", H * W);
  check_int_range(fn, "c", C);

  const at::cuda::CUDAGuard device_guard(grad_out.device());
  const at::MemoryFormat fmt = format_of(grad_out);
  at::Tensor grad_in = at::empty({N, C, H, W}, grad_out.options().memory_format(fmt));
  if (N == 0 || C == 0) return grad_in;
  const at::Tensor gc = grad_out.contiguous(fmt);
  run_conv<true>(fn, gc, grad_in, w, k, stride, fmt);
  return grad_in;
}

at::Tensor dwconv_backward_weight_cuda(const at::Tensor& grad_out, const at::Tensor& x, int64_t k, int64_t stride,
                                       bool deterministic) {
  constexpr const char* fn = "dwconv_backward_weight_cuda";
  check_tensor_common(fn, "x", x);
  check_tensor_common(fn, "grad_out", grad_out);
  TORCH_CHECK(grad_out.device() == x.device(), fn, ": grad_out must be on x's device (", x.device(), "), got ",
              grad_out.device());
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type(), fn, ": grad_out must have x's dtype (", x.scalar_type(),
              "), got ", grad_out.scalar_type());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(k >= 1 && k % 2 == 1, fn, ": k must be odd and positive, got k=", k);
  TORCH_CHECK(stride == 1 || stride == 2, fn, ": stride must be 1 or 2, got stride=", stride);
  TORCH_CHECK(H >= 1 && W >= 1, fn, ": x must have positive spatial size, got H=", H, ", W=", W);
  const int64_t p = k / 2;
  const int64_t Ho = (H + 2 * p - k) / stride + 1;
  const int64_t Wo = (W + 2 * p - k) / stride + 1;
  TORCH_CHECK(grad_out.size(0) == N && grad_out.size(1) == C && grad_out.size(2) == Ho && grad_out.size(3) == Wo, fn,
              ": grad_out must have shape [", N, ", ", C, ", ", Ho, ", ", Wo, "] for x of shape ", x.sizes(),
              " with k=", k, ", stride=", stride, ", got ", grad_out.sizes());
  check_int_range(fn, "H * W", H * W);
  check_int_range(fn, "c", C);

  const at::cuda::CUDAGuard device_guard(x.device());
  at::Tensor result = at::zeros({C, k, k}, x.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous));
  if (N == 0 || C == 0) return result;
  const at::MemoryFormat fmt = format_of(x);
  const at::Tensor xc = x.contiguous(fmt);
  const at::Tensor gc = grad_out.contiguous(fmt);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_dtype(fn, x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (stride == 1)
      run_wgrad_typed<T, 1>(fn, gc, xc, k, fmt, deterministic, result, stream);
    else
      run_wgrad_typed<T, 2>(fn, gc, xc, k, fmt, deterministic, result, stream);
  });
  return result;
}

}  // namespace deps_fast

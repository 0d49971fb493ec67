// CUDA kernels of the elastic depthwise 2-D convolution (OFA supernet style): forward and grad_input here,
// grad_weight in dwconv_cuda_wgrad.cu, shared helpers in dwconv_cuda_common.cuh.
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
#include "dwconv_cuda_common.cuh"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace deps_fast {
namespace {

using namespace dwcuda;

constexpr int kTileV = 4;  // outputs per thread along W in the NCHW tile kernel

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

// Tap t (row-major) of the k x k window as row i, column j; FLIP: of the window rotated by 180 degrees.
template <bool FLIP>
__device__ __forceinline__ void tap_rc(int t, int k, int& i, int& j) {
  i = t / k;
  j = t - i * k;
  if (FLIP) {
    i = k - 1 - i;
    j = k - 1 - j;
  }
}

// w[ch][off + i][off + j]: the used window, read in place from the shared weight (prm: TileParams or NhwcParams).
template <typename P>
__device__ __forceinline__ float window_weight(const P& prm, int ch, int i, int j) {
  return prm.w[static_cast<int64_t>(ch) * prm.KW * prm.KW + static_cast<int64_t>(prm.off + i) * prm.KW + (prm.off + j)];
}

// ---------------------------------------------------------------------------------------------------------
// NCHW: tiled forward / backward-input
// ---------------------------------------------------------------------------------------------------------
// Kernel parameters: flat structs in the field order the kernels were written with (a change of layout alone
// changes the code nvcc emits), filled by aggregate initialisation.
template <typename T>
struct TileParams {
  const T* src;    // [planes, Hs, Ws]
  T* dst;          // [planes, Ho, Wo]
  const float* w;  // [C_w, KW, KW]
  int64_t planes;  // N * C
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
      int i, j;
      tap_rc<FLIP>(t, k, i, j);
      val = window_weight(prm, ch, i, j);
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
  const OutPos pos = nhwc_out_pos(g, prm.OWG, prm.Ho);
  const int n = pos.n, oy = pos.oy;
  const int ox0 = pos.og * V;
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
        if (map_coord<US>(ox0 * CS - prm.pad + t, prm.Ws, sx))
          load_vec<T, VEC>(srow + sx * C, win[t]);
        else
          zero_vec(win[t]);
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
    int i, j;
    tap_rc<FLIP>(t, k, i, j);
    wsm[t * wp + cl] = ch < prm.C ? window_weight(prm, ch, i, j) : 0.f;
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
// Host side
// ---------------------------------------------------------------------------------------------------------
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

  const bool vec_store = (Wo % kTileV == 0) && aligned_to(dst, kTileV * sizeof(T));
  const TileParams<T> prm{src, dst, w, planes,
                          i32(C),
                          i32(Hs), i32(Ws), i32(Ho), i32(Wo),
                          i32(k), i32(k / 2), i32((K - k) / 2), i32(K),
                          i32(tiles_w), i32(tiles_h),
                          i32(in_rows), i32(pitch),
                          vec_store};

  const dim3 grid(static_cast<unsigned>(blocks));
  const dim3 block(static_cast<unsigned>(bx), static_cast<unsigned>(by), static_cast<unsigned>(bz));
  KS_SWITCH(k, KS, [&] { dw_tile_nchw_kernel<T, KS, CS, US, FLIP><<<grid, block, smem, stream>>>(prm); });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Channels-last analogue of launch_tile_nchw: dst [N, Ho, Wo, C] from src [N, Hs, Ws, C].
template <typename T, int CS, int US, bool FLIP>
void launch_nhwc(const char* fn, const T* src, T* dst, const float* w, int64_t N, int64_t C, int64_t Hs, int64_t Ws,
                 int64_t Ho, int64_t Wo, int64_t k, int64_t K, cudaStream_t stream) {
  const int vec = channel_vec(C, src, dst);
  const int64_t V = reg_block_w(ks_of(k));
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

  const NhwcParams<T> prm{src, dst, w,
                          i32(C), i32(Hs), i32(Ws), i32(Ho), i32(Wo),
                          i32(k), i32(k / 2), i32((K - k) / 2), i32(K),
                          i32(CV), i32(OWG), i32(groups), i32(gpt)};

  const dim3 grid(static_cast<unsigned>(ceil_div(groups, by * gpt)), static_cast<unsigned>(cblocks));
  const dim3 block(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  KS_SWITCH(k, KS, [&] {
    VEC_SWITCH(vec, T, VEC, [&] { dw_nhwc_kernel<T, KS, CS, US, FLIP, VEC><<<grid, block, smem, stream>>>(prm); });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Runs the conv-shaped op on checked arguments: forward when BWD is false (src = x, returns out), backward-input
// when true (src = grad_out, returns grad_in, flipped window). The result [N, c, Ho, Wo] keeps src's layout.
template <bool BWD>
at::Tensor run_conv(const char* fn, const at::Tensor& src_in, const at::Tensor& w, int64_t k, int64_t stride,
                    int64_t Ho, int64_t Wo) {
  const int64_t N = src_in.size(0), C = src_in.size(1);
  const at::cuda::CUDAGuard device_guard(src_in.device());
  const at::MemoryFormat fmt = dw_memory_format(src_in);
  at::Tensor dst = at::empty({N, C, Ho, Wo}, src_in.options().memory_format(fmt));
  if (N == 0 || C == 0) return dst;
  const at::Tensor src = src_in.contiguous(fmt);
  const int64_t Hs = src.size(2), Ws = src.size(3);
  const int64_t K = w.size(1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const float* wp = w.data_ptr<float>();
  FLOAT_TYPE_SWITCH(src.scalar_type(), fn, T, [&] {
    const T* sp = src.data_ptr<T>();
    T* dp = dst.data_ptr<T>();
    STRIDE_SWITCH(stride, S, [&] {
      // forward computes at stride S; backward-input is a stride-1 correlation of the S-upsampled grad_out
      constexpr int CS = BWD ? 1 : S, US = BWD ? S : 1;
      if (fmt == at::MemoryFormat::ChannelsLast)
        launch_nhwc<T, CS, US, BWD>(fn, sp, dp, wp, N, C, Hs, Ws, Ho, Wo, k, K, stream);
      else
        launch_tile_nchw<T, CS, US, BWD>(fn, sp, dp, wp, N * C, C, Hs, Ws, Ho, Wo, k, K, stream);
    });
  });
  return dst;
}

}  // namespace

// The checks (shared with the CPU entry points) live in deps_fast.h.
at::Tensor dwconv_forward_cuda(const at::Tensor& x, const at::Tensor& w, int64_t k, int64_t stride) {
  constexpr const char* fn = "dwconv_forward_cuda";
  check_dw_forward(fn, x, w, k, stride, at::kCUDA);
  const int64_t H = x.size(2), W = x.size(3);
  check_index_range(fn, H, W, x.size(1));
  return run_conv<false>(fn, x, w, k, stride, dw_out_size(H, k, stride), dw_out_size(W, k, stride));
}

at::Tensor dwconv_backward_input_cuda(const at::Tensor& grad_out, const at::Tensor& w, int64_t k, int64_t stride,
                                      int64_t H, int64_t W) {
  constexpr const char* fn = "dwconv_backward_input_cuda";
  check_dw_backward_input(fn, grad_out, w, k, stride, H, W, at::kCUDA);
  check_index_range(fn, H, W, grad_out.size(1));
  return run_conv<true>(fn, grad_out, w, k, stride, H, W);
}

}  // namespace deps_fast

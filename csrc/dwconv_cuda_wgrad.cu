// CUDA weight gradient of the elastic depthwise 2-D convolution (the contract: deps_fast.h; forward and
// grad_input: dwconv_cuda.cu; shared helpers: dwconv_cuda_common.cuh).
//
//   * dw_wgrad_nchw_kernel / dw_wgrad_nhwc_kernel (templated on T, KS in {3, 5, 7} or 0 = runtime k, the
//     stride, and for channels_last the channels per thread VEC). A block owns one channel (NCHW) or a vector
//     of channels (channels_last) and a fixed chunk of the N * H' output rows (NCHW) or output pixel groups
//     (channels_last); every thread keeps all k * k taps in registers, the block reduces them in a fixed
//     order (warp shuffles + shared memory) and either stores per-chunk partials into a workspace
//     [chunks, c, k * k] (deterministic; summed in chunk order by dw_sum_chunks_kernel) or atomically adds
//     them into a zeroed result.
// The chunking depends only on shapes and layout, never on timing, so deterministic=true is bitwise
// reproducible.
#include "dwconv_cuda_common.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace deps_fast {
namespace {

using namespace dwcuda;

// Kernel parameters: flat structs in the field order the kernels were written with, filled by aggregate
// initialisation. The two repeat their leading fields on purpose: a shared base struct shifts the fields after it
// (padding), and that alone changes the code nvcc emits for the weight-gradient kernels; flat, every kernel
// compiles to the same SASS as before.
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

// Work item e of the NCHW kernel's chunk that starts at output row r0 (groups run along W, then rows).
__device__ __forceinline__ OutPos nchw_out_pos(int e, int r0, int OWG, int Ho) {
  const int rl = e / OWG;
  const int og = e - rl * OWG;
  const int r = r0 + rl;
  const int n = r / Ho;
  return {n, r - n * Ho, og};
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
      const OutPos pos = nchw_out_pos(e, r0, prm.OWG, prm.Ho);
      const int n = pos.n, oy = pos.oy;
      const int64_t plane = static_cast<int64_t>(n) * prm.C + ch;
      const int ox0 = pos.og * V;
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
        const OutPos pos = nchw_out_pos(e, r0, prm.OWG, prm.Ho);
        const int n = pos.n, oy = pos.oy;
        const int iy = oy * CS - prm.pad + i;
        if (iy < 0 || iy >= prm.H) continue;
        const int64_t plane = static_cast<int64_t>(n) * prm.C + ch;
        const int ox0 = pos.og * V;
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
        const OutPos pos = nhwc_out_pos(g, prm.OWG, prm.Ho);
        const int n = pos.n, oy = pos.oy;
        const int ox0 = pos.og * V;
        const int vcount = min(V, prm.Wo - ox0);
        const T* grow = gop + (static_cast<int64_t>(n) * prm.Ho + oy) * prm.Wo * C + ch0;
        float gv[V][VEC];
#pragma unroll
        for (int v = 0; v < V; ++v) {
          if (v < vcount)
            load_vec<T, VEC>(grow + (ox0 + v) * C, gv[v]);
          else
            zero_vec(gv[v]);
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
            if (ix >= 0 && ix < prm.W)
              load_vec<T, VEC>(xrow + ix * C, win[t]);
            else
              zero_vec(win[t]);
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
          const OutPos pos = nhwc_out_pos(g, prm.OWG, prm.Ho);
          const int n = pos.n, oy = pos.oy;
          const int iy = oy * CS - prm.pad + i;
          if (iy < 0 || iy >= prm.H) continue;
          const T* grow = gop + (static_cast<int64_t>(n) * prm.Ho + oy) * prm.Wo * C + ch0;
          const T* xrow = xp + (static_cast<int64_t>(n) * prm.H + iy) * prm.W * C + ch0;
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const int ox = pos.og * V + v;
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
    vec = channel_vec(C, gp, xp);
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
    const WgradNhwcParams<T> prm{gp, xp, out,
                                 i32(C), i32(H), i32(W), i32(Ho), i32(Wo),
                                 i32(k), i32(k / 2),
                                 i32(C / vec), i32(OWG), i32(N * Ho * OWG), static_cast<int>(block.y * 8),
                                 deterministic};
    KS_SWITCH(k, KS, [&] {
      VEC_SWITCH(vec, T, VEC, [&] { dw_wgrad_nhwc_kernel<T, KS, CS, VEC><<<grid, block, smem, stream>>>(prm); });
    });
  } else {
    const WgradNchwParams<T> prm{gp, xp, out,
                                 i32(C), i32(H), i32(W), i32(Ho), i32(Wo),
                                 i32(k), i32(k / 2),
                                 i32(OWG), i32(N * Ho), i32(std::max<int64_t>(1, 8192 / Wo)),
                                 deterministic};
    KS_SWITCH(k, KS, [&] { dw_wgrad_nchw_kernel<T, KS, CS><<<grid, block, smem, stream>>>(prm); });
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (deterministic) {
    const int64_t n = C * kk;
    dw_sum_chunks_kernel<<<static_cast<unsigned>(ceil_div(n, kThreads)), kThreads, 0, stream>>>(
        out, result.data_ptr<float>(), n, chunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

// The checks (shared with the CPU entry point) live in deps_fast.h.
at::Tensor dwconv_backward_weight_cuda(const at::Tensor& grad_out, const at::Tensor& x, int64_t k, int64_t stride,
                                       bool deterministic) {
  constexpr const char* fn = "dwconv_backward_weight_cuda";
  check_dw_backward_weight(fn, grad_out, x, k, stride, at::kCUDA);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_index_range(fn, H, W, C);

  const at::cuda::CUDAGuard device_guard(x.device());
  at::Tensor result = at::zeros({C, k, k}, x.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous));
  if (N == 0 || C == 0) return result;
  const at::MemoryFormat fmt = dw_memory_format(x);
  const at::Tensor xc = x.contiguous(fmt);
  const at::Tensor gc = grad_out.contiguous(fmt);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  FLOAT_TYPE_SWITCH(x.scalar_type(), fn, T, [&] {
    STRIDE_SWITCH(stride, S, [&] { run_wgrad_typed<T, S>(fn, gc, xc, k, fmt, deterministic, result, stream); });
  });
  return result;
}

}  // namespace deps_fast

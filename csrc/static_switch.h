// Compile-time switches: each macro turns a runtime value into a constexpr (or a type) named by the caller and
// runs its last argument, a lambda without parameters, with that name in scope. Every case instantiates the
// body once, so kernels specialised on the value are picked by one line instead of a hand-written switch.
// The pattern is causal-conv1d's static_switch.h: an immediately invoked lambda whose branches each declare the
// name (`static constexpr`: usable inside nested lambdas without a capture) and `return BODY();`.
//
//   KS_SWITCH(k, KS, [&] { kernel<T, KS><<<grid, block, smem, stream>>>(prm); });
//   FLOAT_TYPE_SWITCH(x.scalar_type(), "fn", scalar_t, [&] { run<scalar_t>(x.data_ptr<scalar_t>()); });
//
// The body is passed through __VA_ARGS__ so that commas inside it need no extra parentheses.
#pragma once
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <type_traits>
#include <utility>

namespace deps_fast {

// The general form, for value sets the macros below do not cover: calls f(std::integral_constant<int, V>{}) for
// the V of Vs equal to v (read it as decltype(arg)::value) and returns true, or returns false when none is.
template <int... Vs, typename F>
inline bool int_switch(int v, F&& f) {
  return ((v == Vs && (f(std::integral_constant<int, Vs>{}), true)) || ...);
}

}  // namespace deps_fast

// Kernel size: k in {3, 5, 7} gives KS = k (kernels fully unrolled for that size); any other k gives KS = 0,
// the generic kernel that reads k at run time.
#define KS_SWITCH(K_VALUE, KS, ...)     \
  [&] {                                 \
    switch (K_VALUE) {                  \
      case 3: {                         \
        static constexpr int KS = 3;    \
        return __VA_ARGS__();           \
      }                                 \
      case 5: {                         \
        static constexpr int KS = 5;    \
        return __VA_ARGS__();           \
      }                                 \
      case 7: {                         \
        static constexpr int KS = 7;    \
        return __VA_ARGS__();           \
      }                                 \
      default: {                        \
        static constexpr int KS = 0;    \
        return __VA_ARGS__();           \
      }                                 \
    }                                   \
  }()

// Convolution stride, already validated to be 1 or 2: S = 1 for 1, S = 2 otherwise.
#define STRIDE_SWITCH(STRIDE_VALUE, S, ...) \
  [&] {                                     \
    if ((STRIDE_VALUE) == 1) {              \
      static constexpr int S = 1;           \
      return __VA_ARGS__();                 \
    } else {                                \
      static constexpr int S = 2;           \
      return __VA_ARGS__();                 \
    }                                       \
  }()

// Channels per thread of element type T: VEC = 2 where VEC_VALUE == 2 and T is a 16-bit type, else VEC = 1.
// float never gets the 2-wide variant (the host never asks for it), so it is not instantiated for float.
#define VEC_SWITCH(VEC_VALUE, T, VEC, ...)              \
  [&] {                                                 \
    if constexpr (!std::is_same<T, float>::value) {     \
      if ((VEC_VALUE) == 2) {                           \
        static constexpr int VEC = 2;                   \
        return __VA_ARGS__();                           \
      }                                                 \
    }                                                   \
    static constexpr int VEC = 1;                       \
    return __VA_ARGS__();                               \
  }()

// Element type of a tensor: T = float, c10::BFloat16 or c10::Half for float32 / bfloat16 / float16; any other
// dtype raises "FN_NAME: unsupported dtype ..." (the callers validated the dtype, so that is a bug guard; it
// also keeps float64 from being instantiated). Every CPU and CUDA entry point dispatches through this one.
#define FLOAT_TYPE_SWITCH(SCALAR_TYPE, FN_NAME, T, ...)                         \
  [&] {                                                                         \
    const ::c10::ScalarType float_type_switch_st_ = (SCALAR_TYPE);              \
    switch (float_type_switch_st_) {                                            \
      case ::c10::ScalarType::Float: {                                          \
        using T = float;                                                        \
        return __VA_ARGS__();                                                   \
      }                                                                         \
      case ::c10::ScalarType::BFloat16: {                                       \
        using T = ::c10::BFloat16;                                              \
        return __VA_ARGS__();                                                   \
      }                                                                         \
      case ::c10::ScalarType::Half: {                                           \
        using T = ::c10::Half;                                                  \
        return __VA_ARGS__();                                                   \
      }                                                                         \
      default:                                                                  \
        TORCH_CHECK(false, FN_NAME, ": unsupported dtype ", float_type_switch_st_); \
    }                                                                           \
  }()

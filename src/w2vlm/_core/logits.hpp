// Raw model outputs to log-probabilities, natively: validation, pyctcdecode's probability check, log-softmax.
//
// float64 is numpy's arithmetic, kernel for kernel, so that results are pyctcdecode's bits: the element-wise exp
// and log and the row sums are numpy's own inner loops, taken from numpy's ufuncs when the module is imported
// (numpy picks them for the CPU, SIMD included). float32 uses numpy's log and sums too, and w2vlm's vectorised
// exp (at most 1 ulp from the true value, faster than numpy's: logits.cpp). Maxima,
// differences and clipping are exact operations. A float32 matrix is normalised in float32, a float64 one in
// double. The caller's array is read in place (rows contiguous, any distance apart).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace w2vlm {

// numpy's inner-loop signature (PyUFuncGenericFunction)
using UfuncLoop = void (*)(char** args, const intptr_t* dimensions, const intptr_t* steps, void* data);
struct UfuncKernel {
  UfuncLoop fn = nullptr;
  void* data = nullptr;
};
// log and add: [0] float32, [1] float64; exp: float64 only. Without them (numpy not found), libm and plain sums.
struct NumpyKernels {
  UfuncKernel exp64, log[2], add[2];
};
void set_numpy_kernels(const NumpyKernels& k);

// A (frames x vocab) matrix of raw outputs: float32 or float64, each row contiguous, rows row_stride elements apart.
struct RawLogits {
  const void* data = nullptr;
  bool f64 = false;
  int64_t frames = 0;
  size_t vocab = 0;
  int64_t row_stride = 0;
  template <class T>
  const T* row(int64_t t) const {
    return static_cast<const T*>(data) + t * row_stride;
  }
};

// What one pass over a whole matrix found. scan_logits throws InputError (naming frame and column) for NaN, +inf
// or a frame that is -inf in every column, as the Python check always did.
struct LogitsScan {
  bool probabilities = false;  // every value in [0, 1] and every row summing to 1 (+-1e-3): logged, not softmaxed
  std::vector<double> row_max;
};
LogitsScan scan_logits(const RawLogits& x);

// Log-probabilities of rows [t0, t0 + n) into out (n x vocab, row-major), clipped at log(1e-15). T is the
// matrix's own type. tmp is scratch, resized as needed.
template <class T>
void normalize_rows(const RawLogits& x, const LogitsScan& s, int64_t t0, int64_t n, T* out, std::vector<T>& tmp);

}  // namespace w2vlm

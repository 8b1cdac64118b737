#include "logits.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "common.hpp"
#include "simd.hpp"

namespace w2vlm {

namespace {

NumpyKernels g_kernels;                  // set once at import, before any decoding thread starts
double g_log_min_p = std::log(1e-15);    // numpy's log(1e-15): pyctcdecode's clip of log-probabilities

template <class T>
constexpr int kIndex = std::is_same_v<T, double> ? 1 : 0;

template <class T>
void unary(const UfuncKernel& k, const T* in, T* out, size_t n, T (*fallback)(T)) {
  if (!k.fn) {
    for (size_t i = 0; i < n; ++i) out[i] = fallback(in[i]);
    return;
  }
  char* args[2] = {const_cast<char*>(reinterpret_cast<const char*>(in)), reinterpret_cast<char*>(out)};
  const intptr_t dims[1] = {static_cast<intptr_t>(n)};
  const intptr_t steps[2] = {sizeof(T), sizeof(T)};
  k.fn(args, dims, steps, k.data);
}

template <class T>
T exp_fallback(T a) {
  return std::exp(a);
}
template <class T>
T log_fallback(T a) {
  return std::log(a);
}

#if defined(__GNUC__)
// Every value goes through the vector path (the last few through a padded copy): a value's result does not depend
// on where in the row it is.
template <class F, class I>
W2VLM_ALWAYS_INLINE void exp_vectors(const float* in, float* out, size_t n) {
  constexpr size_t W = sizeof(F) / sizeof(float);
  size_t i = 0;
  for (; i + W <= n; i += W) {
    F x;
    std::memcpy(&x, in + i, sizeof x);
    exp_lanes<F, I>(x);
    std::memcpy(out + i, &x, sizeof x);
  }
  if (i < n) {
    F x = {};
    std::memcpy(&x, in + i, (n - i) * sizeof(float));
    exp_lanes<F, I>(x);
    std::memcpy(out + i, &x, (n - i) * sizeof(float));
  }
}

__attribute__((noinline)) void exp_f32_base(const float* in, float* out, size_t n) {
  exp_vectors<Vec16<float>::type, Vec16<int32_t>::type>(in, out, n);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"), noinline)) void exp_f32_avx2(const float* in, float* out, size_t n) {
  exp_vectors<F8, I8>(in, out, n);
}
#endif

void vexp(const float* in, float* out, size_t n) {
#if defined(__x86_64__)
  if (avx2_fma()) return exp_f32_avx2(in, out, n);
#endif
  exp_f32_base(in, out, n);
}
#else
void vexp(const float* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    float x = in[i];
    exp_lanes<float, int32_t>(x);
    out[i] = x;
  }
}
#endif

void vexp(const double* in, double* out, size_t n) { unary(g_kernels.exp64, in, out, n, &exp_fallback<double>); }
template <class T>
void vlog(const T* in, T* out, size_t n) {
  unary(g_kernels.log[kIndex<T>], in, out, n, &log_fallback<T>);
}

// numpy's add.reduce of one contiguous row: the identity (0), then numpy's loop in its reduce form
template <class T>
T vsum(const T* in, size_t n) {
  T acc = 0;
  const UfuncKernel& k = g_kernels.add[kIndex<T>];
  if (!k.fn) {
    for (size_t i = 0; i < n; ++i) acc += in[i];
    return acc;
  }
  char* args[3] = {reinterpret_cast<char*>(&acc), const_cast<char*>(reinterpret_cast<const char*>(in)),
                   reinterpret_cast<char*>(&acc)};
  const intptr_t dims[1] = {static_cast<intptr_t>(n)};
  const intptr_t steps[3] = {0, sizeof(T), 0};
  k.fn(args, dims, steps, k.data);
  return acc;
}

[[noreturn]] void bad_value(const RawLogits& x, int64_t row, int64_t bad_rows) {
  auto report = [&](auto* r) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(r)>>;
    for (size_t v = 0; v < x.vocab; ++v) {
      if (!(r[v] < std::numeric_limits<T>::infinity())) {
        throw InputError(std::string("logits contain ") + (std::isnan(r[v]) ? "NaN" : "+inf") + " at frame " +
                         std::to_string(row) + ", column " + std::to_string(v) + " (" + std::to_string(bad_rows) +
                         " bad frames in all)");
      }
    }
    throw InputError("logits contain NaN or +inf at frame " + std::to_string(row));
  };
  if (x.f64) report(x.row<double>(row));
  report(x.row<float>(row));
}

template <class T>
LogitsScan scan(const RawLogits& x) {
  // Lanes of independent maxima, minima and flags: the compiler turns the inner loop into vector instructions.
  // (Maxima of NaN-free rows do not depend on the order of comparisons.)
  using Flag = std::conditional_t<std::is_same_v<T, double>, int64_t, int32_t>;
  constexpr size_t L = 16;
  constexpr T inf = std::numeric_limits<T>::infinity();
  const size_t V = x.vocab;
  LogitsScan s;
  s.row_max.resize(static_cast<size_t>(x.frames));
  int64_t first_bad = -1, bad_rows = 0, first_dead = -1;
  T gmin = inf, gmax = -inf;
  for (int64_t t = 0; t < x.frames; ++t) {
    const T* r = x.row<T>(t);
    T mx[L], mn[L];
    Flag bad[L], ninf[L];
    for (size_t j = 0; j < L; ++j) mx[j] = -inf, mn[j] = inf, bad[j] = 0, ninf[j] = 0;
    size_t v = 0;
    for (; v + L <= V; v += L) {
      for (size_t j = 0; j < L; ++j) {
        const T a = r[v + j];
        mx[j] = a > mx[j] ? a : mx[j];
        mn[j] = a < mn[j] ? a : mn[j];
        bad[j] |= static_cast<Flag>(!(a < inf));
        ninf[j] += static_cast<Flag>(a == -inf);
      }
    }
    T m = -inf, lo = inf;
    Flag b = 0, ni = 0;
    for (size_t j = 0; j < L; ++j) {
      m = mx[j] > m ? mx[j] : m;
      lo = mn[j] < lo ? mn[j] : lo;
      b |= bad[j];
      ni += ninf[j];
    }
    for (; v < V; ++v) {
      const T a = r[v];
      m = a > m ? a : m;
      lo = a < lo ? a : lo;
      b |= static_cast<Flag>(!(a < inf));
      ni += static_cast<Flag>(a == -inf);
    }
    if (b) {
      if (first_bad < 0) first_bad = t;
      ++bad_rows;
    } else if (static_cast<size_t>(ni) == V && first_dead < 0) {
      first_dead = t;
    }
    s.row_max[static_cast<size_t>(t)] = static_cast<double>(m);
    gmax = m > gmax ? m : gmax;
    gmin = lo < gmin ? lo : gmin;
  }
  if (first_bad >= 0) bad_value(x, first_bad, bad_rows);
  if (first_dead >= 0) throw InputError("logits frame " + std::to_string(first_dead) + " is -inf in every column");
  // pyctcdecode's rule, as the Python side wrote it: probabilities when every value is in [0, 1] and every row
  // sums (in double, numpy's summation) to 1 within np.allclose's tolerance
  s.probabilities = x.frames > 0 && gmin >= 0 && gmax <= 1;
  if (s.probabilities) {
    std::vector<double> wide(std::is_same_v<T, double> ? 0 : V);
    const double tol = 1e-3 + 1e-5 * 1.0;
    for (int64_t t = 0; t < x.frames && s.probabilities; ++t) {
      const T* r = x.row<T>(t);
      double sum;
      if constexpr (std::is_same_v<T, double>) {
        sum = vsum(r, V);
      } else {
        for (size_t v = 0; v < V; ++v) wide[v] = r[v];
        sum = vsum(wide.data(), V);
      }
      if (!(std::fabs(sum - 1.0) <= tol)) s.probabilities = false;
    }
  }
  return s;
}

}  // namespace

void set_numpy_kernels(const NumpyKernels& k) {
  g_kernels = k;
  const double p = 1e-15;
  vlog(&p, &g_log_min_p, 1);
}

LogitsScan scan_logits(const RawLogits& x) { return x.f64 ? scan<double>(x) : scan<float>(x); }

namespace {

// o[v] = min(max(o[v] - lz, floor), 0): exact operations, so vectors and single values give the same bits (a
// plain loop of them is not vectorised: the comparisons may trap)

template <class T>
void subtract_and_clip(T* o, size_t n, T lz, T floor) {
  size_t v = 0;
#if defined(__GNUC__)
  using V = typename Vec16<T>::type;
  static_assert(sizeof(V) == 16, "a vector of 16 bytes");
  constexpr size_t W = 16 / sizeof(T);
  const V vfloor = V{} + floor, zero = V{};
  for (; v + W <= n; v += W) {
    V a;
    std::memcpy(&a, o + v, sizeof a);
    a = a - lz;
    a = a > vfloor ? a : vfloor;
    a = a < zero ? a : zero;
    std::memcpy(o + v, &a, sizeof a);
  }
#endif
  for (; v < n; ++v) {
    T a = o[v] - lz;
    a = a > floor ? a : floor;
    o[v] = a < T(0) ? a : T(0);
  }
}

}  // namespace

template <class T>
void normalize_rows(const RawLogits& x, const LogitsScan& s, int64_t t0, int64_t n, T* out, std::vector<T>& tmp) {
  const size_t V = x.vocab;
  tmp.resize(V);
  // numpy's clip: min(max(a, low), high), a weak Python float bound taking the array's type
  const T floor = static_cast<T>(g_log_min_p);
  const T pmin = static_cast<T>(1e-15);
  for (int64_t i = 0; i < n; ++i) {
    const T* r = x.row<T>(t0 + i);
    T* o = out + static_cast<size_t>(i) * V;
    if (s.probabilities) {  // log(clip(p, 1e-15, 1))
      for (size_t v = 0; v < V; ++v) {
        T a = r[v] > pmin ? r[v] : pmin;
        tmp[v] = a < T(1) ? a : T(1);
      }
      vlog(tmp.data(), o, V);
      continue;
    }
    // x - max - log(sum(exp(x - max))), clipped to [log(1e-15), 0]
    const T m = static_cast<T>(s.row_max[static_cast<size_t>(t0 + i)]);
    for (size_t v = 0; v < V; ++v) o[v] = r[v] - m;
    vexp(o, tmp.data(), V);
    const T z = vsum(tmp.data(), V);
    T lz;
    vlog(&z, &lz, 1);
    subtract_and_clip(o, V, lz, floor);
  }
}

template void normalize_rows<float>(const RawLogits&, const LogitsScan&, int64_t, int64_t, float*,
                                    std::vector<float>&);
template void normalize_rows<double>(const RawLogits&, const LogitsScan&, int64_t, int64_t, double*,
                                     std::vector<double>&);

}  // namespace w2vlm

#include "lstm.hpp"

#include <vector>

#include "simd.hpp"

namespace w2vlm {

namespace {

template <class F>
W2VLM_ALWAYS_INLINE F load(const float* p) {
  F v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class F>
W2VLM_ALWAYS_INLINE void store(float* p, F v) {
  std::memcpy(p, &v, sizeof v);
}

template <class F, class I>
W2VLM_ALWAYS_INLINE F sigmoid(F x) {
  F e = F{} - x;
  exp_lanes<F, I>(e);
  return 1.0f / (1.0f + e);
}

// 1 - 2 / (1 + e^2x): exactly +-1 where e^2x over- or underflows; ~1e-7 absolute error near 0
template <class F, class I>
W2VLM_ALWAYS_INLINE F tanh_(F x) {
  F e = x + x;
  exp_lanes<F, I>(e);
  return 1.0f - 2.0f / (1.0f + e);
}

// The gates of R rows (R <= 4) at one step: gx + h . W_hh, a tile of two vectors per row at a time, its sums in
// registers over all of the weight rows.
template <class F, int R>
W2VLM_ALWAYS_INLINE void gates(int64_t H, const float* const* gx, const float* h, const float* w, float* g) {
  constexpr int64_t L = sizeof(F) / sizeof(float);
  const int64_t G = 4 * H;
  for (int64_t j = 0; j < G; j += 2 * L) {
    F a0[R], a1[R];
    for (int r = 0; r < R; ++r) a0[r] = load<F>(gx[r] + j), a1[r] = load<F>(gx[r] + j + L);
    const float* wk = w + j;
    for (int64_t k = 0; k < H; ++k, wk += G) {
      const F w0 = load<F>(wk), w1 = load<F>(wk + L);
      for (int r = 0; r < R; ++r) {
        const F v = F{} + h[r * H + k];
        a0[r] += v * w0;
        a1[r] += v * w1;
      }
    }
    for (int r = 0; r < R; ++r) {
      store(g + r * G + j, a0[r]);
      store(g + r * G + j + L, a1[r]);
    }
  }
}

// R sequences (rows r0 .. r0 + R - 1) through all steps.
template <class F, class I, int R>
W2VLM_ALWAYS_INLINE void run_rows(const LstmShape& s, int64_t r0, const float* gx, const int64_t* index, const float* w,
                                  const float* out_w, float out_b, float* z) {
  constexpr int64_t L = sizeof(F) / sizeof(float);
  const int64_t H = s.hidden, G = 4 * H;
  std::vector<float> h(static_cast<size_t>(R * H), 0.0f), c(h), g(static_cast<size_t>(R * G));
  for (int64_t t = 0; t < s.steps; ++t) {
    const float* in[R];
    for (int r = 0; r < R; ++r) in[r] = gx + index[t * s.rows + r0 + r] * G;
    gates<F, R>(H, in, h.data(), w, g.data());
    for (int r = 0; r < R; ++r) {
      const float* gr = g.data() + r * G;
      float* hr = h.data() + r * H;
      float* cr = c.data() + r * H;
      F acc = {};
      for (int64_t k = 0; k < H; k += L) {
        const F i = sigmoid<F, I>(load<F>(gr + k)), f = sigmoid<F, I>(load<F>(gr + H + k));
        const F cell = tanh_<F, I>(load<F>(gr + 2 * H + k)), o = sigmoid<F, I>(load<F>(gr + 3 * H + k));
        const F cn = f * load<F>(cr + k) + i * cell;
        const F hn = o * tanh_<F, I>(cn);
        store(cr + k, cn);
        store(hr + k, hn);
        acc += (hn > 0.0f ? hn : F{}) * load<F>(out_w + k);
      }
      float lanes[L];
      std::memcpy(lanes, &acc, sizeof lanes);
      float sum = out_b;
      for (int64_t l = 0; l < L; ++l) sum += lanes[l];
      z[t * s.rows + r0 + r] = sum;
    }
  }
}

template <class F, class I>
W2VLM_ALWAYS_INLINE void run(const LstmShape& s, const float* gx, const int64_t* index, const float* w,
                             const float* out_w, float out_b, float* z) {
  int64_t r = 0;
  for (; r + 4 <= s.rows; r += 4) run_rows<F, I, 4>(s, r, gx, index, w, out_w, out_b, z);
  switch (s.rows - r) {
    case 3:
      run_rows<F, I, 3>(s, r, gx, index, w, out_w, out_b, z);
      break;
    case 2:
      run_rows<F, I, 2>(s, r, gx, index, w, out_w, out_b, z);
      break;
    case 1:
      run_rows<F, I, 1>(s, r, gx, index, w, out_w, out_b, z);
      break;
    default:
      break;
  }
}

#if defined(__GNUC__)
__attribute__((noinline)) void run_base(const LstmShape& s, const float* gx, const int64_t* index, const float* w,
                                        const float* out_w, float out_b, float* z) {
  run<Vec16<float>::type, Vec16<int32_t>::type>(s, gx, index, w, out_w, out_b, z);
}
#else
void run_base(const LstmShape& s, const float* gx, const int64_t* index, const float* w, const float* out_w,
              float out_b, float* z) {
  run<float, int32_t>(s, gx, index, w, out_w, out_b, z);
}
#endif

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2,fma"), noinline)) void run_avx2(const LstmShape& s, const float* gx, const int64_t* index,
                                                            const float* w, const float* out_w, float out_b, float* z) {
  run<F8, I8>(s, gx, index, w, out_w, out_b, z);
}
#endif

}  // namespace

void lstm_readout(const LstmShape& s, const float* gx, const int64_t* index, const float* w_hh, const float* out_w,
                  float out_b, float* z) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (avx2_fma() && s.hidden % 8 == 0) return run_avx2(s, gx, index, w_hh, out_w, out_b, z);
#endif
  run_base(s, gx, index, w_hh, out_w, out_b, z);
}

}  // namespace w2vlm

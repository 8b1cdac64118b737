// Decoding whole utterances: raw model outputs fed to a search a few frames at a time, decode(), and
// decode_batch() on a pool of worker threads (longest utterances first).
#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "beam_search.hpp"
#include "common.hpp"
#include "logits.hpp"

namespace w2vlm {

namespace {

template <class T>
void advance_normalized(BeamSearch& search, const RawLogits& x, const LogitsScan& scan) {
  // a few frames at a time, so that the normalised rows stay in cache and memory does not grow with the input
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(16384 / std::max<size_t>(x.vocab, 1)));
  std::vector<T> rows(static_cast<size_t>(std::min(chunk, x.frames)) * x.vocab), tmp;
  for (int64_t t0 = 0; t0 < x.frames; t0 += chunk) {
    const int64_t n = std::min(chunk, x.frames - t0);
    normalize_rows<T>(x, scan, t0, n, rows.data(), tmp);
    search.advance(rows.data(), n);
  }
}

// Run fn(i) for i in `order` on up to num_threads threads; rethrow the exception of the smallest failing index.
template <class F>
void parallel_for(const std::vector<size_t>& order, int num_threads, F&& fn) {
  const size_t n = order.size();
  std::vector<std::exception_ptr> errors(n);
  std::atomic<size_t> next{0};
  auto worker = [&]() {
    while (true) {
      const size_t k = next.fetch_add(1);
      if (k >= n) return;
      try {
        fn(order[k]);
      } catch (...) {
        errors[order[k]] = std::current_exception();
      }
    }
  };
  if (num_threads <= 1 || n <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(num_threads));
    for (int k = 0; k < num_threads; ++k) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// thread count and order (longest utterances first, so that no thread is left with a long one at the end)
std::vector<size_t> batch_order(const std::vector<int64_t>& frames, int& num_threads) {
  const size_t n = frames.size();
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(num_threads), std::max<size_t>(n, 1)));
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return frames[a] > frames[b]; });
  return order;
}

}  // namespace

void BeamSearch::advance(const RawLogits& x, const LogitsScan& scan) {
  if (x.f64) {
    advance_normalized<double>(*this, x, scan);
  } else {
    advance_normalized<float>(*this, x, scan);
  }
}

void BeamSearch::advance(const RawLogits& x) { advance(x, scan_logits(x)); }

template <class T>
std::vector<Hypothesis> decode(std::shared_ptr<const Alphabet> alphabet, const LMList& lms, const DecodeOptions& opts,
                               const T* log_probs, int64_t frames) {
  BeamSearch s(std::move(alphabet), lms, opts);
  s.advance(log_probs, frames);
  return s.finalize();
}
template std::vector<Hypothesis> decode<float>(std::shared_ptr<const Alphabet>, const LMList&, const DecodeOptions&,
                                               const float*, int64_t);
template std::vector<Hypothesis> decode<double>(std::shared_ptr<const Alphabet>, const LMList&, const DecodeOptions&,
                                                const double*, int64_t);

template <class T>
std::vector<std::vector<Hypothesis>> decode_batch(std::shared_ptr<const Alphabet> alphabet, const LMList& lms,
                                                  const DecodeOptions& opts, const std::vector<const T*>& log_probs,
                                                  const std::vector<int64_t>& frames, int num_threads) {
  std::vector<std::vector<Hypothesis>> out(log_probs.size());
  const auto order = batch_order(frames, num_threads);
  parallel_for(order, num_threads, [&](size_t i) { out[i] = decode(alphabet, lms, opts, log_probs[i], frames[i]); });
  return out;
}

template std::vector<std::vector<Hypothesis>> decode_batch<float>(std::shared_ptr<const Alphabet>, const LMList&,
                                                                 const DecodeOptions&,
                                                                 const std::vector<const float*>&,
                                                                 const std::vector<int64_t>&, int);
template std::vector<std::vector<Hypothesis>> decode_batch<double>(std::shared_ptr<const Alphabet>, const LMList&,
                                                                  const DecodeOptions&,
                                                                  const std::vector<const double*>&,
                                                                  const std::vector<int64_t>&, int);

std::vector<std::vector<Hypothesis>> decode_batch(std::shared_ptr<const Alphabet> alphabet, const LMList& lms,
                                                  const DecodeOptions& opts, const std::vector<RawLogits>& inputs,
                                                  int num_threads) {
  const size_t n = inputs.size();
  std::vector<int64_t> frames(n);
  for (size_t i = 0; i < n; ++i) frames[i] = inputs[i].frames;
  const auto order = batch_order(frames, num_threads);
  // every input is checked before any is decoded (the scan is cheap next to the search)
  std::vector<LogitsScan> scans(n);
  parallel_for(order, num_threads, [&](size_t i) {
    try {
      scans[i] = scan_logits(inputs[i]);
    } catch (const InputError& e) {
      throw InputError("logits_list[" + std::to_string(i) + "]: " + e.what());
    }
  });
  std::vector<std::vector<Hypothesis>> out(n);
  parallel_for(order, num_threads, [&](size_t i) {
    BeamSearch search(alphabet, lms, opts);
    search.advance(inputs[i], scans[i]);
    scans[i] = LogitsScan{};
    out[i] = search.finalize();
  });
  return out;
}

}  // namespace w2vlm

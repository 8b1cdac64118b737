// Native part of `w2vlm build-lm` (module w2vlm._lmbuild): n-gram counting with a bounded memory budget
// (hash-table counting, sorted runs spilled to disk and merged), index joins between orders, the interpolated
// modified Kneser-Ney probability pass and the ARPA writer. Python (w2vlm.lm.scalable) drives the passes.
//
// An n-gram of word ids w1..wn is packed into one key, w1 in the most significant bits, `bits` bits a word:
// a uint64 when n * bits <= 64, else an unsigned __int128 (stored as two uint64, low half first). Comparing
// keys is comparing n-grams lexicographically ("context order"). Ids are < 2^bits - 1, so a key of all ones
// never occurs and marks an empty hash slot.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using u128 = unsigned __int128;
template <class T>
using In1 = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
template <class T>
using Out1 = nb::ndarray<T, nb::c_contig, nb::device::cpu>;

u128 low_mask(int nbits) { return nbits >= 128 ? ~u128(0) : (u128(1) << nbits) - 1; }

// Read access to a key table of either width.
struct Keys {
  const uint64_t* p = nullptr;
  size_t n = 0;
  bool wide = false;
  u128 at(size_t i) const {
    if (!wide) return p[i];
    return (u128(p[2 * i + 1]) << 64) | p[2 * i];
  }
};

Keys keys_of(const In1<uint64_t>& a, size_t count, bool wide) {
  if (a.size() != (wide ? 2 * count : count)) throw std::invalid_argument("key table has the wrong size");
  return Keys{a.data(), count, wide};
}

struct File {
  std::FILE* f = nullptr;
  std::string path;
  File(const std::string& p, const char* mode) : path(p) {
    f = std::fopen(p.c_str(), mode);
    if (!f) throw std::runtime_error("cannot open " + p + ": " + std::strerror(errno));
  }
  ~File() {
    if (f) std::fclose(f);
  }
  void write(const void* data, size_t size) {
    if (size && std::fwrite(data, 1, size, f) != size)
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno) + " (disk full?)");
  }
  void close() {
    if (f && std::fclose(f) != 0) {
      f = nullptr;
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
    }
    f = nullptr;
  }
};

// ---------------------------------------------------------------------------------------------------------
// Counting.

template <class K>
struct Entry {
  K key;
  uint64_t count;
};

template <class K>
struct RunReader {
  std::unique_ptr<File> file;
  std::vector<Entry<K>> buf;
  size_t pos = 0, len = 0;
  explicit RunReader(const std::string& path) : file(std::make_unique<File>(path, "rb")), buf(1 << 14) {}
  bool next(Entry<K>& e) {
    if (pos == len) {
      len = std::fread(buf.data(), sizeof(Entry<K>), buf.size(), file->f);
      pos = 0;
      if (len == 0) {
        if (std::ferror(file->f)) throw std::runtime_error("cannot read " + file->path);
        return false;
      }
    }
    e = buf[pos++];
    return true;
  }
};

// k-way merge of sorted runs, summing the counts of equal keys, into `emit(entry)`.
template <class K, class Emit>
void merge_runs(const std::vector<std::string>& runs, Emit&& emit) {
  std::vector<std::unique_ptr<RunReader<K>>> readers;
  using Item = std::pair<K, size_t>;
  auto greater = [](const Item& a, const Item& b) { return a.first > b.first; };
  std::priority_queue<Item, std::vector<Item>, decltype(greater)> heap(greater);
  std::vector<Entry<K>> head(runs.size());
  for (size_t r = 0; r < runs.size(); ++r) {
    readers.push_back(std::make_unique<RunReader<K>>(runs[r]));
    if (readers[r]->next(head[r])) heap.push({head[r].key, r});
  }
  bool have = false;
  Entry<K> cur{};
  while (!heap.empty()) {
    size_t r = heap.top().second;
    heap.pop();
    const Entry<K>& e = head[r];
    if (have && e.key == cur.key) {
      cur.count += e.count;
    } else {
      if (have) emit(cur);
      cur = e;
      have = true;
    }
    if (readers[r]->next(head[r])) heap.push({head[r].key, r});
  }
  if (have) emit(cur);
}

constexpr size_t kMaxMergeFan = 128;

template <class K>
class Counter {
 public:
  // The table is made once, as large as the budget allows or as the input can fill at 70 % (no n-gram more
  // distinct than the positions counted), whichever is smaller; it never grows (no rehash, no second table).
  // Any size, not only powers of two: a slot is picked by multiply-shift.
  Counter(int order, int bits, size_t budget, size_t n_tok, std::string spill_prefix)
      : order_(order), bits_(bits), prefix_(std::move(spill_prefix)) {
    const size_t most = std::max<size_t>(budget / sizeof(Entry<K>), 1024);
    cap_ = std::min(most, n_tok / 7 * 10 + 16);
    table_.assign(cap_, Entry<K>{kEmpty, 0});
  }

  void count(const int32_t* tok, size_t n_tok, int32_t bos) {
    const K mask = K(low_mask(order_ * bits_));
    K key = 0;
    int64_t last_bos = -(1 << 30);
    for (size_t j = 0; j < n_tok; ++j) {
      const int32_t w = tok[j];
      key = K((key << bits_) | K(uint32_t(w))) & mask;
      if (w == bos) last_bos = int64_t(j);
      if (int64_t(j) - last_bos >= order_ - 1 && j + 1 >= size_t(order_)) add(key);
    }
  }

  // Writes the sorted (key, count) table as `<prefix>.keys` and `<prefix>.counts`; returns its size.
  size_t finish() {
    size_t n_out = 0;
    File keys(prefix_ + ".keys", "wb"), counts(prefix_ + ".counts", "wb");
    std::vector<K> kb;
    std::vector<uint64_t> cb;
    auto emit = [&](const Entry<K>& e) {
      kb.push_back(e.key);
      cb.push_back(e.count);
      ++n_out;
      if (kb.size() >= (1 << 16)) flush_out(keys, counts, kb, cb);
    };
    if (runs_.empty()) {
      size_t m = compact_sorted();
      for (size_t i = 0; i < m; ++i) emit(table_[i]);
    } else {
      if (used_) spill();
      table_ = std::vector<Entry<K>>();
      while (runs_.size() > kMaxMergeFan) {  // merge passes until one fan-in suffices
        std::vector<std::string> next;
        for (size_t s = 0; s < runs_.size(); s += kMaxMergeFan) {
          std::vector<std::string> group(runs_.begin() + s, runs_.begin() + std::min(runs_.size(), s + kMaxMergeFan));
          std::string name = prefix_ + ".m" + std::to_string(merged_++);
          File out(name, "wb");
          std::vector<Entry<K>> buf;
          merge_runs<K>(group, [&](const Entry<K>& e) {
            buf.push_back(e);
            if (buf.size() >= (1 << 14)) {
              out.write(buf.data(), buf.size() * sizeof(Entry<K>));
              buf.clear();
            }
          });
          out.write(buf.data(), buf.size() * sizeof(Entry<K>));
          out.close();
          for (auto& g : group) std::remove(g.c_str());
          next.push_back(name);
        }
        runs_ = next;
      }
      merge_runs<K>(runs_, emit);
      for (auto& r : runs_) std::remove(r.c_str());
    }
    flush_out(keys, counts, kb, cb);
    keys.close();
    counts.close();
    return n_out;
  }

  size_t num_runs() const { return runs_.size() + merged_; }

 private:
  static constexpr K kEmpty = ~K(0);
  int order_, bits_;
  std::string prefix_;
  std::vector<Entry<K>> table_;
  size_t cap_ = 0, used_ = 0, merged_ = 0;
  std::vector<std::string> runs_;

  static size_t hash(K k) {
    uint64_t h = uint64_t(k) ^ uint64_t(u128(k) >> 64) * 0xC2B2AE3D27D4EB4FULL;
    h *= 0x9E3779B97F4A7C15ULL;
    return size_t(h ^ (h >> 29));
  }

  void insert(K key, uint64_t c) {
    size_t i = size_t((u128(hash(key)) * cap_) >> 64);
    while (true) {
      Entry<K>& e = table_[i];
      if (e.key == key) {
        e.count += c;
        return;
      }
      if (e.key == kEmpty) {
        e.key = key;
        e.count = c;
        ++used_;
        return;
      }
      if (++i == cap_) i = 0;
    }
  }

  void add(K key) {
    insert(key, 1);
    if (used_ * 10 >= cap_ * 7) spill();
  }

  size_t compact_sorted() {
    size_t m = 0;
    for (size_t i = 0; i < cap_; ++i)
      if (table_[i].key != kEmpty) table_[m++] = table_[i];
    std::sort(table_.begin(), table_.begin() + m, [](const Entry<K>& a, const Entry<K>& b) { return a.key < b.key; });
    return m;
  }

  void spill() {
    size_t m = compact_sorted();
    std::string name = prefix_ + ".r" + std::to_string(runs_.size());
    File out(name, "wb");
    runs_.push_back(name);
    out.write(table_.data(), m * sizeof(Entry<K>));
    out.close();
    std::fill(table_.begin(), table_.end(), Entry<K>{kEmpty, 0});
    used_ = 0;
  }

  static void flush_out(File& keys, File& counts, std::vector<K>& kb, std::vector<uint64_t>& cb) {
    if (sizeof(K) == 8) {
      keys.write(kb.data(), kb.size() * 8);
    } else {
      std::vector<uint64_t> halves(2 * kb.size());
      for (size_t i = 0; i < kb.size(); ++i) {
        halves[2 * i] = uint64_t(kb[i]);
        halves[2 * i + 1] = uint64_t(u128(kb[i]) >> 64);
      }
      keys.write(halves.data(), halves.size() * 8);
    }
    counts.write(cb.data(), cb.size() * 8);
    kb.clear();
    cb.clear();
  }
};

// Counts the n-grams of the given orders (each n * bits <= 128) in the token stream (sentences `<s> ... </s>`
// back to back; an n-gram never contains `<s>` after its first word). Order n's table goes to
// `<spill_prefix><n>.keys/.counts`. Orders run on up to `threads` threads, each with budget / threads bytes
// of hash table. Returns [(table size, runs spilled)] per order.
std::vector<std::vector<size_t>> count_ngrams(In1<int32_t> tokens, std::vector<int> orders, int bits, int32_t bos,
                                              size_t budget, const std::string& spill_prefix, int threads) {
  const int32_t* tok = tokens.data();
  size_t n_tok = tokens.size();
  std::vector<std::vector<size_t>> result(orders.size(), std::vector<size_t>(2, 0));
  threads = std::max(1, std::min<int>(threads, int(orders.size())));
  size_t share = std::max<size_t>(budget / size_t(threads), 1 << 14);
  std::atomic<size_t> next{0};
  std::mutex err_mutex;
  std::exception_ptr error;
  {
    nb::gil_scoped_release release;
    auto work = [&]() {
      while (true) {
        size_t k = next.fetch_add(1);
        if (k >= orders.size()) return;
        try {
          int n = orders[k];
          std::string prefix = spill_prefix + std::to_string(n);
          if (n * bits <= 64) {
            Counter<uint64_t> c(n, bits, share, n_tok, prefix);
            c.count(tok, n_tok, bos);
            result[k][0] = c.finish();
            result[k][1] = c.num_runs();
          } else if (n * bits <= 128) {
            Counter<u128> c(n, bits, share, n_tok, prefix);
            c.count(tok, n_tok, bos);
            result[k][0] = c.finish();
            result[k][1] = c.num_runs();
          } else {
            throw std::invalid_argument("n-gram keys wider than 128 bits");
          }
        } catch (...) {
          std::lock_guard<std::mutex> lock(err_mutex);
          if (!error) error = std::current_exception();
          next.store(orders.size());
        }
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  if (error) std::rethrow_exception(error);
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// Joins between orders.

template <class F>
void parallel_for(size_t n, int threads, F&& f) {
  threads = std::max(1, threads);
  if (threads == 1 || n < 100000) {
    f(size_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  size_t step = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    size_t a = std::min(n, step * t), b = std::min(n, step * (t + 1));
    pool.emplace_back([&f, a, b]() { f(a, b); });
  }
  f(size_t(0), std::min(n, step));
  for (auto& t : pool) t.join();
}

// For every n-gram of `high` (order n): the index in `low` (order n - 1) of its prefix w1..w(n-1)
// (suffix=false) or of its suffix w2..wn (suffix=true). Every such (n-1)-gram must be in `low`.
void lower_index(In1<uint64_t> high_keys, size_t high_count, bool high_wide, In1<uint64_t> low_keys, size_t low_count,
                 bool low_wide, int order, int bits, bool suffix, Out1<uint32_t> out, int threads) {
  Keys hi = keys_of(high_keys, high_count, high_wide), lo = keys_of(low_keys, low_count, low_wide);
  if (out.size() != high_count) throw std::invalid_argument("output has the wrong size");
  if (low_count >= (size_t(1) << 32)) throw std::invalid_argument("more than 2^32 n-grams of one order");
  uint32_t* o = out.data();
  const u128 smask = low_mask((order - 1) * bits);
  std::atomic<bool> missing{false};
  {
    nb::gil_scoped_release release;
    parallel_for(high_count, suffix ? threads : 1, [&](size_t a, size_t b) {
      size_t pos = 0;
      u128 prev_ctx = ~u128(0);
      for (size_t i = a; i < b; ++i) {
        u128 k = hi.at(i);
        u128 q = suffix ? (k & smask) : (k >> bits);
        size_t first = 0, len = lo.n;
        if (!suffix) {
          first = pos;  // prefixes are non-decreasing: search forward from the last hit
          len = lo.n - pos;
        } else if ((k >> bits) == prev_ctx) {
          first = pos + 1;  // same context: the suffixes increase
          len = lo.n - first;
        }
        // exponential then binary search for the first key >= q in [first, first + len)
        size_t step = 1, base = first, end = first + len;
        while (base + step < end && lo.at(base + step) < q) {
          base += step;
          step *= 2;
        }
        size_t l = base, r = std::min(end, base + step + 1);
        while (l < r) {
          size_t m = l + (r - l) / 2;
          if (lo.at(m) < q)
            l = m + 1;
          else
            r = m;
        }
        if (l >= lo.n || lo.at(l) != q) {
          missing = true;
          return;
        }
        o[i] = uint32_t(l);
        pos = l;
        prev_ctx = k >> bits;
      }
    });
  }
  if (missing) throw std::runtime_error("internal error: an n-gram's lower-order n-gram is missing");
}

// ---------------------------------------------------------------------------------------------------------
// Interpolated modified Kneser-Ney, one order n >= 2 (see w2vlm.lm.kneser_ney for the formulas).

void interpolate(In1<uint32_t> prefix, In1<uint32_t> suffix, In1<uint64_t> adjusted, In1<uint8_t> keep, bool pruned,
                 double d1, double d2, double d3, In1<double> lower_prob, Out1<double> prob, Out1<double> backoff,
                 Out1<uint8_t> has_backoff) {
  size_t m = prefix.size();
  if (suffix.size() != m || adjusted.size() != m || prob.size() != m || (pruned && keep.size() != m))
    throw std::invalid_argument("interpolate: arrays of different sizes");
  const uint32_t* pre = prefix.data();
  const uint32_t* suf = suffix.data();
  const uint64_t* a = adjusted.data();
  const uint8_t* kp = pruned ? keep.data() : nullptr;
  const double* low = lower_prob.data();
  size_t n_low = lower_prob.size();
  double* p = prob.data();
  double* bo = backoff.data();
  uint8_t* hb = has_backoff.data();
  if (backoff.size() != n_low || has_backoff.size() != n_low) throw std::invalid_argument("interpolate: bad sizes");
  const double disc[4] = {0.0, d1, d2, d3};
  nb::gil_scoped_release release;
  size_t i = 0;
  while (i < m) {
    uint32_t h = pre[i];
    if (h >= n_low) throw std::invalid_argument("interpolate: prefix index out of range");
    size_t j = i;
    double total = 0, dsum = 0;
    while (j < m && pre[j] == h) {
      total += double(a[j]);
      dsum += disc[std::min<uint64_t>(a[j], 3)];
      ++j;
    }
    double gamma = total > 0 ? dsum / total : 0.0;
    double pruned_mass = 0, kept_lower = 0;
    bool any_kept = false;
    for (size_t k = i; k < j; ++k) {
      double d = disc[std::min<uint64_t>(a[k], 3)];
      if (kp && !kp[k]) {
        pruned_mass += (double(a[k]) - d) / total;
        p[k] = 0.0;
        continue;
      }
      double lp = low[suf[k]];
      p[k] = (double(a[k]) - d) / total + gamma * lp;
      kept_lower += lp;
      any_kept = true;
    }
    double b = total > 0 ? gamma : 1.0;
    if (pruned_mass > 0) b = gamma + pruned_mass / std::max(1.0 - kept_lower, 1e-300);
    bo[h] = b;
    hb[h] = any_kept ? 1 : 0;
    i = j;
  }
}

// ---------------------------------------------------------------------------------------------------------
// ARPA output: appends the n-grams of one order (n >= 2) that are kept, "logprob<TAB>w1 ... wn[<TAB>backoff]".

void write_section(const std::string& path, In1<uint64_t> keys, size_t count, bool wide, int order, int bits,
                   In1<uint8_t> keep, bool pruned, In1<double> log10_prob, In1<double> log10_backoff,
                   In1<uint8_t> has_backoff, bool with_backoff, nb::bytes word_blob, In1<int64_t> word_offsets) {
  Keys k = keys_of(keys, count, wide);
  if (log10_prob.size() != count) throw std::invalid_argument("write_section: bad sizes");
  const char* blob = word_blob.c_str();
  const int64_t* off = word_offsets.data();
  size_t n_words = word_offsets.size() - 1;
  const uint8_t* kp = pruned ? keep.data() : nullptr;
  const double* lp = log10_prob.data();
  const double* lb = with_backoff ? log10_backoff.data() : nullptr;
  const uint8_t* hb = with_backoff ? has_backoff.data() : nullptr;
  const u128 wmask = low_mask(bits);
  File out(path, "ab");
  nb::gil_scoped_release release;
  std::string buf;
  buf.reserve(1 << 21);
  char num[64];
  auto put_num = [&](double v) {
    auto r = std::to_chars(num, num + sizeof(num), v, std::chars_format::fixed, 6);
    buf.append(num, r.ptr);
  };
  for (size_t i = 0; i < count; ++i) {
    if (kp && !kp[i]) continue;
    put_num(lp[i]);
    buf.push_back('\t');
    u128 key = k.at(i);
    for (int w = order - 1; w >= 0; --w) {
      size_t id = size_t((key >> (w * bits)) & wmask);
      if (id >= n_words) throw std::invalid_argument("write_section: word id out of range");
      buf.append(blob + off[id], size_t(off[id + 1] - off[id]));
      if (w) buf.push_back(' ');
    }
    if (hb && hb[i]) {
      buf.push_back('\t');
      put_num(lb[i]);
    }
    buf.push_back('\n');
    if (buf.size() >= (1 << 20)) {
      out.write(buf.data(), buf.size());
      buf.clear();
    }
  }
  out.write(buf.data(), buf.size());
  out.close();
}

}  // namespace

namespace w2vlm_lmbuild {
void bind_tokens(nb::module_& m);  // lmtokens.cpp: WordIndex
}

NB_MODULE(_lmbuild, m) {
  m.doc() = "w2vlm build-lm native passes: bounded-memory n-gram counting, joins, Kneser-Ney, ARPA writing";
  m.def("set_leak_warnings", [](bool on) { nb::set_leak_warnings(on); }, "on"_a,
        "As w2vlm._core.set_leak_warnings: the command line turns the report off before it freezes its objects.");
  m.def("count_ngrams", &count_ngrams, "tokens"_a, "orders"_a, "bits"_a, "bos"_a, "budget"_a, "spill_prefix"_a,
        "threads"_a);
  m.def("lower_index", &lower_index, "high_keys"_a, "high_count"_a, "high_wide"_a, "low_keys"_a, "low_count"_a,
        "low_wide"_a, "order"_a, "bits"_a, "suffix"_a, "out"_a, "threads"_a);
  m.def("interpolate", &interpolate, "prefix"_a, "suffix"_a, "adjusted"_a, "keep"_a, "pruned"_a, "d1"_a, "d2"_a,
        "d3"_a, "lower_prob"_a, "prob"_a, "backoff"_a, "has_backoff"_a);
  m.def("write_section", &write_section, "path"_a, "keys"_a, "count"_a, "wide"_a, "order"_a, "bits"_a, "keep"_a,
        "pruned"_a, "log10_prob"_a, "log10_backoff"_a, "has_backoff"_a, "with_backoff"_a, "word_blob"_a,
        "word_offsets"_a);
  w2vlm_lmbuild::bind_tokens(m);
}

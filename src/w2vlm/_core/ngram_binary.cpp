// w2vlm's binary form of an n-gram LM: the loaded model's arrays written as they are in memory.
//
// Layout (native byte order, checked by a marker; every section starts at a multiple of 8 bytes):
//   header   magic "w2vlm ngram bin\n" (16 bytes), u32 version, u32 byte-order marker 0x01020304,
//            u32 order, u32 vocabulary size V, u32 <s> id, u32 </s> id, u64 bytes of vocabulary text, u64 0;
//            then u64 count per order (the ARPA header's), then u64 capacity and u64 records per table
//            (orders 2..order: capacity is what the table was sized for, it has slots_for(capacity) slots)
//   unigrams f32 log10 probability[V], f32 backoff[V]
//   words    V NUL-terminated strings, word id order (<unk> first), padded to 8 bytes
//   tables   the slots of each table of orders 2..order (16-byte records, 12 at the highest order)
// The file ends there. Keys are the model's own hashes of word ids (ngram.hpp), so the version names the hash
// too. Loading reads the arrays into memory with no parsing or hashing and checks them on the way: sizes
// against the file's, the words (unique, <unk> first), the weights (no NaN or +inf probability, finite backoffs)
// and each table's record count (the stored one; fewer than its slots, so that every probe ends).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <sys/stat.h>
#include <type_traits>

#include "ngram.hpp"

namespace w2vlm {

namespace {

constexpr char kMagic[] = "w2vlm ngram bin\n";
constexpr size_t kMagicSize = sizeof(kMagic) - 1;
static_assert(kMagicSize == 16, "the magic string is 16 bytes");
constexpr uint32_t kVersion = 1;
constexpr uint32_t kByteOrder = 0x01020304;

uint64_t padded8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "rb")) {
    if (!f_) fail("cannot open the file: " + std::string(std::strerror(errno)));
    struct stat st{};
    if (::fstat(fileno(f_), &st) != 0) fail("cannot read the file's size");
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~Reader() {
    if (f_) std::fclose(f_);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  [[noreturn]] void fail(const std::string& msg) const {
    throw LMError(path_ + ": " + msg + " (w2vlm binary n-gram file)");
  }
  uint64_t size() const { return size_; }
  uint64_t offset() const { return offset_; }

  // reads `bytes` bytes of `what` into `dst`; the file must hold them
  void read(void* dst, uint64_t bytes, const char* what) {
    need(bytes, 1, what);
    if (bytes && std::fread(dst, 1, static_cast<size_t>(bytes), f_) != bytes)
      fail(std::string("cannot read the ") + what + " at byte " + std::to_string(offset_));
    offset_ += bytes;
  }
  template <class T>
  T value(const char* what) {
    T v;
    read(&v, sizeof v, what);
    return v;
  }
  // reads `n` values of `what` into a new vector, after checking that the file holds them (no allocation beyond
  // what the file justifies)
  template <class T>
  std::vector<T> array(uint64_t n, const char* what) {
    need(n, sizeof(T), what);
    std::vector<T> v(static_cast<size_t>(n));
    read(v.data(), n * sizeof(T), what);
    return v;
  }
  void skip_to(uint64_t offset, const char* what) {
    std::vector<char> pad = array<char>(offset - offset_, what);
    for (char c : pad)
      if (c != 0) fail(std::string("the padding after the ") + what + " is not zero");
  }

 private:
  // fails unless `n` items of `item_bytes` bytes are left in the file
  void need(uint64_t n, uint64_t item_bytes, const char* what) const {
    if (n > (size_ - offset_) / item_bytes) {
      std::ostringstream os;
      os << "the file ends inside the " << what << " (at byte " << offset_ << ": " << n << " x " << item_bytes
         << " bytes expected, " << (size_ - offset_) << " left): it is cut short or damaged";
      fail(os.str());
    }
  }

  std::string path_;
  std::FILE* f_;
  uint64_t size_ = 0;
  uint64_t offset_ = 0;
};

void check_weight_pair(const Reader& r, float prob, float backoff, int order, uint64_t index) {
  if (!valid_weights(prob, backoff)) {
    std::ostringstream os;
    os << "record " << index << " of the " << order << "-grams has log10 probability " << prob << " and backoff "
       << backoff << "; expected a probability that is not NaN or +inf and a finite backoff";
    r.fail(os.str());
  }
}

template <class Table, class Record>
void read_table(Reader& r, Table& table, uint64_t capacity, uint64_t records, int order) {
  const std::string what = std::to_string(order) + "-gram table";
  const uint64_t slots = Table::slots_for(capacity);
  std::vector<Record> data = r.array<Record>(slots, what.c_str());
  // one pass: the weights of every record, and their number
  uint64_t held = 0;
  for (uint64_t i = 0; i < data.size(); ++i) {
    const Record& rec = data[i];
    if (!rec.key) continue;
    ++held;
    if constexpr (std::is_same_v<Record, ProbBackoffRecord>)
      check_weight_pair(r, rec.prob, rec.backoff, order, i);
    else
      check_weight_pair(r, rec.prob, 0.f, order, i);
  }
  if (held != records || records > capacity) {
    std::ostringstream os;
    os << "the " << what << " holds " << held << " records but its header says " << records << " (capacity "
       << capacity << ")";
    r.fail(os.str());
  }
  table.adopt(std::move(data), capacity, held);
}

}  // namespace

bool NGramLM::looks_like_binary(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char head[kMagicSize];
  const bool ok = std::fread(head, 1, kMagicSize, f) == kMagicSize && std::memcmp(head, kMagic, kMagicSize) == 0;
  std::fclose(f);
  return ok;
}

std::shared_ptr<NGramLM> NGramLM::from_binary_file(const std::string& path) {
  Reader r(path);
  char magic[kMagicSize];
  if (r.size() < kMagicSize) r.fail("the file has " + std::to_string(r.size()) + " bytes, too few for a header");
  r.read(magic, kMagicSize, "header");
  if (std::memcmp(magic, kMagic, kMagicSize) != 0) r.fail("not a w2vlm binary n-gram file (wrong magic string)");
  const uint32_t version = r.value<uint32_t>("header");
  const uint32_t byte_order = r.value<uint32_t>("header");
  if (byte_order != kByteOrder) r.fail("the file was written on a machine of the other byte order");
  if (version != kVersion)
    r.fail("format version " + std::to_string(version) + ", this w2vlm reads version " + std::to_string(kVersion) +
           " (convert the ARPA file again with this w2vlm)");
  auto lm = std::make_shared<NGramLM>();
  const uint32_t order = r.value<uint32_t>("header");
  const uint32_t vocab_size = r.value<uint32_t>("header");
  lm->bos_ = r.value<uint32_t>("header");
  lm->eos_ = r.value<uint32_t>("header");
  const uint64_t word_bytes = r.value<uint64_t>("header");
  if (r.value<uint64_t>("header") != 0) r.fail("the header's reserved field is not zero");
  if (order < 1 || order > static_cast<uint32_t>(kMaxOrder))
    r.fail("order " + std::to_string(order) + ", expected 1 to " + std::to_string(kMaxOrder));
  if (vocab_size < 1) r.fail("the vocabulary is empty");
  if (lm->bos_ >= vocab_size || lm->eos_ >= vocab_size)
    r.fail("<s> id " + std::to_string(lm->bos_) + " or </s> id " + std::to_string(lm->eos_) +
           " is not below the vocabulary size " + std::to_string(vocab_size));
  lm->order_ = static_cast<int>(order);
  lm->counts_ = r.array<uint64_t>(order, "n-gram counts");
  std::vector<uint64_t> tables = r.array<uint64_t>(2 * (uint64_t{order} - 1), "table sizes");
  lm->uni_prob_ = r.array<float>(vocab_size, "unigram probabilities");
  lm->uni_backoff_ = r.array<float>(vocab_size, "unigram backoffs");
  for (uint32_t i = 0; i < vocab_size; ++i) check_weight_pair(r, lm->uni_prob_[i], lm->uni_backoff_[i], 1, i);

  std::vector<char> text = r.array<char>(word_bytes, "words");
  lm->vocab_.reserve(vocab_size);
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != 0) continue;
    if (lm->vocab_.size() == vocab_size)
      r.fail("the words hold more than the " + std::to_string(vocab_size) + " words of the header");
    lm->vocab_.emplace_back(text.data() + start, i - start);
    start = i + 1;
  }
  if (start != text.size() || lm->vocab_.size() != vocab_size)
    r.fail("the words hold " + std::to_string(lm->vocab_.size()) + " NUL-terminated words, the header says " +
           std::to_string(vocab_size));
  std::vector<char>().swap(text);
  if (lm->vocab_[0] != "<unk>") r.fail("word 0 is '" + lm->vocab_[0] + "', expected <unk>");
  r.skip_to(padded8(r.offset()), "words");
  lm->vocab_map_.reserve(lm->vocab_.size() * 2);
  for (uint32_t i = 0; i < vocab_size; ++i)
    if (!lm->vocab_map_.emplace(std::string_view(lm->vocab_[i]), i).second)
      r.fail("the word '" + lm->vocab_[i] + "' appears twice (ids " +
             std::to_string(lm->vocab_map_.at(lm->vocab_[i])) + " and " + std::to_string(i) + ")");

  if (order > 2) lm->middle_.resize(order - 2);
  for (uint32_t n = 2; n <= order; ++n) {
    const uint64_t capacity = tables[2 * (n - 2)], records = tables[2 * (n - 2) + 1];
    if (capacity > r.size())
      r.fail("the " + std::to_string(n) + "-gram table's capacity " + std::to_string(capacity) +
             " is larger than the file");
    if (n < order)
      read_table<MiddleTable, ProbBackoffRecord>(r, lm->middle_[n - 2], capacity, records, static_cast<int>(n));
    else
      read_table<LongestTable, ProbRecord>(r, lm->longest_, capacity, records, static_cast<int>(n));
  }
  if (r.offset() != r.size())
    r.fail("the file has " + std::to_string(r.size() - r.offset()) + " bytes after the last table (at byte " +
           std::to_string(r.offset()) + "): it is not one model");
  return lm;
}

void NGramLM::save_binary(const std::string& path) const {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw LMError(path + ": cannot create the file: " + std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> closer(f, std::fclose);
  uint64_t written = 0;
  auto put = [&](const void* data, uint64_t bytes) {
    if (bytes && std::fwrite(data, 1, static_cast<size_t>(bytes), f) != bytes)
      throw LMError(path + ": cannot write the binary n-gram file: " + std::strerror(errno));
    written += bytes;
  };
  auto put32 = [&](uint32_t v) { put(&v, 4); };
  auto put64 = [&](uint64_t v) { put(&v, 8); };
  uint64_t word_bytes = 0;
  for (const std::string& w : vocab_) word_bytes += w.size() + 1;
  put(kMagic, kMagicSize);
  put32(kVersion);
  put32(kByteOrder);
  put32(static_cast<uint32_t>(order_));
  put32(static_cast<uint32_t>(vocab_.size()));
  put32(bos_);
  put32(eos_);
  put64(word_bytes);
  put64(0);
  for (int n = 1; n <= order_; ++n) put64(static_cast<size_t>(n) <= counts_.size() ? counts_[n - 1] : 0);
  for (const MiddleTable& t : middle_) {
    put64(t.capacity());
    put64(t.size());
  }
  if (order_ > 1) {
    put64(longest_.capacity());
    put64(longest_.size());
  }
  put(uni_prob_.data(), uni_prob_.size() * sizeof(float));
  put(uni_backoff_.data(), uni_backoff_.size() * sizeof(float));
  for (const std::string& w : vocab_) put(w.c_str(), w.size() + 1);
  const char zeros[8] = {};
  put(zeros, padded8(written) - written);
  for (const MiddleTable& t : middle_) put(t.slots().data(), t.slots().size() * sizeof(ProbBackoffRecord));
  if (order_ > 1) put(longest_.slots().data(), longest_.slots().size() * sizeof(ProbRecord));
  if (std::fflush(f) != 0 || std::ferror(f))
    throw LMError(path + ": cannot write the binary n-gram file: " + std::strerror(errno));
  closer.reset();
}

}  // namespace w2vlm

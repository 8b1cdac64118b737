#include "kenlm_binary.hpp"
#include "kenlm_format.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#if defined(__unix__) || defined(__APPLE__)
#define W2VLM_HAVE_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace w2vlm {

using namespace kenlm_format;

namespace {

// ---- facts of the format (KenLM binary format version 5) --------------------------------------------------
constexpr char kMagicPrefix[] = "mmap lm http://kheafield.com/code";  // every KenLM binary starts with this
constexpr char kMagicVersionPrefix[] = "mmap lm http://kheafield.com/code format version";
constexpr char kMagicIncomplete[] = "mmap lm http://kheafield.com/code incomplete\n";
constexpr char kMagic[] = "mmap lm http://kheafield.com/code format version 5\n";  // then two NULs, padded
constexpr uint64_t kMagicField = 56;   // magic bytes padded to a multiple of 8
constexpr uint64_t kSanitySize = 88;   // magic + 3 floats + 3 uint32 + uint64
constexpr uint64_t kFixedSize = 20;    // order(u8) pad(3) multiplier(f32) type(i32) has_vocab(u8) pad(3) version(u32)
constexpr unsigned kProbingSearchVersion = 0;
constexpr unsigned kTrieSearchVersion = 1;
constexpr uint8_t kQuantVersion = 2;
constexpr uint8_t kArrayPointerVersion = 0;
constexpr unsigned kProbingVocabVersion = 0;
uint64_t align8(uint64_t x) { return (x + 7) / 8 * 8; }

// Bits needed to write the integers 0..max_value.
int bits_for(uint64_t max_value) {
  int n = 0;
  while (max_value) {
    ++n;
    max_value >>= 1;
  }
  return n;
}

// 64-bit MurmurHash (variant 64A, seed 0) of a byte string: KenLM's vocabulary hash.
uint64_t murmur64a(const void* key, size_t len) {
  const uint64_t m = 0xc6a4a7935bd1e995ULL;
  const int r = 47;
  uint64_t h = static_cast<uint64_t>(len) * m;
  const uint8_t* p = static_cast<const uint8_t*>(key);
  const size_t blocks = len / 8;
  for (size_t i = 0; i < blocks; ++i) {
    uint64_t k = load<uint64_t>(p + 8 * i);
    k *= m;
    k ^= k >> r;
    k *= m;
    h ^= k;
    h *= m;
  }
  const uint8_t* tail = p + 8 * blocks;
  const size_t rest = len & 7;
  if (rest) {
    uint64_t t = 0;
    for (size_t i = rest; i-- > 0;) t = (t << 8) | tail[i];
    h ^= t;
    h *= m;
  }
  h ^= h >> r;
  h *= m;
  h ^= h >> r;
  return h;
}

// Largest probing multiplier accepted (KenLM's default is 1.5; build_binary -p takes any value, but tables
// more than this many times sparser than needed are a damaged header, not a real model).
constexpr float kMaxProbingMultiplier = 1024.f;

// Buckets of a probing hash table holding `entries` keys with the file's multiplier (float arithmetic as in
// the writer). The multiplier is checked to be in [1, kMaxProbingMultiplier] and entries < 2^41 first, so the
// product is far below 2^64 and the conversion is defined.
uint64_t probing_buckets(uint64_t entries, float multiplier) {
  const float product = multiplier * static_cast<float>(entries);
  if (!(product >= 0.f && product < 1.8e19f)) return std::numeric_limits<uint64_t>::max();
  const uint64_t scaled = static_cast<uint64_t>(product);
  return std::max(entries + 1, scaled);
}

// Array-compressed pointers: how many high bits of each next pointer are moved out into the offsets array
// (the choice that minimises memory, given the file's maximum).
int chopped_bits(uint64_t max_offset, uint64_t max_next, int max_chop) {
  const int required = bits_for(max_next);
  int best = 0;
  int64_t lowest = std::numeric_limits<int64_t>::max();
  for (int chop = 0; chop <= std::min(required, max_chop); ++chop) {
    const int64_t table_cost = static_cast<int64_t>(max_next >> (required - chop)) * 64;
    const int64_t savings = static_cast<int64_t>(max_offset) * chop;
    if (table_cost - savings < lowest) {
      lowest = table_cost - savings;
      best = chop;
    }
  }
  return best;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
KenlmBinaryLM::~KenlmBinaryLM() {
#ifdef W2VLM_HAVE_MMAP
  if (mapped_ && data_) munmap(const_cast<uint8_t*>(data_), size_);
#endif
}

void KenlmBinaryLM::fail(const std::string& msg) const { throw LMError(path_ + ": " + msg); }

const uint8_t* KenlmBinaryLM::at(uint64_t offset, uint64_t len, const char* what) const {
  if (offset > size_ || len > size_ - offset) {
    std::ostringstream os;
    uint64_t end = 0;
    os << "truncated KenLM binary file: the " << what << " needs bytes " << offset << "..";
    if (checked_add(offset, len, end))
      os << end;
    else
      os << "(beyond 2^64)";
    os << " but the file has " << size_ << " bytes";
    fail(os.str());
  }
  return data_ + offset;
}

uint64_t KenlmBinaryLM::table_bytes(uint64_t buckets, uint64_t entry_size, const char* what) const {
  uint64_t bytes = 0;
  if (!checked_mul(buckets, entry_size, bytes) || bytes > size_)
    fail(std::string("the ") + what + " would have " + std::to_string(buckets) + " buckets of " +
         std::to_string(entry_size) + " bytes, more than the file's " + std::to_string(size_) +
         " bytes: the header's counts or probing multiplier are damaged");
  return bytes;
}

void KenlmBinaryLM::check_unigram_weights(uint64_t offset) const {
  for (uint32_t id = 0; id < bound_; ++id) {
    const uint8_t* u = unigrams_ + static_cast<uint64_t>(id) * unigram_size_;
    const float prob = trie_ ? load<float>(u) : float_of_bits(load<uint32_t>(u) | kSignBit);
    check_weights(prob, load<float>(u + 4), 1, offset + static_cast<uint64_t>(id) * unigram_size_);
  }
}

bool KenlmBinaryLM::looks_like_kenlm_binary(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  char head[sizeof(kMagicPrefix) - 1];
  f.read(head, sizeof head);
  return f.gcount() == static_cast<std::streamsize>(sizeof head) && std::memcmp(head, kMagicPrefix, sizeof head) == 0;
}

void KenlmBinaryLM::open_file() {
#ifdef W2VLM_HAVE_MMAP
  const int fd = ::open(path_.c_str(), O_RDONLY);
  if (fd < 0) fail(std::string("cannot open the language model file (") + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(std::string("cannot stat the file (") + std::strerror(e) + ")");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("is a directory, expected a KenLM binary file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
      data_ = static_cast<const uint8_t*>(p);
      mapped_ = true;
    }
  }
  ::close(fd);
  if (mapped_ || size_ == 0) return;
#endif
  // fall back to reading the whole file (8-byte aligned buffer)
  std::ifstream f(path_, std::ios::binary | std::ios::ate);
  if (!f) fail("cannot open the language model file");
  size_ = static_cast<size_t>(f.tellg());
  f.seekg(0);
  owned_.assign(size_ / 8 + 1, 0);
  f.read(reinterpret_cast<char*>(owned_.data()), static_cast<std::streamsize>(size_));
  if (static_cast<size_t>(f.gcount()) != size_) fail("could not read the whole file");
  data_ = reinterpret_cast<const uint8_t*>(owned_.data());
}

void KenlmBinaryLM::parse_header() {
  const size_t prefix_len = sizeof(kMagicPrefix) - 1;
  if (size_ < prefix_len || std::memcmp(data_, kMagicPrefix, prefix_len) != 0)
    fail("not a KenLM binary file (it does not start with KenLM's 'mmap lm http://kheafield.com/code' header); "
         "ARPA files are read with the ARPA reader");
  const size_t inc_len = sizeof(kMagicIncomplete) - 1;
  if (size_ >= inc_len && std::memcmp(data_, kMagicIncomplete, inc_len) == 0)
    fail("this KenLM binary file did not finish building (build_binary was interrupted or failed); rebuild it");
  const size_t ver_len = sizeof(kMagicVersionPrefix) - 1;
  if (size_ >= ver_len + 1 && std::memcmp(data_, kMagicVersionPrefix, ver_len) == 0) {
    // parse the version number
    size_t i = ver_len;
    while (i < size_ && data_[i] == ' ') ++i;
    long v = 0;
    size_t digits = 0;
    while (i < size_ && data_[i] >= '0' && data_[i] <= '9' && digits < 9) {
      v = v * 10 + (data_[i] - '0');
      ++i;
      ++digits;
    }
    if (digits && v != 5)
      fail("unsupported KenLM binary format version " + std::to_string(v) +
           " (this reader supports version 5, written by KenLM since 2011); rebuild the binary from its ARPA file "
           "with a current build_binary");
  }
  const size_t magic_len = sizeof(kMagic);  // includes one NUL; the writer puts a second one
  const uint8_t* h = at(0, kSanitySize, "header");
  if (std::memcmp(h, kMagic, magic_len) != 0 || h[magic_len] != 0)
    fail("unrecognised KenLM binary header (expected the magic string of format version 5)");
  // sanity values: they show the byte order, float format and word sizes of the machine that wrote the file
  const float f0 = load<float>(h + kMagicField), f1 = load<float>(h + kMagicField + 4),
              fm = load<float>(h + kMagicField + 8);
  const uint32_t one = load<uint32_t>(h + kMagicField + 12), maxw = load<uint32_t>(h + kMagicField + 16),
                 pad = load<uint32_t>(h + kMagicField + 20);
  const uint64_t one64 = load<uint64_t>(h + kMagicField + 24);
  if (!(f0 == 0.f && f1 == 1.f && fm == -0.5f && one == 1u && maxw == 0xFFFFFFFFu && pad == 0u && one64 == 1u)) {
    std::ostringstream os;
    os << "the KenLM header's test values do not match this machine's: expected floats 0, 1, -0.5, 32-bit word "
          "indices 1 and 4294967295 and a 64-bit 1, found "
       << f0 << ", " << f1 << ", " << fm << ", " << one << ", " << maxw << ", " << one64;
    if (one == 0x01000000u || one64 == (1ULL << 56))
      os << " (the file was written on a big-endian machine; rebuild it from its ARPA file on a little-endian one)";
    else if (load<uint32_t>(h + 53) == 0 && load<float>(h + 53 + 4) == 1.f)
      os << " (this is KenLM's old 32-bit layout, which KenLM itself no longer reads; rebuild it from its ARPA "
            "file)";
    else
      os << " (the file was written on a different architecture or is damaged)";
    fail(os.str());
  }
  const uint8_t* fx = at(kSanitySize, kFixedSize, "header parameters");
  order_ = fx[0];
  probing_multiplier_ = load<float>(fx + 4);
  model_type_ = load<int32_t>(fx + 8);
  has_vocabulary_ = fx[12] != 0;
  search_version_ = load<uint32_t>(fx + 16);
  if (order_ < 2 || order_ > kMaxOrder)
    fail("the header gives order " + std::to_string(order_) + "; supported orders are 2.." +
         std::to_string(kMaxOrder));
  if (model_type_ < 0 || model_type_ > 5)
    fail("unknown KenLM model type " + std::to_string(model_type_) +
         " in the header (known: 0 probing, 1 probing with rest costs, 2 trie, 3 quantized trie, 4 trie with "
         "array-compressed pointers, 5 both)");
  trie_ = model_type_ >= 2;
  const unsigned want_version = trie_ ? kTrieSearchVersion : kProbingSearchVersion;
  if (search_version_ != want_version)
    fail(std::string("the ") + kTypeNames[model_type_] + " search structure has version " +
         std::to_string(search_version_) + " but this reader supports version " + std::to_string(want_version));
  if (!trie_ && !(probing_multiplier_ >= 1.0f && probing_multiplier_ <= kMaxProbingMultiplier))
    fail("the header gives probing multiplier " + std::to_string(probing_multiplier_) + " (byte " +
         std::to_string(kSanitySize + 4) + "), expected a value in 1.." + std::to_string(kMaxProbingMultiplier));
  const uint8_t* c = at(kSanitySize + kFixedSize, 8ULL * static_cast<uint64_t>(order_), "n-gram counts");
  counts_.resize(static_cast<size_t>(order_));
  for (int i = 0; i < order_; ++i) counts_[static_cast<size_t>(i)] = load<uint64_t>(c + 8 * i);
  for (int i = 0; i < order_; ++i) {
    const uint64_t n = counts_[static_cast<size_t>(i)];
    if (n > (1ULL << 40))
      fail("the header gives an implausible count of " + std::to_string(n) + " " + std::to_string(i + 1) + "-grams");
  }
  if (counts_[0] == 0 || counts_[0] >= 0xFFFFFFFFull)
    fail("the header gives " + std::to_string(counts_[0]) + " unigrams");
  header_size_ = align8(kSanitySize + kFixedSize + 8ULL * static_cast<uint64_t>(order_));
}

// ---------------------------------------------------------------------------------------------------------------
std::shared_ptr<KenlmBinaryLM> KenlmBinaryLM::from_file(const std::string& path) {
  std::shared_ptr<KenlmBinaryLM> lm(new KenlmBinaryLM());
  lm->path_ = path;
  lm->open_file();
  lm->parse_header();
  if (!lm->has_vocabulary_)
    lm->fail("this KenLM binary has no vocabulary strings (it was built with build_binary -v), so words cannot be "
             "looked up by text; rebuild it without -v, or use its ARPA file");
  uint64_t off = lm->header_size_;
  const uint64_t n1 = lm->counts_[0];
  uint64_t vocab_bytes = 0;
  if (lm->trie_) {
    vocab_bytes = 8 + 8 * n1;
  } else {
    vocab_bytes = lm->table_bytes(probing_buckets(n1, lm->probing_multiplier_), 12, "probing vocabulary table");
    if (!checked_add(vocab_bytes, 8, vocab_bytes)) lm->fail("the probing vocabulary table size overflows");
  }
  lm->setup_vocabulary_table(off, vocab_bytes);
  off += vocab_bytes;
  off = lm->trie_ ? lm->setup_trie(off) : lm->setup_probing(off);
  lm->read_vocabulary_strings(off);
  return lm;
}

void KenlmBinaryLM::setup_vocabulary_table(uint64_t offset, uint64_t size) {
  const uint8_t* v = at(offset, size, "vocabulary table");
  if (trie_) {
    sorted_vocab_ = true;
    const uint64_t n = load<uint64_t>(v);
    if (n + 1 > counts_[0] + 1 || n == 0)
      fail("the sorted vocabulary holds " + std::to_string(n) + " words but the header announces " +
           std::to_string(counts_[0]) + " unigrams");
    bound_ = static_cast<uint32_t>(n + 1);
    vocab_hashes_ = v + 8;
  } else {
    const uint32_t version = load<uint32_t>(v), bound = load<uint32_t>(v + 4);
    if (version != kProbingVocabVersion)
      fail("the probing vocabulary has version " + std::to_string(version) + " but this reader supports version " +
           std::to_string(kProbingVocabVersion));
    if (bound == 0 || bound > counts_[0] + 1)
      fail("the probing vocabulary holds " + std::to_string(bound) + " word ids but the header announces " +
           std::to_string(counts_[0]) + " unigrams");
    bound_ = bound;
    vocab_table_ = v + 8;
    vocab_buckets_ = probing_buckets(counts_[0], probing_multiplier_);
  }
}

uint64_t KenlmBinaryLM::setup_probing(uint64_t offset) {
  const bool rest = model_type_ == 1;
  unigram_size_ = rest ? 12 : 8;  // prob, backoff (, rest)
  const uint64_t uni_bytes = (counts_[0] + 1) * unigram_size_;
  unigrams_ = at(offset, uni_bytes, "unigram array");
  check_unigram_weights(offset);
  offset += uni_bytes;
  const size_t middle_entry = rest ? 20 : 16;  // 64-bit key + weights (packed to 4 bytes)
  for (int n = 2; n < order_; ++n) {
    HashTable t;
    t.entry_size = middle_entry;
    t.buckets = probing_buckets(counts_[static_cast<size_t>(n - 1)], probing_multiplier_);
    const uint64_t bytes = table_bytes(t.buckets, t.entry_size, "middle-order hash table");
    t.base = at(offset, bytes, "middle-order hash table");
    offset += bytes;
    middle_tables_.push_back(t);
  }
  longest_table_.entry_size = 12;  // 64-bit key + prob
  longest_table_.buckets = probing_buckets(counts_.back(), probing_multiplier_);
  const uint64_t longest_bytes = table_bytes(longest_table_.buckets, 12, "highest-order hash table");
  longest_table_.base = at(offset, longest_bytes, "highest-order hash table");
  offset += longest_bytes;
  return offset;
}

uint64_t KenlmBinaryLM::setup_trie(uint64_t offset) {
  quantized_ = model_type_ == 3 || model_type_ == 5;
  array_pointers_ = model_type_ == 4 || model_type_ == 5;
  const uint64_t n1 = counts_[0];
  // 1. quantization tables
  if (quantized_) {
    const uint8_t* q = at(offset, 8, "quantization header");
    if (q[0] != kQuantVersion)
      fail("the quantization tables have version " + std::to_string(q[0]) + " but this reader supports version " +
           std::to_string(kQuantVersion));
    prob_bits_ = q[1];
    backoff_bits_ = q[2];
    if (prob_bits_ < 1 || prob_bits_ > 25 || backoff_bits_ < 1 || backoff_bits_ > 25)
      fail("the quantization header gives " + std::to_string(prob_bits_) + " probability bits and " +
           std::to_string(backoff_bits_) + " backoff bits; each must be in 1..25");
    const uint64_t np = 1ULL << prob_bits_, nb = 1ULL << backoff_bits_;
    const uint64_t floats = static_cast<uint64_t>(order_ - 2) * (np + nb) + np;
    const uint8_t* t = at(offset + 8, floats * 4, "quantization tables");
    tables_copy_.resize(floats);
    std::memcpy(tables_copy_.data(), t, floats * 4);
    for (uint64_t i = 0; i < floats; ++i)
      if (std::isnan(tables_copy_[i]) || tables_copy_[i] == std::numeric_limits<float>::infinity())
        fail("the quantization table holds a non-finite value (" + std::to_string(tables_copy_[i]) + ") at byte " +
             std::to_string(offset + 8 + 4 * i));
    offset += 8 + floats * 4;
  }
  // 2. unigrams: (prob, backoff, next) records, count + 2 of them
  unigram_size_ = 16;
  const uint64_t uni_bytes = (n1 + 2) * 16;
  unigrams_ = at(offset, uni_bytes, "unigram array");
  check_unigram_weights(offset);
  offset += uni_bytes;
  // 3. pointer compression parameter, stored at the start of the first middle order
  if (array_pointers_ && order_ > 2) {
    const uint8_t* b = at(offset, 2, "pointer compression header");
    if (b[0] != kArrayPointerVersion)
      fail("the array-compressed pointers have version " + std::to_string(b[0]) +
           " but this reader supports version " + std::to_string(kArrayPointerVersion));
    pointer_bits_ = b[1];
  }
  const int word_bits = bits_for(n1);
  if (word_bits > 57) fail("vocabulary too large for the bit-packed trie");
  // offsets past the end of the file cannot be right: they also bound the arithmetic below
  for (int n = 1; n < order_; ++n)
    if (counts_[static_cast<size_t>(n)] > 8 * static_cast<uint64_t>(size_))
      fail("the header announces " + std::to_string(counts_[static_cast<size_t>(n)]) + " " + std::to_string(n + 1) +
           "-grams, more than a file of " + std::to_string(size_) + " bytes can hold");
  // 4. middle orders
  size_t table_pos = 0;
  for (int n = 2; n < order_; ++n) {
    Middle m;
    m.entries = counts_[static_cast<size_t>(n - 1)];
    const uint64_t max_next = counts_[static_cast<size_t>(n)];
    m.word_bits = word_bits;
    if (quantized_) {
      m.quant_bits = prob_bits_ + backoff_bits_;
      m.prob_table = tables_copy_.data() + table_pos;
      table_pos += 1ULL << prob_bits_;
      m.backoff_table = tables_copy_.data() + table_pos;
      table_pos += 1ULL << backoff_bits_;
    } else {
      m.quant_bits = 63;  // 31-bit non-positive prob + 32-bit backoff
    }
    uint64_t array_bytes = 0;
    if (array_pointers_) {
      const int required = bits_for(max_next);
      const int chop = chopped_bits(m.entries + 1, max_next, pointer_bits_);
      m.next_bits = required - chop;
      m.offsets_count = (max_next >> (required - chop)) + 1;
      array_bytes = 8 * (1 + m.offsets_count) + 7;
      at(offset, array_bytes, "pointer offsets array");
      const uint64_t aligned = align8(offset);  // the array starts at the next 8-byte boundary, after 8 bytes
      m.offsets = at(aligned + 8, 8 * m.offsets_count, "pointer offsets array");
    } else {
      m.next_bits = bits_for(max_next);
    }
    m.total_bits = m.word_bits + m.quant_bits + m.next_bits;
    const uint64_t packed_bytes = ((1 + m.entries) * static_cast<uint64_t>(m.total_bits) + 7) / 8 + 8;
    m.base = at(offset + array_bytes, packed_bytes, "bit-packed middle order");
    offset += array_bytes + packed_bytes;
    middles_.push_back(m);
  }
  // 5. highest order
  longest_.entries = counts_.back();
  longest_.word_bits = word_bits;
  if (quantized_) {
    longest_.quant_bits = prob_bits_;
    longest_.prob_table = tables_copy_.data() + table_pos;
  } else {
    longest_.quant_bits = 31;
  }
  longest_.total_bits = longest_.word_bits + longest_.quant_bits;
  const uint64_t packed_bytes = ((1 + longest_.entries) * static_cast<uint64_t>(longest_.total_bits) + 7) / 8 + 8;
  longest_.base = at(offset, packed_bytes, "bit-packed highest order");
  offset += packed_bytes;
  // unigram next pointers must be non-decreasing and within the bigrams
  const uint64_t last = load<uint64_t>(unigrams_ + 16 * static_cast<uint64_t>(bound_) + 8);
  const uint64_t n2 = counts_[1];
  if (last > n2)
    fail("the unigram array points past the bigrams (" + std::to_string(last) + " > " + std::to_string(n2) +
         "): the file is damaged");
  return offset;
}

void KenlmBinaryLM::read_vocabulary_strings(uint64_t offset) {
  if (offset > size_)
    fail("truncated KenLM binary file: the n-gram data ends at byte " + std::to_string(offset) +
         " but the file has " + std::to_string(size_) + " bytes");
  const char* p = reinterpret_cast<const char*>(data_ + offset);
  const char* end = reinterpret_cast<const char*>(data_ + size_);
  words_.clear();
  words_.reserve(bound_);
  while (p < end) {
    const char* z = static_cast<const char*>(std::memchr(p, '\0', static_cast<size_t>(end - p)));
    if (!z) fail("the vocabulary strings at the end of the file are not NUL-terminated (truncated file?)");
    words_.emplace_back(p, static_cast<size_t>(z - p));
    p = z + 1;
  }
  if (words_.empty() || words_[0] != "<unk>")
    fail("the vocabulary strings do not start with <unk> where expected (byte " + std::to_string(offset) +
         "): the file is damaged or laid out differently");
  if (words_.size() != bound_)
    fail("the file has " + std::to_string(words_.size()) + " vocabulary strings but its vocabulary table has " +
         std::to_string(bound_) + " word ids (truncated file?)");
  // check the strings against the hashed lookup structure, and index them
  word_map_.clear();
  word_map_.reserve(words_.size() * 2);
  for (uint32_t id = 1; id < bound_; ++id) {
    const std::string_view w = words_[id];
    const uint64_t h = murmur64a(w.data(), w.size());
    bool ok = false;
    if (sorted_vocab_) {
      ok = load<uint64_t>(vocab_hashes_ + 8ULL * (id - 1)) == h;
    } else {
      uint64_t i = h % vocab_buckets_;
      for (uint64_t probes = 0; probes < vocab_buckets_; ++probes) {
        const uint8_t* e = vocab_table_ + 12 * i;
        const uint64_t key = load<uint64_t>(e);
        if (key == h) {
          ok = load<uint32_t>(e + 8) == id;
          break;
        }
        if (key == 0) break;
        if (++i == vocab_buckets_) i = 0;
      }
    }
    if (!ok)
      fail("vocabulary string " + std::to_string(id) + " ('" + escape_bytes(w, 40) +
           "') does not match the file's hashed vocabulary: the file is damaged");
    word_map_.emplace(w, id);
  }
  auto find = [&](std::string_view w) -> uint32_t {
    auto it = word_map_.find(w);
    return it == word_map_.end() ? kUnk : it->second;
  };
  bos_ = find("<s>");
  eos_ = find("</s>");
}

}  // namespace w2vlm

// Native reader of KenLM's binary language model files (the ".bin"/".binary" files written by KenLM's
// build_binary), so that they can be used with no KenLM installed.
//
// Written from the documented behaviour of the format (binary format version 5):
//   - a header: magic string, sanity values (floats 0, 1, -0.5; 32-bit word indices 1 and 2^32-1; a 64-bit 1),
//     the fixed parameters (order, probing multiplier, model type, has-vocabulary flag, search version) and the
//     n-gram counts;
//   - the vocabulary lookup structure (a probing hash table of 64-bit MurmurHash64A word hashes, or a sorted
//     array of them for the trie models);
//   - the search structure: either probing hash tables (one per order, keyed by a hash of the word-id
//     sequence), or a reversed trie with bit-packed records, optionally with quantized weights and with
//     array-compressed ("bhiksha") next pointers;
//   - the vocabulary strings, NUL-separated, in word-id order (only when the binary has them).
// Model types 0 (probing), 1 (probing with rest costs), 2 (trie), 3 (trie, quantized), 4 (trie, array pointers)
// and 5 (trie, quantized, array pointers) are read. Scores are computed the way KenLM computes them, so they
// equal KenLM's for the same file (quantized files give the quantized values, as KenLM does).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ngram.hpp"

namespace w2vlm {

class KenlmBinaryLM final : public LMBackend {
 public:
  // Open and validate a KenLM binary file. Throws LMError naming the file and what is wrong.
  static std::shared_ptr<KenlmBinaryLM> from_file(const std::string& path);
  // True if the file starts with KenLM's binary magic string (any version, complete or not).
  static bool looks_like_kenlm_binary(const std::string& path);

  KenlmBinaryLM(const KenlmBinaryLM&) = delete;
  KenlmBinaryLM& operator=(const KenlmBinaryLM&) = delete;
  ~KenlmBinaryLM() override;

  int order() const override { return order_; }
  uint32_t bos() const override { return bos_; }
  uint32_t eos() const override { return eos_; }
  uint32_t word_id(std::string_view word) const override;
  bool contains(std::string_view word) const override { return word_id(word) != kUnk; }
  void begin_sentence_state(LMState& s) const override;
  void null_state(LMState& s) const override { s.length = 0; }
  float score_word(const LMState& in, uint32_t word, std::string_view, LMState& out) const override {
    return score(in, word, out);
  }
  std::vector<std::string> list_vocab() const override;
  void check_state(const LMState& s, const char* what) const override {
    check_native_state(s, order_, bound_, what);
  }
  // The text of a word id ("<unk>" for ids out of range).
  std::string_view word_text(uint32_t id) const { return id < words_.size() ? words_[id] : words_[0]; }

  // log10 p(word | in) as KenLM's FullScore computes it; `out` receives the state after `word` (may alias `in`).
  float score(const LMState& in, uint32_t word, LMState& out) const;

  const std::string& path() const { return path_; }
  const std::vector<uint64_t>& counts() const { return counts_; }
  size_t vocab_size() const { return words_.size(); }
  int model_type() const { return model_type_; }
  std::string model_type_name() const;
  int prob_bits() const { return quantized_ ? prob_bits_ : 0; }
  int backoff_bits() const { return quantized_ ? backoff_bits_ : 0; }
  int pointer_bhiksha_bits() const { return array_pointers_ ? pointer_bits_ : 0; }
  float probing_multiplier() const { return probing_multiplier_; }
  size_t file_size() const { return size_; }

 private:
  KenlmBinaryLM() = default;

  // Where a lookup stands: for the probing model the running hash of the word sequence, for the trie the
  // range of child records [begin, end) in the next order.
  struct Node {
    uint64_t hash = 0;
    uint64_t begin = 0, end = 0;
  };
  struct Weights {
    float prob = 0.f;
    float backoff = 0.f;
    bool independent_left = false;  // no longer n-gram ends with this one: stop extending to the left
  };
  // Lookups: return false when the n-gram is not in the model.
  void lookup_unigram(uint32_t word, Node& node, Weights& w) const;
  bool lookup_middle(int order_minus_2, uint32_t word, Node& node, Weights& w) const;
  bool lookup_longest(uint32_t word, const Node& node, float& prob) const;

  // setup
  void open_file();
  void parse_header();
  void setup_vocabulary_table(uint64_t offset, uint64_t size);
  uint64_t setup_probing(uint64_t offset);
  uint64_t setup_trie(uint64_t offset);
  void read_vocabulary_strings(uint64_t offset);
  [[noreturn]] void fail(const std::string& msg) const;
  // bytes of a table of `buckets` entries of `entry_size` bytes; fails when the product overflows
  uint64_t table_bytes(uint64_t buckets, uint64_t entry_size, const char* what) const;
  // every unigram record of the array at `offset` has a usable probability and backoff
  void check_unigram_weights(uint64_t offset) const;
  // a weight read during lookup: NaN (or a positive infinite probability, or an infinite backoff) is damage
  void check_weights(float prob, float backoff, int order, uint64_t where) const;
  const uint8_t* at(uint64_t offset, uint64_t len, const char* what) const;

  // bit-packed reads (little-endian, as the file is)
  uint64_t read_bits(const uint8_t* base, uint64_t bit_off, int bits) const;
  // trie: index of `word` among the records [begin, end) of a bit-packed array, or false
  bool find_packed(const uint8_t* base, int word_bits, int total_bits, uint64_t begin, uint64_t end, uint32_t word,
                   uint64_t& index) const;

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint64_t> owned_;  // file contents when not memory-mapped

  int order_ = 0;
  int model_type_ = -1;
  float probing_multiplier_ = 0.f;
  bool has_vocabulary_ = false;
  unsigned search_version_ = 0;
  std::vector<uint64_t> counts_;
  uint64_t header_size_ = 0;

  // vocabulary
  uint32_t bound_ = 0;  // number of word ids, <unk> included
  uint32_t bos_ = 0, eos_ = 0;
  std::vector<std::string_view> words_;  // views into the file
  std::unordered_map<std::string_view, uint32_t> word_map_;
  bool sorted_vocab_ = false;
  const uint8_t* vocab_hashes_ = nullptr;  // trie: sorted hashes of words 1..bound-1
  const uint8_t* vocab_table_ = nullptr;   // probing: hash table of (hash, id) records
  uint64_t vocab_buckets_ = 0;

  // probing search
  struct HashTable {
    const uint8_t* base = nullptr;
    uint64_t buckets = 0;
    size_t entry_size = 0;
  };
  const uint8_t* unigrams_ = nullptr;
  size_t unigram_size_ = 0;  // bytes per unigram record
  std::vector<HashTable> middle_tables_;
  HashTable longest_table_;

  // trie search
  bool trie_ = false;
  bool quantized_ = false;
  bool array_pointers_ = false;
  int prob_bits_ = 0, backoff_bits_ = 0, pointer_bits_ = 0;
  struct Middle {
    const uint8_t* base = nullptr;  // bit-packed records
    int word_bits = 0, quant_bits = 0, next_bits = 0, total_bits = 0;
    uint64_t entries = 0;
    const float* prob_table = nullptr;     // quantized: centers
    const float* backoff_table = nullptr;
    const uint8_t* offsets = nullptr;      // array pointers: uint64 offsets
    uint64_t offsets_count = 0;
  };
  std::vector<Middle> middles_;
  struct Longest {
    const uint8_t* base = nullptr;
    int word_bits = 0, quant_bits = 0, total_bits = 0;
    uint64_t entries = 0;
    const float* prob_table = nullptr;
  } longest_;
  std::vector<float> tables_copy_;  // quantization centers, copied out of the file (alignment)
};

}  // namespace w2vlm

// Native n-gram language model: ARPA loading into hashed tables of integer word ids, backoff scoring.
//
// The layout follows the idea of KenLM's "probing" structure: one open-addressing table per order keyed by a
// 64-bit hash of the word-id sequence (the sequence itself is not stored), probability and backoff as floats
// (hash_table.hpp: 1.5 slots per n-gram, 16-byte records, 12 for the highest order, which has no backoffs).
// Scores are log10, exactly as in the ARPA file, with standard backoff:
//   log p(w | h) = log p(longest suffix of h, w) + sum of backoffs of the longer contexts that exist.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common.hpp"
#include "hash_table.hpp"

namespace w2vlm {

constexpr int kMaxOrder = 10;

// Context of an n-gram LM, most recent word first. Only the suffix that can still match an n-gram is kept
// (if "a b" is not an n-gram of the model, no longer context starting with "a b" can be one either).
struct LMState {
  uint32_t length = 0;
  uint32_t words[kMaxOrder - 1] = {};
  float backoff[kMaxOrder - 1] = {};
};

// Throws InputError unless `s` is a state this LM can have made: at most order-1 context words, each an id of
// its vocabulary (fewer than `num_ids`), finite backoffs. `what` names the state in the message.
void check_native_state(const LMState& s, int order, uint64_t num_ids, const char* what);

// What the decoder needs from an n-gram LM. Word ids are the backend's; `word` is the same word as text, for
// backends that work on strings (KenLM through its Python module).
class LMBackend {
 public:
  static constexpr uint32_t kUnk = 0;
  virtual ~LMBackend() = default;
  virtual int order() const = 0;
  virtual uint32_t eos() const = 0;
  virtual uint32_t word_id(std::string_view word) const = 0;
  virtual bool contains(std::string_view word) const = 0;
  virtual void begin_sentence_state(LMState& s) const = 0;
  virtual void null_state(LMState& s) const = 0;
  virtual float score_word(const LMState& in, uint32_t word, std::string_view text, LMState& out) const = 0;
  // The vocabulary, if the backend can list it (empty otherwise).
  virtual std::vector<std::string> list_vocab() const { return {}; }
  virtual uint32_t bos() const = 0;
  // True if score_word() needs the word as text (ids alone do not identify it).
  virtual bool needs_text() const { return false; }
  // States come back from Python (a previous result's LM state, a pickle): before one is used, check that it
  // belongs to this LM. Throws InputError naming `what` otherwise.
  virtual void check_state(const LMState& s, const char* what) const = 0;
};

class ArpaParser;

class NGramLM final : public LMBackend {
 public:
  static constexpr uint32_t kUnk = 0;

  // Parse an ARPA text. `name` is used in error messages (the file path). Both go through ArpaParser
  // (arpa_reader.hpp), which also reads a text fed in chunks (a .gz decompressed block by block).
  static std::shared_ptr<NGramLM> from_arpa(std::string_view text, const std::string& name);
  // Reads the file in blocks: the whole text is never held.
  static std::shared_ptr<NGramLM> from_arpa_file(const std::string& path);
  // w2vlm's binary form of a loaded model (ngram_binary.cpp): the tables as they are in memory, so loading is
  // reading them back (and checking them), with no parsing or hashing. from_binary_file throws LMError naming
  // the file, the field and what was expected for anything that is not such a file, complete and intact.
  static std::shared_ptr<NGramLM> from_binary_file(const std::string& path);
  void save_binary(const std::string& path) const;
  // True if the file starts with the binary form's magic string.
  static bool looks_like_binary(const std::string& path);

  int order() const override { return order_; }
  uint32_t bos() const override { return bos_; }
  uint32_t eos() const override { return eos_; }
  size_t vocab_size() const { return vocab_.size(); }
  const std::vector<std::string>& vocab() const { return vocab_; }
  const std::vector<std::string>& warnings() const { return warnings_; }
  const std::vector<uint64_t>& counts() const { return counts_; }

  // Word id, or kUnk when the word is not in the vocabulary.
  uint32_t word_id(std::string_view word) const override;
  // True for words of the vocabulary other than <unk> (KenLM's `word in model`).
  bool contains(std::string_view word) const override { return word_id(word) != kUnk; }

  void begin_sentence_state(LMState& s) const override;
  void null_state(LMState& s) const override { s.length = 0; }
  float score_word(const LMState& in, uint32_t word, std::string_view, LMState& out) const override {
    return score(in, word, out);
  }
  std::vector<std::string> list_vocab() const override { return vocab_; }
  void check_state(const LMState& s, const char* what) const override {
    check_native_state(s, order_, vocab_.size(), what);
  }
  // log10 p(word | in); writes the context after `word` to `out` (may alias `in`: no).
  float score(const LMState& in, uint32_t word, LMState& out) const;

  size_t memory_bytes() const;

 private:
  friend class ArpaParser;
  using MiddleTable = ProbingTable<ProbBackoffRecord>;
  using LongestTable = ProbingTable<ProbRecord>;

  static uint64_t first_key(uint32_t w) {
    uint64_t k = mix64(static_cast<uint64_t>(w) + 1);
    return k ? k : 1;
  }
  static uint64_t extend_key(uint64_t k, uint32_t w) {
    uint64_t r = hash_combine(k, static_cast<uint64_t>(w) + 1);
    return r ? r : 1;
  }
  // key of ids[0..n) given in text order (last word last)
  static uint64_t key_of(const uint32_t* ids, int n) {
    uint64_t k = first_key(ids[n - 1]);
    for (int i = n - 2; i >= 0; --i) k = extend_key(k, ids[i]);
    return k;
  }
  // the n-gram ids[0..n) of a middle order (1 < n < order), or null
  const ProbBackoffRecord* find_middle(const uint32_t* ids, int n) const;
  // log10 p(ids[n-1] | ids[0..n-1)) by backoff, for n < order
  float backoff_score(const uint32_t* ids, int n) const;

  int order_ = 0;
  uint32_t bos_ = 0, eos_ = 0;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string_view, uint32_t> vocab_map_;
  std::vector<float> uni_prob_, uni_backoff_;
  std::vector<MiddleTable> middle_;  // middle_[n - 2] holds the n-grams of order n, 1 < n < order
  LongestTable longest_;             // the n-grams of the highest order (when it is above 1)
  std::vector<uint64_t> counts_;
  std::vector<std::string> warnings_;
};

// Character trie over the known words (unigrams) of a language model: walking it as characters arrive tells
// in O(1) per character whether a partial word is a prefix of a known word, and a finished word yields its id.
class CharTrie {
 public:
  static constexpr int32_t kNone = -1;
  CharTrie() { nodes_.push_back(Node{}); }
  void insert(const std::vector<uint32_t>& cps, uint32_t word_id);
  int32_t root() const { return 0; }
  int32_t child(int32_t node, uint32_t cp) const {
    if (node < 0) return kNone;
    auto it = edges_.find((static_cast<uint64_t>(node) << 32) | cp);
    return it == edges_.end() ? kNone : it->second;
  }
  // Word id at a node, or -1 when no word ends there.
  int64_t word_at(int32_t node) const { return node < 0 ? -1 : nodes_[static_cast<size_t>(node)].word; }
  size_t size() const { return nodes_.size(); }
  size_t num_words() const { return num_words_; }

 private:
  struct Node {
    int64_t word = -1;
  };
  std::vector<Node> nodes_;
  std::unordered_map<uint64_t, int32_t> edges_;
  size_t num_words_ = 0;
};

}  // namespace w2vlm

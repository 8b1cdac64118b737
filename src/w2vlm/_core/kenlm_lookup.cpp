// KenLM binary files, the lookup half: word ids, the probing tables' and the trie's searches, and scoring the
// way KenLM scores (kenlm_binary.cpp opens and checks the file and lays out the structures these read).
#include <algorithm>
#include <cstring>
#include <sstream>

#include "kenlm_binary.hpp"
#include "kenlm_format.hpp"

namespace w2vlm {

using namespace kenlm_format;

// (here, beside the lookups that call it for every record they read)
void KenlmBinaryLM::check_weights(float prob, float backoff, int order, uint64_t where) const {
  if (!valid_weights(prob, backoff)) {
    std::ostringstream os;
    os << "damaged KenLM binary file: a " << order << "-gram record (at byte " << where
       << ") has log10 probability " << prob << " and backoff " << backoff
       << "; expected a probability <= 0 (or -inf) and a finite backoff";
    fail(os.str());
  }
}

uint32_t KenlmBinaryLM::word_id(std::string_view word) const {
  auto it = word_map_.find(word);
  return it == word_map_.end() ? kUnk : it->second;
}

std::vector<std::string> KenlmBinaryLM::list_vocab() const {
  std::vector<std::string> out;
  out.reserve(words_.size());
  for (const auto& w : words_) out.emplace_back(w);
  return out;
}

std::string KenlmBinaryLM::model_type_name() const {
  return model_type_ >= 0 && model_type_ <= 5 ? kTypeNames[model_type_] : "unknown";
}

uint64_t KenlmBinaryLM::read_bits(const uint8_t* base, uint64_t bit_off, int bits) const {
  const uint64_t word = load<uint64_t>(base + (bit_off >> 3));
  const uint64_t mask = bits >= 64 ? ~0ULL : ((1ULL << bits) - 1);
  return (word >> (bit_off & 7)) & mask;
}

bool KenlmBinaryLM::find_packed(const uint8_t* base, int word_bits, int total_bits, uint64_t begin, uint64_t end,
                                uint32_t word, uint64_t& index) const {
  // records [begin, end) are sorted by word id: binary search
  while (begin < end) {
    const uint64_t mid = begin + (end - begin) / 2;
    const uint64_t w = read_bits(base, mid * static_cast<uint64_t>(total_bits), word_bits);
    if (w < word) {
      begin = mid + 1;
    } else if (w > word) {
      end = mid;
    } else {
      index = mid;
      return true;
    }
  }
  return false;
}

void KenlmBinaryLM::lookup_unigram(uint32_t word, Node& node, Weights& w) const {
  if (word >= bound_) word = kUnk;
  const uint8_t* u = unigrams_ + static_cast<uint64_t>(word) * unigram_size_;
  if (!trie_) {
    const uint32_t raw = load<uint32_t>(u);
    w.prob = float_of_bits(raw | kSignBit);
    w.independent_left = (raw & kSignBit) != 0;
    w.backoff = load<float>(u + 4);
    node.hash = word;
  } else {
    w.prob = load<float>(u);
    w.backoff = load<float>(u + 4);
    node.begin = load<uint64_t>(u + 8);
    node.end = load<uint64_t>(u + 16 + 8);
    w.independent_left = node.begin >= node.end;
  }
}

bool KenlmBinaryLM::lookup_middle(int k, uint32_t word, Node& node, Weights& w) const {
  if (!trie_) {
    node.hash = extend_hash(node.hash, word);
    const HashTable& t = middle_tables_[static_cast<size_t>(k)];
    uint64_t i = node.hash % t.buckets;
    for (uint64_t probes = 0; probes < t.buckets; ++probes) {
      const uint8_t* e = t.base + i * t.entry_size;
      const uint64_t key = load<uint64_t>(e);
      if (key == node.hash) {
        const uint32_t raw = load<uint32_t>(e + 8);
        w.prob = float_of_bits(raw | kSignBit);
        w.independent_left = (raw & kSignBit) != 0;
        w.backoff = load<float>(e + 12);
        check_weights(w.prob, w.backoff, k + 2, static_cast<uint64_t>(e - data_));
        return true;
      }
      if (key == 0) break;
      if (++i == t.buckets) i = 0;
    }
    w.independent_left = true;
    return false;
  }
  const Middle& m = middles_[static_cast<size_t>(k)];
  uint64_t idx = 0;
  const uint64_t end = std::min(node.end, m.entries);
  if (!find_packed(m.base, m.word_bits, m.total_bits, node.begin, end, word, idx)) {
    w.independent_left = true;
    return false;
  }
  const uint64_t addr = idx * static_cast<uint64_t>(m.total_bits) + static_cast<uint64_t>(m.word_bits);
  if (quantized_) {
    w.backoff = m.backoff_table[read_bits(m.base, addr, backoff_bits_)];
    w.prob = m.prob_table[read_bits(m.base, addr + static_cast<uint64_t>(backoff_bits_), prob_bits_)];
  } else {
    w.prob = float_of_bits(static_cast<uint32_t>(read_bits(m.base, addr, 31)) | kSignBit);
    w.backoff = float_of_bits(static_cast<uint32_t>(read_bits(m.base, addr + 31, 32)));
  }
  check_weights(w.prob, w.backoff, k + 2, static_cast<uint64_t>(m.base - data_) + (addr >> 3));
  // next pointers: this record's and the following record's give the children's range
  const uint64_t next_at = addr + static_cast<uint64_t>(m.quant_bits);
  uint64_t b = read_bits(m.base, next_at, m.next_bits);
  uint64_t e = read_bits(m.base, next_at + static_cast<uint64_t>(m.total_bits), m.next_bits);
  if (array_pointers_) {
    // high bits: position of the last offset <= index (resp. index + 1)
    auto high = [&](uint64_t index) -> uint64_t {
      uint64_t lo = 0, hi = m.offsets_count;  // first offset > index
      while (lo < hi) {
        const uint64_t mid = lo + (hi - lo) / 2;
        if (load<uint64_t>(m.offsets + 8 * mid) <= index)
          lo = mid + 1;
        else
          hi = mid;
      }
      return lo == 0 ? 0 : lo - 1;
    };
    b |= high(idx) << m.next_bits;
    e |= high(idx + 1) << m.next_bits;
  }
  node.begin = b;
  node.end = e;
  w.independent_left = b >= e;
  return true;
}

bool KenlmBinaryLM::lookup_longest(uint32_t word, const Node& node, float& prob) const {
  if (!trie_) {
    const uint64_t h = extend_hash(node.hash, word);
    const HashTable& t = longest_table_;
    uint64_t i = h % t.buckets;
    for (uint64_t probes = 0; probes < t.buckets; ++probes) {
      const uint8_t* e = t.base + i * t.entry_size;
      const uint64_t key = load<uint64_t>(e);
      if (key == h) {
        prob = load<float>(e + 8);
        check_weights(prob, 0.f, order_, static_cast<uint64_t>(e - data_));
        return true;
      }
      if (key == 0) return false;
      if (++i == t.buckets) i = 0;
    }
    return false;
  }
  uint64_t idx = 0;
  const uint64_t end = std::min(node.end, longest_.entries);
  if (!find_packed(longest_.base, longest_.word_bits, longest_.total_bits, node.begin, end, word, idx)) return false;
  const uint64_t addr = idx * static_cast<uint64_t>(longest_.total_bits) + static_cast<uint64_t>(longest_.word_bits);
  if (quantized_)
    prob = longest_.prob_table[read_bits(longest_.base, addr, prob_bits_)];
  else
    prob = float_of_bits(static_cast<uint32_t>(read_bits(longest_.base, addr, 31)) | kSignBit);
  check_weights(prob, 0.f, order_, static_cast<uint64_t>(longest_.base - data_) + (addr >> 3));
  return true;
}

void KenlmBinaryLM::begin_sentence_state(LMState& s) const {
  Node node;
  Weights w;
  lookup_unigram(bos_, node, w);
  s.length = 1;
  s.words[0] = bos_;
  s.backoff[0] = w.backoff;
}

float KenlmBinaryLM::score(const LMState& in, uint32_t word, LMState& out_ref) const {
  if (word >= bound_) word = kUnk;
  LMState out;
  Node node;
  Weights w;
  lookup_unigram(word, node, w);
  float prob = w.prob;
  out.words[0] = word;
  out.backoff[0] = w.backoff;
  out.length = can_extend(w.backoff) ? 1 : 0;
  uint32_t matched = 1;  // length of the n-gram that gave the probability
  const uint32_t in_len = std::min<uint32_t>(in.length, kMaxOrder - 1);
  const uint32_t ctx = std::min<uint32_t>(in_len, static_cast<uint32_t>(order_ - 1));
  bool independent = w.independent_left;
  for (uint32_t k = 0; k < ctx && !independent; ++k) {
    uint32_t cw = in.words[k];
    if (cw >= bound_) cw = kUnk;
    if (static_cast<int>(k) == order_ - 2) {
      float p = 0.f;
      if (lookup_longest(cw, node, p)) {
        prob = p;
        matched = static_cast<uint32_t>(order_);
      }
      break;
    }
    if (!lookup_middle(static_cast<int>(k), cw, node, w)) break;
    prob = w.prob;
    matched = k + 2;
    out.backoff[k + 1] = w.backoff;
    if (can_extend(w.backoff)) out.length = k + 2;
    independent = w.independent_left;
  }
  for (uint32_t i = 1; i < out.length; ++i) out.words[i] = in.words[i - 1];
  for (uint32_t i = matched - 1; i < in_len; ++i) prob += in.backoff[i];
  out_ref = out;
  return prob;
}

}  // namespace w2vlm

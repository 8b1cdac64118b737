#include "ngram.hpp"

#include <algorithm>
#include <cmath>

namespace w2vlm {

void check_native_state(const LMState& s, int order, uint64_t num_ids, const char* what) {
  const uint32_t max_len = order > 1 ? static_cast<uint32_t>(order - 1) : 0;
  if (s.length > max_len)
    throw InputError(std::string(what) + " has " + std::to_string(s.length) + " context words but this " +
                     std::to_string(order) + "-gram language model keeps at most " + std::to_string(max_len) +
                     " (was it made by another language model?)");
  for (uint32_t i = 0; i < s.length; ++i) {
    if (s.words[i] >= num_ids)
      throw InputError(std::string(what) + " holds word id " + std::to_string(s.words[i]) +
                       " but this language model has " + std::to_string(num_ids) +
                       " words (was it made by another language model?)");
    if (!std::isfinite(s.backoff[i]))
      throw InputError(std::string(what) + " holds a non-finite backoff weight (" + std::to_string(s.backoff[i]) + ")");
  }
}

uint32_t NGramLM::word_id(std::string_view word) const {
  auto it = vocab_map_.find(word);
  return it == vocab_map_.end() ? kUnk : it->second;
}

const ProbBackoffRecord* NGramLM::find_middle(const uint32_t* ids, int n) const {
  if (n < 2 || n >= order_) return nullptr;
  return middle_[static_cast<size_t>(n) - 2].find(key_of(ids, n));
}

float NGramLM::backoff_score(const uint32_t* ids, int n) const {
  // log10 p(ids[n-1] | ids[0..n-1)) with backoff, from the tables as they are
  if (n == 1) return uni_prob_[ids[0]];
  if (const ProbBackoffRecord* e = find_middle(ids, n)) return e->prob;
  float bo = 0.f;
  if (n - 1 == 1) {
    bo = uni_backoff_[ids[0]];
  } else if (const ProbBackoffRecord* c = find_middle(ids, n - 1)) {
    bo = c->backoff;
  }
  return bo + backoff_score(ids + 1, n - 1);
}

void NGramLM::begin_sentence_state(LMState& s) const {
  s.length = order_ > 1 ? 1 : 0;
  s.words[0] = bos_;
  s.backoff[0] = uni_backoff_[bos_];
}

float NGramLM::score(const LMState& in, uint32_t word, LMState& out) const {
  if (word >= uni_prob_.size()) word = kUnk;
  // a context longer than the model's (checked where states enter; clamped here so the tables are never overrun)
  const uint32_t in_len = std::min<uint32_t>(in.length, order_ > 1 ? static_cast<uint32_t>(order_ - 1) : 0);
  float prob = uni_prob_[word];
  out.words[0] = word;
  out.backoff[0] = uni_backoff_[word];
  uint32_t out_len = order_ > 1 ? 1 : 0;
  uint32_t matched_ctx = 0;  // length of the context used by the probability
  uint64_t key = first_key(word);
  for (uint32_t i = 0; i < in_len; ++i) {
    key = extend_key(key, in.words[i]);
    if (static_cast<int>(i) + 2 < order_) {
      const ProbBackoffRecord* e = middle_[i].find(key);
      if (!e) break;
      prob = e->prob;
      matched_ctx = i + 1;
      out.words[i + 1] = in.words[i];
      out.backoff[i + 1] = e->backoff;
      out_len = i + 2;
    } else {
      const ProbRecord* e = longest_.find(key);
      if (!e) break;
      prob = e->prob;
      matched_ctx = i + 1;
    }
  }
  for (uint32_t i = matched_ctx; i < in_len; ++i) prob += in.backoff[i];
  out.length = out_len;
  return prob;
}

size_t NGramLM::memory_bytes() const {
  size_t b = uni_prob_.size() * 8;
  for (const auto& t : middle_) b += t.bytes();
  b += longest_.bytes();
  for (const auto& w : vocab_) b += w.size() + 32;
  b += vocab_map_.size() * 48;
  return b;
}

void CharTrie::insert(const std::vector<uint32_t>& cps, uint32_t word_id) {
  int32_t node = 0;
  for (uint32_t cp : cps) {
    const uint64_t key = (static_cast<uint64_t>(node) << 32) | cp;
    auto it = edges_.find(key);
    if (it == edges_.end()) {
      const int32_t id = static_cast<int32_t>(nodes_.size());
      nodes_.push_back(Node{});
      edges_.emplace(key, id);
      node = id;
    } else {
      node = it->second;
    }
  }
  if (nodes_[static_cast<size_t>(node)].word < 0) ++num_words_;
  nodes_[static_cast<size_t>(node)].word = word_id;
}

}  // namespace w2vlm

// Hotword (phrase) biasing with an Aho-Corasick automaton over characters.
//
// Each phrase "w1 w2 ... wn" with weight W becomes the pattern " w1 w2 ... wn " (word boundaries on both
// sides). A hypothesis is the character stream " word word partial"; every beam carries its automaton state,
// so extending a beam by one character is one table lookup whatever the number of phrases.
//
// Score of a beam = (sum of W*n over phrases completed so far) + potential(state), where the potential gives
// partial credit while a phrase is being spelled: W*n * (letters matched so far) / (letters of the phrase),
// maximised over the phrases that continue from the state. When the spelling leaves the phrase the potential
// drops back, so partial credit is never kept by a hypothesis that does not finish the phrase.
// For one-word hotwords this is exactly pyctcdecode's hotword scoring (weight per occurrence, partial credit
// len(prefix)/len(shortest hotword with that prefix)), without its cost growing with the list.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace w2vlm {

class HotwordAutomaton {
 public:
  // phrases: (text, weight); words separated by single spaces (callers normalise whitespace). Throws
  // InputError for a weight that is not finite (as a 32-bit float, times the phrase's words).
  explicit HotwordAutomaton(const std::vector<std::pair<std::string, float>>& phrases);

  bool empty() const { return num_patterns_ == 0; }
  int32_t root() const { return 0; }
  // State after reading one code point: the goto edge if there is one, else the same from the failure state.
  // Memory is linear in the phrases' characters (no dense states x characters table); a step follows at most
  // as many failure links as the longest phrase has characters.
  int32_t step(int32_t state, uint32_t cp) const { return step_class(state, class_of(cp)); }
  int32_t step_space(int32_t state) const { return step_class(state, space_class_); }
  // Total weight of the phrases that end at `state` (all of them: suffixes included).
  float completed(int32_t state) const { return out_[static_cast<size_t>(state)]; }
  float potential(int32_t state) const { return potential_[static_cast<size_t>(state)]; }
  size_t num_states() const { return potential_.size(); }
  size_t num_patterns() const { return num_patterns_; }

 private:
  uint32_t class_of(uint32_t cp) const {
    if (cp < 128) return ascii_class_[cp];
    auto it = classes_.find(cp);
    return it == classes_.end() ? 0u : it->second;
  }
  // goto edge of `state` on character class `c`, or -1
  int32_t edge(int32_t state, uint32_t c) const;
  int32_t step_class(int32_t state, uint32_t c) const {
    if (c == 0) return 0;  // a character no phrase contains: back to the root
    while (true) {
      const int32_t nx = edge(state, c);
      if (nx >= 0) return nx;
      if (state == 0) return 0;
      state = fail_[static_cast<size_t>(state)];
    }
  }
  uint32_t num_classes_ = 1;
  uint32_t space_class_ = 0;
  uint32_t ascii_class_[128] = {};
  std::unordered_map<uint32_t, uint32_t> classes_;
  // goto edges in compressed rows: the edges of state s are [edge_begin_[s], edge_begin_[s+1]), sorted by class
  std::vector<uint32_t> edge_begin_;
  std::vector<uint32_t> edge_class_;
  std::vector<int32_t> edge_next_;
  std::vector<int32_t> fail_;
  std::vector<float> out_;
  std::vector<float> potential_;
  size_t num_patterns_ = 0;
};

}  // namespace w2vlm

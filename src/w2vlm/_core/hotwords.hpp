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
  // phrases: (text, weight); words separated by single spaces (callers normalise whitespace).
  explicit HotwordAutomaton(const std::vector<std::pair<std::string, float>>& phrases);

  bool empty() const { return num_patterns_ == 0; }
  int32_t root() const { return 0; }
  // State after reading one code point.
  int32_t step(int32_t state, uint32_t cp) const {
    return delta_[static_cast<size_t>(state) * num_classes_ + class_of(cp)];
  }
  int32_t step_space(int32_t state) const { return delta_[static_cast<size_t>(state) * num_classes_ + space_class_]; }
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
  uint32_t num_classes_ = 1;
  uint32_t space_class_ = 0;
  uint32_t ascii_class_[128] = {};
  std::unordered_map<uint32_t, uint32_t> classes_;
  std::vector<int32_t> delta_;
  std::vector<float> out_;
  std::vector<float> potential_;
  size_t num_patterns_ = 0;
};

}  // namespace w2vlm

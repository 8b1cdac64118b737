#include "hotwords.hpp"

#include <algorithm>
#include <deque>

#include "common.hpp"

namespace w2vlm {

HotwordAutomaton::HotwordAutomaton(const std::vector<std::pair<std::string, float>>& phrases) {
  // character classes: 0 = any character that no phrase contains
  auto add_class = [&](uint32_t cp) {
    if (cp < 128) {
      if (!ascii_class_[cp]) ascii_class_[cp] = num_classes_++;
    } else if (!classes_.count(cp)) {
      classes_.emplace(cp, num_classes_++);
    }
  };
  add_class(' ');
  space_class_ = ascii_class_[static_cast<uint32_t>(' ')];

  struct Pattern {
    std::vector<uint32_t> cps;
    float total;  // weight * number of words
    size_t letters;
  };
  std::vector<Pattern> patterns;
  for (const auto& [text, weight] : phrases) {
    std::vector<uint32_t> cps = utf8_codepoints(text);
    size_t letters = 0, words = 0;
    bool in_word = false;
    std::vector<uint32_t> pat{' '};
    for (uint32_t cp : cps) {
      if (cp == ' ') {
        if (in_word) pat.push_back(' ');
        in_word = false;
      } else {
        if (!in_word) ++words;
        in_word = true;
        pat.push_back(cp);
        ++letters;
      }
    }
    if (letters == 0) continue;
    if (pat.back() != ' ') pat.push_back(' ');
    for (uint32_t cp : pat) add_class(cp);
    patterns.push_back(Pattern{std::move(pat), weight * static_cast<float>(words), letters});
  }
  num_patterns_ = patterns.size();

  // goto trie
  std::vector<std::vector<int32_t>> go(1, std::vector<int32_t>(num_classes_, -1));
  std::vector<float> own_out(1, 0.f);
  std::vector<float> pot(1, 0.f);
  for (const Pattern& p : patterns) {
    int32_t s = 0;
    size_t letters = 0;
    for (size_t i = 0; i < p.cps.size(); ++i) {
      const uint32_t cp = p.cps[i];
      const uint32_t c = class_of(cp);
      if (cp != ' ') ++letters;
      int32_t nx = go[static_cast<size_t>(s)][c];
      if (nx < 0) {
        nx = static_cast<int32_t>(go.size());
        go[static_cast<size_t>(s)][c] = nx;
        go.emplace_back(num_classes_, -1);
        own_out.push_back(0.f);
        pot.push_back(0.f);
      }
      s = nx;
      // partial credit on the way; the final state's credit is counted as completed instead
      if (i + 1 < p.cps.size()) {
        const float credit = p.total * static_cast<float>(letters) / static_cast<float>(p.letters);
        pot[static_cast<size_t>(s)] = std::max(pot[static_cast<size_t>(s)], credit);
      }
    }
    own_out[static_cast<size_t>(s)] += p.total;
  }

  // BFS for failure links, dense transition table
  const size_t ns = go.size();
  delta_.assign(ns * num_classes_, 0);
  out_.assign(ns, 0.f);
  std::vector<int32_t> fail(ns, 0);
  std::deque<int32_t> q;
  for (uint32_t c = 0; c < num_classes_; ++c) {
    const int32_t nx = go[0][c];
    if (nx >= 0) {
      delta_[c] = nx;
      fail[static_cast<size_t>(nx)] = 0;
      q.push_back(nx);
    } else {
      delta_[c] = 0;
    }
  }
  out_[0] = own_out[0];
  while (!q.empty()) {
    const int32_t s = q.front();
    q.pop_front();
    const size_t su = static_cast<size_t>(s);
    out_[su] = own_out[su] + out_[static_cast<size_t>(fail[su])];
    for (uint32_t c = 0; c < num_classes_; ++c) {
      const int32_t nx = go[su][c];
      if (nx >= 0) {
        fail[static_cast<size_t>(nx)] = delta_[static_cast<size_t>(fail[su]) * num_classes_ + c];
        delta_[su * num_classes_ + c] = nx;
        q.push_back(nx);
      } else {
        delta_[su * num_classes_ + c] = delta_[static_cast<size_t>(fail[su]) * num_classes_ + c];
      }
    }
  }
  potential_ = std::move(pot);
}

}  // namespace w2vlm

#include "hotwords.hpp"

#include <algorithm>
#include <cmath>
#include <deque>

#include "common.hpp"

namespace w2vlm {

int32_t HotwordAutomaton::edge(int32_t state, uint32_t c) const {
  const auto first = edge_class_.begin() + edge_begin_[static_cast<size_t>(state)];
  const auto last = edge_class_.begin() + edge_begin_[static_cast<size_t>(state) + 1];
  const auto it = std::lower_bound(first, last, c);
  if (it == last || *it != c) return -1;
  return edge_next_[static_cast<size_t>(it - edge_class_.begin())];
}

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
    const float total = weight * static_cast<float>(words);
    if (!std::isfinite(weight) || !std::isfinite(total))
      throw InputError("hotword weight of '" + escape_bytes(text) + "' is " + std::to_string(weight) +
                       ": it must be finite (weight x words within the range of a 32-bit float)");
    if (pat.back() != ' ') pat.push_back(' ');
    for (uint32_t cp : pat) add_class(cp);
    patterns.push_back(Pattern{std::move(pat), total, letters});
  }
  num_patterns_ = patterns.size();

  // goto trie, edges in a hash map while it is built
  std::unordered_map<uint64_t, int32_t> go;
  auto key = [](int32_t s, uint32_t c) { return (static_cast<uint64_t>(static_cast<uint32_t>(s)) << 32) | c; };
  std::vector<float> own_out(1, 0.f);
  std::vector<float> pot(1, 0.f);
  for (const Pattern& p : patterns) {
    int32_t s = 0;
    size_t letters = 0;
    for (size_t i = 0; i < p.cps.size(); ++i) {
      const uint32_t cp = p.cps[i];
      const uint32_t c = class_of(cp);
      if (cp != ' ') ++letters;
      auto it = go.find(key(s, c));
      int32_t nx;
      if (it == go.end()) {
        nx = static_cast<int32_t>(own_out.size());
        go.emplace(key(s, c), nx);
        own_out.push_back(0.f);
        pot.push_back(0.f);
      } else {
        nx = it->second;
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

  // compressed rows of goto edges, sorted by (state, class)
  const size_t ns = own_out.size();
  std::vector<std::pair<uint64_t, int32_t>> edges(go.begin(), go.end());
  go.clear();
  std::sort(edges.begin(), edges.end());
  edge_begin_.assign(ns + 1, 0);
  edge_class_.resize(edges.size());
  edge_next_.resize(edges.size());
  for (size_t i = 0; i < edges.size(); ++i) {
    ++edge_begin_[static_cast<size_t>(edges[i].first >> 32) + 1];
    edge_class_[i] = static_cast<uint32_t>(edges[i].first & 0xFFFFFFFFu);
    edge_next_[i] = edges[i].second;
  }
  for (size_t s = 0; s < ns; ++s) edge_begin_[s + 1] += edge_begin_[s];

  // failure links and outputs, breadth first (a failure state is shallower, so it is complete when used)
  fail_.assign(ns, 0);
  out_.assign(ns, 0.f);
  out_[0] = own_out[0];
  std::deque<int32_t> q;
  for (uint32_t e = edge_begin_[0]; e < edge_begin_[1]; ++e) q.push_back(edge_next_[e]);
  for (int32_t s : q) out_[static_cast<size_t>(s)] = own_out[static_cast<size_t>(s)] + out_[0];
  while (!q.empty()) {
    const int32_t s = q.front();
    q.pop_front();
    const size_t su = static_cast<size_t>(s);
    for (uint32_t e = edge_begin_[su]; e < edge_begin_[su + 1]; ++e) {
      const int32_t nx = edge_next_[e];
      const size_t nu = static_cast<size_t>(nx);
      fail_[nu] = step_class(fail_[su], edge_class_[e]);
      out_[nu] = own_out[nu] + out_[static_cast<size_t>(fail_[nu])];
      q.push_back(nx);
    }
  }
  potential_ = std::move(pot);
}

}  // namespace w2vlm

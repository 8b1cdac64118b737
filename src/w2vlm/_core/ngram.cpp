#include "ngram.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace w2vlm {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Splits on runs of whitespace; at most `max_fields` fields are written, returns the count found.
size_t split_ws(std::string_view s, std::string_view* fields, size_t max_fields) {
  size_t n = 0, i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    if (i >= s.size()) break;
    size_t j = i;
    while (j < s.size() && !is_space(s[j])) ++j;
    if (n < max_fields) fields[n] = s.substr(i, j - i);
    ++n;
    i = j;
  }
  return n;
}

bool parse_float(std::string_view s, float& out) {
  if (s.empty() || s.size() > 63) return false;
  char buf[64];
  std::copy(s.begin(), s.end(), buf);
  buf[s.size()] = '\0';
  char* end = nullptr;
  errno = 0;
  const float v = std::strtof(buf, &end);
  if (end != buf + s.size()) return false;
  if (std::isnan(v)) return false;
  out = v;
  return true;
}

class LineReader {
 public:
  explicit LineReader(std::string_view text) : text_(text) {}
  bool next(std::string_view& line) {
    if (pos_ >= text_.size()) return false;
    size_t e = text_.find('\n', pos_);
    if (e == std::string_view::npos) e = text_.size();
    line = text_.substr(pos_, e - pos_);
    pos_ = e + 1;
    ++lineno_;
    return true;
  }
  size_t lineno() const { return lineno_; }
  size_t offset() const { return pos_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  size_t lineno_ = 0;
};

[[noreturn]] void fail(const std::string& name, size_t line, const std::string& msg) {
  std::ostringstream os;
  os << name;
  if (line > 0) os << ":" << line;
  os << ": " << msg;
  throw LMError(os.str());
}

}  // namespace

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

void NGramLM::Table::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 3 / 2 + 1) cap <<= 1;
  slots.assign(cap, Entry{0, 0.f, 0.f});
  mask = cap - 1;
}

bool NGramLM::Table::insert(uint64_t key, float prob, float backoff) {
  uint64_t i = key & mask;
  while (true) {
    Entry& e = slots[i];
    if (e.key == 0) {
      e = Entry{key, prob, backoff};
      return true;
    }
    if (e.key == key) return false;
    i = (i + 1) & mask;
  }
}

std::shared_ptr<NGramLM> NGramLM::from_arpa_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw LMError(path + ": cannot open the language model file");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return from_arpa(text, path);
}

std::shared_ptr<NGramLM> NGramLM::from_arpa(std::string_view text, const std::string& name) {
  auto lm = std::make_shared<NGramLM>();
  if (trim(text).empty()) fail(name, 0, "the ARPA file is empty");
  if (text.find('\0') != std::string_view::npos)
    fail(name, 0, "this is not an ARPA text file (it contains NUL bytes; a KenLM binary needs the .bin path)");

  LineReader rd(text);
  std::string_view line;
  // 1. find \data\ (text before it is allowed, as in KenLM)
  bool found = false;
  while (rd.next(line)) {
    if (trim(line) == "\\data\\") {
      found = true;
      break;
    }
  }
  if (!found) fail(name, 0, "no '\\data\\' header: not an ARPA file");

  // 2. counts
  std::vector<uint64_t> counts;
  while (rd.next(line)) {
    std::string_view t = trim(line);
    if (t.empty()) {
      if (!counts.empty()) break;
      continue;
    }
    if (t.rfind("ngram ", 0) != 0) {
      if (t.size() > 1 && t[0] == '\\') break;  // section header without blank line
      fail(name, rd.lineno(), "expected 'ngram N=COUNT' in the \\data\\ section, got '" + escape_bytes(t) + "'");
    }
    const size_t eq = t.find('=');
    if (eq == std::string_view::npos) fail(name, rd.lineno(), "expected 'ngram N=COUNT', got '" + escape_bytes(t) + "'");
    const std::string ns(trim(t.substr(6, eq - 6)));
    const std::string cs(trim(t.substr(eq + 1)));
    char* e1 = nullptr;
    char* e2 = nullptr;
    errno = 0;
    const long n = std::strtol(ns.c_str(), &e1, 10);
    const long long c = std::strtoll(cs.c_str(), &e2, 10);
    if (ns.empty() || cs.empty() || *e1 || *e2 || n < 1 || c < 0 || errno == ERANGE)
      fail(name, rd.lineno(), "bad n-gram count line '" + escape_bytes(t) + "'");
    if (static_cast<size_t>(n) != counts.size() + 1)
      fail(name, rd.lineno(), "n-gram counts must be listed in order 1, 2, ...; got order " + std::to_string(n));
    if (static_cast<size_t>(n) > static_cast<size_t>(kMaxOrder))
      fail(name, rd.lineno(), "order " + std::to_string(n) + " is above the supported maximum " +
                                  std::to_string(kMaxOrder));
    // an n-gram line has at least 2n+2 bytes ("p w1 .. wn\n" with one-byte fields): a count the file cannot
    // hold is damage, refused before anything is sized by it
    const uint64_t max_lines = text.size() / (2 * static_cast<uint64_t>(n) + 2) + 1;
    if (static_cast<uint64_t>(c) > max_lines)
      fail(name, rd.lineno(), "the \\data\\ section announces " + std::to_string(c) + " " + std::to_string(n) +
                                  "-grams but a file of " + std::to_string(text.size()) + " bytes holds at most " +
                                  std::to_string(max_lines));
    counts.push_back(static_cast<uint64_t>(c));
  }
  if (counts.empty()) fail(name, rd.lineno(), "the \\data\\ section lists no n-gram counts");
  if (counts.size() > static_cast<size_t>(kMaxOrder))
    fail(name, rd.lineno(), "order " + std::to_string(counts.size()) + " is above the supported maximum " +
                                std::to_string(kMaxOrder));
  if (counts[0] == 0) fail(name, rd.lineno(), "the model has no unigrams");
  lm->order_ = static_cast<int>(counts.size());
  lm->counts_ = counts;

  // 3. sections
  std::vector<std::vector<uint32_t>> ids(counts.size());
  std::vector<std::vector<float>> probs(counts.size()), backoffs(counts.size());
  std::unordered_map<std::string, uint32_t> tmp_map;
  size_t positive = 0;
  std::string_view fields[kMaxOrder + 2];
  // the vocabulary and word map are sized by the lines actually read (the counts only bound them)
  auto header_of = [&](std::string_view t) -> int {
    // returns N for "\N-grams:", 0 for "\end\", -1 otherwise
    if (t == "\\end\\") return 0;
    if (t.size() < 9 || t[0] != '\\' || t.substr(t.size() - 7) != "-grams:") return -1;
    const std::string ns(t.substr(1, t.size() - 8));
    char* e = nullptr;
    const long n = std::strtol(ns.c_str(), &e, 10);
    if (ns.empty() || *e || n < 1) return -1;
    return static_cast<int>(n);
  };
  // the header may be the line that ended the counts
  std::string_view t = trim(line);
  int expect = 1;
  bool ended = false;
  bool pending = !t.empty() && t[0] == '\\';
  while (true) {
    if (!pending) {
      if (!rd.next(line)) break;
      t = trim(line);
      if (t.empty()) continue;
    }
    pending = false;
    const int h = header_of(t);
    if (h == 0) {
      if (expect != lm->order_ + 1)
        fail(name, rd.lineno(), "'\\end\\' before the " + std::to_string(expect) + "-grams section");
      ended = true;
      break;
    }
    if (h != expect || h > lm->order_)
      fail(name, rd.lineno(),
           (expect > lm->order_ ? "expected '\\end\\' (the \\data\\ section declares " + std::to_string(lm->order_) +
                                      " orders)"
                                : "expected '\\" + std::to_string(expect) + "-grams:'") +
               ", got '" + escape_bytes(t) + "'");
    const int n = h;
    const size_t ni = static_cast<size_t>(n - 1);
    // the counts were checked against the file's size; reserve no more than the rest of the file can hold
    const size_t can_hold = (text.size() - std::min(text.size(), rd.offset())) / (2 * static_cast<size_t>(n) + 2) + 1;
    const size_t expect_lines = static_cast<size_t>(std::min<uint64_t>(counts[ni], can_hold));
    ids[ni].reserve(expect_lines * static_cast<size_t>(n));
    probs[ni].reserve(expect_lines);
    backoffs[ni].reserve(expect_lines);
    uint64_t seen = 0;
    while (rd.next(line)) {
      t = trim(line);
      if (t.empty()) {
        if (seen == counts[ni]) break;
        continue;
      }
      if (t[0] == '\\') {
        pending = true;
        break;
      }
      const size_t nf = split_ws(t, fields, kMaxOrder + 2);
      if (nf != static_cast<size_t>(n) + 1 && nf != static_cast<size_t>(n) + 2)
        fail(name, rd.lineno(),
             "a " + std::to_string(n) + "-gram line needs " + std::to_string(n + 1) + " or " + std::to_string(n + 2) +
                 " fields (log10 prob, " + std::to_string(n) + " words, optional backoff), got " + std::to_string(nf));
      float p = 0.f, b = 0.f;
      if (!parse_float(fields[0], p))
        fail(name, rd.lineno(), "bad log10 probability '" + escape_bytes(fields[0]) + "'");
      if (nf == static_cast<size_t>(n) + 2 && !parse_float(fields[n + 1], b))
        fail(name, rd.lineno(), "bad backoff weight '" + escape_bytes(fields[n + 1]) + "'");
      if (p > 0.f) {
        ++positive;
        p = 0.f;
      }
      if (std::isinf(b)) fail(name, rd.lineno(), "infinite backoff weight");
      if (n == 1) {
        std::string w(fields[1]);
        if (tmp_map.count(w)) fail(name, rd.lineno(), "duplicate unigram '" + escape_bytes(w) + "'");
        const uint32_t id = static_cast<uint32_t>(lm->vocab_.size());
        tmp_map.emplace(w, id);
        lm->vocab_.push_back(std::move(w));
        ids[0].push_back(id);
      } else {
        for (int k = 1; k <= n; ++k) {
          auto it = tmp_map.find(std::string(fields[k]));
          if (it == tmp_map.end())
            fail(name, rd.lineno(), "word '" + escape_bytes(fields[k]) + "' of this " + std::to_string(n) +
                                        "-gram is not among the unigrams");
          ids[ni].push_back(it->second);
        }
      }
      probs[ni].push_back(p);
      backoffs[ni].push_back(b);
      ++seen;
    }
    if (seen != counts[ni])
      fail(name, rd.lineno(), "the \\data\\ section announces " + std::to_string(counts[ni]) + " " +
                                  std::to_string(n) + "-grams but the section has " + std::to_string(seen));
    ++expect;
    if (!pending && expect == lm->order_ + 1) {
      // continue to find \end\ ;
    }
  }
  if (!ended) {
    if (expect <= lm->order_) fail(name, rd.lineno(), "the file ends before the " + std::to_string(expect) + "-grams section");
    fail(name, rd.lineno(), "missing '\\end\\' (truncated file?)");
  }
  if (positive) lm->warnings_.push_back(std::to_string(positive) + " positive log10 probabilities were set to 0");

  // 4. vocabulary with <unk> at id 0
  std::vector<uint32_t> remap(lm->vocab_.size());
  {
    std::vector<std::string> vocab;
    vocab.reserve(lm->vocab_.size() + 3);
    std::vector<float> up, ub;
    auto unk_it = tmp_map.find("<unk>");
    vocab.emplace_back("<unk>");
    if (unk_it != tmp_map.end()) {
      up.push_back(probs[0][unk_it->second]);
      ub.push_back(backoffs[0][unk_it->second]);
    } else {
      up.push_back(-100.f);
      ub.push_back(0.f);
      lm->warnings_.push_back("the model has no <unk>; its log10 probability is taken as -100");
    }
    for (size_t i = 0; i < lm->vocab_.size(); ++i) {
      if (unk_it != tmp_map.end() && i == unk_it->second) {
        remap[i] = 0;
        continue;
      }
      remap[i] = static_cast<uint32_t>(vocab.size());
      vocab.push_back(std::move(lm->vocab_[i]));
      up.push_back(probs[0][i]);
      ub.push_back(backoffs[0][i]);
    }
    lm->vocab_ = std::move(vocab);
    lm->uni_prob_ = std::move(up);
    lm->uni_backoff_ = std::move(ub);
  }
  auto ensure_word = [&](const char* w, float p) -> uint32_t {
    for (uint32_t i = 0; i < lm->vocab_.size(); ++i)
      if (lm->vocab_[i] == w) return i;
    lm->vocab_.emplace_back(w);
    lm->uni_prob_.push_back(p);
    lm->uni_backoff_.push_back(0.f);
    lm->warnings_.push_back(std::string("the model has no ") + w + "; added with log10 probability " +
                            std::to_string(static_cast<int>(p)));
    return static_cast<uint32_t>(lm->vocab_.size() - 1);
  };
  {
    auto it_b = tmp_map.find("<s>");
    auto it_e = tmp_map.find("</s>");
    lm->bos_ = it_b != tmp_map.end() ? remap[it_b->second] : ensure_word("<s>", -99.f);
    lm->eos_ = it_e != tmp_map.end() ? remap[it_e->second] : ensure_word("</s>", -100.f);
  }
  tmp_map.clear();
  lm->vocab_map_.reserve(lm->vocab_.size() * 2);
  for (uint32_t i = 0; i < lm->vocab_.size(); ++i) lm->vocab_map_.emplace(std::string_view(lm->vocab_[i]), i);

  // 5. higher orders into hashed tables
  lm->tables_.resize(counts.size() > 1 ? counts.size() - 1 : 0);
  for (size_t ni = 1; ni < counts.size(); ++ni) {
    const int n = static_cast<int>(ni) + 1;
    Table& tab = lm->tables_[ni - 1];
    tab.reserve(counts[ni] + counts[ni] / 8 + 16);
    std::vector<uint32_t>& v = ids[ni];
    for (uint32_t& x : v) x = remap[x];
    size_t dup = 0;
    for (size_t j = 0; j < counts[ni]; ++j) {
      const uint32_t* g = &v[j * static_cast<size_t>(n)];
      if (!tab.insert(key_of(g, n), probs[ni][j], backoffs[ni][j])) ++dup;
    }
    if (dup) lm->warnings_.push_back(std::to_string(dup) + " duplicate " + std::to_string(n) + "-grams ignored");
  }
  // 6. every context of an n-gram must exist (ARPA files from some tools omit them): add the missing ones with
  //    their backed-off probability and a zero backoff, as KenLM does.
  size_t added = 0;
  for (size_t ni = 2; ni < counts.size(); ++ni) {
    const int n = static_cast<int>(ni) + 1;
    const std::vector<uint32_t>& v = ids[ni];
    for (size_t j = 0; j < counts[ni]; ++j) {
      const uint32_t* g = &v[j * static_cast<size_t>(n)];
      for (int m = n - 1; m >= 2; --m) {
        if (lm->find_ngram(g, m)) break;
        const float p = lm->backoff_score(g, m);
        Table& tab = lm->tables_[static_cast<size_t>(m) - 2];
        if ((tab.slots.size() * 2) / 3 < counts[static_cast<size_t>(m) - 1] + added + 1) {
          // grow: rebuild into a larger table
          Table bigger;
          bigger.reserve(tab.slots.size());
          for (const Entry& e : tab.slots)
            if (e.key) bigger.insert(e.key, e.prob, e.backoff);
          tab = std::move(bigger);
        }
        tab.insert(key_of(g, m), p, 0.f);
        ++added;
      }
    }
  }
  if (added) lm->warnings_.push_back(std::to_string(added) + " missing context n-grams were added");
  return lm;
}

uint32_t NGramLM::word_id(std::string_view word) const {
  auto it = vocab_map_.find(word);
  return it == vocab_map_.end() ? kUnk : it->second;
}

const NGramLM::Entry* NGramLM::find_ngram(const uint32_t* ids, int n) const {
  if (n < 2) return nullptr;
  return tables_[static_cast<size_t>(n) - 2].find(key_of(ids, n));
}

float NGramLM::backoff_score(const uint32_t* ids, int n) const {
  // log10 p(ids[n-1] | ids[0..n-1)) with backoff, from the tables as they are
  if (n == 1) return uni_prob_[ids[0]];
  if (const Entry* e = find_ngram(ids, n)) return e->prob;
  float bo = 0.f;
  if (n - 1 == 1) {
    bo = uni_backoff_[ids[0]];
  } else if (const Entry* c = find_ngram(ids, n - 1)) {
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
  // a context longer than the model's (checked where states enter; clamped here so tables_ is never overrun)
  const uint32_t in_len = std::min<uint32_t>(in.length, order_ > 1 ? static_cast<uint32_t>(order_ - 1) : 0);
  float prob = uni_prob_[word];
  out.words[0] = word;
  out.backoff[0] = uni_backoff_[word];
  uint32_t out_len = order_ > 1 ? 1 : 0;
  uint32_t matched_ctx = 0;  // length of the context used by the probability
  uint64_t key = first_key(word);
  for (uint32_t i = 0; i < in_len; ++i) {
    key = extend_key(key, in.words[i]);
    const Entry* e = tables_[i].find(key);
    if (!e) break;
    prob = e->prob;
    matched_ctx = i + 1;
    if (static_cast<int>(i) + 2 < order_) {
      out.words[i + 1] = in.words[i];
      out.backoff[i + 1] = e->backoff;
      out_len = i + 2;
    }
  }
  for (uint32_t i = matched_ctx; i < in_len; ++i) prob += in.backoff[i];
  out.length = out_len;
  return prob;
}

size_t NGramLM::memory_bytes() const {
  size_t b = uni_prob_.size() * 8;
  for (const auto& t : tables_) b += t.slots.size() * sizeof(Entry);
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

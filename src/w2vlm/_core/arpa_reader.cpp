#include "arpa_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <sys/stat.h>
#include <type_traits>

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

// N for "\N-grams:", 0 for "\end\", -1 otherwise
int header_of(std::string_view t) {
  if (t == "\\end\\") return 0;
  if (t.size() < 9 || t[0] != '\\' || t.substr(t.size() - 7) != "-grams:") return -1;
  const std::string ns(t.substr(1, t.size() - 8));
  char* e = nullptr;
  const long n = std::strtol(ns.c_str(), &e, 10);
  if (ns.empty() || *e || n < 1) return -1;
  return static_cast<int>(n);
}

// Lines of `n` words the rest of a text of `bytes` can hold: an n-gram line has at least 2n+2 bytes
// ("p w1 .. wn\n" with one-byte fields), the last one may lack its newline.
uint64_t lines_in(uint64_t bytes, int n) { return bytes / (2 * static_cast<uint64_t>(n) + 2) + 1; }

// Room a table that filled up while its section is read grows to: twice, but no further than the section's
// count once that is in sight (the table then ends at the count's size, with no final rebuild).
uint64_t grown(uint64_t capacity, uint64_t count) {
  const uint64_t twice = std::max<uint64_t>(2 * capacity, 1024);
  return capacity < count ? std::min(count, twice) : twice;
}

}  // namespace

ArpaParser::ArpaParser(std::string name, uint64_t total_bytes, bool size_known, uint64_t expect_bytes)
    : name_(std::move(name)),
      total_(total_bytes),
      size_known_(size_known),
      expect_bytes_(expect_bytes),
      lm_(std::make_shared<NGramLM>()) {}

void ArpaParser::fail(const std::string& msg) const {
  std::ostringstream os;
  os << name_;
  if (lineno_ > 0) os << ":" << lineno_;
  os << ": " << msg;
  throw LMError(os.str());
}

void ArpaParser::feed(std::string_view chunk) {
  if (done_) throw LMError(name_ + ": the ARPA parser has already finished");
  if (chunk.empty()) return;
  if (std::memchr(chunk.data(), '\0', chunk.size())) {
    done_ = true;
    throw LMError(name_ + ": this is not an ARPA text file (it contains NUL bytes; a KenLM binary needs the .bin path)");
  }
  if (!any_text_)
    for (char c : chunk)
      if (!is_space(c)) {
        any_text_ = true;
        break;
      }
  fed_ += chunk.size();
  if (state_ == State::kFailed || state_ == State::kEnded) return;  // only NUL bytes matter now
  try {
    size_t pos = 0;
    if (!carry_.empty()) {
      const void* nl = std::memchr(chunk.data(), '\n', chunk.size());
      if (!nl) {
        carry_.append(chunk.data(), chunk.size());
        return;
      }
      const size_t e = static_cast<size_t>(static_cast<const char*>(nl) - chunk.data());
      carry_.append(chunk.data(), e);
      pos = e + 1;
      std::string whole;
      whole.swap(carry_);
      line(whole);
    }
    while (pos < chunk.size() && state_ != State::kEnded) {
      const void* nl = std::memchr(chunk.data() + pos, '\n', chunk.size() - pos);
      if (!nl) {
        carry_.assign(chunk.data() + pos, chunk.size() - pos);
        return;
      }
      const size_t e = static_cast<size_t>(static_cast<const char*>(nl) - chunk.data());
      line(chunk.substr(pos, e - pos));
      pos = e + 1;
    }
  } catch (const LMError& err) {
    error_ = err.what();
    state_ = State::kFailed;
    carry_.clear();
    carry_.shrink_to_fit();
  }
}

std::shared_ptr<NGramLM> ArpaParser::finish() {
  if (done_) throw LMError(name_ + ": the ARPA parser has already finished");
  done_ = true;
  if (!any_text_) {
    lineno_ = 0;
    fail("the ARPA file is empty");
  }
  if (state_ == State::kFailed) throw LMError(error_);
  if (!carry_.empty() && state_ != State::kEnded) {
    std::string last;
    last.swap(carry_);
    line(last);  // the last line, without a newline
  }
  at_end();
  NGramLM& lm = *lm_;
  std::vector<uint64_t>().swap(word_slots_);
  lm.vocab_map_.reserve(lm.vocab_.size() * 2);
  for (uint32_t i = 0; i < lm.vocab_.size(); ++i) lm.vocab_map_.emplace(std::string_view(lm.vocab_[i]), i);
  if (positive_) lm.warnings_.push_back(std::to_string(positive_) + " positive log10 probabilities were set to 0");
  for (auto& w : vocab_warnings_) lm.warnings_.push_back(std::move(w));
  for (size_t ni = 1; ni < dups_.size(); ++ni)
    if (dups_[ni])
      lm.warnings_.push_back(std::to_string(dups_[ni]) + " duplicate " + std::to_string(ni + 1) + "-grams ignored");
  if (added_) lm.warnings_.push_back(std::to_string(added_) + " missing context n-grams were added");
  return std::move(lm_);
}

void ArpaParser::at_end() {
  // the text ended in state_: what it still lacks is the error
  switch (state_) {
    case State::kFindData:
      lineno_ = 0;
      fail("no '\\data\\' header: not an ARPA file");
    case State::kCounts:
      end_counts();
      [[fallthrough]];
    case State::kBetween:
      if (expect_ <= lm_->order_) fail("the file ends before the " + std::to_string(expect_) + "-grams section");
      fail("missing '\\end\\' (truncated file?)");
    case State::kSection:
      end_section();
      if (expect_ <= lm_->order_) fail("the file ends before the " + std::to_string(expect_) + "-grams section");
      fail("missing '\\end\\' (truncated file?)");
    default:
      return;
  }
}

void ArpaParser::line(std::string_view raw) {
  ++lineno_;
  offset_ += raw.size() + 1;
  const std::string_view t = trim(raw);
  switch (state_) {
    case State::kFindData:
      // text before \data\ is allowed, as in KenLM
      if (t == "\\data\\") state_ = State::kCounts;
      return;
    case State::kCounts: {
      if (t.empty()) {
        if (!counts_.empty()) {
          end_counts();
          state_ = State::kBetween;
        }
        return;
      }
      if (t.rfind("ngram ", 0) != 0) {
        if (t.size() > 1 && t[0] == '\\') {  // section header without a blank line
          end_counts();
          state_ = State::kBetween;
          header(t);
          return;
        }
        fail("expected 'ngram N=COUNT' in the \\data\\ section, got '" + escape_bytes(t) + "'");
      }
      const size_t eq = t.find('=');
      if (eq == std::string_view::npos) fail("expected 'ngram N=COUNT', got '" + escape_bytes(t) + "'");
      const std::string ns(trim(t.substr(6, eq - 6)));
      const std::string cs(trim(t.substr(eq + 1)));
      char* e1 = nullptr;
      char* e2 = nullptr;
      errno = 0;
      const long n = std::strtol(ns.c_str(), &e1, 10);
      const long long c = std::strtoll(cs.c_str(), &e2, 10);
      if (ns.empty() || cs.empty() || *e1 || *e2 || n < 1 || c < 0 || errno == ERANGE)
        fail("bad n-gram count line '" + escape_bytes(t) + "'");
      if (static_cast<size_t>(n) != counts_.size() + 1)
        fail("n-gram counts must be listed in order 1, 2, ...; got order " + std::to_string(n));
      if (static_cast<size_t>(n) > static_cast<size_t>(kMaxOrder))
        fail("order " + std::to_string(n) + " is above the supported maximum " + std::to_string(kMaxOrder));
      // a count the text cannot hold is damage, refused before anything is sized by it (a stream's size is not
      // known: its tables grow with what is read instead)
      if (size_known_) {
        const uint64_t max_lines = lines_in(total_, static_cast<int>(n));
        if (static_cast<uint64_t>(c) > max_lines)
          fail("the \\data\\ section announces " + std::to_string(c) + " " + std::to_string(n) +
               "-grams but a file of " + std::to_string(total_) + " bytes holds at most " +
               std::to_string(max_lines));
      }
      counts_.push_back(static_cast<uint64_t>(c));
      return;
    }
    case State::kBetween:
      if (!t.empty()) header(t);
      return;
    case State::kSection:
      if (t.empty()) {
        if (seen_ == counts_[static_cast<size_t>(n_) - 1]) {
          end_section();
          state_ = State::kBetween;
        }
        return;
      }
      if (t[0] == '\\') {
        end_section();
        state_ = State::kBetween;
        header(t);
        return;
      }
      ngram_line(t);
      return;
    default:
      return;
  }
}

void ArpaParser::end_counts() {
  if (counts_.empty()) fail("the \\data\\ section lists no n-gram counts");
  if (counts_.size() > static_cast<size_t>(kMaxOrder))
    fail("order " + std::to_string(counts_.size()) + " is above the supported maximum " + std::to_string(kMaxOrder));
  if (counts_[0] == 0) fail("the model has no unigrams");
  lm_->order_ = static_cast<int>(counts_.size());
  lm_->counts_ = counts_;
  lm_->middle_.resize(counts_.size() > 2 ? counts_.size() - 2 : 0);
  dups_.assign(counts_.size(), 0);
}

void ArpaParser::header(std::string_view t) {
  const int h = header_of(t);
  const int order = lm_->order_;
  if (h == 0) {
    if (expect_ != order + 1) fail("'\\end\\' before the " + std::to_string(expect_) + "-grams section");
    state_ = State::kEnded;
    carry_.clear();
    return;
  }
  if (h != expect_ || h > order)
    fail((expect_ > order ? "expected '\\end\\' (the \\data\\ section declares " + std::to_string(order) + " orders)"
                          : "expected '\\" + std::to_string(expect_) + "-grams:'") +
         ", got '" + escape_bytes(t) + "'");
  begin_section(h);
}

void ArpaParser::begin_section(int n) {
  n_ = n;
  seen_ = 0;
  inserted_ = 0;
  state_ = State::kSection;
  const uint64_t count = counts_[static_cast<size_t>(n) - 1];
  // reserve no more than the rest of the text can hold (a stream: than its expected size, or 4 times what was
  // read so far, justifies); the tables grow if the lines keep coming, and the count is checked at the end of
  // the section
  const uint64_t can_hold =
      size_known_ ? lines_in(total_ - std::min(total_, offset_), n)
                  : std::max({uint64_t{1} << 16, lines_in(4 * offset_, n),
                              lines_in(expect_bytes_ - std::min(expect_bytes_, offset_), n)});
  const uint64_t expect_lines = std::min(count, can_hold);
  if (n == 1) {
    const size_t k = static_cast<size_t>(expect_lines);
    file_words_.reserve(k);
    lm_->vocab_.reserve(k + 3);
    file_prob_.reserve(k);
    file_backoff_.reserve(k);
  } else if (n < lm_->order_) {
    lm_->middle_[static_cast<size_t>(n) - 2].reserve(expect_lines);
  } else {
    lm_->longest_.reserve(expect_lines);
  }
}

void ArpaParser::ngram_line(std::string_view t) {
  const int n = n_;
  std::string_view fields[kMaxOrder + 2];
  const size_t nf = split_ws(t, fields, kMaxOrder + 2);
  if (nf != static_cast<size_t>(n) + 1 && nf != static_cast<size_t>(n) + 2)
    fail("a " + std::to_string(n) + "-gram line needs " + std::to_string(n + 1) + " or " + std::to_string(n + 2) +
         " fields (log10 prob, " + std::to_string(n) + " words, optional backoff), got " + std::to_string(nf));
  float p = 0.f, b = 0.f;
  if (!parse_float(fields[0], p)) fail("bad log10 probability '" + escape_bytes(fields[0]) + "'");
  if (nf == static_cast<size_t>(n) + 2 && !parse_float(fields[n + 1], b))
    fail("bad backoff weight '" + escape_bytes(fields[n + 1]) + "'");
  if (p > 0.f) {
    ++positive_;
    p = 0.f;
  }
  if (std::isinf(b)) fail("infinite backoff weight");
  NGramLM& lm = *lm_;
  if (n == 1) {
    std::string w(fields[1]);
    if (file_words_.count(w)) fail("duplicate unigram '" + escape_bytes(w) + "'");
    file_words_.emplace(w, static_cast<uint32_t>(lm.vocab_.size()));
    lm.vocab_.push_back(std::move(w));
    file_prob_.push_back(p);
    file_backoff_.push_back(b);
    ++seen_;
    return;
  }
  Pending& g = pending_[num_pending_];
  for (int k = 1; k <= n; ++k) {
    const uint32_t id = find_word(fields[k]);
    if (id == kNoWord || id >= num_file_ids_ || (id == 0 && unk_made_up_))
      fail("word '" + escape_bytes(fields[k]) + "' of this " + std::to_string(n) + "-gram is not among the unigrams");
    g.ids[k - 1] = id;
  }
  g.key = NGramLM::key_of(g.ids, n);
  g.prob = p;
  g.backoff = b;
  ++seen_;
  if (++num_pending_ == kBatch) flush();
}

uint32_t ArpaParser::find_word(std::string_view w) const {
  const uint64_t h = std::hash<std::string_view>()(w);
  const uint64_t tag = h >> 32;
  for (uint64_t i = h & word_mask_;; i = (i + 1) & word_mask_) {
    const uint64_t s = word_slots_[i];
    if (s == 0) return kNoWord;
    if ((s >> 32) == tag) {
      const uint32_t id = static_cast<uint32_t>(s) - 1;
      if (lm_->vocab_[id] == w) return id;
    }
  }
}

void ArpaParser::flush() {
  if (n_ < lm_->order_)
    flush_into(lm_->middle_[static_cast<size_t>(n_) - 2]);
  else
    flush_into(lm_->longest_);
}

template <class Table>
void ArpaParser::flush_into(Table& tab) {
  const int n = n_;
  NGramLM& lm = *lm_;
  for (size_t j = 0; j < num_pending_; ++j) {
    tab.prefetch(pending_[j].key, true);
    if (n >= 3) lm.middle_[static_cast<size_t>(n) - 3].prefetch(NGramLM::key_of(pending_[j].ids, n - 1), false);
  }
  const uint64_t count = counts_[static_cast<size_t>(n) - 1];
  for (size_t j = 0; j < num_pending_; ++j) {
    const Pending& g = pending_[j];
    // more lines than the table was sized for (a stream, or a count the lines exceed): grow it
    if (tab.size() == tab.capacity()) tab.resize(grown(tab.capacity(), count));
    bool fresh;
    if constexpr (std::is_same_v<Table, NGramLM::MiddleTable>)
      fresh = tab.insert(ProbBackoffRecord{g.key, g.prob, g.backoff});
    else
      fresh = tab.insert(ProbRecord{g.key, g.prob});
    if (!fresh) ++dups_[static_cast<size_t>(n) - 1];
    if (n >= 3) add_missing_contexts(g.ids, n);
  }
  num_pending_ = 0;
}

void ArpaParser::add_missing_contexts(const uint32_t* g, int n) {
  // every context of an n-gram must exist (ARPA files from some tools omit them): add the missing ones with their
  // backed-off probability and a zero backoff, as KenLM does. The lower orders' sections are complete here.
  NGramLM& lm = *lm_;
  for (int m = n - 1; m >= 2; --m) {
    if (lm.find_middle(g, m)) break;
    const float p = lm.backoff_score(g, m);
    NGramLM::MiddleTable& tab = lm.middle_[static_cast<size_t>(m) - 2];
    if (tab.size() == tab.capacity()) tab.resize(tab.capacity() + std::max<uint64_t>(tab.capacity() / 4, 1024));
    tab.insert(ProbBackoffRecord{NGramLM::key_of(g, m), p, 0.f});
    ++added_;
  }
}

void ArpaParser::end_section() {
  const size_t ni = static_cast<size_t>(n_) - 1;
  if (n_ >= 2) flush();
  if (seen_ != counts_[ni])
    fail("the \\data\\ section announces " + std::to_string(counts_[ni]) + " " + std::to_string(n_) +
         "-grams but the section has " + std::to_string(seen_));
  if (n_ == 1) {
    finalize_vocab();
  } else if (n_ < lm_->order_) {
    // the table's final size is the one the count asks for, however it was reached
    NGramLM::MiddleTable& tab = lm_->middle_[ni - 1];
    if (tab.capacity() != counts_[ni]) tab.resize(counts_[ni]);
  } else if (lm_->longest_.capacity() != counts_[ni]) {
    lm_->longest_.resize(counts_[ni]);
  }
  ++expect_;
  n_ = 0;
}

void ArpaParser::finalize_vocab() {
  // the vocabulary with <unk> at id 0, then the words in file order; <s> and </s> added if missing
  NGramLM& lm = *lm_;
  const size_t nw = lm.vocab_.size();
  std::vector<std::string> vocab;
  vocab.reserve(nw + 3);
  std::vector<float> up, ub;
  up.reserve(nw + 3);
  ub.reserve(nw + 3);
  auto unk_it = file_words_.find("<unk>");
  const bool has_unk = unk_it != file_words_.end();
  const uint32_t unk_pos = has_unk ? unk_it->second : 0;
  vocab.emplace_back("<unk>");
  if (has_unk) {
    up.push_back(file_prob_[unk_pos]);
    ub.push_back(file_backoff_[unk_pos]);
  } else {
    up.push_back(-100.f);
    ub.push_back(0.f);
    vocab_warnings_.push_back("the model has no <unk>; its log10 probability is taken as -100");
  }
  std::vector<uint32_t> remap(nw);
  for (size_t i = 0; i < nw; ++i) {
    if (has_unk && i == unk_pos) {
      remap[i] = 0;
      continue;
    }
    remap[i] = static_cast<uint32_t>(vocab.size());
    vocab.push_back(std::move(lm.vocab_[i]));
    up.push_back(file_prob_[i]);
    ub.push_back(file_backoff_[i]);
  }
  num_file_ids_ = static_cast<uint32_t>(vocab.size());
  unk_made_up_ = !has_unk;
  auto special = [&](const char* w, float p) -> uint32_t {
    auto it = file_words_.find(w);
    if (it != file_words_.end()) return remap[it->second];
    vocab.emplace_back(w);
    up.push_back(p);
    ub.push_back(0.f);
    vocab_warnings_.push_back(std::string("the model has no ") + w + "; added with log10 probability " +
                              std::to_string(static_cast<int>(p)));
    return static_cast<uint32_t>(vocab.size() - 1);
  };
  lm.bos_ = special("<s>", -99.f);
  lm.eos_ = special("</s>", -100.f);
  lm.vocab_ = std::move(vocab);
  lm.uni_prob_ = std::move(up);
  lm.uni_backoff_ = std::move(ub);
  std::unordered_map<std::string, uint32_t>().swap(file_words_);
  std::vector<float>().swap(file_prob_);
  std::vector<float>().swap(file_backoff_);
  // the word lookup of the n-gram lines (the model's own word map is built at the end, when this one is freed)
  size_t cap = 16;
  while (cap < lm.vocab_.size() * 2) cap <<= 1;
  word_slots_.assign(cap, 0);
  word_mask_ = cap - 1;
  for (uint32_t id = 0; id < lm.vocab_.size(); ++id) {
    const uint64_t h = std::hash<std::string_view>()(lm.vocab_[id]);
    uint64_t i = h & word_mask_;
    while (word_slots_[i] != 0) i = (i + 1) & word_mask_;
    word_slots_[i] = ((h >> 32) << 32) | (uint64_t{id} + 1);
  }
}

std::shared_ptr<NGramLM> ArpaParser::parse_text(std::string_view text, const std::string& name) {
  ArpaParser p(name, text.size(), true);
  p.feed(text);
  return p.finish();
}

std::shared_ptr<NGramLM> ArpaParser::parse_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw LMError(path + ": cannot open the language model file");
  struct Closer {
    std::FILE* f;
    ~Closer() { std::fclose(f); }
  } closer{f};
  struct stat st;
  const bool sized = ::fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
  ArpaParser p(path, sized ? static_cast<uint64_t>(st.st_size) : 0, sized);
  std::unique_ptr<char[]> buf(new char[kBlockBytes]);
  while (true) {
    const size_t got = std::fread(buf.get(), 1, kBlockBytes, f);
    if (got > 0) p.feed(std::string_view(buf.get(), got));
    if (got < kBlockBytes) {
      if (std::ferror(f)) throw LMError(path + ": cannot read the language model file");
      break;
    }
  }
  return p.finish();
}

std::shared_ptr<NGramLM> NGramLM::from_arpa(std::string_view text, const std::string& name) {
  return ArpaParser::parse_text(text, name);
}

std::shared_ptr<NGramLM> NGramLM::from_arpa_file(const std::string& path) { return ArpaParser::parse_file(path); }

}  // namespace w2vlm

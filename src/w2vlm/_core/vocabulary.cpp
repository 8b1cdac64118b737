// The vocabularies a decoding works with: the CTC alphabet (token kinds, labels cleaned of BPE marks) and the
// language model as the decoder sees it (the n-gram LM and the character trie of its known words).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "beam_search.hpp"
#include "common.hpp"

namespace w2vlm {

namespace {

const std::string kBpeMark = "\xE2\x96\x81";  // U+2581 '▁'

bool starts_with(const std::string& s, const std::string& p) { return s.size() >= p.size() && s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
Alphabet::Alphabet(const std::vector<std::string>& labels, bool is_bpe) : labels_(labels), is_bpe_(is_bpe) {
  const size_t n = labels.size();
  kinds_.resize(n);
  breaks_.assign(n, 0);
  clean_.resize(n);
  cps_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& l = labels[i];
    if (l.empty()) {
      if (blank_ >= 0) throw InputError("the alphabet has more than one CTC blank (\"\")");
      blank_ = static_cast<int32_t>(i);
      kinds_[i] = TokenKind::Blank;
      continue;
    }
    if (!is_bpe && l == " ") {
      kinds_[i] = TokenKind::Space;
      continue;
    }
    std::string c = l;
    if (is_bpe && starts_with(c, kBpeMark)) {
      kinds_[i] = TokenKind::WordStart;
      c = c.substr(kBpeMark.size());
    } else {
      kinds_[i] = TokenKind::Char;
    }
    if (is_bpe && ends_with(c, kBpeMark)) {
      c = c.substr(0, c.size() - kBpeMark.size());
      breaks_[i] = 1;
    } else if (is_bpe && kinds_[i] == TokenKind::WordStart && l == kBpeMark) {
      breaks_[i] = 1;  // "▁" alone: pyctcdecode strips it at both ends
    }
    clean_[i] = c;
    cps_[i] = utf8_codepoints(c);
  }
  if (blank_ < 0) throw InputError("the alphabet has no CTC blank (\"\")");
}

// ---------------------------------------------------------------------------------------------------------------
LanguageModel::LanguageModel(std::shared_ptr<const LMBackend> lm, const std::vector<std::string>& unigrams,
                             bool use_lm_vocab)
    : lm_(std::move(lm)) {
  if (!unigrams.empty()) {
    for (const std::string& w : unigrams) {
      if (!lm_->contains(w)) continue;  // pyctcdecode keeps only unigrams the LM knows
      trie_.insert(utf8_codepoints(w), lm_->word_id(w));
    }
    has_trie_ = true;
  } else if (use_lm_vocab) {
    const auto v = lm_->list_vocab();
    for (uint32_t id = 0; id < v.size(); ++id) {
      if (id == LMBackend::kUnk || id == lm_->bos() || id == lm_->eos()) continue;
      trie_.insert(utf8_codepoints(v[id]), id);
    }
    has_trie_ = !v.empty();
  }
}

}  // namespace w2vlm

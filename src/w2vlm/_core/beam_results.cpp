// Results of a beam search: hypotheses (text, word and token spans read off the alignment chain), and the garbage
// collection that keeps the node trees as small as the beam. The state is in beam_search_impl.hpp; the per-frame
// path and the end-of-utterance scoring in beam_search.cpp.
#include "beam_search_impl.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace w2vlm {

// ---- results -----------------------------------------------------------------------------------------------
Hypothesis BeamSearch::Impl::make_hypothesis(const Beam& b, int32_t final_text, bool final_step) const {
  Hypothesis h;
  h.logit_score = b.logit;
  h.score = b.score;
  // words of the text
  std::vector<int32_t> words;
  for (int32_t p = final_text; p > 0; p = texts_[static_cast<size_t>(p)].parent)
    words.push_back(texts_[static_cast<size_t>(p)].word);
  if (!final_step && b.partial != 0) words.insert(words.begin(), b.partial);
  std::vector<std::string> wstr(committed_words_);
  for (auto it = words.rbegin(); it != words.rend(); ++it) wstr.push_back(word_string(*it));
  for (size_t i = 0; i < wstr.size(); ++i) {
    if (i) h.text += ' ';
    h.text += wstr[i];
  }
  // token spans from the alignment chain
  std::vector<const AlignNode*> chain;
  for (int32_t a = b.align; a > 0; a = aligns_[static_cast<size_t>(a)].parent) chain.push_back(&aligns_[static_cast<size_t>(a)]);
  std::reverse(chain.begin(), chain.end());
  h.tokens.reserve(committed_tokens_.size() + chain.size());
  h.tokens = committed_tokens_;
  for (size_t i = 0; i < chain.size(); ++i) {
    const int32_t end = i + 1 < chain.size() ? chain[i + 1]->prev_end : b.cur_end;
    h.tokens.push_back(TokenSpan{chain[i]->token, chain[i]->start, end});
  }
  // word spans: group tokens into words as the search did
  const bool bpe = alpha_->is_bpe();
  std::vector<std::pair<int32_t, int32_t>> spans;
  bool open = false, force = false;
  int32_t ws = 0, we = 0;
  bool has_chars = false;
  auto close = [&]() {
    if (open && has_chars) spans.emplace_back(ws, we);
    open = false;
    has_chars = false;
  };
  for (const TokenSpan& ts : h.tokens) {
    const TokenKind k = alpha_->kind(ts.token);
    if (!bpe && k == TokenKind::Space) {
      close();
      continue;
    }
    if (bpe && (k == TokenKind::WordStart || force)) {
      close();
    }
    force = bpe && alpha_->forces_break(ts.token);
    if (!open) {
      open = true;
      ws = ts.start;
    }
    if (!alpha_->clean_cps(ts.token).empty()) {
      if (!has_chars) ws = ts.start;
      has_chars = true;
    }
    we = ts.end;
  }
  close();
  const size_t nw = std::min(spans.size(), wstr.size());
  for (size_t i = 0; i < nw; ++i) h.words.push_back(WordSpan{wstr[i], spans[i].first, spans[i].second});
  for (size_t i = 0; i < K_; ++i) h.lm_state.push_back(state_of(final_text, i));
  return h;
}

// ---- garbage collection ------------------------------------------------------------------------------------
inline int32_t BeamSearch::Impl::lca_text(int32_t a, int32_t b) const {
  while (a != b) {
    if (texts_[static_cast<size_t>(a)].depth >= texts_[static_cast<size_t>(b)].depth)
      a = texts_[static_cast<size_t>(a)].parent;
    else
      b = texts_[static_cast<size_t>(b)].parent;
  }
  return a;
}
inline int32_t BeamSearch::Impl::lca_align(int32_t a, int32_t b) const {
  while (a != b) {
    if (aligns_[static_cast<size_t>(a)].depth >= aligns_[static_cast<size_t>(b)].depth)
      a = aligns_[static_cast<size_t>(a)].parent;
    else
      b = aligns_[static_cast<size_t>(b)].parent;
  }
  return a;
}

void BeamSearch::Impl::collect() {
  // 1. the stable prefix: words and tokens that every beam shares can no longer change. They move to the
  //    committed lists, and the deepest shared text node becomes the new text root (keeping its LM state,
  //    hotword state and score); the deepest shared alignment node becomes the first under the sentinel.
  int32_t ctext = beams_.front().text, calign = beams_.front().align;
  for (const Beam& b : beams_) {
    ctext = lca_text(ctext, b.text);
    calign = lca_align(calign, b.align);
  }
  if (ctext > 0) {
    std::vector<int32_t> words;
    for (int32_t t = ctext; t > 0; t = texts_[static_cast<size_t>(t)].parent) words.push_back(texts_[static_cast<size_t>(t)].word);
    for (auto it = words.rbegin(); it != words.rend(); ++it) {
      committed_words_.push_back(word_string(*it));
      committed_chash_.push_back(partials_[static_cast<size_t>(*it)].chash);
    }
  }
  if (calign > 0) {
    std::vector<TokenSpan> toks;
    int32_t end = aligns_[static_cast<size_t>(calign)].prev_end;
    for (int32_t a = aligns_[static_cast<size_t>(calign)].parent; a > 0; a = aligns_[static_cast<size_t>(a)].parent) {
      const AlignNode& n = aligns_[static_cast<size_t>(a)];
      toks.push_back(TokenSpan{n.token, n.start, end});
      end = n.prev_end;
    }
    committed_tokens_.insert(committed_tokens_.end(), toks.rbegin(), toks.rend());
  }
  // 2. mark what the beams still reach
  std::vector<int32_t> amap(aligns_.size(), -1), tmap(texts_.size(), -1), pmap(partials_.size(), -1);
  amap[0] = pmap[0] = 0;
  auto mark_partial = [&](int32_t p) {
    while (p > 0 && pmap[static_cast<size_t>(p)] < 0) {
      pmap[static_cast<size_t>(p)] = 1;
      p = partials_[static_cast<size_t>(p)].parent;
    }
  };
  tmap[static_cast<size_t>(ctext)] = 1;
  if (calign > 0) amap[static_cast<size_t>(calign)] = 1;
  for (const Beam& b : beams_) {
    for (int32_t a = b.align; a != calign && amap[static_cast<size_t>(a)] < 0; a = aligns_[static_cast<size_t>(a)].parent)
      amap[static_cast<size_t>(a)] = 1;
    for (int32_t t = b.text; t != ctext && tmap[static_cast<size_t>(t)] < 0; t = texts_[static_cast<size_t>(t)].parent) {
      tmap[static_cast<size_t>(t)] = 1;
      mark_partial(texts_[static_cast<size_t>(t)].word);
    }
    mark_partial(b.partial);
  }
  auto renumber = [](std::vector<int32_t>& m) {
    int32_t next = 0;
    for (int32_t& v : m) v = v >= 0 ? next++ : -1;
  };
  renumber(amap);
  renumber(tmap);
  renumber(pmap);
  // 3. compact in order: a node's parent precedes it, so it is already renumbered
  size_t w = 0;
  for (size_t i = 0; i < aligns_.size(); ++i) {
    if (amap[i] < 0) continue;
    AlignNode n = aligns_[i];
    if (static_cast<int32_t>(i) == calign) n.parent = 0;
    else if (n.parent >= 0) n.parent = amap[static_cast<size_t>(n.parent)];
    aligns_[w++] = n;
  }
  aligns_.resize(w);
  w = 0;
  partial_map_.clear();
  for (size_t i = 0; i < partials_.size(); ++i) {
    if (pmap[i] < 0) continue;
    PartialNode n = partials_[i];
    if (n.parent >= 0) n.parent = pmap[static_cast<size_t>(n.parent)];
    partials_[w] = n;
    for (size_t k = 0; k + 1 < K_; ++k) ptries_[w * (K_ - 1) + k] = ptries_[i * (K_ - 1) + k];
    if (w > 0) partial_map_.insert(pair_key(n.parent, n.token), static_cast<int32_t>(w));
    ++w;
  }
  partials_.resize(w);
  if (K_ > 1) ptries_.resize(w * (K_ - 1));
  w = 0;
  text_map_.clear();
  for (size_t i = 0; i < texts_.size(); ++i) {
    if (tmap[i] < 0) continue;
    TextNode n = texts_[i];
    if (w == 0) {  // the (new) root
      n.parent = -1;
      n.word = -1;
    } else {
      n.parent = tmap[static_cast<size_t>(n.parent)];
      n.word = pmap[static_cast<size_t>(n.word)];
    }
    texts_[w] = n;
    for (size_t k = 0; k + 1 < K_; ++k) tstates_[w * (K_ - 1) + k] = tstates_[i * (K_ - 1) + k];
    texts_[w].hist = text_hist(static_cast<int32_t>(w));
    if (w > 0) text_map_.insert(pair_key(n.parent, n.word), static_cast<int32_t>(w));
    ++w;
  }
  texts_.resize(w);
  if (K_ > 1) tstates_.resize(w * (K_ - 1));
  for (Beam& b : beams_) {
    b.align = amap[static_cast<size_t>(b.align)];
    b.text = tmap[static_cast<size_t>(b.text)];
    b.partial = pmap[static_cast<size_t>(b.partial)];
  }
  aligns_.shrink_to_fit();
  texts_.shrink_to_fit();
  partials_.shrink_to_fit();
  ptries_.shrink_to_fit();
  tstates_.shrink_to_fit();
}

// ---- the public class --------------------------------------------------------------------------------------
Hypothesis BeamSearch::best_partial() const {
  const Impl& im = *impl_;
  if (im.beams_.empty()) throw InputError("the decoding has no beam left (an earlier error stopped it)");
  return im.make_hypothesis(im.beams_.front(), im.beams_.front().text, false);
}

int64_t BeamSearch::frames_seen() const { return impl_->frame_; }

}  // namespace w2vlm

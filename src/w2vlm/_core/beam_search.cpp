// The beam search's construction and its per-frame path: node creation (partial words, texts and their LM
// scores), candidate selection, expansion of beams x candidates, merging, scoring and pruning, and the end of the
// utterance (finalize), which scores and prunes with the same functions. One translation unit, so that the
// compiler inlines across it as it did when the search was one file. The state and the helpers it shares with the
// other units are in beam_search_impl.hpp; hypotheses and garbage collection in beam_results.cpp.
#include "beam_search_impl.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace w2vlm {

inline BeamSearch::Impl::Impl(std::shared_ptr<const Alphabet> a, LMList lms, DecodeOptions o)
    : alpha_(std::move(a)), lms_(std::move(lms)), o_(std::move(o)) {
  for (const auto& lm : lms_)
    if (!lm) throw InputError("a language model of the fusion is None");
  K_ = lms_.size();
  if (K_ > kMaxFused)
    throw InputError(std::to_string(K_) + " language models fused; at most " + std::to_string(kMaxFused));
  hw_ = (o_.hotwords && !o_.hotwords->empty()) ? o_.hotwords.get() : nullptr;
  int order = 0;
  for (const auto& lm : lms_) order = std::max(order, lm->order());
  hist_len_ = std::max(1, order - 1);
  if (o_.lm_params.empty()) {
    params_.assign(K_, LMParams{o_.alpha, o_.beta, o_.unk_score_offset, o_.score_boundary});
  } else if (o_.lm_params.size() != K_) {
    throw InputError("the options hold parameters for " + std::to_string(o_.lm_params.size()) +
                     " language models, the decoder fuses " + std::to_string(K_));
  } else {
    params_ = o_.lm_params;
  }
  if (o_.beam_width < 1) throw InputError("beam_width must be >= 1");
  if (o_.has_start_state) {
    if (o_.start_state.size() != K_)
      throw InputError("lm_start_state holds " + std::to_string(o_.start_state.size()) +
                       " LM states; the decoder has " + std::to_string(K_) + " language model(s)");
    for (size_t i = 0; i < K_; ++i) lms_[i]->ngram().check_state(o_.start_state[i], "lm_start_state");
  }
  gc_threshold_ = static_cast<size_t>(std::max(16, o_.gc_min_nodes));
  reset();
}

inline void BeamSearch::Impl::reset() {
  partials_.clear();
  partial_map_.clear();
  texts_.clear();
  text_map_.clear();
  aligns_.clear();
  frame_ = 0;
  // empty partial word
  committed_words_.clear();
  committed_chash_.clear();
  committed_tokens_.clear();
  ptries_.clear();
  tstates_.clear();
  auto root_trie = [&](size_t i) { return lms_[i]->has_trie() ? lms_[i]->trie().root() : -1; };
  partials_.push_back(PartialNode{-1, -1, K_ ? root_trie(0) : -1, 0, 0.0, 0x51ED27A3ULL});
  for (size_t i = 1; i < K_; ++i) ptries_.push_back(root_trie(i));
  // empty text
  TextNode root{};
  root.parent = -1;
  root.word = -1;
  root.hw = hw_ ? hw_->step_space(hw_->root()) : 0;
  root.score = 0.0;
  root.hist = 0x9E3779B97F4A7C15ULL;
  texts_.push_back(root);
  if (K_ > 1) tstates_.resize(K_ - 1);
  for (size_t i = 0; i < K_; ++i) {
    LMState& st = state_of(0, i);
    if (o_.has_start_state) {
      st = o_.start_state[i];
    } else if (params_[i].score_boundary) {
      lms_[i]->ngram().begin_sentence_state(st);
    } else {
      lms_[i]->ngram().null_state(st);
    }
  }
  aligns_.push_back(AlignNode{-1, -1, -1, -1, 0});  // sentinel root
  beams_.clear();
  Beam b{};
  b.logit = 0.0;
  b.score = 0.0;
  b.text = 0;
  b.partial = 0;
  b.last = -1;
  b.hw = root.hw;
  b.align = 0;
  b.cur_end = -1;
  b.pend_tok = -1;
  b.force_break = 0;
  beams_.push_back(b);
}

// ---- nodes -------------------------------------------------------------------------------------------------
inline int32_t BeamSearch::Impl::extend_partial(int32_t parent, int32_t token) {
  const uint64_t key = pair_key(parent, token);
  const int32_t found = partial_map_.find(key);
  if (found >= 0) return found;
  const PartialNode& p = partials_[static_cast<size_t>(parent)];
  const std::vector<uint32_t>& cps = alpha_->clean_cps(token);
  const int32_t nchars = p.nchars + static_cast<int32_t>(cps.size());
  double unk[kMaxFused];
  int32_t tries[kMaxFused];
  for (size_t i = 0; i < K_; ++i) {
    const LanguageModel& lm = *lms_[i];
    int32_t trie = trie_of(parent, i);
    if (lm.has_trie())
      for (uint32_t cp : cps) trie = lm.trie().child(trie, cp);
    tries[i] = trie;
    // pyctcdecode's partial-word score: the offset unless a known word starts so, scaled past 6 characters
    const bool oov = !lm.has_trie() || trie < 0;
    double u = oov ? params_[i].unk_score_offset : 0.0;
    if (nchars > kAvgTokenLen) u = u * nchars / kAvgTokenLen;
    unk[i] = u;
  }
  const double lp = K_ ? mean_of(unk, K_) : 0.0;
  const int32_t id = static_cast<int32_t>(partials_.size());
  partials_.push_back(PartialNode{parent, token, K_ ? tries[0] : -1, nchars, lp,
                                  hash_combine(p.chash, static_cast<uint64_t>(token) + 1)});
  for (size_t i = 1; i < K_; ++i) ptries_.push_back(tries[i]);
  partial_map_.insert(key, id);
  return id;
}

// start a partial word with `token` (BPE word start): a child of the empty partial
inline int32_t BeamSearch::Impl::start_partial(int32_t token) {
  if (alpha_->clean_cps(token).empty()) return 0;
  return extend_partial(0, token);
}

// the text `text` followed by the word `partial` (non-empty); hw_state: hotword state after the word's letters
inline int32_t BeamSearch::Impl::complete_word(int32_t text, int32_t partial, int32_t hw_state) {
  const uint64_t key = pair_key(text, partial);
  const int32_t found = text_map_.find(key);
  if (found >= 0) return found;
  const TextNode& parent = texts_[static_cast<size_t>(text)];
  TextNode n{};
  n.parent = text;
  n.word = partial;
  n.score = parent.score;
  LMState states[kMaxFused];
  if (K_) {
    double terms[kMaxFused];
    for (size_t i = 0; i < K_; ++i) terms[i] = word_score(i, state_of(text, i), partial, false, states[i]);
    n.score += mean_of(terms, K_);
    n.state = states[0];
  }
  n.hw = 0;
  if (hw_) {
    n.hw = hw_->step_space(hw_state);
    n.score += hw_->completed(n.hw);
  }
  n.depth = parent.depth + 1;
  const int32_t id = static_cast<int32_t>(texts_.size());
  texts_.push_back(n);
  for (size_t i = 1; i < K_; ++i) tstates_.push_back(states[i]);
  texts_.back().hist = text_hist(id);
  text_map_.insert(key, id);
  return id;
}

// LM i's term for the word `partial` (0: pyctcdecode's empty word at the end) after context `in`; with `last`
// the end of the sentence is scored with it, in one term, as pyctcdecode does
inline double BeamSearch::Impl::word_score(size_t i, const LMState& in, int32_t partial, bool last,
                                           LMState& out) const {
  const LanguageModel& lm = *lms_[i];
  const LMParams& pr = params_[i];
  const LMBackend& g = lm.ngram();
  int64_t wid = -1;
  bool known = false;
  std::string word;
  if (partial != 0) {
    wid = lm.has_trie() ? lm.trie().word_at(trie_of(partial, i)) : -1;
    known = wid >= 0;
    if (!known || g.needs_text()) word = word_string(partial);
    if (!known) {
      // not a known unigram; the LM may still have it (pyctcdecode scores it, with the OOV offset unless
      // there is no unigram list to check against)
      wid = g.word_id(word);
      known = lm.num_unigrams() == 0 && g.contains(word);
    }
  } else {
    wid = LMBackend::kUnk;
  }
  double p10 = g.score_word(in, static_cast<uint32_t>(wid), word, out);
  if (!known) p10 += pr.unk_score_offset;
  if (last && pr.score_boundary) {
    LMState end;
    p10 = p10 + g.score_word(out, g.eos(), "</s>", end);
  }
  return word_term(pr, p10);
}

// ---- one frame ---------------------------------------------------------------------------------------------
// Candidates of a frame: the tokens with log-prob >= token_min_logp, in order, into cands_; returns the argmax
// (the first maximum; token 0 when row[0] is NaN), as the plain loop
//   for v: { if (row[v] > row[best]) best = v; if (row[v] >= token_min_logp) cands_.push_back(v); }
// computes it, in passes the compiler vectorises (a large vocabulary costs a fraction of a nanosecond a token).
template <class T>
inline int32_t BeamSearch::Impl::select_candidates(const T* row, int32_t V) {
  constexpr int32_t L = 16;
  T lanes[L];
  for (int32_t j = 0; j < L; ++j) lanes[j] = -std::numeric_limits<T>::infinity();
  int32_t v = 0;
  for (; v + L <= V; v += L)
    for (int32_t j = 0; j < L; ++j) lanes[j] = row[v + j] > lanes[j] ? row[v + j] : lanes[j];
  T mx = -std::numeric_limits<T>::infinity();
  for (int32_t j = 0; j < L; ++j) mx = lanes[j] > mx ? lanes[j] : mx;
  for (; v < V; ++v) mx = row[v] > mx ? row[v] : mx;
  int32_t best = 0;
  if (!std::isnan(row[0]))
    while (best < V - 1 && !(row[best] == mx)) ++best;  // a row of NaN and -inf ends at V - 1: the loop's too
  if (std::isnan(row[0]) || !(row[best] == mx)) best = row_argmax_plain(row, V);
  // row[v] >= token_min_logp (a double) <=> row[v] >= the smallest T not below it
  const double tml = o_.token_min_logp;
  T thr = static_cast<T>(tml);
  if (static_cast<double>(thr) < tml) thr = std::nextafter(thr, std::numeric_limits<T>::infinity());
  cand_buf_.resize(static_cast<size_t>(V));
  int32_t* out = cand_buf_.data();
  int32_t n = 0;
  // blocks of L tokens with none at the threshold (most of a large vocabulary) are skipped after one vectorised
  // test; the others are compacted token by token, in order
  for (int32_t u0 = 0; u0 < V; u0 += L) {
    const int32_t end = std::min(V, u0 + L);
    if (end - u0 == L) {
      int hit = 0;
      for (int32_t j = 0; j < L; ++j) hit |= row[u0 + j] >= thr ? 1 : 0;
      if (!hit) continue;
    }
    for (int32_t u = u0; u < end; ++u) {
      out[n] = u;
      n += row[u] >= thr ? 1 : 0;
    }
  }
  cands_.assign(out, out + n);
  return best;
}

template <class T>
inline int32_t BeamSearch::Impl::row_argmax_plain(const T* row, int32_t V) {
  int32_t best = 0;
  for (int32_t v = 0; v < V; ++v)
    if (row[v] > row[best]) best = v;
  return best;
}

template <class T>
inline void BeamSearch::Impl::step(const T* row, int32_t t) {
  const int32_t V = static_cast<int32_t>(alpha_->size());
  const int32_t blank = alpha_->blank();
  const bool bpe = alpha_->is_bpe();
  const int32_t best = select_candidates(row, V);
  if (std::find(cands_.begin(), cands_.end(), best) == cands_.end()) {
    cands_.push_back(best);
    std::sort(cands_.begin(), cands_.end());
  }
  next_.clear();
  merge_reset(cands_.size() * beams_.size());
  for (int32_t c : cands_) {
    const double lp = row[c];
    const TokenKind kind = alpha_->kind(c);
    for (const Beam& b : beams_) {
      Beam nb = b;
      nb.logit = b.logit + lp;
      if (c == blank || c == b.last) {
        if (c != blank) nb.cur_end = t + 1;
        nb.last = c;
        // a pending alignment node stays pending (same token run)
      } else if (bpe && (kind == TokenKind::WordStart || b.force_break)) {
        nb.force_break = alpha_->forces_break(c) ? 1 : 0;
        int32_t hw = b.hw;
        if (b.partial != 0) {
          nb.text = complete_word(b.text, b.partial, b.hw);
          hw = texts_[static_cast<size_t>(nb.text)].hw;
        }
        nb.partial = start_partial(c);
        nb.hw = hw_walk(hw, c);
        nb.last = c;
        set_pending(nb, b, c, t);
      } else if (!bpe && kind == TokenKind::Space) {
        if (b.partial != 0) {
          nb.text = complete_word(b.text, b.partial, b.hw);
          nb.hw = texts_[static_cast<size_t>(nb.text)].hw;
        }
        nb.partial = 0;
        nb.last = c;
        set_pending(nb, b, c, t);
      } else {
        nb.partial = extend_partial(b.partial, c);
        nb.hw = hw_walk(b.hw, c);
        nb.last = c;
        if (bpe && alpha_->forces_break(c)) nb.force_break = 1;
        set_pending(nb, b, c, t);
      }
      push_candidate(nb);
    }
  }
  score_prune_and_swap();
}

inline void BeamSearch::Impl::score_prune_and_swap() {
  double best = -std::numeric_limits<double>::infinity();
  for (Beam& b : next_) {
    // as pyctcdecode adds them: acoustic + (LM and hotwords of the text + the open word's term)
    b.score = b.logit + (texts_[static_cast<size_t>(b.text)].score + partial_term(b.partial, b.hw));
    if (b.score > best) best = b.score;
  }
  select(best, false);
}

// keep beams within beam_prune_logp of the best, best beam_width of them, sorted; then materialise alignments
inline void BeamSearch::Impl::select(double best, bool final_step) {
  const double floor = best + o_.beam_prune_logp;
  order_.clear();
  for (int32_t i = 0; i < static_cast<int32_t>(next_.size()); ++i) {
    const double sc = next_[static_cast<size_t>(i)].score;
    if (std::isnan(sc))
      throw InputError("a beam score became NaN at frame " + std::to_string(frame_) +
                       " (logit score " + std::to_string(next_[static_cast<size_t>(i)].logit) +
                       "): the log-probabilities, LM weights or hotword weights hold non-finite values");
    if (sc >= floor) order_.push_back(i);
  }
  // a finite or -inf best always keeps itself: the search never ends with no beam
  if (order_.empty() && !next_.empty())
    throw InputError("every beam was pruned at frame " + std::to_string(frame_) + " (best score " +
                     std::to_string(best) + ", beam_prune_logp " + std::to_string(o_.beam_prune_logp) + ")");
  auto better = [this](int32_t a, int32_t b) {
    const double sa = next_[static_cast<size_t>(a)].score, sb = next_[static_cast<size_t>(b)].score;
    return sa > sb || (sa == sb && a < b);
  };
  const size_t keep = std::min(order_.size(), static_cast<size_t>(o_.beam_width));
  if (order_.size() > keep) {
    std::nth_element(order_.begin(), order_.begin() + static_cast<long>(keep), order_.end(), better);
    order_.resize(keep);
  }
  std::sort(order_.begin(), order_.end(), better);
  beams_.clear();
  if (o_.prune_history && !final_step) {
    // keep the best beam per (last words of history, partial word, last token)
    std::vector<uint64_t> seen;
    seen.reserve(order_.size());
    for (int32_t i : order_) {
      const Beam& b = next_[static_cast<size_t>(i)];
      const uint64_t k = hash_combine(hash_combine(texts_[static_cast<size_t>(b.text)].hist, static_cast<uint64_t>(b.partial) + 1),
                                      static_cast<uint64_t>(static_cast<uint32_t>(b.last)) + 7);
      if (std::find(seen.begin(), seen.end(), k) != seen.end()) continue;
      seen.push_back(k);
      beams_.push_back(b);
    }
  } else {
    for (int32_t i : order_) beams_.push_back(next_[static_cast<size_t>(i)]);
  }
  for (Beam& b : beams_) {
    if (b.pend_tok >= 0) {
      aligns_.push_back(AlignNode{b.align, b.pend_tok, b.pend_start, b.pend_prev,
                                  aligns_[static_cast<size_t>(b.align)].depth + 1});
      b.align = static_cast<int32_t>(aligns_.size() - 1);
      b.pend_tok = -1;
    }
  }
}

template <class T>
inline void BeamSearch::Impl::advance(const T* lp, int64_t frames) {
  const size_t V = alpha_->size();
  for (int64_t f = 0; f < frames; ++f) {
    step(lp + static_cast<size_t>(f) * V, static_cast<int32_t>(frame_));
    ++frame_;
    maybe_collect();
  }
}

// ---- end of utterance --------------------------------------------------------------------------------------
inline std::vector<Hypothesis> BeamSearch::Impl::finalize() {
  // end of utterance: the open partial word becomes a word, scored together with </s> (one term, as pyctcdecode
  // does). Beams are visited best first; when several end in the same text, the last one visited decides how
  // the text was split between finished words and the open word, as in pyctcdecode (it matters for the score
  // of a beam that ended in a delimiter: pyctcdecode scores its empty open word as an unknown word).
  next_.clear();
  merge_reset(beams_.size());
  std::vector<std::pair<int32_t, int32_t>> src;  // (text, open word) of the beam merged last into each result
  for (const Beam& b : beams_) {
    Beam nb = b;
    if (b.partial != 0) {
      nb.text = complete_word(b.text, b.partial, b.hw);
      nb.hw = texts_[static_cast<size_t>(nb.text)].hw;
    }
    nb.partial = 0;
    nb.last = -1;
    const size_t idx = push_candidate(nb);
    if (idx == src.size())
      src.emplace_back(b.text, b.partial);
    else
      src[idx] = {b.text, b.partial};
  }
  double best = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < next_.size(); ++i) {
    Beam& b = next_[i];
    const TextNode& tn = texts_[static_cast<size_t>(b.text)];
    double s = tn.score;
    if (K_) {
      const int32_t prev = src[i].first, open = src[i].second;
      double terms[kMaxFused];
      LMState out;
      for (size_t k = 0; k < K_; ++k) {
        if (open != 0 || o_.pyctcdecode_eos) {
          terms[k] = word_score(k, state_of(prev, k), open, true, out);
        } else {  // the text ended in a delimiter: only </s>
          const LMParams& pr = params_[k];
          const LMBackend& g = lms_[k]->ngram();
          terms[k] = pr.score_boundary && pr.alpha != 0.0
                         ? pr.alpha * g.score_word(state_of(prev, k), g.eos(), "</s>", out) * kLogBaseChange
                         : 0.0;
        }
      }
      const double hw_gain = (open != 0 && hw_) ? hw_->completed(tn.hw) : 0.0;
      s = texts_[static_cast<size_t>(prev)].score + mean_of(terms, K_) + hw_gain;
    }
    b.score = b.logit + s;
    best = std::max(best, b.score);
  }
  select(best, true);
  const size_t n = o_.n_best < 0 ? beams_.size() : std::min(beams_.size(), static_cast<size_t>(o_.n_best));
  std::vector<Hypothesis> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(make_hypothesis(beams_[i], beams_[i].text, true));
  return out;
}

// ---- the public class --------------------------------------------------------------------------------------
BeamSearch::BeamSearch(std::shared_ptr<const Alphabet> alphabet, LMList lms, DecodeOptions opts)
    : impl_(std::make_unique<Impl>(std::move(alphabet), std::move(lms), std::move(opts))) {}
BeamSearch::~BeamSearch() = default;

void BeamSearch::advance(const float* log_probs, int64_t frames) { impl_->advance(log_probs, frames); }
void BeamSearch::advance(const double* log_probs, int64_t frames) { impl_->advance(log_probs, frames); }

std::vector<Hypothesis> BeamSearch::finalize() const {
  // finalisation changes the working buffers, not the search: run it on a copy of the beams
  Impl& im = *impl_;
  const auto saved_beams = im.beams_;
  auto res = im.finalize();
  im.beams_ = saved_beams;
  return res;
}

}  // namespace w2vlm

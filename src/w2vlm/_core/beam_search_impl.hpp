// Internal to the native core: the state of one beam search (BeamSearch::Impl) and the small helpers that its
// translation units share. The search is split by concern:
//   beam_search.cpp   construction, the per-frame path (node creation, candidate expansion, merging, scoring,
//                     pruning) and finalize: one unit, so that the compiler inlines across it
//   beam_results.cpp  hypotheses (text, word and token spans), garbage collection of the node trees
//   batch_decode.cpp  raw logits fed a few frames at a time, decode() and decode_batch() on a thread pool
// Members declared inline here are defined in the one unit that calls them (as when they were all defined in
// the class, the compiler weighs inlining them the same way); those defined in this header are the small helpers
// of the hot path that more than one unit calls.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "beam_search.hpp"
#include "common.hpp"

namespace w2vlm {

// pyctcdecode turns log10 into ln with the factor 1 / log10(e), computed in double as it does
inline const double kLogBaseChange = 1.0 / std::log10(2.718281828459045235360287);
inline constexpr int kAvgTokenLen = 6;
inline constexpr size_t kMaxFused = 16;  // language models fused in one decoding, at most

// written as pyctcdecode writes it (log(1 + x), not log1p), for the same bits
inline double log_sum_exp(double a, double b) {
  return a >= b ? a + std::log(1.0 + std::exp(b - a)) : b + std::log(1.0 + std::exp(a - b));
}

// mean of per-LM terms as pyctcdecode takes it: a sum from the first term on, divided by the count
inline double mean_of(const double* v, size_t n) {
  if (n == 1) return v[0];
  double s = v[0];
  for (size_t i = 1; i < n; ++i) s += v[i];
  return s / static_cast<double>(n);
}

// Open-addressing map from a 64-bit key (never 0) to an int32 value.
class IdMap {
 public:
  IdMap() { rehash(64); }
  int32_t find(uint64_t key) const {
    size_t i = mix64(key) & mask_;
    while (true) {
      const Slot& s = slots_[i];
      if (s.key == key) return s.value;
      if (s.key == 0) return -1;
      i = (i + 1) & mask_;
    }
  }
  void insert(uint64_t key, int32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
    size_t i = mix64(key) & mask_;
    while (slots_[i].key != 0 && slots_[i].key != key) i = (i + 1) & mask_;
    if (slots_[i].key == 0) ++size_;
    slots_[i] = Slot{key, value};
  }
  void clear() {
    if (size_ == 0) return;
    std::fill(slots_.begin(), slots_.end(), Slot{0, 0});
    size_ = 0;
  }

 private:
  struct Slot {
    uint64_t key;
    int32_t value;
  };
  void rehash(size_t cap) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{0, 0});
    mask_ = cap - 1;
    size_ = 0;
    for (const Slot& s : old)
      if (s.key) insert(s.key, s.value);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return ((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b)) + 1;
}

// One decoding's state: the node trees, the beams and the per-frame buffers (see beam_search.hpp).
struct BeamSearch::Impl {
  std::shared_ptr<const Alphabet> alpha_;
  LMList lms_;
  size_t K_ = 0;                  // number of fused LMs
  std::vector<LMParams> params_;  // one per LM
  DecodeOptions o_;
  const HotwordAutomaton* hw_ = nullptr;
  int hist_len_ = 1;

  struct PartialNode {
    int32_t parent;
    int32_t token;
    int32_t trie;      // node in the unigram trie of the first LM, or -1 (the others': ptries_)
    int32_t nchars;    // characters in the partial word
    double lm_partial; // score term while this partial word is open
    uint64_t chash;    // hash of the token sequence (stable across garbage collection)
  };
  struct TextNode {
    int32_t parent;
    int32_t word;     // partial node id of the last word
    int32_t hw;       // hotword state after the word and its trailing boundary
    double score;     // accumulated LM (alpha/beta scaled) + completed hotword score
    uint64_t hist;    // hash of the last hist_len_ words (prune_history)
    int32_t depth;    // words from the root
    LMState state;    // context of the first LM (the others': tstates_)
  };
  struct AlignNode {
    int32_t parent;
    int32_t token;
    int32_t start;
    int32_t prev_end;  // end frame of the previous emitted token
    int32_t depth;     // tokens from the root
  };
  struct Beam {
    double logit;
    double score;
    int32_t text;
    int32_t partial;
    int32_t last;       // last token (blank included); -1 at the start
    int32_t hw;
    int32_t align;      // materialised alignment node (or parent of the pending one)
    int32_t cur_end;    // end frame of the last emitted non-blank token
    int32_t pend_tok;   // >= 0: a new alignment node (align, pend_tok, pend_start, pend_prev) is pending
    int32_t pend_start;
    int32_t pend_prev;
    uint8_t force_break;
  };

  std::vector<PartialNode> partials_;
  IdMap partial_map_;
  // with several LMs, the trie nodes and states of LMs 1..K-1, K-1 per partial / text node, in node order
  std::vector<int32_t> ptries_;
  std::vector<LMState> tstates_;
  // the stable prefix moved out of the trees by collect()
  std::vector<std::string> committed_words_;
  std::vector<uint64_t> committed_chash_;
  std::vector<TokenSpan> committed_tokens_;
  std::vector<TextNode> texts_;
  IdMap text_map_;
  std::vector<AlignNode> aligns_;
  std::vector<Beam> beams_, next_;
  std::vector<int32_t> order_;
  std::vector<int32_t> cands_;
  std::vector<int32_t> cand_buf_;
  // per-frame merge table: (text, partial, last) -> index in next_
  struct MergeSlot {
    int32_t text, partial, last, idx;
    uint32_t gen;
  };
  std::vector<MergeSlot> merge_;
  uint32_t gen_ = 0;
  int64_t frame_ = 0;

  inline Impl(std::shared_ptr<const Alphabet> a, LMList lms, DecodeOptions o);
  inline void reset();

  // pyctcdecode's word term: alpha * log10 score * (1 / log10 e) + beta, in that order; alpha = 0 switches the
  // LM off, even for words of probability 0 (-inf)
  static double word_term(const LMParams& p, double p10) {
    return (p.alpha == 0.0 ? 0.0 : p.alpha * p10 * kLogBaseChange) + p.beta;
  }
  LMState& state_of(int32_t text, size_t i) {
    return i == 0 ? texts_[static_cast<size_t>(text)].state : tstates_[static_cast<size_t>(text) * (K_ - 1) + i - 1];
  }
  const LMState& state_of(int32_t text, size_t i) const {
    return i == 0 ? texts_[static_cast<size_t>(text)].state : tstates_[static_cast<size_t>(text) * (K_ - 1) + i - 1];
  }
  int32_t trie_of(int32_t partial, size_t i) const {
    return i == 0 ? partials_[static_cast<size_t>(partial)].trie : ptries_[static_cast<size_t>(partial) * (K_ - 1) + i - 1];
  }

  // ---- nodes (beam_search.cpp) -------------------------------------------------------------------------------
  inline int32_t extend_partial(int32_t parent, int32_t token);
  // start a partial word with `token` (BPE word start): a child of the empty partial
  inline int32_t start_partial(int32_t token);
  // the text `text` followed by the word `partial` (non-empty); hw_state: hotword state after the word's letters
  inline int32_t complete_word(int32_t text, int32_t partial, int32_t hw_state);
  // LM i's term for the word `partial` (0: pyctcdecode's empty word at the end) after context `in`; with `last`
  // the end of the sentence is scored with it, in one term, as pyctcdecode does
  inline double word_score(size_t i, const LMState& in, int32_t partial, bool last, LMState& out) const;

  std::string word_string(int32_t partial) const {
    std::vector<int32_t> toks;
    for (int32_t p = partial; p > 0; p = partials_[static_cast<size_t>(p)].parent)
      toks.push_back(partials_[static_cast<size_t>(p)].token);
    std::string s;
    for (auto it = toks.rbegin(); it != toks.rend(); ++it) s += alpha_->clean(*it);
    return s;
  }

  int32_t hw_walk(int32_t state, int32_t token) const {
    if (!hw_) return state;
    for (uint32_t cp : alpha_->clean_cps(token)) state = hw_->step(state, cp);
    return state;
  }

  // prune_history key: hash of the last hist_len_ words of a text (continuing into committed words), by content
  uint64_t text_hist(int32_t node) const {
    uint64_t h = 0x9E3779B97F4A7C15ULL;
    int k = 0;
    for (int32_t p = node; p > 0 && k < hist_len_; p = texts_[static_cast<size_t>(p)].parent, ++k)
      h = hash_combine(h, partials_[static_cast<size_t>(texts_[static_cast<size_t>(p)].word)].chash);
    for (size_t i = committed_chash_.size(); i > 0 && k < hist_len_; --i, ++k) h = hash_combine(h, committed_chash_[i - 1]);
    return h;
  }

  double partial_term(int32_t partial, int32_t hw_state) const {
    const double pot = hw_ ? hw_->potential(hw_state) : 0.0;
    if (partial == 0) return pot;
    if (pot > 0.0) return pot;  // spelling a hotword: its credit replaces the unknown-prefix penalty
    return partials_[static_cast<size_t>(partial)].lm_partial;
  }

  // ---- merging -----------------------------------------------------------------------------------------------
  void merge_reset(size_t expected) {
    size_t cap = 64;
    while (cap < expected * 2) cap <<= 1;
    if (merge_.size() < cap) {
      merge_.assign(cap, MergeSlot{0, 0, 0, 0, 0});
      gen_ = 0;
    }
    ++gen_;
    if (gen_ == 0) {  // wrapped
      std::fill(merge_.begin(), merge_.end(), MergeSlot{0, 0, 0, 0, 0});
      gen_ = 1;
    }
  }

  size_t push_candidate(const Beam& nb) {
    const size_t mask = merge_.size() - 1;
    uint64_t h = hash_combine(hash_combine(mix64(static_cast<uint64_t>(nb.text) + 1), static_cast<uint64_t>(nb.partial) + 1),
                              static_cast<uint64_t>(static_cast<uint32_t>(nb.last)) + 1);
    size_t i = h & mask;
    while (true) {
      MergeSlot& s = merge_[i];
      if (s.gen != gen_) {
        s = MergeSlot{nb.text, nb.partial, nb.last, static_cast<int32_t>(next_.size()), gen_};
        next_.push_back(nb);
        return next_.size() - 1;
      }
      if (s.text == nb.text && s.partial == nb.partial && s.last == nb.last) {
        Beam& e = next_[static_cast<size_t>(s.idx)];
        const double merged = log_sum_exp(e.logit, nb.logit);
        // frames: of the beam merged last (pyctcdecode), or of the more probable path
        if (!o_.best_path_frames || nb.logit > e.logit) e = nb;
        e.logit = merged;
        return static_cast<size_t>(s.idx);
      }
      i = (i + 1) & mask;
    }
  }

  // ---- one frame (beam_search.cpp) ---------------------------------------------------------------------------
  template <class T>
  inline int32_t select_candidates(const T* row, int32_t V);
  template <class T>
  static inline int32_t row_argmax_plain(const T* row, int32_t V);
  template <class T>
  inline void step(const T* row, int32_t t);
  // nb emits a new token: its alignment node is created only if it survives pruning (see select)
  static void set_pending(Beam& nb, const Beam& b, int32_t tok, int32_t t) {
    nb.align = b.align;
    nb.pend_tok = tok;
    nb.pend_start = t;
    nb.pend_prev = b.cur_end;
    nb.cur_end = t + 1;
  }
  inline void score_prune_and_swap();
  // keep beams within beam_prune_logp of the best, best beam_width of them, sorted; then materialise alignments
  inline void select(double best, bool final_step);
  template <class T>
  inline void advance(const T* lp, int64_t frames);

  // ---- garbage collection (beam_results.cpp) -----------------------------------------------------------------
  // Node arenas grow with the audio; every so often only the nodes reachable from the live beams are kept and
  // renumbered (parents keep lower ids than children). Hash-consing stays canonical (one id per distinct word /
  // text among live nodes), so decoding continues exactly as without collection.
  size_t gc_threshold_ = 1 << 15;

  void maybe_collect() {
    const size_t size = aligns_.size() + texts_.size() + partials_.size();
    if (size < gc_threshold_) return;
    collect();
    const size_t live = aligns_.size() + texts_.size() + partials_.size();
    gc_threshold_ = std::max<size_t>(static_cast<size_t>(o_.gc_min_nodes), 4 * live);
  }
  inline int32_t lca_text(int32_t a, int32_t b) const;
  inline int32_t lca_align(int32_t a, int32_t b) const;
  void collect();

  // ---- results -----------------------------------------------------------------------------------------------
  Hypothesis make_hypothesis(const Beam& b, int32_t final_text, bool final_step) const;  // beam_results.cpp
  // end of utterance (beam_search.cpp)
  inline std::vector<Hypothesis> finalize();
};

}  // namespace w2vlm

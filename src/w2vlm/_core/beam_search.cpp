#include "beam_search.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <type_traits>

namespace w2vlm {

namespace {

// pyctcdecode turns log10 into ln with the factor 1 / log10(e), computed in double as it does
const double kLogBaseChange = 1.0 / std::log10(2.718281828459045235360287);
constexpr int kAvgTokenLen = 6;
constexpr size_t kMaxFused = 16;  // language models fused in one decoding, at most
const std::string kBpeMark = "\xE2\x96\x81";  // U+2581 '▁'

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

bool starts_with(const std::string& s, const std::string& p) { return s.size() >= p.size() && s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
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

// ---------------------------------------------------------------------------------------------------------------
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

  Impl(std::shared_ptr<const Alphabet> a, LMList lms, DecodeOptions o)
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

  void reset() {
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
  int32_t extend_partial(int32_t parent, int32_t token) {
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
  int32_t start_partial(int32_t token) {
    if (alpha_->clean_cps(token).empty()) return 0;
    return extend_partial(0, token);
  }

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

  // the text `text` followed by the word `partial` (non-empty); hw_state: hotword state after the word's letters
  int32_t complete_word(int32_t text, int32_t partial, int32_t hw_state) {
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
  double word_score(size_t i, const LMState& in, int32_t partial, bool last, LMState& out) const {
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

  // prune_history key: hash of the last hist_len_ words of a text (continuing into committed words), by content
  uint64_t text_hist(int32_t node) const {
    uint64_t h = 0x9E3779B97F4A7C15ULL;
    int k = 0;
    for (int32_t p = node; p > 0 && k < hist_len_; p = texts_[static_cast<size_t>(p)].parent, ++k)
      h = hash_combine(h, partials_[static_cast<size_t>(texts_[static_cast<size_t>(p)].word)].chash);
    for (size_t i = committed_chash_.size(); i > 0 && k < hist_len_; --i, ++k) h = hash_combine(h, committed_chash_[i - 1]);
    return h;
  }

  // ---- garbage collection ------------------------------------------------------------------------------------
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

  int32_t lca_text(int32_t a, int32_t b) const {
    while (a != b) {
      if (texts_[static_cast<size_t>(a)].depth >= texts_[static_cast<size_t>(b)].depth)
        a = texts_[static_cast<size_t>(a)].parent;
      else
        b = texts_[static_cast<size_t>(b)].parent;
    }
    return a;
  }
  int32_t lca_align(int32_t a, int32_t b) const {
    while (a != b) {
      if (aligns_[static_cast<size_t>(a)].depth >= aligns_[static_cast<size_t>(b)].depth)
        a = aligns_[static_cast<size_t>(a)].parent;
      else
        b = aligns_[static_cast<size_t>(b)].parent;
    }
    return a;
  }

  void collect() {
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

  // ---- one frame ---------------------------------------------------------------------------------------------
  // Candidates of a frame: the tokens with log-prob >= token_min_logp, in order, into cands_; returns the argmax
  // (the first maximum; token 0 when row[0] is NaN), as the plain loop
  //   for v: { if (row[v] > row[best]) best = v; if (row[v] >= token_min_logp) cands_.push_back(v); }
  // computes it, in passes the compiler vectorises (a large vocabulary costs a fraction of a nanosecond a token).
  template <class T>
  int32_t select_candidates(const T* row, int32_t V) {
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
    for (int32_t u = 0; u < V; ++u) {
      out[n] = u;
      n += row[u] >= thr ? 1 : 0;
    }
    cands_.assign(out, out + n);
    return best;
  }

  template <class T>
  static int32_t row_argmax_plain(const T* row, int32_t V) {
    int32_t best = 0;
    for (int32_t v = 0; v < V; ++v)
      if (row[v] > row[best]) best = v;
    return best;
  }

  template <class T>
  void step(const T* row, int32_t t) {
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

  // nb emits a new token: its alignment node is created only if it survives pruning (see select)
  static void set_pending(Beam& nb, const Beam& b, int32_t tok, int32_t t) {
    nb.align = b.align;
    nb.pend_tok = tok;
    nb.pend_start = t;
    nb.pend_prev = b.cur_end;
    nb.cur_end = t + 1;
  }

  void score_prune_and_swap() {
    double best = -std::numeric_limits<double>::infinity();
    for (Beam& b : next_) {
      // as pyctcdecode adds them: acoustic + (LM and hotwords of the text + the open word's term)
      b.score = b.logit + (texts_[static_cast<size_t>(b.text)].score + partial_term(b.partial, b.hw));
      if (b.score > best) best = b.score;
    }
    select(best, false);
  }

  // keep beams within beam_prune_logp of the best, best beam_width of them, sorted; then materialise alignments
  void select(double best, bool final_step) {
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
  void advance(const T* lp, int64_t frames) {
    const size_t V = alpha_->size();
    for (int64_t f = 0; f < frames; ++f) {
      step(lp + static_cast<size_t>(f) * V, static_cast<int32_t>(frame_));
      ++frame_;
      maybe_collect();
    }
  }

  // ---- results -----------------------------------------------------------------------------------------------
  Hypothesis make_hypothesis(const Beam& b, int32_t final_text, bool final_step) const {
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

  std::vector<Hypothesis> finalize() {
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
};

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

Hypothesis BeamSearch::best_partial() const {
  const Impl& im = *impl_;
  if (im.beams_.empty()) throw InputError("the decoding has no beam left (an earlier error stopped it)");
  return im.make_hypothesis(im.beams_.front(), im.beams_.front().text, false);
}

int64_t BeamSearch::frames_seen() const { return impl_->frame_; }

namespace {

template <class T>
void advance_normalized(BeamSearch& search, const RawLogits& x, const LogitsScan& scan) {
  // a few frames at a time, so that the normalised rows stay in cache and memory does not grow with the input
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(16384 / std::max<size_t>(x.vocab, 1)));
  std::vector<T> rows(static_cast<size_t>(std::min(chunk, x.frames)) * x.vocab), tmp;
  for (int64_t t0 = 0; t0 < x.frames; t0 += chunk) {
    const int64_t n = std::min(chunk, x.frames - t0);
    normalize_rows<T>(x, scan, t0, n, rows.data(), tmp);
    search.advance(rows.data(), n);
  }
}

// Run fn(i) for i in `order` on up to num_threads threads; rethrow the exception of the smallest failing index.
template <class F>
void parallel_for(const std::vector<size_t>& order, int num_threads, F&& fn) {
  const size_t n = order.size();
  std::vector<std::exception_ptr> errors(n);
  std::atomic<size_t> next{0};
  auto worker = [&]() {
    while (true) {
      const size_t k = next.fetch_add(1);
      if (k >= n) return;
      try {
        fn(order[k]);
      } catch (...) {
        errors[order[k]] = std::current_exception();
      }
    }
  };
  if (num_threads <= 1 || n <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(num_threads));
    for (int k = 0; k < num_threads; ++k) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// thread count and order (longest utterances first, so that no thread is left with a long one at the end)
std::vector<size_t> batch_order(const std::vector<int64_t>& frames, int& num_threads) {
  const size_t n = frames.size();
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(num_threads), std::max<size_t>(n, 1)));
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return frames[a] > frames[b]; });
  return order;
}

}  // namespace

void BeamSearch::advance(const RawLogits& x, const LogitsScan& scan) {
  if (x.f64) {
    advance_normalized<double>(*this, x, scan);
  } else {
    advance_normalized<float>(*this, x, scan);
  }
}

void BeamSearch::advance(const RawLogits& x) { advance(x, scan_logits(x)); }

template <class T>
std::vector<Hypothesis> decode(std::shared_ptr<const Alphabet> alphabet, const LMList& lms, const DecodeOptions& opts,
                               const T* log_probs, int64_t frames) {
  BeamSearch s(std::move(alphabet), lms, opts);
  s.advance(log_probs, frames);
  return s.finalize();
}
template std::vector<Hypothesis> decode<float>(std::shared_ptr<const Alphabet>, const LMList&, const DecodeOptions&,
                                               const float*, int64_t);
template std::vector<Hypothesis> decode<double>(std::shared_ptr<const Alphabet>, const LMList&, const DecodeOptions&,
                                                const double*, int64_t);

template <class T>
std::vector<std::vector<Hypothesis>> decode_batch(std::shared_ptr<const Alphabet> alphabet, const LMList& lms,
                                                  const DecodeOptions& opts, const std::vector<const T*>& log_probs,
                                                  const std::vector<int64_t>& frames, int num_threads) {
  std::vector<std::vector<Hypothesis>> out(log_probs.size());
  const auto order = batch_order(frames, num_threads);
  parallel_for(order, num_threads, [&](size_t i) { out[i] = decode(alphabet, lms, opts, log_probs[i], frames[i]); });
  return out;
}

template std::vector<std::vector<Hypothesis>> decode_batch<float>(std::shared_ptr<const Alphabet>, const LMList&,
                                                                 const DecodeOptions&,
                                                                 const std::vector<const float*>&,
                                                                 const std::vector<int64_t>&, int);
template std::vector<std::vector<Hypothesis>> decode_batch<double>(std::shared_ptr<const Alphabet>, const LMList&,
                                                                  const DecodeOptions&,
                                                                  const std::vector<const double*>&,
                                                                  const std::vector<int64_t>&, int);

std::vector<std::vector<Hypothesis>> decode_batch(std::shared_ptr<const Alphabet> alphabet, const LMList& lms,
                                                  const DecodeOptions& opts, const std::vector<RawLogits>& inputs,
                                                  int num_threads) {
  const size_t n = inputs.size();
  std::vector<int64_t> frames(n);
  for (size_t i = 0; i < n; ++i) frames[i] = inputs[i].frames;
  const auto order = batch_order(frames, num_threads);
  // every input is checked before any is decoded (the scan is cheap next to the search)
  std::vector<LogitsScan> scans(n);
  parallel_for(order, num_threads, [&](size_t i) {
    try {
      scans[i] = scan_logits(inputs[i]);
    } catch (const InputError& e) {
      throw InputError("logits_list[" + std::to_string(i) + "]: " + e.what());
    }
  });
  std::vector<std::vector<Hypothesis>> out(n);
  parallel_for(order, num_threads, [&](size_t i) {
    BeamSearch search(alphabet, lms, opts);
    search.advance(inputs[i], scans[i]);
    scans[i] = LogitsScan{};
    out[i] = search.finalize();
  });
  return out;
}

}  // namespace w2vlm

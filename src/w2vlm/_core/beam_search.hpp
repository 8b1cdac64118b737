// CTC prefix beam search with n-gram LM shallow fusion and hotword biasing.
//
// Semantics follow pyctcdecode (the reference most hub models were tuned with): per frame, candidate tokens are
// those with log-prob >= token_min_logp plus the argmax; a blank or a repeat of the last token keeps the prefix,
// a word delimiter (or a BPE word-start token) finishes the partial word, which is then scored by the LM:
//   alpha * ln(10) * (log10 p(word | history) [+ unk_score_offset if OOV]) + beta
// partial words get unk_score_offset (scaled up past 6 characters) unless they are a prefix of a known word;
// beams with equal (text, partial word, last token) are merged by log-sum-exp; beams worse than the best by more
// than beam_prune_logp are dropped and the best beam_width kept. The arithmetic is pyctcdecode's, operation for
// operation (same formulas, same order of additions), so that double log-probabilities give the same scores to
// the last bit. Several LMs may be fused at once: each scores words and partial words with its own parameters,
// and a hypothesis gets the mean of their terms (pyctcdecode's MultiLanguageModel).
//
// Representation: a beam never holds a string. Text is a node in a hash-consed tree of words (so equal texts
// are equal ids and the LM score of a text is computed once), the partial word a node in a hash-consed tree of
// tokens (carrying its position in the unigram character trie), and the alignment a node in a tree of emitted
// tokens with frame spans, created only for beams that survive pruning.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hotwords.hpp"
#include "logits.hpp"
#include "ngram.hpp"

namespace w2vlm {

enum class TokenKind : uint8_t { Blank, Space, Char, WordStart };

// A CTC vocabulary already normalised the pyctcdecode way ("" blank, " " delimiter, "▁" BPE word starts).
class Alphabet {
 public:
  Alphabet(const std::vector<std::string>& labels, bool is_bpe);
  size_t size() const { return labels_.size(); }
  bool is_bpe() const { return is_bpe_; }
  int32_t blank() const { return blank_; }
  TokenKind kind(int32_t t) const { return kinds_[static_cast<size_t>(t)]; }
  bool forces_break(int32_t t) const { return breaks_[static_cast<size_t>(t)] != 0; }
  const std::string& clean(int32_t t) const { return clean_[static_cast<size_t>(t)]; }
  const std::vector<uint32_t>& clean_cps(int32_t t) const { return cps_[static_cast<size_t>(t)]; }
  const std::vector<std::string>& labels() const { return labels_; }

 private:
  std::vector<std::string> labels_;
  bool is_bpe_;
  int32_t blank_ = -1;
  std::vector<TokenKind> kinds_;
  std::vector<uint8_t> breaks_;
  std::vector<std::string> clean_;
  std::vector<std::vector<uint32_t>> cps_;
};

// The language model as the decoder sees it: n-gram LM + character trie of the known words.
class LanguageModel {
 public:
  // unigrams: known words (filtered to the LM's vocabulary). If empty, the LM's own vocabulary is used.
  LanguageModel(std::shared_ptr<const LMBackend> lm, const std::vector<std::string>& unigrams, bool use_lm_vocab);
  const LMBackend& ngram() const { return *lm_; }
  const CharTrie& trie() const { return trie_; }
  bool has_trie() const { return has_trie_; }
  size_t num_unigrams() const { return trie_.num_words(); }
  int order() const { return lm_->order(); }

 private:
  std::shared_ptr<const LMBackend> lm_;
  CharTrie trie_;
  bool has_trie_ = false;
};

// Fusion parameters of one LM.
struct LMParams {
  double alpha = 0.5;
  double beta = 1.5;
  double unk_score_offset = -10.0;
  bool score_boundary = true;
};

// The LMs fused in one decoding (empty: none).
using LMList = std::vector<std::shared_ptr<const LanguageModel>>;

struct DecodeOptions {
  int beam_width = 100;
  double beam_prune_logp = -10.0;
  double token_min_logp = -5.0;
  bool prune_history = false;
  // parameters of a single LM, or of every LM of a fusion when lm_params is empty
  double alpha = 0.5;
  double beta = 1.5;
  double unk_score_offset = -10.0;
  bool score_boundary = true;
  // one entry per fused LM (overrides the four fields above)
  std::vector<LMParams> lm_params;
  // When two beams merge, keep the frames of the more probable one (true), or of the one merged last, as
  // pyctcdecode does (false).
  bool best_path_frames = false;
  // Score the end of a hypothesis whose last emission was a word delimiter the way pyctcdecode does (as an
  // unknown empty word before </s>), so that transcripts are the same as pyctcdecode's. False scores only </s>.
  bool pyctcdecode_eos = true;
  int n_best = -1;  // <0: beam_width
  // Node arenas are garbage-collected when they exceed max(gc_min_nodes, 4 x the live nodes after the last
  // collection): memory is bounded by the beam, not by the length of the audio.
  int gc_min_nodes = 1 << 15;
  std::shared_ptr<const HotwordAutomaton> hotwords;
  bool has_start_state = false;
  std::vector<LMState> start_state;  // one per fused LM
};

struct WordSpan {
  std::string word;
  int32_t start;
  int32_t end;  // exclusive
};

struct TokenSpan {
  int32_t token;
  int32_t start;
  int32_t end;  // exclusive
};

struct Hypothesis {
  std::string text;
  std::vector<WordSpan> words;
  std::vector<TokenSpan> tokens;
  double logit_score = 0.0;  // acoustic log-probability of the merged alignments
  double score = 0.0;        // logit_score + LM and hotword terms: the ranking score
  std::vector<LMState> lm_state;  // per LM: the context after the last word (before </s>); empty without LM
};

// One decoding in progress. Feed frames with advance() (any number of chunks), then finalize().
class BeamSearch {
 public:
  BeamSearch(std::shared_ptr<const Alphabet> alphabet, LMList lms, DecodeOptions opts);
  ~BeamSearch();
  BeamSearch(const BeamSearch&) = delete;
  BeamSearch& operator=(const BeamSearch&) = delete;

  // log_probs: frames x vocab, row-major, already log-softmaxed.
  void advance(const float* log_probs, int64_t frames);
  void advance(const double* log_probs, int64_t frames);
  // Raw model outputs (logits or probabilities), validated and normalised here, a few frames at a time.
  void advance(const RawLogits& x);
  void advance(const RawLogits& x, const LogitsScan& scan);
  // Results of ending the utterance now (does not change the search state: more frames may follow).
  std::vector<Hypothesis> finalize() const;
  // Best hypothesis so far without end-of-utterance scoring (for partial results while streaming).
  Hypothesis best_partial() const;
  int64_t frames_seen() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

template <class T>
std::vector<Hypothesis> decode(std::shared_ptr<const Alphabet> alphabet, const LMList& lms, const DecodeOptions& opts,
                               const T* log_probs, int64_t frames);

// Decode several utterances on `num_threads` threads (0 = hardware concurrency).
template <class T>
std::vector<std::vector<Hypothesis>> decode_batch(std::shared_ptr<const Alphabet> alphabet, const LMList& lms,
                                                  const DecodeOptions& opts, const std::vector<const T*>& log_probs,
                                                  const std::vector<int64_t>& frames, int num_threads);

// The same from raw model outputs: each worker validates and normalises the utterances it takes. All inputs are
// checked before any is decoded; an invalid one fails the batch with the message of the first (by index),
// prefixed "logits_list[i]: ".
std::vector<std::vector<Hypothesis>> decode_batch(std::shared_ptr<const Alphabet> alphabet, const LMList& lms,
                                                  const DecodeOptions& opts, const std::vector<RawLogits>& inputs,
                                                  int num_threads);

}  // namespace w2vlm

// nanobind bindings of the native core: the decoder (alphabet, decoder LM, hotwords, options, hypotheses), the
// decoding functions and BeamSearch. All decoding runs with the GIL released.
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "beam_search.hpp"
#include "bindings.hpp"
#include "common.hpp"
#include "hotwords.hpp"
#include "logits.hpp"
#include "ngram.hpp"

namespace w2vlm {

using namespace nb::literals;

using LogProbs = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using LogProbs64 = nb::ndarray<const double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
// raw model outputs: float32 or float64, any row stride
using AnyLogits = nb::ndarray<nb::ro, nb::ndim<2>, nb::device::cpu>;

namespace {

// None, one LanguageModel, or a sequence of them (fused)
LMList lm_list(nb::handle lm) {
  LMList out;
  if (lm.is_none()) return out;
  if (nb::isinstance<LanguageModel>(lm)) {
    out.push_back(nb::cast<std::shared_ptr<const LanguageModel>>(lm));
    return out;
  }
  for (nb::handle item : lm) {
    if (!nb::isinstance<LanguageModel>(item)) throw InputError("lm must be None, a LanguageModel or a list of them");
    out.push_back(nb::cast<std::shared_ptr<const LanguageModel>>(item));
  }
  return out;
}

template <class A>
void check_width(const A& a, const Alphabet& alphabet) {
  if (a.shape(1) != alphabet.size())
    throw InputError("log-probabilities have " + std::to_string(a.shape(1)) + " columns but the alphabet has " +
                     std::to_string(alphabet.size()) + " labels");
}

// BeamSearch.advance on log-probabilities of either precision: checked here, searched with the GIL released
template <class LP>
void advance_checked(BeamSearch& s, const Alphabet& alphabet, const LP& lp) {
  check_width(lp, alphabet);
  const auto* data = lp.data();
  const int64_t frames = static_cast<int64_t>(lp.shape(0));
  nb::gil_scoped_release r;
  s.advance(data, frames);
}

// A view of the caller's float32/float64 matrix whose rows are contiguous (the Python side converts anything else)
RawLogits raw_logits(const AnyLogits& a, size_t vocab) {
  RawLogits x;
  if (a.dtype() == nb::dtype<float>()) {
    x.f64 = false;
  } else if (a.dtype() == nb::dtype<double>()) {
    x.f64 = true;
  } else {
    throw InputError("logits must be float32 or float64 here (the Python side converts other types)");
  }
  if (a.shape(1) != vocab)
    throw InputError("logits have " + std::to_string(a.shape(1)) + " columns but the alphabet has " +
                     std::to_string(vocab) + " labels");
  if (a.shape(1) > 1 && a.shape(0) > 0 && a.stride(1) != 1)
    throw InputError("logits rows must be contiguous (the Python side copies other layouts)");
  x.data = a.data();
  x.frames = static_cast<int64_t>(a.shape(0));
  x.vocab = a.shape(1);
  x.row_stride = x.frames > 1 ? static_cast<int64_t>(a.stride(0)) : static_cast<int64_t>(x.vocab);
  return x;
}

}  // namespace

void bind_decoder(nb::module_& m) {
  nb::class_<Alphabet>(m, "Alphabet")
      .def(nb::init<const std::vector<std::string>&, bool>(), "labels"_a, "is_bpe"_a)
      .def_prop_ro("size", &Alphabet::size)
      .def_prop_ro("blank", &Alphabet::blank);

  nb::class_<LanguageModel>(m, "LanguageModel")
      .def(nb::init<std::shared_ptr<const LMBackend>, const std::vector<std::string>&, bool>(), "ngram"_a,
           "unigrams"_a, "use_lm_vocab"_a)
      .def_prop_ro("num_unigrams", &LanguageModel::num_unigrams)
      .def_prop_ro("has_trie", &LanguageModel::has_trie)
      .def(
          "is_prefix",
          [](const LanguageModel& lm, const std::string& text) {
            if (!lm.has_trie()) return false;
            int32_t node = lm.trie().root();
            for (uint32_t cp : utf8_codepoints(text)) node = lm.trie().child(node, cp);
            return node >= 0;
          },
          "text"_a, "True if a known word starts with `text` (the decoder's partial-word check).")
      .def_prop_ro("order", &LanguageModel::order);

  nb::class_<HotwordAutomaton>(m, "HotwordAutomaton")
      .def(nb::init<const std::vector<std::pair<std::string, float>>&>(), "phrases"_a)
      .def_prop_ro("num_states", &HotwordAutomaton::num_states)
      .def_prop_ro("num_patterns", &HotwordAutomaton::num_patterns);

  nb::class_<DecodeOptions>(m, "DecodeOptions")
      .def(nb::init<>())
      .def_rw("beam_width", &DecodeOptions::beam_width)
      .def_rw("beam_prune_logp", &DecodeOptions::beam_prune_logp)
      .def_rw("token_min_logp", &DecodeOptions::token_min_logp)
      .def_rw("prune_history", &DecodeOptions::prune_history)
      .def_rw("alpha", &DecodeOptions::alpha)
      .def_rw("beta", &DecodeOptions::beta)
      .def_rw("unk_score_offset", &DecodeOptions::unk_score_offset)
      .def_rw("score_boundary", &DecodeOptions::score_boundary)
      .def_rw("n_best", &DecodeOptions::n_best)
      .def_rw("pyctcdecode_eos", &DecodeOptions::pyctcdecode_eos)
      .def_rw("gc_min_nodes", &DecodeOptions::gc_min_nodes)
      .def_rw("hotwords", &DecodeOptions::hotwords, nb::arg("hotwords").none())
      .def(
          "set_start_state",
          [](DecodeOptions& o, nb::handle s) {
            o.start_state.clear();
            o.has_start_state = !s.is_none();
            if (s.is_none()) return;
            if (nb::isinstance<LMState>(s)) {
              o.start_state.push_back(nb::cast<LMState>(s));
              return;
            }
            for (nb::handle item : s) {
              if (!nb::isinstance<LMState>(item))
                throw InputError("lm_start_state must be an LMState or a list of them (one per fused LM)");
              o.start_state.push_back(nb::cast<LMState>(item));
            }
          },
          "state"_a.none())
      .def_rw("best_path_frames", &DecodeOptions::best_path_frames)
      .def(
          "set_lm_params",
          [](DecodeOptions& o, const std::vector<std::tuple<double, double, double, bool>>& params) {
            o.lm_params.clear();
            for (const auto& [a, b, u, sb] : params) o.lm_params.push_back(LMParams{a, b, u, sb});
          },
          "params"_a, "Per-LM (alpha, beta, unk_score_offset, score_boundary) of a fusion.");

  nb::class_<Hypothesis>(m, "Hypothesis")
      .def_ro("text", &Hypothesis::text)
      .def_ro("logit_score", &Hypothesis::logit_score)
      .def_ro("score", &Hypothesis::score)
      .def_prop_ro("words",
                   [](const Hypothesis& h) {
                     nb::list out;
                     for (const auto& w : h.words) out.append(nb::make_tuple(w.word, w.start, w.end));
                     return out;
                   })
      .def_prop_ro("tokens",
                   [](const Hypothesis& h) {
                     nb::list out;
                     for (const auto& t : h.tokens) out.append(nb::make_tuple(t.token, t.start, t.end));
                     return out;
                   })
      .def_prop_ro("lm_state", [](const Hypothesis& h) -> nb::object {
        if (h.lm_state.empty()) return nb::none();
        if (h.lm_state.size() == 1) return nb::cast(h.lm_state[0]);
        nb::list out;  // several fused LMs: one state each, as pyctcdecode's MultiLanguageModel
        for (const auto& st : h.lm_state) out.append(nb::cast(st));
        return out;
      });

  auto def_decode = [&m](auto tag) {
    using T = decltype(tag);
    using Arr = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
    m.def(
        "decode",
        [](std::shared_ptr<const Alphabet> alphabet, nb::handle lm, const DecodeOptions& opts, Arr lp) {
          check_width(lp, *alphabet);
          const LMList lms = lm_list(lm);
          const T* data = lp.data();
          const int64_t frames = static_cast<int64_t>(lp.shape(0));
          nb::gil_scoped_release r;
          return decode(alphabet, lms, opts, data, frames);
        },
        "alphabet"_a, "lm"_a.none(), "options"_a, "log_probs"_a);
    m.def(
        "decode_batch",
        [](std::shared_ptr<const Alphabet> alphabet, nb::handle lm, const DecodeOptions& opts, std::vector<Arr> lps,
           int num_threads) {
          const LMList lms = lm_list(lm);
          std::vector<const T*> ptrs;
          std::vector<int64_t> frames;
          for (const auto& a : lps) {
            check_width(a, *alphabet);
            ptrs.push_back(a.data());
            frames.push_back(static_cast<int64_t>(a.shape(0)));
          }
          nb::gil_scoped_release r;
          return decode_batch(alphabet, lms, opts, ptrs, frames, num_threads);
        },
        "alphabet"_a, "lm"_a.none(), "options"_a, "log_probs"_a, "num_threads"_a = 0);
  };
  // float32 first: a float64 array then takes the second overload, not a conversion
  def_decode(float{});
  def_decode(double{});

  m.def(
      "decode_logits_batch",
      [](std::shared_ptr<const Alphabet> alphabet, nb::handle lm, const DecodeOptions& opts,
         std::vector<AnyLogits> logits, int num_threads) {
        const LMList lms = lm_list(lm);
        std::vector<RawLogits> inputs;
        for (size_t i = 0; i < logits.size(); ++i) {
          try {
            inputs.push_back(raw_logits(logits[i], alphabet->size()));
          } catch (const InputError& e) {
            throw InputError("logits_list[" + std::to_string(i) + "]: " + e.what());
          }
        }
        nb::gil_scoped_release r;
        return decode_batch(alphabet, lms, opts, inputs, num_threads);
      },
      "alphabet"_a, "lm"_a.none(), "options"_a, "logits"_a, "num_threads"_a = 0,
      "Decode raw model outputs (float32/float64 logits or probabilities, read in place): each worker thread "
      "validates and normalises the utterances it decodes.");
  m.def(
      "scan_logits",
      [](AnyLogits logits) {
        const RawLogits x = raw_logits(logits, logits.shape(1));
        nb::gil_scoped_release r;
        return scan_logits(x).probabilities;
      },
      "logits"_a,
      "Validate raw model outputs (DecoderInputError for NaN, +inf or a frame that is -inf everywhere); True when "
      "they are probabilities.");
  m.def(
      "log_probs",
      [](AnyLogits logits) -> nb::object {
        const RawLogits x = raw_logits(logits, logits.shape(1));
        auto run = [&](auto tag) -> nb::object {
          using T = decltype(tag);
          auto* buf = new std::vector<T>(static_cast<size_t>(x.frames) * x.vocab);
          nb::capsule owner(buf, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
          {
            nb::gil_scoped_release r;
            const LogitsScan s = scan_logits(x);
            std::vector<T> tmp;
            normalize_rows<T>(x, s, 0, x.frames, buf->data(), tmp);
          }
          return nb::cast(nb::ndarray<nb::numpy, T, nb::ndim<2>>(
              buf->data(), {static_cast<size_t>(x.frames), x.vocab}, owner));
        };
        return x.f64 ? run(double{}) : run(float{});
      },
      "logits"_a,
      "Log-probabilities (same dtype, C-contiguous) of raw model outputs, validated: probabilities are logged, "
      "logits log-softmaxed, clipped at log(1e-15), with numpy's kernels (pyctcdecode's bits).");

  nb::class_<BeamSearch>(m, "BeamSearch", "A decoding in progress: feed chunks of frames, finalize at any time.")
      .def(
          "__init__",
          [](BeamSearch* self, std::shared_ptr<const Alphabet> alphabet, nb::handle lm, DecodeOptions opts) {
            new (self) BeamSearch(std::move(alphabet), lm_list(lm), std::move(opts));
          },
          "alphabet"_a, "lm"_a.none(), "options"_a)
      .def(
          "advance",
          [](BeamSearch& s, std::shared_ptr<const Alphabet> alphabet, LogProbs lp) {
            advance_checked(s, *alphabet, lp);
          },
          "alphabet"_a, "log_probs"_a)
      .def(
          "advance",
          [](BeamSearch& s, std::shared_ptr<const Alphabet> alphabet, LogProbs64 lp) {
            advance_checked(s, *alphabet, lp);
          },
          "alphabet"_a, "log_probs"_a)
      .def(
          "advance_logits",
          [](BeamSearch& s, std::shared_ptr<const Alphabet> alphabet, AnyLogits logits) {
            const RawLogits x = raw_logits(logits, alphabet->size());
            nb::gil_scoped_release r;
            s.advance(x);
          },
          "alphabet"_a, "logits"_a, "Feed raw model outputs (validated and normalised natively).")
      .def("finalize",
           [](const BeamSearch& s) {
             nb::gil_scoped_release r;
             return s.finalize();
           })
      .def("best_partial", &BeamSearch::best_partial)
      .def_prop_ro("frames_seen", &BeamSearch::frames_seen);
}

}  // namespace w2vlm

// nanobind bindings of the native core. All decoding runs with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "beam_search.hpp"
#include "hotwords.hpp"
#include "kenlm_binary.hpp"
#include "logits.hpp"
#include "ngram.hpp"

// numpy's ufunc object, for its inner loops only (no numpy C API is called: nothing to import)
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#include <numpy/ndarraytypes.h>
#include <numpy/ufuncobject.h>

namespace nb = nanobind;
using namespace nb::literals;
using namespace w2vlm;

using LogProbs = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using LogProbs64 = nb::ndarray<const double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
// raw model outputs: float32 or float64, any row stride
using AnyLogits = nb::ndarray<nb::ro, nb::ndim<2>, nb::device::cpu>;

namespace w2vlm {
void bind_arpa_parser(nb::module_& m);  // arpa_bindings.cpp
}

namespace {

// Python text of bytes from a file (an LM's words): UTF-8, with invalid bytes written as \xNN, never an error.
nb::str text_of(std::string_view s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
  if (!o) throw nb::python_error();
  return nb::steal<nb::str>(o);
}

// Set a w2vlm exception (by its class name in w2vlm.errors) with a message that is never a decoding error.
void set_error(const char* cls_name, const char* msg) {
  nb::object cls = nb::module_::import_("w2vlm.errors").attr(cls_name);
  PyObject* text = PyUnicode_DecodeUTF8(msg, static_cast<Py_ssize_t>(std::strlen(msg)), "backslashreplace");
  if (!text) {
    PyErr_Clear();
    PyErr_SetString(cls.ptr(), "(error message not representable)");
    return;
  }
  PyErr_SetObject(cls.ptr(), text);
  Py_DECREF(text);
}

// Run a loader; running out of memory (or a size a container refuses) is the file's problem, named as such.
template <class F>
auto load_guarded(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw LMError(path + ": out of memory while loading the language model (is the file damaged, or too large " +
                  "for this machine?)");
  } catch (const std::length_error& e) {
    throw LMError(path + ": a size in the language model file is too large (" + e.what() + ")");
  }
}

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

// numpy's exp, log and add loops for float32 and float64, so that the native log-softmax computes numpy's bits
// (numpy chose them for this CPU). Checked against numpy on a few values; on any doubt, libm is used instead.
bool load_numpy_kernels() {
  try {
    nb::module_ np = nb::module_::import_("numpy");
    auto find = [&](const char* name, int typenum) {
      UfuncKernel k;
      nb::object uf = np.attr(name);
      if (!nb::isinstance(uf, np.attr("ufunc"))) return k;
      const auto* u = reinterpret_cast<const PyUFuncObject*>(uf.ptr());
      for (int i = 0; i < u->ntypes; ++i) {
        bool all = true;
        for (int j = 0; j < u->nargs; ++j) all = all && u->types[i * u->nargs + j] == typenum;
        if (all) {
          k.fn = reinterpret_cast<UfuncLoop>(u->functions[i]);
          k.data = u->data ? u->data[i] : nullptr;
          break;
        }
      }
      return k;
    };
    NumpyKernels k;
    const int types[2] = {NPY_FLOAT, NPY_DOUBLE};
    for (int i = 0; i < 2; ++i) {
      k.exp[i] = find("exp", types[i]);
      k.log[i] = find("log", types[i]);
      k.add[i] = find("add", types[i]);
      if (!k.exp[i].fn || !k.log[i].fn || !k.add[i].fn) return false;
    }
    // self-check: numpy's own answers on a few values
    const double probe[4] = {-0.7, 1.3, -20.25, 3.5};
    double mine[4], sum = 0;
    char* args[2] = {reinterpret_cast<char*>(const_cast<double*>(probe)), reinterpret_cast<char*>(mine)};
    const intptr_t dims[1] = {4};
    const intptr_t steps[2] = {sizeof(double), sizeof(double)};
    k.exp[1].fn(args, dims, steps, k.exp[1].data);
    char* rargs[3] = {reinterpret_cast<char*>(&sum), reinterpret_cast<char*>(mine), reinterpret_cast<char*>(&sum)};
    const intptr_t rsteps[3] = {0, sizeof(double), 0};
    k.add[1].fn(rargs, dims, rsteps, k.add[1].data);
    nb::object a = np.attr("array")(nb::make_tuple(probe[0], probe[1], probe[2], probe[3]));
    nb::object e = np.attr("exp")(a);
    if (nb::cast<double>(e.attr("sum")()) != sum) return false;
    for (int i = 0; i < 4; ++i)
      if (nb::cast<double>(e[nb::int_(i)]) != mine[i]) return false;
    set_numpy_kernels(k);
    return true;
  } catch (const nb::python_error&) {
    return false;
  }
}

// An LM served by KenLM's Python module (for KenLM binary files). KenLM states live as Python objects, interned
// to integer handles kept in LMState::words[0]; every call into Python holds the GIL. The decoder caches LM
// results per distinct text, so calls happen once per new word hypothesis, not per frame.
class KenlmBackend final : public LMBackend {
 public:
  KenlmBackend(nb::object model, nb::object state_cls) : model_(std::move(model)), state_cls_(std::move(state_cls)) {
    order_ = nb::cast<int>(model_.attr("order"));
    base_score_ = model_.attr("BaseScore");
  }
  ~KenlmBackend() override {
    nb::gil_scoped_acquire g;
    states_.clear();
    index_.reset();
    base_score_.reset();
    state_cls_.reset();
    model_.reset();
  }
  int order() const override { return order_; }
  uint32_t bos() const override { return 1; }
  uint32_t eos() const override { return 2; }
  uint32_t word_id(std::string_view word) const override { return contains(word) ? 3 : kUnk; }
  bool contains(std::string_view word) const override {
    nb::gil_scoped_acquire g;
    return nb::cast<bool>(model_.attr("__contains__")(nb::str(word.data(), word.size())));
  }
  bool needs_text() const override { return true; }
  void check_state(const LMState& s, const char* what) const override {
    nb::gil_scoped_acquire g;
    if (s.length != 1 || s.words[0] >= states_.size())
      throw InputError(std::string(what) + " was not made by this KenLM model (states of KenLM-served models " +
                       "cannot be moved between models or pickled)");
  }
  void begin_sentence_state(LMState& s) const override { write_state(s, "BeginSentenceWrite"); }
  void null_state(LMState& s) const override { write_state(s, "NullContextWrite"); }
  float score_word(const LMState& in, uint32_t, std::string_view text, LMState& out) const override {
    nb::gil_scoped_acquire g;
    nb::object next = state_cls_();
    const float p = nb::cast<float>(base_score_(states_.at(in.words[0]), nb::str(text.data(), text.size()), next));
    out.length = 1;
    out.words[0] = intern(next);
    out.backoff[0] = 0.f;
    return p;
  }

 private:
  void write_state(LMState& s, const char* method) const {
    nb::gil_scoped_acquire g;
    nb::object st = state_cls_();
    model_.attr(method)(st);
    s.length = 1;
    s.words[0] = intern(st);
    s.backoff[0] = 0.f;
  }
  uint32_t intern(const nb::object& st) const {  // GIL held
    if (!index_.is_valid()) index_ = nb::dict();
    nb::dict idx = nb::borrow<nb::dict>(index_);
    if (idx.contains(st)) return nb::cast<uint32_t>(idx[st]);
    const uint32_t h = static_cast<uint32_t>(states_.size());
    states_.push_back(st);
    idx[st] = h;
    return h;
  }
  nb::object model_, state_cls_, base_score_;
  mutable nb::object index_;
  mutable std::vector<nb::object> states_;
  int order_ = 0;
};

// Total log10 probability of a space-separated sentence (KenLM's Model.score) for a native backend.
template <class LM>
double sentence_score(const LM& lm, const std::string& sentence, bool bos, bool eos) {
  LMState a, b;
  if (bos)
    lm.begin_sentence_state(a);
  else
    lm.null_state(a);
  double total = 0.0;
  size_t i = 0;
  while (i < sentence.size()) {
    while (i < sentence.size() && sentence[i] == ' ') ++i;
    size_t j = i;
    while (j < sentence.size() && sentence[j] != ' ') ++j;
    if (j > i) {
      total += lm.score(a, lm.word_id(std::string_view(sentence).substr(i, j - i)), b);
      a = b;
    }
    i = j;
  }
  if (eos) total += lm.score(a, lm.eos(), b);
  return total;
}

// base_score / score for a backend that is read natively (the same bindings on NGramLM and KenlmBinaryLM)
template <class LM, class Cls>
void def_native_scoring(Cls& cls) {
  cls.def(
         "base_score",
         [](const LM& lm, const LMState& s, const std::string& word) {
           lm.check_state(s, "state");
           LMState out;
           const float p = lm.score(s, lm.word_id(word), out);
           return std::make_pair(p, out);
         },
         "state"_a, "word"_a, "log10 p(word | state) and the next state (KenLM's BaseScore).")
      .def(
          "score",
          [](const LM& lm, const std::string& sentence, bool bos, bool eos) {
            return sentence_score(lm, sentence, bos, eos);
          },
          "sentence"_a, "bos"_a = true, "eos"_a = true, "Total log10 probability of a sentence (KenLM's score).");
}

nb::list words_of(const LMState& s, const NGramLM& lm) {
  lm.check_state(s, "state");
  nb::list out;
  for (uint32_t i = 0; i < s.length; ++i) out.append(text_of(lm.vocab()[s.words[i]]));
  return out;
}

nb::list vocab_of(const std::vector<std::string>& words) {
  nb::list out;
  for (const auto& w : words) out.append(text_of(w));
  return out;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "w2vlm native core: CTC beam search with n-gram LM fusion";
  // whether the log-softmax runs on numpy's kernels (false: libm, possibly not numpy's last bit)
  m.attr("numpy_kernels") = load_numpy_kernels();

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const LMError& e) {
      set_error("LanguageModelError", e.what());
    } catch (const InputError& e) {
      set_error("DecoderInputError", e.what());
    }
  });

  nb::class_<LMState>(m, "LMState", "Context of the n-gram LM after some words (most recent first).")
      .def(nb::init<>())
      .def_prop_ro("length", [](const LMState& s) { return s.length; })
      .def_prop_ro("word_ids", [](const LMState& s) {
        std::vector<uint32_t> v(s.words, s.words + s.length);
        return v;
      })
      .def("__eq__",
           [](const LMState& a, const LMState& b) {
             if (a.length != b.length) return false;
             for (uint32_t i = 0; i < a.length; ++i)
               if (a.words[i] != b.words[i]) return false;
             return true;
           })
      .def("__getstate__",
           [](const LMState& s) {
             std::vector<uint32_t> w(s.words, s.words + s.length);
             std::vector<float> b(s.backoff, s.backoff + s.length);
             return nb::make_tuple(w, b);
           })
      .def("__setstate__",
           [](LMState& s, const std::tuple<std::vector<uint32_t>, std::vector<float>>& st) {
             new (&s) LMState();
             const auto& w = std::get<0>(st);
             const auto& b = std::get<1>(st);
             if (w.size() != b.size() || w.size() > static_cast<size_t>(kMaxOrder - 1))
               throw InputError("invalid pickled LMState");
             s.length = static_cast<uint32_t>(w.size());
             for (size_t i = 0; i < w.size(); ++i) {
               s.words[i] = w[i];
               s.backoff[i] = b[i];
             }
           })
      .def("__hash__", [](const LMState& s) {
        uint64_t h = s.length;
        for (uint32_t i = 0; i < s.length; ++i) h = hash_combine(h, s.words[i]);
        return static_cast<int64_t>(h >> 1);
      });

  nb::class_<LMBackend>(m, "LMBackend", "An n-gram LM as the decoder uses it.")
      .def_prop_ro("order", &LMBackend::order)
      .def("__contains__", [](const LMBackend& lm, const std::string& w) { return lm.contains(w); })
      .def("begin_sentence_state",
           [](const LMBackend& lm) {
             LMState s;
             lm.begin_sentence_state(s);
             return s;
           })
      .def("null_state", [](const LMBackend& lm) {
        LMState s;
        lm.null_state(s);
        return s;
      });

  nb::class_<KenlmBackend, LMBackend>(m, "KenlmBackend", "An LM served by KenLM's Python module.")
      .def(nb::init<nb::object, nb::object>(), "model"_a, "state_class"_a);

  auto ngram_cls = nb::class_<NGramLM, LMBackend>(m, "NGramLM", "An n-gram language model loaded from ARPA.")
      .def_static(
          "from_arpa_file",
          [](const std::string& path) {
            nb::gil_scoped_release r;
            return load_guarded(path, [&] { return std::const_pointer_cast<NGramLM>(NGramLM::from_arpa_file(path)); });
          },
          "path"_a)
      .def_static(
          "from_arpa_bytes",
          [](nb::bytes data, const std::string& name) {
            std::string_view v(static_cast<const char*>(data.data()), data.size());
            nb::gil_scoped_release r;
            return load_guarded(name, [&] { return std::const_pointer_cast<NGramLM>(NGramLM::from_arpa(v, name)); });
          },
          "data"_a, "name"_a)
      .def_prop_ro("counts", &NGramLM::counts)
      .def_prop_ro("vocab_size", &NGramLM::vocab_size)
      .def_prop_ro("warnings", &NGramLM::warnings)
      .def_prop_ro("memory_bytes", &NGramLM::memory_bytes)
      .def("vocab", [](const NGramLM& lm) { return vocab_of(lm.vocab()); })
      .def("state_words", [](const NGramLM& lm, const LMState& s) { return words_of(s, lm); });
  def_native_scoring<NGramLM>(ngram_cls);
  bind_arpa_parser(m);

  auto binary_cls = nb::class_<KenlmBinaryLM, LMBackend>(m, "KenlmBinaryLM",
                                      "A KenLM binary LM (probing or trie, quantized or not) read natively.")
      .def_static(
          "from_file",
          [](const std::string& path) {
            nb::gil_scoped_release r;
            return load_guarded(path,
                                [&] { return std::const_pointer_cast<KenlmBinaryLM>(KenlmBinaryLM::from_file(path)); });
          },
          "path"_a)
      .def_static("looks_like_kenlm_binary", &KenlmBinaryLM::looks_like_kenlm_binary, "path"_a)
      .def_prop_ro("path", &KenlmBinaryLM::path)
      .def_prop_ro("counts", &KenlmBinaryLM::counts)
      .def_prop_ro("vocab_size", &KenlmBinaryLM::vocab_size)
      .def_prop_ro("model_type", &KenlmBinaryLM::model_type)
      .def_prop_ro("model_type_name", &KenlmBinaryLM::model_type_name)
      .def_prop_ro("prob_bits", &KenlmBinaryLM::prob_bits)
      .def_prop_ro("backoff_bits", &KenlmBinaryLM::backoff_bits)
      .def_prop_ro("pointer_bhiksha_bits", &KenlmBinaryLM::pointer_bhiksha_bits)
      .def_prop_ro("file_size", &KenlmBinaryLM::file_size)
      .def_prop_ro("warnings", [](const KenlmBinaryLM&) { return std::vector<std::string>(); })
      .def("vocab", [](const KenlmBinaryLM& lm) { return vocab_of(lm.list_vocab()); })
      .def("state_words", [](const KenlmBinaryLM& lm, const LMState& s) {
        lm.check_state(s, "state");
        nb::list out;
        for (uint32_t i = 0; i < s.length; ++i) out.append(text_of(lm.word_text(s.words[i])));
        return out;
      });
  def_native_scoring<KenlmBinaryLM>(binary_cls);

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
            check_width(lp, *alphabet);
            const float* data = lp.data();
            const int64_t frames = static_cast<int64_t>(lp.shape(0));
            nb::gil_scoped_release r;
            s.advance(data, frames);
          },
          "alphabet"_a, "log_probs"_a)
      .def(
          "advance",
          [](BeamSearch& s, std::shared_ptr<const Alphabet> alphabet, LogProbs64 lp) {
            check_width(lp, *alphabet);
            const double* data = lp.data();
            const int64_t frames = static_cast<int64_t>(lp.shape(0));
            nb::gil_scoped_release r;
            s.advance(data, frames);
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

// nanobind bindings of the native core: LM states and the n-gram backends (KenLM's Python module, ARPA read
// natively, KenLM binary files read natively).
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "common.hpp"
#include "kenlm_binary.hpp"
#include "ngram.hpp"

namespace w2vlm {

using namespace nb::literals;

namespace {

// Python text of bytes from a file (an LM's words): UTF-8, with invalid bytes written as \xNN, never an error.
nb::str text_of(std::string_view s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
  if (!o) throw nb::python_error();
  return nb::steal<nb::str>(o);
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

void bind_lm(nb::module_& m) {
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
      .def_static(
          "from_binary_file",
          [](const std::string& path) {
            nb::gil_scoped_release r;
            return load_guarded(path,
                                [&] { return std::const_pointer_cast<NGramLM>(NGramLM::from_binary_file(path)); });
          },
          "path"_a, "Read a file written by save_binary (w2vlm's binary form: the tables as they are in memory).")
      .def(
          "save_binary",
          [](const NGramLM& lm, const std::string& path) {
            nb::gil_scoped_release r;
            lm.save_binary(path);
          },
          "path"_a, "Write the model in w2vlm's binary form (read back by from_binary_file, no parsing).")
      .def_prop_ro("counts", &NGramLM::counts)
      .def_prop_ro("vocab_size", &NGramLM::vocab_size)
      .def_prop_ro("warnings", &NGramLM::warnings)
      .def_prop_ro("memory_bytes", &NGramLM::memory_bytes)
      .def("vocab", [](const NGramLM& lm) { return vocab_of(lm.vocab()); })
      .def("state_words", [](const NGramLM& lm, const LMState& s) { return words_of(s, lm); });
  def_native_scoring<NGramLM>(ngram_cls);

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
}

}  // namespace w2vlm

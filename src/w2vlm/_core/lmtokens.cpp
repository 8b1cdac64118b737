// build-lm's word reader (part of the module w2vlm._lmbuild): text -> word ids, natively, with the GIL released.
//
// `WordIndex.tokenize(text, ids, lens)` splits UTF-8 text into lines at '\n' and lines into words at the ASCII
// characters Python's str.split() treats as whitespace (space, \t, \v, \f, \r and \x1c-\x1f; text with other
// Unicode whitespace is pre-split in Python), gives each word its id (a new word the next one), and writes the
// ids and the word count of every non-empty line. The ids are "raw": the caller renumbers the vocabulary by count.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;

namespace w2vlm_lmbuild {

namespace {

bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r' && c != '\n') || (c >= 0x1c && c <= 0x1f); }

class WordIndex {
 public:
  explicit WordIndex(const std::vector<std::string>& first) {
    for (const std::string& w : first) id_of(w);
  }

  // Fills ids[0..n) and lens[0..m) and returns (n, m). The arrays must hold every word and every line: text of
  // b bytes has at most (b + 1) / 2 words and one line more than it has '\n'.
  std::pair<int64_t, int64_t> tokenize(nb::bytes text, nb::ndarray<int32_t, nb::ndim<1>, nb::c_contig> ids,
                                       nb::ndarray<int64_t, nb::ndim<1>, nb::c_contig> lens) {
    const char* p = text.c_str();
    const size_t size = text.size();
    int32_t* out = ids.data();
    int64_t* line_lens = lens.data();
    const size_t cap_ids = ids.shape(0), cap_lens = lens.shape(0);
    nb::gil_scoped_release release;
    size_t n = 0, m = 0;
    int64_t in_line = 0;
    size_t i = 0;
    while (i <= size) {
      if (i == size || p[i] == '\n') {
        if (in_line > 0) {
          if (m == cap_lens) throw std::length_error("WordIndex.tokenize: lens is too short");
          line_lens[m++] = in_line;
        }
        in_line = 0;
        ++i;
        continue;
      }
      if (is_space(static_cast<unsigned char>(p[i]))) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < size && p[j] != '\n' && !is_space(static_cast<unsigned char>(p[j]))) ++j;
      if (n == cap_ids) throw std::length_error("WordIndex.tokenize: ids is too short");
      out[n++] = id_of(std::string_view(p + i, j - i));
      ++in_line;
      i = j;
    }
    return {static_cast<int64_t>(n), static_cast<int64_t>(m)};
  }

  // The words in id order (UTF-8 bytes, as they were in the text).
  std::vector<nb::bytes> words() const {
    std::vector<nb::bytes> out;
    out.reserve(words_.size());
    for (const std::string& w : words_) out.emplace_back(w.data(), w.size());
    return out;
  }
  size_t size() const { return words_.size(); }

 private:
  int32_t id_of(std::string_view w) {
    auto it = index_.find(w);
    if (it != index_.end()) return it->second;
    if (words_.size() >= static_cast<size_t>(INT32_MAX)) throw std::length_error("more than 2^31 distinct words");
    words_.emplace_back(w);
    const int32_t id = static_cast<int32_t>(words_.size() - 1);
    index_.emplace(std::string_view(words_.back()), id);
    return id;
  }

  std::deque<std::string> words_;  // a deque: the map's keys point into its strings, which never move
  std::unordered_map<std::string_view, int32_t> index_;
};

}  // namespace

void bind_tokens(nb::module_& m) {
  nb::class_<WordIndex>(m, "WordIndex", "Word ids of build-lm's text, assigned as words are first seen.")
      .def(nb::init<const std::vector<std::string>&>(), "first"_a)
      .def("tokenize", &WordIndex::tokenize, "text"_a, "ids"_a, "lens"_a)
      .def("words", &WordIndex::words)
      .def("__len__", &WordIndex::size);
}

}  // namespace w2vlm_lmbuild

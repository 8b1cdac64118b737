// nanobind binding of the streaming ARPA parser (a .gz is decompressed in Python and fed to it block by block).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>

#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>

#include "arpa_reader.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace w2vlm {

namespace {

// A parser that Python threads may share: one call at a time, the GIL released while it parses.
struct PyArpaParser {
  PyArpaParser(const std::string& name, std::optional<uint64_t> size, uint64_t expect_size)
      : name(name), parser(name, size.value_or(0), size.has_value(), expect_size) {}
  std::string name;
  ArpaParser parser;
  std::mutex mu;
};

// Running out of memory (or a size a container refuses) is the file's problem, named as such.
template <class F>
auto guarded(const std::string& name, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw LMError(name + ": out of memory while loading the language model (is the file damaged, or too large " +
                  "for this machine?)");
  } catch (const std::length_error& e) {
    throw LMError(name + ": a size in the language model file is too large (" + e.what() + ")");
  }
}

}  // namespace

void bind_arpa_parser(nb::module_& m) {
  nb::class_<PyArpaParser>(m, "ArpaParser",
                           "An ARPA text fed in chunks of any size (feed), then the model (finish). `size` is the "
                           "text's total length when known: counts it cannot hold are then refused up front. "
                           "Otherwise `expect_size`, the text's likely length at most (of a .gz: a multiple of its "
                           "compressed size), lets the tables be sized by the counts up to what it can hold.")
      .def(nb::init<const std::string&, std::optional<uint64_t>, uint64_t>(), "name"_a, "size"_a = nb::none(),
           "expect_size"_a = 0)
      .def(
          "feed",
          [](PyArpaParser& p, nb::bytes data) {
            std::string_view v(static_cast<const char*>(data.data()), data.size());
            nb::gil_scoped_release r;
            std::lock_guard<std::mutex> lock(p.mu);
            guarded(p.name, [&] { p.parser.feed(v); });
          },
          "data"_a)
      .def("finish",
           [](PyArpaParser& p) {
             nb::gil_scoped_release r;
             std::lock_guard<std::mutex> lock(p.mu);
             return guarded(p.name, [&] { return p.parser.finish(); });
           });
}

}  // namespace w2vlm

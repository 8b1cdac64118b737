// nanobind bindings of the native core: the module. The classes and functions are bound by bind_lm.cpp and
// bind_decoder.cpp (see bindings.hpp). All decoding runs with the GIL released.
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "common.hpp"
#include "logits.hpp"
#include "lstm.hpp"

// numpy's ufunc object, for its inner loops only (no numpy C API is called: nothing to import)
#define NPY_NO_DEPRECATED_API NPY_2_0_API_VERSION
#define NO_IMPORT_ARRAY
#define NO_IMPORT_UFUNC
#include <numpy/ndarraytypes.h>
#include <numpy/ufuncobject.h>

using namespace w2vlm;

namespace {

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

// numpy's log and add loops for float32 and float64 and its float64 exp, so that the native log-softmax computes
// numpy's bits in float64 (numpy chose them for this CPU). Checked against numpy on a few values; on any doubt,
// libm is used instead.
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
      k.log[i] = find("log", types[i]);
      k.add[i] = find("add", types[i]);
      if (!k.log[i].fn || !k.add[i].fn) return false;
    }
    k.exp64 = find("exp", NPY_DOUBLE);
    if (!k.exp64.fn) return false;
    // self-check: numpy's own answers on a few values
    const double probe[4] = {-0.7, 1.3, -20.25, 3.5};
    double mine[4], sum = 0;
    char* args[2] = {reinterpret_cast<char*>(const_cast<double*>(probe)), reinterpret_cast<char*>(mine)};
    const intptr_t dims[1] = {4};
    const intptr_t steps[2] = {sizeof(double), sizeof(double)};
    k.exp64.fn(args, dims, steps, k.exp64.data);
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

using F32 = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using I64 = nb::ndarray<const int64_t, nb::c_contig, nb::device::cpu>;

// lstm_readout (lstm.hpp) with its shapes and table rows checked; the GIL released while it runs
nb::object lstm_readout_py(F32 gx, I64 index, F32 w_hh, F32 out_w, float out_b) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("lstm_readout: " + what); };
  if (gx.ndim() != 2 || index.ndim() != 2 || w_hh.ndim() != 2 || out_w.ndim() != 1)
    fail("gx must be (frames, 4 hidden), index (steps, rows), w_hh (hidden, 4 hidden), out_w (hidden)");
  LstmShape s;
  s.steps = static_cast<int64_t>(index.shape(0));
  s.rows = static_cast<int64_t>(index.shape(1));
  s.hidden = static_cast<int64_t>(out_w.shape(0));
  const int64_t frames = static_cast<int64_t>(gx.shape(0));
  const auto dims = [](auto& a) { return std::to_string(a.shape(0)) + " x " + std::to_string(a.shape(1)); };
  const std::string want = std::to_string(s.hidden) + " x " + std::to_string(4 * s.hidden);
  if (s.hidden == 0 || s.hidden % 4 != 0) fail("hidden size " + std::to_string(s.hidden) + " is not a multiple of 4");
  if (static_cast<int64_t>(w_hh.shape(0)) != s.hidden || static_cast<int64_t>(w_hh.shape(1)) != 4 * s.hidden)
    fail("w_hh is " + dims(w_hh) + ", expected " + want);
  if (static_cast<int64_t>(gx.shape(1)) != 4 * s.hidden)
    fail("gx has " + std::to_string(gx.shape(1)) + " gates a frame, expected " + std::to_string(4 * s.hidden));
  const int64_t* idx = index.data();
  for (int64_t i = 0; i < s.steps * s.rows; ++i)
    if (idx[i] < 0 || idx[i] >= frames)
      fail("index " + std::to_string(idx[i]) + " at " + std::to_string(i) + " is outside the " +
           std::to_string(frames) + " frames of gx");
  auto* out = new std::vector<float>(static_cast<size_t>(s.steps * s.rows));
  nb::capsule owner(out, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  {
    nb::gil_scoped_release r;
    lstm_readout(s, gx.data(), idx, w_hh.data(), out_w.data(), out_b, out->data());
  }
  return nb::cast(nb::ndarray<nb::numpy, float, nb::ndim<2>>(
      out->data(), {static_cast<size_t>(s.steps), static_cast<size_t>(s.rows)}, owner));
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "w2vlm native core: CTC beam search with n-gram LM fusion";
  // The command line freezes its objects at exit (w2vlm.cli.app.main: Python's shutdown then skips looking for
  // cycles among them), so instances are still alive when the module goes: it turns nanobind's leak report off
  // first. Everywhere else (the library, the tests) the report stays on.
  m.def("set_leak_warnings", [](bool on) { nb::set_leak_warnings(on); }, nb::arg("on"),
        "Whether nanobind reports instances still alive when the module is unloaded (process exit).");
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

  m.def("lstm_readout", &lstm_readout_py, nb::arg("gx"), nb::arg("index"), nb::arg("w_hh"), nb::arg("out_w"),
        nb::arg("out_b"),
        "An LSTM layer's recurrence over rows of sequences, each from zero state, and relu(h) . out_w + out_b per "
        "step: gx (frames, 4 hidden) a table of input gates with both biases, index (steps, rows, int64) the "
        "table row of each sequence at each step, w_hh (hidden, 4 hidden) the recurrent weights transposed; "
        "float32, C order. Returns (steps, rows). Silero VAD's recurrent half (w2vlm.engine.silero).");

  bind_lm(m);
  bind_arpa_parser(m);
  bind_decoder(m);
}

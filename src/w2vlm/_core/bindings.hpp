// Internal to the native core's Python module: what its binding units share. bindings.cpp is the module (numpy's
// kernels, the exception translation) and calls the others, in this order: bind_lm.cpp (LM states and the n-gram
// backends), bind_decoder.cpp (alphabet, decoder LM, hotwords, options, hypotheses, the decoding functions and
// BeamSearch). All decoding runs with the GIL released.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

namespace w2vlm {

namespace nb = nanobind;

// LMState, LMBackend and its subclasses (KenlmBackend, NGramLM, KenlmBinaryLM)
void bind_lm(nb::module_& m);
// ArpaParser: the streaming ARPA reader (arpa_bindings.cpp)
void bind_arpa_parser(nb::module_& m);
// Alphabet, LanguageModel, HotwordAutomaton, DecodeOptions, Hypothesis, decode*, scan_logits, log_probs, BeamSearch
void bind_decoder(nb::module_& m);

}  // namespace w2vlm

// The recurrent half of Silero VAD (engine/silero.py), natively: an LSTM layer's recurrence over many independent
// sequences whose input gates are already computed, and a linear read-out of each hidden state. torch's LSTM takes
// its input projection for every step of every row (the rows' warm-up frames over again) and runs each step as a
// small matrix product and separate gate operators; here the input gates come from the encoder's last product,
// once per frame, and a step of four sequences holds tiles of their gates in registers while each recurrent weight
// is read once.
#pragma once

#include <cstdint>

namespace w2vlm {

struct LstmShape {
  int64_t steps = 0, rows = 0, hidden = 0;
};

// An LSTM's recurrence (PyTorch's gates: input, forget, cell, output) over `rows` sequences of `steps` steps, each
// from zero state, and its read-out z[t][r] = relu(h_t[r]) . out_w + out_b.
//   gx: a table of the input's part of the gates, (frames, 4 hidden), both biases added; index: (steps, rows), the
//   table row each sequence reads at each step (each in [0, frames): the caller checks); w_hh: (hidden, 4 hidden),
//   the recurrent weights transposed; out_w: (hidden); z: (steps, rows). Row-major.
// hidden must be a multiple of 4. A sequence's numbers do not depend on the other rows or on how many there are
// (the same operations in the same order for each); AVX2 + FMA is used where the CPU has it (the last bits then
// differ from the SSE2 path's).
void lstm_readout(const LstmShape& s, const float* gx, const int64_t* index, const float* w_hh, const float* out_w,
                  float out_b, float* z);

}  // namespace w2vlm

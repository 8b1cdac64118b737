// Facts of KenLM's binary format shared by the reader's two halves (kenlm_binary.cpp: opening, checking and
// laying out a file; kenlm_lookup.cpp: word lookups and scoring). Internal to the native core.
#pragma once

#include <cstdint>
#include <cstring>

namespace w2vlm::kenlm_format {

constexpr uint32_t kSignBit = 0x80000000u;

inline const char* const kTypeNames[6] = {"probing hash tables",
                                          "probing hash tables with rest costs",
                                          "trie",
                                          "trie with quantization",
                                          "trie with array-compressed pointers",
                                          "trie with quantization and array-compressed pointers"};

template <class T>
inline T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

inline float float_of_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline uint32_t bits_of_float(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// A backoff of exactly -0.0 marks an n-gram that no longer n-gram extends (to the right): such contexts are not
// kept in the state. +0.0 means "zero backoff, but it can extend".
inline bool can_extend(float backoff) { return bits_of_float(backoff) != kSignBit; }

// Hash of a word-id sequence in the probing model: starts from the id of the predicted word, then folds in the
// context words from the nearest to the farthest.
inline uint64_t extend_hash(uint64_t current, uint32_t next) {
  return (current * 8978948897894561157ULL) ^ ((static_cast<uint64_t>(next) + 1) * 17894857484156487943ULL);
}

}  // namespace w2vlm::kenlm_format

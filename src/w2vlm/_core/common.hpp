// Shared small utilities of the w2vlm native core.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace w2vlm {

// Errors that map to Python exceptions in the bindings.
struct LMError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline uint64_t mix64(uint64_t x) {
  // splitmix64 finalizer: good avalanche, cheap.
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline uint64_t hash_combine(uint64_t h, uint64_t v) { return mix64(h ^ (v + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2))); }

// Decode a UTF-8 string into code points. Invalid bytes are taken as Latin-1 code points.
inline std::vector<uint32_t> utf8_codepoints(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else if (c >= 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xC0) {
      len = 2;
      cp = c & 0x1F;
    }
    if (len > 1) {
      if (i + len > n) {
        out.push_back(c);
        ++i;
        continue;
      }
      bool ok = true;
      for (size_t k = 1; k < len; ++k) {
        const unsigned char cc = static_cast<unsigned char>(s[i + k]);
        if ((cc & 0xC0) != 0x80) {
          ok = false;
          break;
        }
        cp = (cp << 6) | (cc & 0x3F);
      }
      if (!ok) {
        out.push_back(c);
        ++i;
        continue;
      }
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

}  // namespace w2vlm

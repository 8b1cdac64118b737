// Shared small utilities of the w2vlm native core.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace w2vlm {

// Errors that map to Python exceptions in the bindings.
struct LMError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Weights a binary LM file may hold for an n-gram: a log10 probability that is not NaN or +inf (-inf is allowed)
// and a finite backoff. Anything else is a damaged file.
inline bool valid_weights(float prob, float backoff) {
  return !std::isnan(prob) && prob != std::numeric_limits<float>::infinity() && std::isfinite(backoff);
}

// Overflow-checked arithmetic on sizes read from files: false when the result does not fit.
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
inline bool checked_add(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_add_overflow(a, b, &out); }

// Bytes of a file as text safe to put in an error message: valid UTF-8 is kept, anything else (invalid bytes,
// a sequence cut by the end of the string, control characters) is written the way Python writes bytes:
// \xNN, \n, \t, \r (a backslash stays as it is). At most `max_bytes` input bytes are shown, then "...".
inline std::string escape_bytes(std::string_view s, size_t max_bytes = 80) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  const size_t n = s.size() < max_bytes ? s.size() : max_bytes;
  out.reserve(n + 8);
  auto hex = [&](unsigned char c) {
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 15];
  };
  size_t i = 0;
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else if (c < 0x20 || c == 0x7f) hex(c);
      else out += static_cast<char>(c);
      ++i;
      continue;
    }
    // length and first-continuation range of a well-formed UTF-8 sequence (RFC 3629: no overlongs, no
    // surrogates, nothing above U+10FFFF)
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = k == 1 ? (cc >= lo && cc <= hi) : (cc >= 0x80 && cc <= 0xBF);
    }
    if (!ok) {
      hex(c);
      ++i;
      continue;
    }
    out.append(s.data() + i, len);
    i += len;
  }
  if (n < s.size()) out += "...";
  return out;
}

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

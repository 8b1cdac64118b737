// Open-addressing hash table of n-gram records keyed by a non-zero 64-bit hash (the layout of KenLM's "probing"
// structure): a flat array of fixed-size records, linear probing, key 0 marks an empty slot.
//
// The array has exactly `n * kMultiplier` slots for the `n` records it is sized for (not a power of two): a key's
// home slot is the high 64 bits of key * slots (a multiply instead of a modulo), so the table costs 1.5 times its
// records, like KenLM's default. Records are packed: 16 bytes with a backoff, 12 without (the highest order).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace w2vlm {

#pragma pack(push, 4)
// An n-gram of a middle order: probability and backoff (log10).
struct ProbBackoffRecord {
  uint64_t key;
  float prob;
  float backoff;
};
// An n-gram of the highest order: no backoff.
struct ProbRecord {
  uint64_t key;
  float prob;
};
#pragma pack(pop)
static_assert(sizeof(ProbBackoffRecord) == 16 && sizeof(ProbRecord) == 12, "records are packed");

template <class Record>
class ProbingTable {
 public:
  // slots of a table sized for `records`: 1.5 per record, at least one empty (its load stays at or below 2/3)
  static uint64_t slots_for(uint64_t records) {
    const uint64_t s = records + records / 2;
    return s > records ? s + 1 : records + 1;
  }

  // Empty table with room for `records` records; any previous content is dropped.
  void reserve(uint64_t records) {
    capacity_ = records;
    slots_.assign(slots_for(records), Record{});
    size_ = 0;
  }
  // Records it was sized for, and records it holds.
  uint64_t capacity() const { return capacity_; }
  uint64_t size() const { return size_; }
  size_t bytes() const { return slots_.size() * sizeof(Record); }

  // Rebuild with room for `records` (at least size()): same records, new slots.
  void resize(uint64_t records) {
    ProbingTable bigger;
    bigger.reserve(records < size_ ? size_ : records);
    for (const Record& r : slots_)
      if (r.key) bigger.insert(r);
    *this = std::move(bigger);
  }

  // The slots as stored (a binary file is written from them).
  const std::vector<Record>& slots() const { return slots_; }
  // Takes `slots` (exactly slots_for(capacity) of them, as slots() gave) as the table, holding `size` records: the
  // caller has counted them (with fewer records than slots, every probe ends at an empty slot).
  void adopt(std::vector<Record>&& slots, uint64_t capacity, uint64_t size) {
    slots_ = std::move(slots);
    capacity_ = capacity;
    size_ = size;
  }

  // Adds `r` unless its key is present (returns false then). The table must have room (size() < capacity()).
  bool insert(const Record& r) {
    uint64_t i = home(r.key);
    const uint64_t n = slots_.size();
    while (true) {
      Record& s = slots_[i];
      if (s.key == 0) {
        s = r;
        ++size_;
        return true;
      }
      if (s.key == r.key) return false;
      if (++i == n) i = 0;
    }
  }

  const Record* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    uint64_t i = home(key);
    const uint64_t n = slots_.size();
    while (true) {
      const Record& s = slots_[i];
      if (s.key == key) return &s;
      if (s.key == 0) return nullptr;
      if (++i == n) i = 0;
    }
  }

  void prefetch(uint64_t key, bool for_write) const {
    if (slots_.empty()) return;
    const Record* p = &slots_[home(key)];
    if (for_write)
      __builtin_prefetch(p, 1);
    else
      __builtin_prefetch(p, 0);
  }

 private:
  uint64_t home(uint64_t key) const {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(key) * slots_.size()) >> 64);
  }

  std::vector<Record> slots_;
  uint64_t capacity_ = 0;
  uint64_t size_ = 0;
};

}  // namespace w2vlm

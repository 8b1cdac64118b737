// Streaming ARPA reader: the text arrives in chunks of any size (a file read in blocks, a .gz decompressed in
// blocks, or one whole buffer) and goes straight into the model's final tables, so loading holds no more than
// the model plus one chunk.
//
// The sections of an ARPA file come in order (\data\ counts, then 1-grams, 2-grams, ...), which is what makes
// this possible: once the 1-grams are read the vocabulary is final (<unk> moved to id 0, <s>/</s> added if
// missing), so every n-gram line of a higher order is turned into ids and inserted into its order's hash table
// as it is read; the missing contexts of an n-gram of order >= 3 are added at once, from the tables of the lower
// orders, which are complete by then. The model, warnings and errors are the same whatever the chunking.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ngram.hpp"

namespace w2vlm {

class ArpaParser {
 public:
  // Bytes of a chunk read from a file at a time.
  static constexpr size_t kBlockBytes = size_t{4} << 20;

  // `name` names the input in error messages (the file path). `total_bytes` is the size of the whole text when
  // it is known (a plain file, a buffer): n-gram counts the text cannot hold are then refused up front, and the
  // tables are sized by the counts. With `size_known` false (a stream: a gzipped file) the tables start at a
  // size justified by what has been read, or by `expect_bytes`, the text's likely size (its upper end: of a .gz,
  // a multiple of the compressed size), and grow.
  ArpaParser(std::string name, uint64_t total_bytes, bool size_known, uint64_t expect_bytes = 0);

  // The next bytes of the text (lines may be split anywhere between chunks). A NUL byte is refused at once;
  // any other error is kept and reported by finish(), after the whole text has been fed (so that, as when the
  // whole text was checked first, a NUL byte anywhere wins over a damaged line).
  void feed(std::string_view chunk);
  // End of the text: the model, or the first error.
  std::shared_ptr<NGramLM> finish();

  uint64_t bytes_fed() const { return fed_; }
  uint64_t lines() const { return lineno_; }

  // Whole-text and whole-file readers on top of the parser.
  static std::shared_ptr<NGramLM> parse_text(std::string_view text, const std::string& name);
  static std::shared_ptr<NGramLM> parse_file(const std::string& path);

 private:
  enum class State { kFindData, kCounts, kBetween, kSection, kEnded, kFailed };

  void line(std::string_view raw);
  [[noreturn]] void fail(const std::string& msg) const;
  void end_counts();
  void header(std::string_view t);
  void begin_section(int n);
  void end_section();
  void ngram_line(std::string_view t);
  void finalize_vocab();
  void add_missing_contexts(const uint32_t* ids, int n);
  uint32_t find_word(std::string_view w) const;  // id, or kNoWord
  void flush();                                   // insert the pending n-grams
  template <class Table>
  void flush_into(Table& tab);
  void at_end();

  std::string name_;
  uint64_t total_ = 0;
  bool size_known_ = false;
  uint64_t expect_bytes_ = 0;
  std::shared_ptr<NGramLM> lm_;
  State state_ = State::kFindData;
  bool done_ = false;         // finish() was called, or a NUL byte was fed
  std::string carry_;         // a line split across chunks (its start)
  std::string error_;         // the first error, reported by finish()
  uint64_t fed_ = 0;          // bytes fed so far
  uint64_t offset_ = 0;       // bytes of the lines processed so far (with their newlines)
  uint64_t lineno_ = 0;       // number of the line being processed (1-based)
  bool any_text_ = false;     // a byte other than blanks (' ', \t, \r, \f, \v) was seen

  std::vector<uint64_t> counts_;
  int expect_ = 1;            // order of the next section
  int n_ = 0;                 // order of the section being read
  uint64_t seen_ = 0;         // n-gram lines of that section so far
  uint64_t inserted_ = 0;     // distinct n-grams it put into its table
  size_t positive_ = 0;       // positive log10 probabilities set to 0
  size_t added_ = 0;          // missing context n-grams added
  std::vector<size_t> dups_;  // duplicate n-grams per order (index n - 1)
  std::vector<std::string> vocab_warnings_;

  // 1-grams as read (file order) until the vocabulary is final
  std::unordered_map<std::string, uint32_t> file_words_;
  std::vector<float> file_prob_, file_backoff_;
  // after finalize_vocab(): ids below this are words of the file, id 0 too unless <unk> was made up
  uint32_t num_file_ids_ = 0;
  bool unk_made_up_ = false;
  // word -> id while the n-grams are read: open addressing, slot = (hash tag << 32) | (id + 1), 0 empty
  static constexpr uint32_t kNoWord = 0xffffffffu;
  std::vector<uint64_t> word_slots_;
  uint64_t word_mask_ = 0;

  // n-grams parsed but not inserted yet: inserted a batch at a time, the batch's slots prefetched first (the
  // tables are far bigger than the caches); same order of insertion as one at a time
  struct Pending {
    uint64_t key;
    float prob, backoff;
    uint32_t ids[kMaxOrder];
  };
  static constexpr size_t kBatch = 32;
  Pending pending_[kBatch];
  size_t num_pending_ = 0;
};

}  // namespace w2vlm

// A PCRE2 (JIT) regular expression that cuts text into its matches and the gaps between them,
// as the `tokenizers` package's Split pre-tokenizer with behavior Isolated does.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace titan {

class RegexSplit {
 public:
  // `pattern` in Unicode mode (\p{L}, look-ahead); `literal` matches it as plain text.
  // Throws std::invalid_argument with PCRE2's message when it does not compile.
  RegexSplit(const std::string& pattern, bool literal);
  ~RegexSplit();
  RegexSplit(const RegexSplit&) = delete;
  RegexSplit& operator=(const RegexSplit&) = delete;

  // Calls `piece` for each match and each non-empty gap of `text`, in order. Bytes that are not
  // valid UTF-8 never match, so they fall in gaps.
  void split(std::string_view text, const std::function<void(std::string_view)>& piece) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8
  std::string pattern_;
};

}  // namespace titan

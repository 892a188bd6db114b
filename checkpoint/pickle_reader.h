// A data-only reader of Python pickles (protocols 2-5), for PyTorch Distributed Checkpoint's
// `.metadata` and torch.save's data.pkl. Nothing is executed: a class or function reference
// (GLOBAL, STACK_GLOBAL) must be on an allow-list of DCP's dataclasses and torch's rebuild helpers,
// and a call (REDUCE, NEWOBJ) or BUILD becomes an Object node for the caller to interpret.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace titan::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kBytes,
    kList,
    kTuple,
    kDict,
    kGlobal,
    kObject,
    kPersistentId
  };
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string text;             // kString, kBytes; kGlobal and kObject: "module.name"
  std::vector<ValuePtr> items;  // kList, kTuple; kObject: its call's arguments; kPersistentId: [pid]
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // kDict, in insertion order
  ValuePtr state;                                      // kObject: what BUILD set (usually a dict of fields)

  bool is(Kind k) const { return kind == k; }
  // For kDict with string keys (a dataclass's BUILD state, a state dict); null when absent.
  ValuePtr get(const std::string& key) const;
  // A short description for error messages: "int 3", "dict", "object torch.Size", ...
  std::string describe() const;
};

// Parses `data` (the bytes of a pickle); `where` names the file in errors. Throws
// std::runtime_error naming `where` for an unknown opcode, a class not on the allow-list,
// truncated data or a malformed stack.
ValuePtr read(const std::string& data, const std::string& where);

}  // namespace titan::pickle

#include "checkpoint/pickle_reader.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

namespace titan::pickle {
namespace {

using Err = std::runtime_error;
using Kind = Value::Kind;

// What DCP's .metadata and torch.save's data.pkl refer to; anything else is refused by name.
const std::set<std::string>& allowed_globals() {
  static const std::set<std::string> names = [] {
    std::set<std::string> s = {
        "torch.distributed.checkpoint.metadata.Metadata",
        "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
        "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
        "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
        "torch.distributed.checkpoint.metadata.TensorProperties",
        "torch.distributed.checkpoint.metadata.MetadataIndex",
        "torch.distributed.checkpoint.metadata.StorageMeta",
        "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
        "torch.distributed.checkpoint.filesystem._StorageInfo",
        "torch.Size",
        "torch.device",
        "torch.serialization._get_layout",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "collections.OrderedDict",
        "copyreg._reconstructor",
        "builtins.object",
        "builtins.getattr",
        "pathlib.PosixPath",
        "pathlib.PurePosixPath",
        "_codecs.encode",
    };
    for (const char* dtype : {"float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long",
                              "int32", "int", "int16", "short", "int8", "uint8", "bool", "complex64", "complex128"})
      s.insert(std::string("torch.") + dtype);
    for (const char* storage : {"Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"})
      s.insert(std::string("torch.") + storage + "Storage");
    return s;
  }();
  return names;
}

ValuePtr make(Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  return v;
}

// UTF-8 text -> the bytes whose latin-1 decoding it is (how protocol 2 pickles bytes objects).
std::string latin1_bytes(const std::string& utf8, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < utf8.size(); ++i) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size() && c <= 0xC3) {
      out.push_back(static_cast<char>(((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[++i]) & 0x3F)));
    } else {
      throw Err(where + ": _codecs.encode of text that is not latin-1");
    }
  }
  return out;
}

class Reader {
 public:
  Reader(const std::string& data, std::string where) : data_(data), where_(std::move(where)) {}

  ValuePtr run() {
    while (true) {
      const auto op = static_cast<unsigned char>(take(1)[0]);
      if (op == '.') {
        if (stack_.size() != 1 || !marks_.empty())
          fail("STOP with " + std::to_string(stack_.size()) + " values on the stack");
        return stack_.back();
      }
      step(op);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Err(where_ + ": pickle byte " + std::to_string(pos_) + ": " + what);
  }

  std::string take(size_t n) {
    if (n > data_.size() - pos_) fail("truncated (needs " + std::to_string(n) + " more bytes)");
    std::string out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  uint64_t little(size_t n) {
    const std::string b = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
    return v;
  }

  std::string line() {
    const size_t end = data_.find('\n', pos_);
    if (end == std::string::npos) fail("truncated (no end of line)");
    std::string out = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }

  ValuePtr pop() {
    if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size())) fail("stack underflow");
    ValuePtr v = stack_.back();
    stack_.pop_back();
    return v;
  }

  ValuePtr& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }

  // The values pushed since the last MARK, which is removed.
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) fail("no MARK");
    const size_t at = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> out(stack_.begin() + static_cast<std::ptrdiff_t>(at), stack_.end());
    stack_.resize(at);
    return out;
  }

  void push_string(Kind kind, const std::string& text) {
    auto v = make(kind);
    v->text = text;
    stack_.push_back(v);
  }

  void push_int(int64_t i) {
    auto v = make(Kind::kInt);
    v->integer = i;
    stack_.push_back(v);
  }

  void push_global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    if (!allowed_globals().count(full)) fail("refers to " + full + ", which is not a class a checkpoint holds");
    push_string(Kind::kGlobal, full);
  }

  ValuePtr tuple(std::vector<ValuePtr> items) {
    auto v = make(Kind::kTuple);
    v->items = std::move(items);
    return v;
  }

  void add_to_list(const ValuePtr& list, const std::vector<ValuePtr>& items) {
    if (!list->is(Kind::kList)) fail("APPEND to " + list->describe());
    list->items.insert(list->items.end(), items.begin(), items.end());
  }

  void add_to_dict(const ValuePtr& dict, const std::vector<ValuePtr>& kv) {
    if (!dict->is(Kind::kDict)) fail("SETITEM on " + dict->describe());
    if (kv.size() % 2) fail("SETITEMS with an odd number of values");
    for (size_t i = 0; i < kv.size(); i += 2) dict->entries.emplace_back(kv[i], kv[i + 1]);
  }

  // callable(*args): an Object, except the calls that only spell plain data.
  ValuePtr call(const ValuePtr& callable, const ValuePtr& args) {
    if (!callable->is(Kind::kGlobal)) fail("call of " + callable->describe());
    if (!args->is(Kind::kTuple)) fail("call of " + callable->text + " with " + args->describe());
    if (callable->text == "_codecs.encode") {
      if (args->items.size() != 2 || !args->items[0]->is(Kind::kString))
        fail("_codecs.encode with unexpected arguments");
      auto v = make(Kind::kBytes);
      v->text = latin1_bytes(args->items[0]->text, where_);
      return v;
    }
    if (callable->text == "collections.OrderedDict" && args->items.empty()) return make(Kind::kDict);
    auto v = make(Kind::kObject);
    v->text = callable->text;
    v->items = args->items;
    return v;
  }

  void memo_put(uint64_t index) { memo_[index] = top(); }

  ValuePtr memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry " + std::to_string(index) + " was never stored");
    return it->second;
  }

  void step(unsigned char op) {
    switch (op) {
      case 0x80:
        take(1);
        return;  // PROTO
      case 0x95:
        take(8);
        return;  // FRAME: its length only helps buffered readers
      case '(':
        marks_.push_back(stack_.size());
        return;
      case '0':
        pop();
        return;
      case '1':
        pop_mark();
        return;
      case '2':
        stack_.push_back(top());
        return;
      case 'N':
        stack_.push_back(make(Kind::kNone));
        return;
      case 0x88:
      case 0x89: {
        auto v = make(Kind::kBool);
        v->boolean = op == 0x88;
        stack_.push_back(v);
        return;
      }
      case 'J':
        push_int(static_cast<int32_t>(little(4)));
        return;
      case 'K':
        push_int(static_cast<int64_t>(little(1)));
        return;
      case 'M':
        push_int(static_cast<int64_t>(little(2)));
        return;
      case 0x8a:
      case 0x8b: {  // LONG1, LONG4: little-endian two's complement
        const uint64_t n = little(op == 0x8a ? 1 : 4);
        if (n > 8) fail("integer of " + std::to_string(n) + " bytes does not fit 64 bits");
        const std::string b = take(n);
        uint64_t u = 0;
        for (size_t i = 0; i < n; ++i) u |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
        if (n > 0 && n < 8 && (static_cast<unsigned char>(b[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
        push_int(static_cast<int64_t>(u));
        return;
      }
      case 'G': {  // BINFLOAT: big-endian double
        std::string b = take(8);
        uint64_t u = 0;
        for (char c : b) u = (u << 8) | static_cast<unsigned char>(c);
        auto v = make(Kind::kFloat);
        std::memcpy(&v->real, &u, sizeof(u));
        stack_.push_back(v);
        return;
      }
      case 'X':
        push_string(Kind::kString, take(little(4)));
        return;
      case 0x8c:
        push_string(Kind::kString, take(little(1)));
        return;
      case 0x8d:
        push_string(Kind::kString, take(little(8)));
        return;
      case 'T':
        push_string(Kind::kString, take(little(4)));
        return;  // BINSTRING (Python 2 str)
      case 'U':
        push_string(Kind::kString, take(little(1)));
        return;  // SHORT_BINSTRING
      case 'B':
        push_string(Kind::kBytes, take(little(4)));
        return;
      case 'C':
        push_string(Kind::kBytes, take(little(1)));
        return;
      case 0x8e:
      case 0x96:
        push_string(Kind::kBytes, take(little(8)));
        return;  // BINBYTES8, BYTEARRAY8
      case ']':
        stack_.push_back(make(Kind::kList));
        return;
      case 'l': {
        auto v = make(Kind::kList);
        v->items = pop_mark();
        stack_.push_back(v);
        return;
      }
      case 'a': {
        auto item = pop();
        add_to_list(top(), {item});
        return;
      }
      case 'e': {
        auto items = pop_mark();
        add_to_list(top(), items);
        return;
      }
      case ')':
        stack_.push_back(tuple({}));
        return;
      case 't':
        stack_.push_back(tuple(pop_mark()));
        return;
      case 0x85:
      case 0x86:
      case 0x87: {
        std::vector<ValuePtr> items(op - 0x84);
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        stack_.push_back(tuple(std::move(items)));
        return;
      }
      case '}':
        stack_.push_back(make(Kind::kDict));
        return;
      case 'd': {
        auto v = make(Kind::kDict);
        add_to_dict(v, pop_mark());
        stack_.push_back(v);
        return;
      }
      case 's': {
        auto value = pop();
        auto key = pop();
        add_to_dict(top(), {key, value});
        return;
      }
      case 'u': {
        auto kv = pop_mark();
        add_to_dict(top(), kv);
        return;
      }
      case 0x8f:
        stack_.push_back(make(Kind::kList));
        return;  // EMPTY_SET, kept as a list
      case 0x90: {
        auto items = pop_mark();
        add_to_list(top(), items);
        return;
      }
      case 0x91: {  // FROZENSET
        auto v = make(Kind::kList);
        v->items = pop_mark();
        stack_.push_back(v);
        return;
      }
      case 'c': {
        const std::string module = line();
        push_global(module, line());
        return;
      }
      case 0x93: {
        auto name = pop();
        auto module = pop();
        if (!module->is(Kind::kString) || !name->is(Kind::kString)) fail("STACK_GLOBAL without two strings");
        push_global(module->text, name->text);
        return;
      }
      case 'R': {
        auto args = pop();
        auto callable = pop();
        stack_.push_back(call(callable, args));
        return;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        auto args = pop();
        auto cls = pop();
        stack_.push_back(call(cls, args));
        return;
      }
      case 0x92: {  // NEWOBJ_EX: keyword arguments are not used by what we read
        auto kwargs = pop();
        auto args = pop();
        auto cls = pop();
        if (!kwargs->is(Kind::kDict) || !kwargs->entries.empty()) fail("NEWOBJ_EX with keyword arguments");
        stack_.push_back(call(cls, args));
        return;
      }
      case 'b': {
        auto state = pop();
        auto& obj = top();
        if (!obj->is(Kind::kObject)) fail("BUILD on " + obj->describe());
        obj->state = state;
        return;
      }
      case 'Q': {
        auto v = make(Kind::kPersistentId);
        v->items = {pop()};
        stack_.push_back(v);
        return;
      }
      case 'q':
        memo_put(little(1));
        return;
      case 'r':
        memo_put(little(4));
        return;
      case 0x94:
        memo_put(memo_.size());
        return;
      case 'h':
        stack_.push_back(memo_get(little(1)));
        return;
      case 'j':
        stack_.push_back(memo_get(little(4)));
        return;
      default: {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "0x%02x", op);
        fail(std::string("unsupported opcode ") + hex);
      }
    }
  }

  const std::string& data_;
  std::string where_;
  size_t pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, ValuePtr> memo_;
};

}  // namespace

ValuePtr Value::get(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k->is(Kind::kString) && k->text == key) return v;
  return nullptr;
}

std::string Value::describe() const {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return boolean ? "True" : "False";
    case Kind::kInt:
      return "int " + std::to_string(integer);
    case Kind::kFloat:
      return "float " + std::to_string(real);
    case Kind::kString:
      return "str '" + text + "'";
    case Kind::kBytes:
      return "bytes of length " + std::to_string(text.size());
    case Kind::kList:
      return "list of " + std::to_string(items.size());
    case Kind::kTuple:
      return "tuple of " + std::to_string(items.size());
    case Kind::kDict:
      return "dict of " + std::to_string(entries.size());
    case Kind::kGlobal:
      return "reference to " + text;
    case Kind::kObject:
      return "object " + text;
    case Kind::kPersistentId:
      return "persistent id";
  }
  return "?";
}

ValuePtr read(const std::string& data, const std::string& where) {
  return Reader(data, where).run();
}

}  // namespace titan::pickle

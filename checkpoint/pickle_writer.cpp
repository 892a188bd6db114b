#include "checkpoint/pickle_writer.h"

#include <cstring>

namespace titan::pickle {
namespace {

void little(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

}  // namespace

Writer::Writer() {
  out_ = "\x80\x02";
}

Writer& Writer::global(const std::string& module, const std::string& name) {
  out_ += "c" + module + "\n" + name + "\n";
  return *this;
}

Writer& Writer::text(const std::string& s) {
  out_.push_back('X');
  little(out_, s.size(), 4);
  out_ += s;
  return *this;
}

Writer& Writer::integer(int64_t i) {
  if (i >= INT32_MIN && i <= INT32_MAX) {
    out_.push_back('J');
    little(out_, static_cast<uint32_t>(static_cast<int32_t>(i)), 4);
  } else {  // LONG1: 8 bytes of two's complement
    out_ += "\x8a\x08";
    little(out_, static_cast<uint64_t>(i), 8);
  }
  return *this;
}

Writer& Writer::real(double d) {
  uint64_t u = 0;
  std::memcpy(&u, &d, sizeof(d));
  out_.push_back('G');
  for (int i = 7; i >= 0; --i) out_.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));  // big-endian
  return *this;
}

Writer& Writer::boolean(bool b) {
  return opcode(static_cast<char>(b ? 0x88 : 0x89));
}

Writer& Writer::opcode(char code) {
  out_.push_back(code);
  return *this;
}

std::string Writer::finish() {
  out_.push_back('.');
  return std::move(out_);
}

}  // namespace titan::pickle

// Writes Python pickles (protocol 2) opcode by opcode, for DCP's `.metadata`: the caller pushes
// values and calls the way Python's pickler would for DCP's dataclasses, and takes the bytes.
#pragma once

#include <cstdint>
#include <string>

namespace titan::pickle {

class Writer {
 public:
  Writer();                                                            // PROTO 2
  Writer& global(const std::string& module, const std::string& name);  // GLOBAL: a class or function
  Writer& text(const std::string& s);                                  // BINUNICODE
  Writer& integer(int64_t i);                                          // BININT or LONG1
  Writer& real(double d);                                              // BINFLOAT
  Writer& boolean(bool b);
  Writer& none() { return opcode('N'); }
  Writer& mark() { return opcode('('); }
  Writer& tuple() { return opcode('t'); }  // the values since mark() as a tuple
  Writer& empty_dict() { return opcode('}'); }
  Writer& setitems() { return opcode('u'); }  // adds the key/value pairs since mark() to the dict below them
  Writer& empty_list() { return opcode(']'); }
  Writer& appends() { return opcode('e'); }  // adds the values since mark() to the list below them
  Writer& reduce() { return opcode('R'); }   // callable, args tuple -> callable(*args)
  Writer& new_object() { return opcode(static_cast<char>(0x81)); }  // cls, args tuple -> cls.__new__(cls, *args)
  Writer& build() { return opcode('b'); }  // object, state -> object with its __dict__ (or __setstate__) set
  std::string finish();                    // STOP, and the bytes

 private:
  Writer& opcode(char code);  // a one-byte opcode
  std::string out_;
};

}  // namespace titan::pickle

#include "trainer/tensorboard_writer.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

namespace titan {
namespace {

namespace fs = std::filesystem;

// Protobuf wire format: field number << 3 | wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

template <class T>
void put_little_endian(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // x86 and ARM Linux are little-endian, as the format
  out.append(bytes, sizeof(T));
}

void put_bytes_field(std::string& out, uint32_t field, const std::string& bytes) {
  put_varint(out, field << 3 | 2);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event{double wall_time = 1; int64 step = 2; oneof {string file_version = 3; Summary summary = 5}}.
std::string event(int64_t step, uint32_t field, const std::string& bytes) {
  std::string out;
  put_varint(out, 1 << 3 | 1);
  put_little_endian(out, std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  put_varint(out, 2 << 3 | 0);
  put_varint(out, static_cast<uint64_t>(step));
  put_bytes_field(out, field, bytes);
  return out;
}

// CRC-32C (Castagnoli), the checksum TFRecord frames carry (masked).
uint32_t crc32c(const char* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // reflected Castagnoli polynomial
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ static_cast<uint8_t>(data[i])) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

uint32_t masked_crc32c(const std::string& bytes) {
  const uint32_t crc = crc32c(bytes.data(), bytes.size());
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;  // TFRecord's mask: a CRC of CRC-bearing data stays useful
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& folder) {
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) throw std::runtime_error("cannot create the TensorBoard folder " + folder + ": " + ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  path_ = (fs::path(folder) / ("events.out.tfevents." + std::to_string(seconds.count()) + "." + host + "." +
                               std::to_string(getpid()) + ".0"))
              .string();
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw std::runtime_error("cannot write TensorBoard events in " + folder + ": " + std::strerror(errno));
  write_record(event(0, 3, "brain.Event:2"));
}

void TensorBoardWriter::add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars) {
  std::string summary;  // Summary{repeated Value value = 1}; Value{string tag = 1; float simple_value = 2}
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes_field(v, 1, tag);
    put_varint(v, 2 << 3 | 5);
    put_little_endian(v, static_cast<float>(value));
    put_bytes_field(summary, 1, v);
  }
  write_record(event(step, 5, summary));
}

void TensorBoardWriter::write_record(const std::string& payload) {
  std::string length;
  put_little_endian(length, static_cast<uint64_t>(payload.size()));
  std::string frame = length;
  put_little_endian(frame, masked_crc32c(length));
  frame += payload;
  put_little_endian(frame, masked_crc32c(payload));
  out_.write(frame.data(), static_cast<std::streamsize>(frame.size()));
  out_.flush();
  if (!out_) throw std::runtime_error("writing TensorBoard events to " + path_ + " failed: " + std::strerror(errno));
}

}  // namespace titan

// The safetensors reader and writer against bytes laid out by hand from the format's spec.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/safetensors.h"

namespace titan::safetensors {
namespace {

namespace fs = std::filesystem;

std::string temp(const std::string& name) {
  auto dir = fs::temp_directory_path() / "titan_safetensors_test";
  fs::create_directories(dir);
  return (dir / name).string();
}

// A file written by hand: u64 little-endian header length, JSON header, raw data.
std::string hand_written(const std::string& name, const std::string& header, const std::string& data) {
  std::string path = temp(name);
  std::ofstream f(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << data;
  return path;
}

std::string error_of(const std::string& path) {
  try {
    read_header(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, ReadsAHandWrittenFile) {
  const float values[3] = {1.5f, -2.0f, 0.25f};
  const std::string data(reinterpret_cast<const char*>(values), sizeof(values));
  auto path = hand_written("hand.safetensors",
                           R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", data);
  auto h = read_header(path);
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  auto t = read_tensor(path, h, *h.find("w"));
  EXPECT_TRUE(torch::equal(t, torch::tensor({1.5f, -2.0f, 0.25f})));
}

TEST(Safetensors, WritesWhatTheSpecSays) {
  auto path = temp("written.safetensors");
  auto a = torch::arange(6, torch::kFloat32).view({2, 3});
  auto b = torch::tensor({7}, torch::kInt64);
  write_file(path, {{"a", a}, {"b", b}}, {{"format", "pt"}});
  std::ifstream f(path, std::ios::binary);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  EXPECT_EQ(n % 8, 0u);  // padded so the data section is aligned
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  EXPECT_NE(header.find(R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})"), std::string::npos) << header;
  EXPECT_NE(header.find(R"("b":{"dtype":"I64","shape":[1],"data_offsets":[24,32]})"), std::string::npos) << header;
  float first[6];
  f.read(reinterpret_cast<char*>(first), sizeof(first));
  EXPECT_EQ(first[5], 5.0f);
}

TEST(Safetensors, RoundTripsEveryTrainingDtype) {
  auto path = temp("dtypes.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", torch::randn({4, 5})}, {"bf16", torch::randn({3}).to(torch::kBFloat16)},
      {"f16", torch::randn({2, 2}).to(torch::kFloat16)}, {"step", torch::tensor(3.0f)}, {"rng", torch::arange(10).to(torch::kUInt8)}};
  const Header written = write_file(path, tensors, {});
  auto h = read_header(path);
  EXPECT_EQ(written.data_start, h.data_start);
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto t = read_tensor(path, h, *h.find(tensors[i].first));
    EXPECT_TRUE(torch::equal(t, tensors[i].second)) << tensors[i].first;
    EXPECT_EQ(crc32_of(t), written.tensors[i].crc32);
    EXPECT_EQ(written.tensors[i].begin, h.find(tensors[i].first)->begin);
  }
}

TEST(Safetensors, BadHeadersAreClearErrors) {
  std::ofstream(temp("short")) << "abc";
  EXPECT_NE(error_of(temp("short")).find("not a safetensors file"), std::string::npos);
  EXPECT_NE(error_of(hand_written("json", "{not json", "")).find("header is not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(hand_written("dtype", R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", "abcd"))
                .find("unknown safetensors dtype 'Q4'"),
            std::string::npos);
  EXPECT_NE(error_of(hand_written("range", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd"))
                .find("fall outside the 4-byte data section"),
            std::string::npos);
  EXPECT_NE(error_of(hand_written("size", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"))
                .find("do not match its shape and dtype"),
            std::string::npos);
  EXPECT_NE(error_of(hand_written("overlap",
                                  R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                                  "abcdefgh"))
                .find("overlap"),
            std::string::npos);
  std::string big(8, '\xff');
  std::ofstream(temp("huge")) << big << "{}";
  EXPECT_NE(error_of(temp("huge")).find("bad safetensors header length"), std::string::npos);
}

}  // namespace
}  // namespace titan::safetensors

// Sharded checkpoints: chunks saved by two "ranks" load into any other slicing; bad data fails.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/checkpoint_format.h"

namespace titan::checkpoint {
namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / "titan_format_test" / name;
  fs::remove_all(dir);
  return dir.string();
}

// A (6, 4) tensor saved as rows 0-3 by rank 0 and rows 4-5 by rank 1 (uneven, like FSDP's last rank).
std::string two_rank_checkpoint(const torch::Tensor& full) {
  const std::string dir = fresh_dir("two_ranks");
  Manifest m;
  m.step = 3;
  merge_entries(m, write_shard(dir, {{"w", full.slice(0, 0, 4).clone(), {6, 4}, {0, 0}}}, 0));
  merge_entries(m, write_shard(dir, {{"w", full.slice(0, 4, 6).clone(), {6, 4}, {4, 0}}}, 1));
  write_manifest(dir, m);
  return dir;
}

TEST(CheckpointFormat, AnySavedShardingLoadsIntoAnyTarget) {
  auto full = torch::arange(24, torch::kFloat32).view({6, 4});
  const std::string dir = two_rank_checkpoint(full);
  const Manifest m = read_manifest(dir);
  ASSERT_EQ(m.tensors.at("w").chunks.size(), 2u);
  EXPECT_EQ(m.step, 3);

  std::vector<ShardedTensor> whole = {ShardedTensor::whole("w", torch::zeros({6, 4}))};
  load_tensors(dir, m, whole);
  EXPECT_TRUE(torch::equal(whole[0].local, full));

  // Rows 3-4 straddle both files; a column slice (tensor-parallel style) reads from both too.
  std::vector<ShardedTensor> pieces = {{"w", torch::zeros({2, 4}), {6, 4}, {3, 0}},
                                       {"w", torch::zeros({6, 1}), {6, 4}, {0, 2}}};
  load_tensors(dir, m, pieces);
  EXPECT_TRUE(torch::equal(pieces[0].local, full.slice(0, 3, 5)));
  EXPECT_TRUE(torch::equal(pieces[1].local, full.slice(1, 2, 3)));

  // Loading converts dtype (a bf16 export into an fp32 model).
  std::vector<ShardedTensor> half = {ShardedTensor::whole("w", torch::zeros({6, 4}, torch::kBFloat16))};
  load_tensors(dir, m, half);
  EXPECT_TRUE(torch::equal(half[0].local.to(torch::kFloat32), full));
}

TEST(CheckpointFormat, ManifestIsWrittenLastAndRewritesDropTheOldOne) {
  const std::string dir = fresh_dir("rewrite");
  EXPECT_FALSE(is_complete(dir));
  write_checkpoint(dir, {ShardedTensor::whole("a", torch::ones({2}))}, Manifest{});
  EXPECT_TRUE(is_complete(dir));
  EXPECT_FALSE(fs::exists(fs::path(dir) / ".metadata.tmp"));
  write_shard(dir, {ShardedTensor::whole("a", torch::zeros({2}))}, 0);  // a rewrite in progress
  EXPECT_FALSE(is_complete(dir));
}

TEST(CheckpointFormat, ErrorsNameTheKeyAndTheProblem) {
  auto full = torch::arange(24, torch::kFloat32).view({6, 4});
  const std::string dir = two_rank_checkpoint(full);
  Manifest m = read_manifest(dir);
  auto error = [&](std::vector<ShardedTensor> targets, const Manifest& manifest) -> std::string {
    try {
      load_tensors(dir, manifest, targets);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error({ShardedTensor::whole("v", torch::zeros({6, 4}))}, m).find("has no tensor 'v'"), std::string::npos);
  EXPECT_NE(error({ShardedTensor::whole("w", torch::zeros({4, 6}))}, m).find("'w' has shape [6, 4], the model expects [4, 6]"),
            std::string::npos);
  Manifest missing = m;
  missing.tensors["w"].chunks.pop_back();
  EXPECT_NE(error({ShardedTensor::whole("w", torch::zeros({6, 4}))}, missing).find("cover 16 of 24 elements"), std::string::npos);
}

TEST(CheckpointFormat, IncompleteFolderIsNotACheckpoint) {
  const std::string dir = fresh_dir("incomplete");
  write_shard(dir, {ShardedTensor::whole("a", torch::ones({2}))}, 0);
  try {
    read_manifest(dir);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("is incomplete: it has no .metadata"), std::string::npos);
  }
}

TEST(CheckpointFormat, AChangedDigitInTheManifestIsCaught) {
  const std::string dir = two_rank_checkpoint(torch::arange(24, torch::kFloat32).view({6, 4}));
  const auto path = fs::path(dir) / ".metadata";
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  std::string s = text.str();
  const auto at = s.find("\"step\": 3");
  ASSERT_NE(at, std::string::npos) << s;
  s.replace(at, 9, "\"step\": 9");  // as a flipped bit on disk would
  std::ofstream(path) << s;
  try {
    read_manifest(dir);
    FAIL() << "a changed manifest was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("its manifest_crc32 does not match its text"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace titan::checkpoint

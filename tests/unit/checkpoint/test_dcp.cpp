// Reading PyTorch Distributed Checkpoint folders that the real torch.distributed.checkpoint.save
// wrote (tests/reference/dcp_reference.py: one process, and two FSDP2 gloo ranks with an uneven
// split), into whole and sharded targets; and the data-only pickle reader's refusals.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "checkpoint/checkpoint_format.h"
#include "checkpoint/dcp_reader.h"
#include "checkpoint/pickle_reader.h"
#include "checkpoint/safetensors.h"
#include "models/common/torch_api.h"

namespace titan::dcp {
namespace {

namespace fs = std::filesystem;

fs::path scratch() {
  return fs::temp_directory_path() / ("titan_dcp_" + std::to_string(::getpid()));
}

fs::path saved_by_torch(const std::string& mode) {
  const auto dir = scratch() / mode;
  if (fs::exists(dir / "step-1" / ".metadata")) return dir;
  fs::create_directories(dir);
  const std::string cmd = std::string(TITAN_SOURCE_DIR) + "/.venv/bin/python " + TITAN_SOURCE_DIR +
                          "/tests/reference/dcp_reference.py save " + dir.string() + " " + mode + " >" + dir.string() +
                          "/peer.log 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return dir;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

class DcpSaved : public ::testing::TestWithParam<std::string> {
 protected:
  static void TearDownTestSuite() { fs::remove_all(scratch()); }
};

TEST_P(DcpSaved, LoadsWhatTorchSavedIntoWholeAndShardedTargets) {
  const fs::path dir = saved_by_torch(GetParam());
  const std::string step = (dir / "step-1").string();
  ASSERT_TRUE(is_dcp_folder(step));
  const auto manifest = checkpoint::read_manifest(step);
  EXPECT_EQ(manifest.container, "dcp");
  EXPECT_TRUE(manifest.model_only);
  const std::string file = (dir / "weights.safetensors").string();
  const auto header = safetensors::read_header(file);
  ASSERT_EQ(manifest.tensors.size(), header.tensors.size());
  for (const auto& info : header.tensors) {
    const torch::Tensor expected = safetensors::read_tensor(file, header, info);
    std::vector<checkpoint::ShardedTensor> whole = {
        checkpoint::ShardedTensor::whole(info.name, torch::zeros_like(expected))};
    checkpoint::load_tensors(step, manifest, whole);
    EXPECT_TRUE(torch::equal(whole[0].local, expected)) << info.name;
    // A piece across both FSDP2 chunks (rows 30..69 of 101 split 51 + 50; of 64: 32 + 32).
    if (expected.dim() != 2 || expected.size(0) < 70) continue;
    checkpoint::ShardedTensor piece = checkpoint::ShardedTensor::whole(info.name, torch::zeros({40, expected.size(1)}));
    piece.global_shape = expected.sizes().vec();
    piece.offsets = {30, 0};
    std::vector<checkpoint::ShardedTensor> pieces = {piece};
    checkpoint::load_tensors(step, manifest, pieces);
    EXPECT_TRUE(torch::equal(pieces[0].local, expected.narrow(0, 30, 40))) << info.name;
  }
}

INSTANTIATE_TEST_SUITE_P(OneProcessAndFsdp2, DcpSaved, ::testing::Values("single", "fsdp2"));

TEST(PickleReader, RefusesClassesNoCheckpointHoldsByName) {
  const std::string os_system = std::string("\x80\x02") + "cos\nsystem\n" + "X\x02\x00\x00\x00ls\x85R.";
  EXPECT_EQ(error_of([&] { pickle::read(os_system, "x/.metadata"); }),
            "x/.metadata: pickle byte 13: refers to os.system, which is not a class a checkpoint holds");
}

TEST(PickleReader, NamesTruncatedDataAndUnknownOpcodes) {
  EXPECT_EQ(error_of([] {
              pickle::read(std::string("\x80\x02X\x10\x00\x00\x00"
                                       "ab",
                                       9),
                           "f");
            }),
            "f: pickle byte 7: truncated (needs 16 more bytes)");
  EXPECT_EQ(error_of([] { pickle::read("\x80\x02p0\n.", "f"); }), "f: pickle byte 3: unsupported opcode 0x70");
  EXPECT_EQ(error_of([] { pickle::read("\x80\x02K\x01K\x02.", "f"); }),
            "f: pickle byte 7: STOP with 2 values on the stack");
}

TEST(PickleReader, ReadsPlainData) {
  // pickle.dumps({"a": [1, -2, 2**40], "b": (1.5, None, True), "c": b"\xff"}, protocol=4), by hand.
  const std::string data(
      "\x80\x04}(X\x01\x00\x00\x00"
      "a](K\x01J\xfe\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01"
      "eX\x01\x00\x00\x00"
      "bG?\xf8\x00\x00\x00\x00\x00\x00N\x88\x87X\x01\x00\x00\x00"
      "cC\x01\xffu.",
      57);
  const auto v = pickle::read(data, "f");
  ASSERT_TRUE(v->is(pickle::Value::Kind::kDict));
  const auto a = v->get("a");
  ASSERT_EQ(a->items.size(), 3u);
  EXPECT_EQ(a->items[0]->integer, 1);
  EXPECT_EQ(a->items[1]->integer, -2);
  EXPECT_EQ(a->items[2]->integer, int64_t{1} << 40);
  const auto b = v->get("b");
  EXPECT_EQ(b->items[0]->real, 1.5);
  EXPECT_TRUE(b->items[1]->is(pickle::Value::Kind::kNone));
  EXPECT_TRUE(b->items[2]->boolean);
  EXPECT_EQ(v->get("c")->text, "\xff");
}

}  // namespace
}  // namespace titan::dcp

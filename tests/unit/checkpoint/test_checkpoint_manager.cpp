// The manager's rules, as TorchTitan's test_checkpoint.py checks them, plus our fixes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "checkpoint/checkpoint_manager.h"

namespace titan::checkpoint {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  torch::Tensor weight = torch::zeros({3});
  int64_t step = 0;
  std::string dir;

  explicit Fixture(const std::string& name) {
    dir = (fs::temp_directory_path() / "titan_manager_test" / name).string();
    fs::remove_all(dir);
  }
  Options options() const {
    Options o;
    o.enable = true;
    o.folder = dir;
    o.interval = 3;
    o.last_save_model_only = false;
    return o;
  }
  Parts parts() {
    Parts parts;
    Part& model_part = parts.add("model");
    model_part.save = [this] { return PartState{{ShardedTensor::whole("weight", weight)}, nlohmann::json::object()}; };
    Part& train_state_part = parts.add("train_state");
    train_state_part.save = [this] { return PartState{{}, nlohmann::json{{"step", step}}}; };
    train_state_part.load = [this](const PartState& s) { step = s.state.at("step").get<int64_t>(); };
    return parts;
  }
  std::vector<std::string> folders() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_directory()) names.push_back(e.path().filename().string());  // the step folders, not the run's lock
    std::sort(names.begin(), names.end());
    return names;
  }
};

TEST(CheckpointManager, IntervalAndLastStepAsTorchTitan) {
  Fixture f("interval");
  {
    CheckpointManager m(f.options(), f.parts(), {});
    EXPECT_FALSE(m.should_save(1, false));
    EXPECT_FALSE(m.should_save(2, false));
    EXPECT_TRUE(m.should_save(2, true));
    EXPECT_TRUE(m.should_save(3, false));
    EXPECT_FALSE(m.should_save(4, false));
    EXPECT_TRUE(m.should_save(4, true));
  }
  Options first = f.options();
  first.enable_first_step_checkpoint = true;
  EXPECT_TRUE(CheckpointManager(first, f.parts(), {}).should_save(1, false));
  Options load_only = f.options();
  load_only.load_only = true;
  EXPECT_FALSE(CheckpointManager(load_only, f.parts(), {}).should_save(3, true));
  Options disabled = f.options();
  disabled.enable = false;
  EXPECT_FALSE(CheckpointManager(disabled, f.parts(), {}).should_save(3, true));
}

TEST(CheckpointManager, KeepsTheNewestKAndRemovesOlderIncompleteFolders) {
  Fixture f("purge");
  Options o = f.options();
  o.interval = 1;
  o.keep_latest_k = 2;
  CheckpointManager m(o, f.parts(), {});
  fs::create_directories(fs::path(f.dir) / "step-0");  // an interrupted save
  fs::create_directories(fs::path(f.dir) / "step-9");  // newer: maybe a save other ranks have begun
  for (int64_t s = 1; s <= 3; ++s) m.save(s, false);
  EXPECT_EQ(f.folders(), (std::vector<std::string>{"step-2", "step-3", "step-9"}));
}

// Two runs saving into one folder would interleave their steps: the second is refused, naming the first.
TEST(CheckpointManager, OneRunPerFolder) {
  Fixture f("lock");
  {
    CheckpointManager first(f.options(), f.parts(), {});
    try {
      CheckpointManager second(f.options(), f.parts(), {});
      FAIL() << "a second manager took the folder";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "checkpoint folder " + f.dir + " is in use by another run (pid " +
                                           std::to_string(::getpid()) + "): its saves would interleave with this run's; "
                                           "give this run its own --job.dump_folder");
    }
    Options load_only = f.options();
    load_only.load_only = true;
    EXPECT_NO_THROW(CheckpointManager(load_only, f.parts(), {}));  // writes nothing: no lock
  }
  EXPECT_NO_THROW(CheckpointManager(f.options(), f.parts(), {}));  // released with the first
}

TEST(CheckpointManager, ResumesFromTheNewestCompleteStep) {
  Fixture f("resume");
  {
    CheckpointManager m(f.options(), f.parts(), {});
    f.weight.fill_(3.0);
    f.step = 3;
    m.save(3, false);
  }
  fs::create_directories(fs::path(f.dir) / "step-6");  // incomplete: ignored
  f.weight.zero_();
  f.step = 0;
  auto r = CheckpointManager(f.options(), f.parts(), {}).load();
  EXPECT_TRUE(r.loaded);
  EXPECT_EQ(r.step, 3);
  EXPECT_EQ(f.step, 3);
  EXPECT_EQ(f.weight[0].item<float>(), 3.0f);
  EXPECT_EQ(r.loaded_parts, (std::vector<std::string>{"model", "train_state"}));
}

TEST(CheckpointManager, MissingLoadStepIsAnErrorNotAFreshStart) {
  Fixture f("load_step");
  Options o = f.options();
  o.load_step = 5;
  EXPECT_THROW(CheckpointManager(o, f.parts(), {}).load(), std::runtime_error);
  o.load_step = -1;
  EXPECT_FALSE(CheckpointManager(o, f.parts(), {}).load().loaded);  // nothing there: fresh start
}

TEST(CheckpointManager, StepZeroLoadsTheModelOnly) {
  Fixture f("seed");
  f.weight.fill_(2.0);
  f.step = 99;
  CheckpointManager(f.options(), f.parts(), {}).save_seed();
  f.weight.zero_();
  f.step = 0;
  auto r = CheckpointManager(f.options(), f.parts(), {}).load();
  EXPECT_EQ(r.loaded_parts, (std::vector<std::string>{"model"}));
  EXPECT_EQ(f.step, 0);
  EXPECT_EQ(f.weight[1].item<float>(), 2.0f);
}

TEST(CheckpointManager, InitialLoadWhenTheFolderHasNoCompleteStep) {
  Fixture source("initial_source");
  source.weight.fill_(5.0);
  CheckpointManager(source.options(), source.parts(), {}).save(3, false);
  Fixture f("initial");
  fs::create_directories(fs::path(f.dir) / "step-1");  // exists, but incomplete (TorchTitan #1900)
  Options o = f.options();
  o.initial_load_path = source.dir + "/step-3";
  auto r = CheckpointManager(o, f.parts(), {}).load();
  EXPECT_TRUE(r.loaded);
  EXPECT_EQ(r.loaded_parts, (std::vector<std::string>{"model"}));  // initial_load_model_only
  EXPECT_EQ(f.weight[2].item<float>(), 5.0f);
}

TEST(CheckpointManager, ExclusionRules) {
  Fixture f("rules");
  Options o = f.options();
  o.exclude_from_loading = {"model"};
  EXPECT_THROW(validate_options(o), std::invalid_argument);
  o.exclude_from_loading = {"optimizer"};
  EXPECT_THROW(validate_options(o), std::invalid_argument);
  o.exclude_from_loading = {"optimizer", "lr_scheduler"};
  EXPECT_NO_THROW(validate_options(o));
  o.exclude_from_loading = {"data_loader"};
  EXPECT_THROW(validate_options(o), std::invalid_argument);
}

}  // namespace
}  // namespace titan::checkpoint

// Config precedence (defaults < TOML < CLI), CLI grammar, and the error messages for bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "trainer/config_field.h"
#include "trainer/config_manager.h"

namespace titan {
namespace {

std::string write_toml(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / ("titan_test_" + name + ".toml");
  std::ofstream(path) << text;
  return path.string();
}

std::string error_of(const std::vector<std::string>& args) {
  try {
    JobConfig c = parse_job_config(args);
    validate_job_config(c);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(JobConfig, DefaultsAreTorchTitans) {
  JobConfig c = parse_job_config({});
  EXPECT_EQ(c.job.dump_folder, "./outputs");
  EXPECT_EQ(c.optimizer.lr, 8e-4);
  EXPECT_EQ(c.optimizer.beta2, 0.95);
  EXPECT_EQ(c.optimizer.weight_decay, 0.1);
  EXPECT_EQ(c.lr_scheduler.warmup_steps, 200);
  EXPECT_FALSE(c.lr_scheduler.decay_ratio.has_value());
  EXPECT_EQ(c.training.local_batch_size, 8);
  EXPECT_EQ(c.training.global_batch_size, -1);
  EXPECT_EQ(c.training.seq_len, 2048);
  EXPECT_EQ(c.training.steps, 10000);
  EXPECT_EQ(c.parallelism.data_parallel_shard_degree, -1);
  EXPECT_EQ(c.checkpoint.interval, 500);
  EXPECT_EQ(c.checkpoint.keep_latest_k, 10);
  EXPECT_TRUE(c.checkpoint.last_save_model_only);
  EXPECT_EQ(c.activation_checkpoint.mode, "selective");
  EXPECT_EQ(c.comm.init_timeout_seconds, 300);
  EXPECT_FALSE(c.debug.seed.has_value());
  EXPECT_EQ(c.metrics.log_freq, 10);
}

TEST(JobConfig, CliOverridesTomlOverridesDefaults) {
  auto file = write_toml("precedence", "[training]\nsteps = 30\nseq_len = 256\n[optimizer]\nlr = 1e-3\n");
  JobConfig c = parse_job_config({"--job.config_file", file, "--training.steps", "40", "--optimizer.lr=2e-3"});
  EXPECT_EQ(c.training.steps, 40);       // CLI wins over TOML
  EXPECT_EQ(c.training.seq_len, 256);    // TOML wins over default
  EXPECT_EQ(c.optimizer.lr, 2e-3);
  EXPECT_EQ(c.training.local_batch_size, 8);  // default
  EXPECT_EQ(*c.job.config_file, file);
}

TEST(JobConfig, LastValueOfARepeatedKeyWins) {
  JobConfig c = parse_job_config({"--training.steps", "5", "--training.steps", "7"});
  EXPECT_EQ(c.training.steps, 7);
}

TEST(JobConfig, BooleanFlags) {
  EXPECT_TRUE(parse_job_config({"--checkpoint.enable"}).checkpoint.enable);
  EXPECT_FALSE(parse_job_config({"--checkpoint.no-last_save_model_only"}).checkpoint.last_save_model_only);
  EXPECT_FALSE(parse_job_config({"--checkpoint.no_last_save_model_only"}).checkpoint.last_save_model_only);
  EXPECT_FALSE(parse_job_config({"--checkpoint.enable=false"}).checkpoint.enable);
  EXPECT_TRUE(parse_job_config({"--checkpoint.enable=true"}).checkpoint.enable);
  EXPECT_TRUE(parse_job_config({"--checkpoint.create-seed-checkpoint"}).checkpoint.create_seed_checkpoint);
}

TEST(JobConfig, ListsAreOneCommaSeparatedArgument) {
  JobConfig c = parse_job_config({"--checkpoint.exclude_from_loading", "dataloader,lr_scheduler,optimizer"});
  EXPECT_EQ(c.checkpoint.exclude_from_loading, (std::vector<std::string>{"dataloader", "lr_scheduler", "optimizer"}));
  auto file = write_toml("list", "[checkpoint]\nexclude_from_loading = [\"dataloader\"]\n");
  c = parse_job_config({"--job.config_file", file, "--checkpoint.exclude_from_loading", "optimizer"});
  EXPECT_EQ(c.checkpoint.exclude_from_loading, (std::vector<std::string>{"optimizer"}));  // CLI replaces TOML
}

TEST(JobConfig, ListsOfListsFromTomlOrTheCommandLine) {
  using Stages = std::vector<std::vector<std::string>>;
  const Stages two = {{"tok_embeddings", "layers.0"}, {"layers.1", "norm", "output"}};
  auto file = write_toml("stages", "[parallelism]\nmodule_fqns_per_model_part = [[\"tok_embeddings\", \"layers.0\"], "
                                   "[\"layers.1\", \"norm\", \"output\"]]\n");
  EXPECT_EQ(parse_job_config({"--job.config_file", file}).parallelism.module_fqns_per_model_part, two);
  EXPECT_EQ(parse_job_config({"--parallelism.module_fqns_per_model_part", "tok_embeddings,layers.0;layers.1,norm,output"})
                .parallelism.module_fqns_per_model_part, two);
  EXPECT_EQ(parse_job_config({"--parallelism.module_fqns_per_model_part",
                              R"([["tok_embeddings", "layers.0"], ["layers.1", "norm", "output"]])"})
                .parallelism.module_fqns_per_model_part, two);
  JobConfig c = parse_job_config({"--parallelism.module_fqns_per_model_part", "tok_embeddings,layers.0;layers.1,norm,output"});
  JobConfig back = parse_job_config({"--job.config_file", write_toml("stages_dump", config_to_toml(c))});
  EXPECT_EQ(back.parallelism.module_fqns_per_model_part, two);  // the dumped config reads back
  EXPECT_NE(error_of({"--parallelism.module_fqns_per_model_part", "[[1, 2]]"}).find("expects an array of arrays of strings"),
            std::string::npos);
}

TEST(JobConfig, OptionalValuesAcceptNone) {
  EXPECT_EQ(*parse_job_config({"--debug.seed", "42"}).debug.seed, 42);
  EXPECT_FALSE(parse_job_config({"--debug.seed", "42", "--debug.seed", "None"}).debug.seed.has_value());
  EXPECT_EQ(*parse_job_config({"--lr_scheduler.decay_ratio", "0.8"}).lr_scheduler.decay_ratio, 0.8);
}

TEST(JobConfig, UnknownKeysNameTheNearestValidKey) {
  EXPECT_EQ(error_of({"--training.stepz", "3"}), "unknown config key '--training.stepz' (did you mean '--training.steps'?)");
  auto file = write_toml("unknown", "[training]\nsteps = 3\nlocal_batch = 4\n");
  const std::string e = error_of({"--job.config_file", file});
  EXPECT_NE(e.find(file + ":3: unknown config key 'training.local_batch'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'training.local_batch_size'"), std::string::npos) << e;
  auto section = write_toml("section", "[trainin]\nsteps = 3\n");
  EXPECT_NE(error_of({"--job.config_file", section}).find("unknown config key 'trainin'"), std::string::npos);
}

TEST(JobConfig, WrongTypesNameTheKey) {
  EXPECT_EQ(error_of({"--training.steps", "ten"}), "--training.steps expects an integer, got 'ten'");
  EXPECT_EQ(error_of({"--optimizer.lr", "fast"}), "--optimizer.lr expects a number, got 'fast'");
  EXPECT_EQ(error_of({"--checkpoint.enable=yes"}), "--checkpoint.enable expects true or false, got 'yes'");
  auto file = write_toml("types", "[training]\nsteps = \"10\"\n");
  EXPECT_NE(error_of({"--job.config_file", file}).find(":2: training.steps expects an integer, got string"), std::string::npos);
  EXPECT_EQ(error_of({"--training.steps"}), "--training.steps expects a value (int)");
}

TEST(JobConfig, BadFilesAreOneLineErrors) {
  EXPECT_NE(error_of({"--job.config_file", "/nonexistent/x.toml"}).find("cannot read config file '/nonexistent/x.toml'"),
            std::string::npos);
  auto file = write_toml("invalid", "[training\nsteps = 3\n");
  EXPECT_NE(error_of({"--job.config_file", file}).find(":1: invalid TOML"), std::string::npos);
  // A directory would read as an empty file, i.e. train with the defaults.
  const std::string dir = std::filesystem::path(file).parent_path().string();
  EXPECT_EQ(error_of({"--job.config_file", dir}), "config file '" + dir + "' (--job.config_file) is a directory; give a "
                                                  ".toml file, e.g. " + dir + "/debug_model.toml");
}

TEST(JobConfig, LearningRateZeroIsAnEvaluationRun) {
  EXPECT_EQ(parse_job_config({"--optimizer.lr", "0"}).optimizer.lr, 0.0);  // PyTorch's AdamW accepts it
  EXPECT_EQ(error_of({"--optimizer.lr", "-1e-3"}), "optimizer.lr must be >= 0, got -0.001");
}

TEST(JobConfig, ValuesAreValidated) {
  EXPECT_EQ(error_of({"--training.seq_len", "0"}), "training.seq_len must be positive, got 0");
  EXPECT_EQ(error_of({"--training.local_batch_size", "-2"}), "training.local_batch_size must be positive, got -2");
  EXPECT_EQ(error_of({"--checkpoint.keep_latest_k", "1"}), "checkpoint.keep_latest_k must be 0 (keep all) or >= 2, got 1");
  EXPECT_EQ(error_of({"--lr_scheduler.decay_type", "step"}),
            "lr_scheduler.decay_type = 'step' is not valid; valid values: linear, sqrt, cosine");
  EXPECT_EQ(error_of({"--checkpoint.exclude_from_loading", "data_loader"}),
            "checkpoint.exclude_from_loading = 'data_loader' is not valid; valid values: model, optimizer, lr_scheduler, "
            "dataloader, train_state (did you mean 'dataloader'?)");
  EXPECT_EQ(error_of({"--validation.enable", "--validation.freq", "0"}), "validation.freq must be positive, got 0");
  EXPECT_EQ(error_of({"--validation.freq", "0"}), "");  // inert while validation is off
  EXPECT_EQ(error_of({"--validation.steps", "-2"}), "validation.steps must be positive or -1 (the whole dataset), got -2");
}

TEST(JobConfig, FeaturesNotBuiltAreRejectedNotIgnored) {
  EXPECT_EQ(error_of({"--compile.enable"}), "compile.enable = true: not supported yet by titan.cpp (leave it at its default false)");
  // Keys that would be read nowhere (Python's GC, torchft) are refused too, not accepted and ignored.
  EXPECT_EQ(error_of({"--training.gc_freq", "10"}), "training.gc_freq = 10: not supported yet by titan.cpp (leave it at its default 50)");
  EXPECT_EQ(error_of({"--checkpoint.no-enable_ft_dataloader_checkpoints"}),
            "checkpoint.enable_ft_dataloader_checkpoints = false: not supported yet by titan.cpp (leave it at its default true)");
  EXPECT_EQ(error_of({"--metrics.enable_wandb"}),
            "metrics.enable_wandb = true: not supported yet by titan.cpp (leave it at its default false)");
  EXPECT_EQ(error_of({"--compile.enable", "--compile.no-enable"}), "");  // the default itself is fine
  // Options of a switched-off feature are inert (TorchTitan's debug_model.toml sets some).
  EXPECT_EQ(error_of({"--profiling.save_traces_folder", "x", "--validation.freq", "5"}), "");
  EXPECT_EQ(error_of({"--parallelism.pipeline_parallel_schedule", "Interleaved1F1B"}), "");
  EXPECT_EQ(error_of({"--validation.enable", "--validation.dataloader.num_workers", "2"}),
            "validation.dataloader.num_workers = 2: not supported yet by titan.cpp (leave it at its default 0)");
  EXPECT_EQ(error_of({"--profiling.enable_profiling", "--profiling.profile_freq", "3"}),
            "profiling.profile_freq 3 must be >= profiling.profiler_warmup + profiling.profiler_active = 4");
}

TEST(JobConfig, DeprecatedTokenizerPathMapsToAssetsFolder) {
  JobConfig c = parse_job_config({"--model.tokenizer_path", "./assets/tok/tokenizer.model"});
  auto warnings = validate_job_config(c);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(c.model.hf_assets_path, "./assets/tok");
}

TEST(JobConfig, LoadAndExportKeysWithoutCheckpointingAreNamed) {
  JobConfig c = parse_job_config({"--checkpoint.load_step", "5", "--checkpoint.last_save_in_hf", "--checkpoint.interval", "3"});
  EXPECT_EQ(validate_job_config(c), (std::vector<std::string>{
                                        "checkpoint.enable is false, so these have no effect: checkpoint.last_save_in_hf, "
                                        "checkpoint.load_step (pass --checkpoint.enable)"}));
  JobConfig on = parse_job_config({"--checkpoint.enable", "--checkpoint.load_step", "5"});
  EXPECT_TRUE(validate_job_config(on).empty());
}

TEST(JobConfig, HelpListsEveryKeyWithTypeAndDefault) {
  const std::string help = config_help_text();
  for (const auto& f : config_fields()) EXPECT_NE(help.find("--" + f.name() + " ("), std::string::npos) << f.name();
  EXPECT_NE(help.find("--training.steps (int, default 10000)"), std::string::npos);
  EXPECT_NE(help.find("--debug.seed (int|None, default None)"), std::string::npos);
}

TEST(JobConfig, DumpedTomlReadsBackToTheSameConfig) {
  JobConfig c = parse_job_config({"--training.steps", "12", "--checkpoint.exclude_from_loading", "dataloader",
                                  "--debug.seed", "3", "--optimizer.lr", "0.00123"});
  auto file = write_toml("dump", config_to_toml(c));
  JobConfig back = parse_job_config({"--job.config_file", file});
  back.job.config_file = c.job.config_file;
  EXPECT_EQ(config_to_toml(back), config_to_toml(c));
  EXPECT_EQ(back.optimizer.lr, 0.00123);
}

TEST(JobConfig, ShippedConfigsParseAndValidate) {
  for (const char* name : {"debug_model", "llama3_8b", "llama3_70b", "llama3_405b"}) {
    const std::string file = std::string(TITAN_SOURCE_DIR) + "/configs/" + name + ".toml";
    EXPECT_EQ(error_of({"--job.config_file", file}), "") << name;
  }
  JobConfig debug = parse_job_config({"--job.config_file", std::string(TITAN_SOURCE_DIR) + "/configs/debug_model.toml"});
  EXPECT_EQ(debug.training.steps, 10);
  EXPECT_EQ(*debug.lr_scheduler.decay_ratio, 0.8);
  EXPECT_EQ(debug.metrics.log_freq, 1);
  EXPECT_FALSE(debug.checkpoint.last_save_model_only);
}

TEST(JobConfig, TableHasEverySection) {
  std::set<std::string> sections;
  for (const auto& f : config_fields()) sections.insert(f.section);
  for (const char* s : {"job", "model", "optimizer", "lr_scheduler", "training", "parallelism", "checkpoint",
                        "activation_checkpoint", "metrics", "comm", "debug"})
    EXPECT_TRUE(sections.count(s)) << s;
}

}  // namespace
}  // namespace titan

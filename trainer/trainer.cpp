#include "trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/record_function.h>
#include <sched.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "checkpoint/hf_adapter.h"
#include "models/common/matmul.h"
#include "models/common/parameter_seed.h"
#include "models/llama3/activation_checkpoint.h"
#include "models/llama3/parallelize.h"
#include "models/llama4/model_args.h"
#include "parallel/grad_norm.h"
#include "parallel/logging.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/rank_exit.h"
#include "trainer/config_manager.h"
#include "trainer/device.h"
#include "trainer/memory_snapshot.h"
#include "trainer/metrics.h"
#include "trainer/profiler.h"

namespace titan {
namespace {

namespace fs = std::filesystem;
using Err = std::invalid_argument;

// TorchTitan's peak-memory scalars under `prefix`; the CPU has no caching allocator to report active memory.
std::vector<std::pair<std::string, double>> memory_scalars(const std::string& prefix, const DeviceMemory& memory) {
  std::vector<std::pair<std::string, double>> scalars = {
      {prefix + "memory/max_reserved(GiB)", memory.gib(memory.peak_bytes)},
      {prefix + "memory/max_reserved(%)", memory.percent(memory.peak_bytes)}};
  if (memory.active_peak_bytes) {
    scalars.push_back({prefix + "memory/max_active(GiB)", memory.gib(*memory.active_peak_bytes)});
    scalars.push_back({prefix + "memory/max_active(%)", memory.percent(*memory.active_peak_bytes)});
  }
  return scalars;
}

// Bundled datasets: training.dataset name -> path (relative to the repository root, like TorchTitan's).
const std::map<std::string, std::string>& dataset_registry() {
  static const std::map<std::string, std::string> registry = {
      {"janeausten", "./tests/assets/janeausten/janeausten.txt"},
  };
  return registry;
}

torch::ScalarType dtype_from_name(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") return torch::kFloat16;
  throw Err("unknown dtype '" + name + "' (valid: float32, bfloat16)");
}

int64_t intra_op_threads(int64_t local_world_size) {
  if (const char* v = std::getenv("OMP_NUM_THREADS"); v && std::atoi(v) > 0) return std::atoi(v);
  cpu_set_t set;
  int64_t cores = 1;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  return std::max<int64_t>(1, cores / std::max<int64_t>(1, local_world_size));
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

// The data of `section` ("training" or "validation"): its dataset_path, else the bundled dataset it names.
std::string dataset_path(const std::string& section, const std::string& dataset, const std::optional<std::string>& path) {
  if (path) return *path;
  auto it = dataset_registry().find(dataset);
  if (it == dataset_registry().end()) {
    std::string valid;
    for (const auto& [name, file] : dataset_registry()) valid += (valid.empty() ? "" : ", ") + name;
    throw Err(section + ".dataset '" + dataset + "' is not a bundled dataset (bundled: " + valid + "); set " + section +
              ".dataset_path to use your own data");
  }
  if (!fs::exists(it->second))
    throw Err("bundled dataset '" + it->first + "' is missing at " + it->second + ": run ./scripts/setup.sh (or ./run_train.sh)");
  return it->second;
}

}  // namespace

std::atomic<bool>& Trainer::stop_requested() {
  static std::atomic<bool> flag{false};
  return flag;
}

Trainer::Trainer(JobConfig config) : config_(std::move(config)) {
  env_ = RankEnv::from_environment();
  const auto& par = config_.parallelism;
  dims_ = ParallelDims::build(par.data_parallel_replicate_degree, par.data_parallel_shard_degree, par.context_parallel_degree,
                              par.tensor_parallel_degree, par.pipeline_parallel_degree, par.expert_parallel_degree,
                              par.expert_tensor_parallel_degree, env_.world_size);
  // Sequence and context parallel split every sequence evenly, context parallel into 2 cp chunks
  // (TorchTitan's assertion).
  if (const int64_t divisor = dims_.tp * 2 * dims_.cp; (dims_.tp > 1 || dims_.cp > 1) && config_.training.seq_len % divisor != 0)
    throw Err("Sequence length " + std::to_string(config_.training.seq_len) + " must be divisible by the product of TP degree (" +
              std::to_string(dims_.tp) + ") and 2 * CP degree (" + std::to_string(dims_.cp) + ").");
  device_ = select_device(env_.local_rank);
  if (dims_.any_parallelism())
    comm_ = std::make_unique<Collectives>(env_, dims_, std::chrono::seconds(config_.comm.init_timeout_seconds), device_);

  torch::set_num_threads(static_cast<int>(intra_op_threads(env_.local_world_size)));
  dtype_ = dtype_from_name(config_.training.dtype);
  if (config_.debug.deterministic)
    at::globalContext().setDeterministicAlgorithms(true, config_.debug.deterministic_warn_only);

  // Effective config, before anything slow can fail.
  fs::create_directories(config_.job.dump_folder);
  const fs::path config_out = fs::path(config_.job.dump_folder) / config_.job.save_config_file.value_or("config.toml");
  if (env_.rank == 0) std::ofstream(config_out) << config_to_toml(config_);
  if (config_.job.print_config && env_.rank == 0) std::printf("%s", config_to_toml(config_).c_str());
  open_tensorboard();
  // Appended across resumes: one file holds a run's whole curve, at full precision.
  if (env_.rank == metrics_rank()) {
    const fs::path path = fs::path(config_.job.dump_folder) / "metrics.jsonl";
    metrics_file_ = std::make_unique<std::ofstream>(path, std::ios::app);
    if (!*metrics_file_) throw Err("cannot write " + path.string() + ": " + std::strerror(errno));
  }

  // Model arguments; the RoPE table spans training.seq_len as in TorchTitan.
  const bool llama4 = config_.model.name == "llama4";
  const std::string hf_config = (fs::path(config_.checkpoint.initial_load_path.value_or(config_.model.hf_assets_path)) /
                                 "config.json").string();
  if (config_.model.flavor == "from_hf") {
    const auto path = (fs::path(config_.model.hf_assets_path) / "config.json").string();
    model_args_ = hf::model_args_from_config(path);
    if (model_args_.moe.has_value() != llama4)
      throw Err("model.name " + config_.model.name + " with model.flavor from_hf, but " + path + " describes a " +
                (model_args_.moe ? "Llama 4 (MoE) model: set model.name llama4" : "dense Llama model: set model.name llama3"));
  } else {
    model_args_ = llama4 ? llama4::flavor_args(config_.model.flavor) : llama3::flavor_args(config_.model.flavor);
    if (config_.checkpoint.enable && config_.checkpoint.initial_load_in_hf && fs::exists(hf_config))
      hf::check_config_matches(hf_config, model_args_);
  }
  if (dims_.ep > 1) {
    const std::string ep = std::to_string(dims_.ep);
    if (!model_args_.moe)
      throw Err("parallelism.expert_parallel_degree " + ep + " needs an MoE model (model.name llama4); " +
                config_.model.name + " " + config_.model.flavor + " has no experts");
    if (model_args_.moe->num_experts % dims_.ep != 0)
      throw Err("moe.num_experts (" + std::to_string(model_args_.moe->num_experts) +
                ") must be divisible by expert_parallel_degree (" + ep + ").");
  }
  if (model_args_.moe) model_args_.moe->force_load_balance = config_.debug.moe_force_load_balance;
  if (config_.training.seq_len > model_args_.max_seq_len)
    throw Err("training.seq_len " + std::to_string(config_.training.seq_len) + " exceeds the " + config_.model.flavor +
              " model's maximum sequence length " + std::to_string(model_args_.max_seq_len));
  const int64_t model_max_seq_len = model_args_.max_seq_len;  // what an HF config.json calls max_position_embeddings
  model_args_.max_seq_len = config_.training.seq_len;

  // Tokenizer and data. Pre-tokenized data needs no tokenizer.
  const std::string data_path = dataset_path("training", config_.training.dataset, config_.training.dataset_path);
  const auto& validation = config_.validation;
  const std::string validation_path =
      validation.enable ? dataset_path("validation", validation.dataset, validation.dataset_path) : data_path;
  if (!is_pretokenized_path(data_path) || !is_pretokenized_path(validation_path)) {
    tokenizer_ = load_tokenizer(config_.model.hf_assets_path, &tokenizer_note_);
    if (tokenizer_->vocab_size() > model_args_.vocab_size)
      throw Err("tokenizer " + tokenizer_->path() + " has " + std::to_string(tokenizer_->vocab_size()) +
                " pieces, more than model.flavor " + config_.model.flavor + "'s vocab_size " +
                std::to_string(model_args_.vocab_size));
  }
  const int64_t dp = dims_.dp(), dp_rank = dims_.dp_rank(env_.rank);
  const int64_t local_batch = config_.training.local_batch_size;
  global_batch_size_ = config_.training.global_batch_size == -1 ? local_batch * dp : config_.training.global_batch_size;
  if (global_batch_size_ % (local_batch * dp) != 0)
    throw Err("training.global_batch_size " + std::to_string(global_batch_size_) +
              " must be a multiple of local_batch_size * data-parallel degree = " + std::to_string(local_batch * dp));
  grad_accum_steps_ = global_batch_size_ / (local_batch * dp);
  auto stream = std::make_unique<TokenStream>(open_document_source(data_path, tokenizer_.get()), config_.training.seq_len + 1);
  dataloader_ = std::make_unique<DataLoader>(std::move(stream), local_batch, config_.training.seq_len, dp_rank, dp,
                                             model_args_.vocab_size);
  std::unique_ptr<DataLoader> validation_loader;
  if (validation.enable) {
    check_validation_shape();
    std::unique_ptr<DocumentSource> source;
    try {
      source = open_document_source(validation_path, tokenizer_.get());
    } catch (const Err& e) {
      throw Err(std::string(validation.dataset_path ? "validation.dataset_path" : "validation.dataset") + ": " + e.what());
    }
    // Finite only for steps -1, as TorchTitan's (whose infinite validation data loops).
    validation_loader = std::make_unique<DataLoader>(
        std::make_unique<TokenStream>(std::move(source), validation.seq_len + 1, validation.steps != -1),
        validation.local_batch_size, validation.seq_len, dp_rank, dp, model_args_.vocab_size);
  }

  // Model: made on the meta device (nothing allocated), as the whole model or this rank's pipeline
  // stages; each rank then makes only its pieces, each parameter initialised as TorchTitan does
  // from a generator seeded by (seed, FQN), so every layout starts from the same weights.
  const auto meta = torch::TensorOptions().device(torch::kMeta);
  num_params_ = llama3::Transformer(model_args_, meta)->num_params();
  std::vector<std::vector<std::string>> stage_modules = {{}};  // one part: the whole model
  const std::vector<int64_t> my_stages = dims_.pp > 1 ? plan_pipeline(stage_modules) : std::vector<int64_t>{0};
  for (int64_t s : my_stages) model_parts_.push_back(llama3::Transformer(model_args_, meta, stage_modules[static_cast<size_t>(s)]));
  int64_t seed;
  if (config_.debug.seed) {
    seed = *config_.debug.seed;
  } else {
    seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    if (comm_) seed = static_cast<int64_t>(comm_->world_cpu().all_reduce_sum(env_.rank == 0 ? double(seed) : 0.0));  // rank 0's
    log_info("debug.seed is not set; using seed " + std::to_string(seed) + " (pass --debug.seed to repeat this run)");
  }
  torch::manual_seed(static_cast<uint64_t>(seed));
  for (auto& part : model_parts_)
    for (auto& b : part->named_buffers()) {  // the RoPE tables in the training dtype; MoE statistics stay fp32
      const bool moe_statistic = b.key().find(".moe.") != std::string::npos;
      b.value().set_data(b.value().to(device_, moe_statistic ? torch::kFloat32 : dtype_));
    }
  ParallelOptions parallel;
  const std::string& reshard = config_.parallelism.fsdp_reshard_after_forward;
  if (dims_.pp > 1 && reshard == "always")
    throw Err("parallelism.fsdp_reshard_after_forward 'always' with pipeline_parallel_degree > 1 is not supported yet "
              "(valid there: default, never: the stages keep their gathered weights for the microbatches in flight)");
  parallel.fsdp.reshard_after_forward = reshard == "always" || (reshard == "default" && dims_.pp == 1);  // TorchTitan's default
  parallel.fsdp.param_dtype = dtype_from_name(config_.training.mixed_precision_param);
  parallel.fsdp.reduce_dtype = dtype_from_name(config_.training.mixed_precision_reduce);
  parallel.loss_parallel = !config_.parallelism.disable_loss_parallel;
  parallel.param_options = torch::TensorOptions().device(device_).dtype(dtype_);
  parallel.seq_len = config_.training.seq_len;
  const auto& balancer = config_.parallelism.context_parallel_load_balancer;
  if (dims_.cp > 1 && balancer && *balancer != "headtail")
    throw Err("parallelism.context_parallel_load_balancer '" + *balancer + "' is for FlexAttention, which titan.cpp does "
              "not have (valid: headtail, or None for contiguous chunks)");
  parallel.cp_head_tail = balancer.has_value();
  parallel.cp_rotate_method = config_.parallelism.context_parallel_rotate_method;
  if (dims_.tp > 1) llama3::check_tensor_parallel_degree(model_args_, dims_.tp);
  const llama3::Transformer initialiser(model_args_, meta);  // knows every parameter's init, holds nothing
  auto init = [&initialiser, seed](const std::string& fqn, torch::Tensor& full) {
    initialiser->init_weight(fqn, full, at::make_generator<at::CPUGeneratorImpl>(parameter_seed(static_cast<uint64_t>(seed), fqn)));
  };
  std::vector<ModelPart> parts;
  for (auto& part : model_parts_) parts.push_back({part.ptr(), llama3::parallel_plan(part)});
  parallel_ = std::make_unique<ParallelizedModel>(std::move(parts), dims_, env_.rank, comm_.get(), parallel, init);
  int64_t checkpointed = 0;
  for (auto& part : model_parts_) {
    part->train();
    checkpointed += llama3::apply_activation_checkpointing(part, config_.activation_checkpoint.mode,
                                                           config_.activation_checkpoint.selective_ac_option);
  }
  if (checkpointed > 0)
    log_info("Applied " + config_.activation_checkpoint.mode + " activation checkpointing to " +
             std::to_string(checkpointed) + " of " + std::to_string(model_args_.n_layers) + " blocks" +
             (dims_.pp > 1 ? " (this rank's stages)" : ""));
  if (dims_.pp > 1) {
    std::vector<PipelineStage> stages;
    for (size_t i = 0; i < my_stages.size(); ++i) {
      llama3::Transformer part = model_parts_[i];
      PipelineStage stage;
      stage.index = my_stages[i];
      // Every part gets its microbatch's labels; only the last stage's projects, returning their summed loss.
      stage.forward = [this, part](const torch::Tensor& x, int64_t m) mutable {
        return part->forward(x, pipeline_labels_.at(static_cast<size_t>(m)));
      };
      stages.push_back(std::move(stage));
    }
    // Between stages: (microbatch, T / (tp cp), dim) hidden states in the dtype the matmuls run in.
    const torch::ScalarType compute_dtype =
        parallel_->fully_sharded() ? dtype_from_name(config_.training.mixed_precision_param) : dtype_;
    const std::vector<int64_t> shape = {config_.parallelism.pipeline_parallel_microbatch_size,
                                        config_.training.seq_len / (dims_.tp * dims_.cp), model_args_.dim};
    pipeline_ = std::make_unique<PipelineRuntime>(std::move(stages), pipeline_order_, pipeline_stage_ranks_,
                                                  &comm_->group("pp"), shape,
                                                  torch::TensorOptions().dtype(compute_dtype).device(device_));
  }

  if (validation_loader)
    validator_ = std::make_unique<Validator>(validation, std::move(validation_loader),
                                             [this](const Batch& b) { return validation_loss_sum(b); }, comm_.get(), dims_.pp > 1);

  optimizer_ = std::make_unique<AdamW>(parallel_->parameters(), config_.optimizer);
  lr_scheduler_ = std::make_unique<LRScheduler>(config_.lr_scheduler, config_.training.steps, config_.optimizer.lr);
  for (const auto& w : lr_scheduler_->warnings()) log_warning(w);

  const auto& ck = config_.checkpoint;
  checkpoint::Options options;
  options.enable = ck.enable;
  options.folder = (fs::path(config_.job.dump_folder) / ck.folder).string();
  options.interval = ck.interval;
  options.initial_load_path = ck.initial_load_path;
  options.initial_load_model_only = ck.initial_load_model_only;
  options.last_save_model_only = ck.last_save_model_only;
  options.export_dtype = dtype_from_name(ck.export_dtype);
  options.async_mode = ck.async_mode;
  options.keep_latest_k = ck.keep_latest_k;
  options.load_step = ck.load_step;
  options.exclude_from_loading = ck.exclude_from_loading;
  options.enable_first_step_checkpoint = ck.enable_first_step_checkpoint;
  options.load_only = ck.load_only;
  options.initial_load_in_hf = ck.initial_load_in_hf;
  options.last_save_in_hf = ck.last_save_in_hf;
  options.hf_assets_path = config_.model.hf_assets_path;
  options.hf_max_shard_bytes = ck.hf_max_shard_size_mb * 1'000'000;
  options.model_args = model_args_;
  options.model_args.max_seq_len = model_max_seq_len;  // config.json keeps the model's maximum, not training.seq_len
  options.comm = comm_.get();
  options.save_timeout = std::chrono::seconds(std::max(config_.comm.init_timeout_seconds, config_.comm.train_timeout_seconds));
  options.full_model = [this] {
    std::vector<checkpoint::ShardedTensor> out;
    for (auto& [fqn, t] : parallel_->full_parameters()) out.push_back(checkpoint::ShardedTensor::whole(fqn, t));
    return out;
  };
  nlohmann::json info = {{"world_size", env_.world_size}, {"parallelism", dims_.describe()},
                         {"model", config_.model.name + " " + config_.model.flavor}, {"config", config_to_toml(config_)}};
  info["hf_config"] = hf::config_from_model_args(options.model_args, dtype_);  // what to-hf writes
  checkpointer_ = std::make_unique<checkpoint::CheckpointManager>(options, checkpoint_parts(), info);
  if (ck.enable && !ck.load_only && ck.last_save_model_only && env_.rank == 0)  // TorchTitan's default, a trap
    log_info("checkpoint.last_save_model_only: the last save (step " + std::to_string(config_.training.steps) +
             ") holds only the model, which no run can resume from; --checkpoint.no-last_save_model_only keeps it whole");

  flops_per_token_ = flops_per_token(model_args_, num_params_, config_.training.seq_len);
  log_startup();
}

std::vector<int64_t> Trainer::plan_pipeline(std::vector<std::vector<std::string>>& stage_modules) {
  const auto& par = config_.parallelism;
  const int64_t pp = dims_.pp;
  if (model_args_.tie_word_embeddings)
    throw Err("Weight tying is not supported with Pipeline Parallel (parallelism.pipeline_parallel_degree " +
              std::to_string(pp) + ": the " + config_.model.flavor + " model ties its embedding and output weights)");
  const PipelineScheduleKind kind = pipeline_schedule_kind(par.pipeline_parallel_schedule);
  const std::string csv = par.pipeline_parallel_schedule_csv.value_or("");
  if (!csv.empty() && !fs::is_regular_file(csv))
    throw Err("parallelism.pipeline_parallel_schedule_csv: The specified path " + csv + " does not exist or is not a file.");
  if (par.module_fqns_per_model_part.empty()) {
    const int64_t num_stages = pipeline_num_stages(kind, pp, model_args_.n_layers, par.pipeline_parallel_layers_per_stage,
                                                   par.pipeline_parallel_first_stage_less_layers,
                                                   par.pipeline_parallel_last_stage_less_layers);
    stage_modules = llama3::pipeline_stage_modules(model_args_, num_stages, par.pipeline_parallel_first_stage_less_layers,
                                                   par.pipeline_parallel_last_stage_less_layers);
  } else {
    stage_modules = par.module_fqns_per_model_part;
    try {
      llama3::check_pipeline_stage_modules(model_args_, stage_modules);
    } catch (const Err& e) {
      throw Err(std::string("parallelism.module_fqns_per_model_part: ") + e.what());
    }
    const auto n = static_cast<int64_t>(stage_modules.size());
    if (n % pp != 0 || (!kind.multi_stage && n != pp) || (kind.multi_stage && n < 2 * pp))
      throw Err("parallelism.module_fqns_per_model_part names " + std::to_string(n) + " stages: " + kind.name + " over " +
                std::to_string(pp) + " pipeline ranks takes " +
                (kind.multi_stage ? "a multiple of " + std::to_string(pp) + ", at least " + std::to_string(2 * pp)
                                  : std::to_string(pp)));
  }
  const auto num_stages = static_cast<int64_t>(stage_modules.size());
  const int64_t local_batch = config_.training.local_batch_size, mb_size = par.pipeline_parallel_microbatch_size;
  if (local_batch % mb_size != 0)
    throw Err("Batch size " + std::to_string(local_batch) + " must be divisible by microbatch_size " + std::to_string(mb_size) +
              ". Update the config arguments for either training.local_batch_size or "
              "parallelism.pipeline_parallel_microbatch_size.");
  pipeline_microbatches_ = local_batch / mb_size;
  pipeline_stage_ranks_ = pipeline_stage_ranks(kind.style, pp, num_stages);
  const PipelineOrder compute = csv.empty() ? make_pipeline_order(kind, pp, num_stages, pipeline_microbatches_)
                                            : read_pipeline_csv(csv, pp);
  pipeline_order_ = lower_pipeline_order(compute, pipeline_stage_ranks_);
  try {
    simulate_pipeline_order(pipeline_order_, pipeline_stage_ranks_, pipeline_microbatches_);
  } catch (const Err& e) {
    throw Err((csv.empty() ? "pipeline schedule " + kind.name : "parallelism.pipeline_parallel_schedule_csv " + csv) + ": " +
              e.what());
  }
  if (pipeline_microbatches_ < num_stages)
    log_warning("Number of microbatches (" + std::to_string(pipeline_microbatches_) + ") is less than the total number of "
                "stages (" + std::to_string(num_stages) + ") which may result in a bubble in the pipeline.");
  std::vector<int64_t> mine;
  const int64_t me = dims_.coordinate(env_.rank, MeshDim::kPP);
  std::string held;
  for (int64_t s = 0; s < num_stages; ++s) {
    if (pipeline_stage_ranks_[static_cast<size_t>(s)] != me) continue;
    mine.push_back(s);
    std::string modules;
    for (const auto& m : stage_modules[static_cast<size_t>(s)]) modules += (modules.empty() ? "" : " ") + m;
    held += (held.empty() ? "" : ", ") + std::to_string(s) + " (" + modules + ")";
  }
  log_info("Pipeline schedule " + (csv.empty() ? kind.name : csv) + ": " + std::to_string(num_stages) + " stages on " +
           std::to_string(pp) + " ranks (this rank: " + held + "), " + std::to_string(pipeline_microbatches_) +
           " microbatches of " + std::to_string(mb_size));
  return mine;
}

void Trainer::log_startup() {
  log_info("Starting job: " + config_.job.description);
  log_info("Rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.world_size) + ", " + dims_.describe() +
           ", device " + device_.str() + " (" + device_name(device_) + "), " + std::to_string(torch::get_num_threads()) +
           " intra-op threads");
  if (!tokenizer_note_.empty()) log_info(tokenizer_note_);
  if (tokenizer_)
    log_info("Tokenizer " + tokenizer_->path() + ": " + std::to_string(tokenizer_->vocab_size()) + " pieces, BOS " +
             std::to_string(tokenizer_->bos_id()) + ", EOS " + std::to_string(tokenizer_->eos_id()));
  log_info("Dataset " + config_.training.dataset + " from " + dataloader_->stream().source().describe());
  if (validator_)
    log_info("Validation every " + std::to_string(config_.validation.freq) + " steps (and at step 1): " +
             (config_.validation.steps == -1 ? std::string("all") : std::to_string(config_.validation.steps)) + " batches of " +
             validator_->loader().stream().source().describe());
  log_info("Model " + config_.model.name + " " + config_.model.flavor + " size: " + with_commas(num_params_) +
           " total parameters");
  // Matmuls run in the FSDP param dtype under FSDP, else in training.dtype.
  const torch::ScalarType compute_dtype =
      parallel_->fully_sharded() ? dtype_from_name(config_.training.mixed_precision_param) : dtype_;
  GemmProbe gemm = probe_low_precision_gemm(compute_dtype, device_);
  if (gemm.native_flops > 0) {  // a bf16/fp16 run on the CPU: every rank takes the same path, fp32 if any prefers it
    bool fp32 = gemm.choice == LowPrecisionGemm::kFp32;
    if (comm_) fp32 = comm_->world_cpu().all_reduce_sum(fp32 ? 1.0 : 0.0) > 0;
    gemm.choice = fp32 ? LowPrecisionGemm::kFp32 : LowPrecisionGemm::kNative;
    set_low_precision_gemm(gemm.choice);
    log_info(gemm.describe(compute_dtype));
  }
  const std::string device_model = device_name(device_);
  const auto table_flops = device_.is_cuda() ? known_peak_flops(device_model) : std::nullopt;
  if (config_.metrics.peak_flops) {
    peak_flops_ = *config_.metrics.peak_flops;
    log_info("Peak FLOPS used for computing MFU: " + fmt("%.3e", peak_flops_) + " (metrics.peak_flops)");
  } else if (table_flops) {
    peak_flops_ = *table_flops;
    log_info("Peak FLOPS used for computing MFU: " + fmt("%.3e", peak_flops_) + " (" + device_model + ", dense bf16)");
  } else {
    peak_flops_ = measure_peak_flops(compute_dtype, device_);
    log_info("Peak FLOPS used for computing MFU: " + fmt("%.3e", peak_flops_) + " (measured: " +
             std::string(c10::toString(compute_dtype)) + " GEMM probe on " + device_.str() + ", the path the model's matmuls take)");
  }
  if (dims_.tp > 1)
    log_info("Applied Tensor Parallelism to the model: " + std::to_string(dims_.tp) + " ranks, sequence parallel, loss parallel " +
             (config_.parallelism.disable_loss_parallel ? "off" : "on"));
  if (dims_.cp > 1)
    log_info("Applied Context Parallelism to the model: " + std::to_string(dims_.cp) + " ranks, load balancer " +
             config_.parallelism.context_parallel_load_balancer.value_or("None (contiguous chunks)") + ", rotate method " +
             config_.parallelism.context_parallel_rotate_method);
  if (dims_.ep > 1) {
    auto shape = [](const std::vector<int64_t>& v) {
      std::string out;
      for (int64_t d : v) out += (out.empty() ? "(" : ", ") + std::to_string(d);
      return out + ")";
    };
    std::string held;  // what this rank holds of the first MoE layer's routed experts, and FSDP's cut of them
    for (const auto& [fqn, p] : parallel_->parameters())
      if (held.empty() && fqn.find("moe.experts.w1") != std::string::npos) {
        held = ", each holding " + fqn + " " + shape(parallel_->piece(fqn).sizes) + " of " +
               shape(parallel_->placement(fqn).global_shape);
        if (dims_.efsdp() > 1)
          held += ", FSDP over efsdp " + std::to_string(dims_.efsdp()) + " on dim " +
                  std::to_string(parallel_->placement(fqn).splits.back().tensor_dim);
      }
    log_info("Applied Expert Parallelism to the model: " + std::to_string(dims_.ep) + " ranks" + held +
             (dims_.etp > 1 ? ", expert tensor parallel " + std::to_string(dims_.etp)
                            : dims_.tp > 1 ? ", the tp ranks splitting the tokens" : ""));
  }
  if (parallel_->fully_sharded()) {
    const int64_t shards = dims_.dp_shard * dims_.cp;
    log_info("Applied FSDP to the model: " +
             (shards > 1 ? std::to_string(shards) + " shards" + (dims_.cp > 1 ? " (dp_shard x cp)" : "")
                         : "the routed experts only (efsdp " + std::to_string(dims_.efsdp()) + "), the rest whole") +
             (dims_.dp_replicate > 1 ? " x " + std::to_string(dims_.dp_replicate) + " replicas (HSDP)" : "") +
             ", reshard_after_forward=" + config_.parallelism.fsdp_reshard_after_forward + ", param dtype " +
             config_.training.mixed_precision_param + ", reduce dtype " + config_.training.mixed_precision_reduce);
  } else if (config_.training.mixed_precision_param != config_.training.dtype) {
    log_info("training.mixed_precision_param=" + config_.training.mixed_precision_param +
             " applies under FSDP (data_parallel_shard_degree > 1), as in TorchTitan; this run computes in "
             "training.dtype=" + config_.training.dtype);
  }
  log_info("Trainer is initialized with local batch size " + std::to_string(config_.training.local_batch_size) +
           ", global batch size " + std::to_string(global_batch_size_) + ", gradient accumulation steps " +
           std::to_string(grad_accum_steps_) + ", sequence length " + std::to_string(config_.training.seq_len) +
           ", total steps " + std::to_string(config_.training.steps) + " (warmup " +
           std::to_string(lr_scheduler_->warmup_steps()) + ")");
}

void Trainer::log_state_memory() {
  // What sharding is for: this rank's parameters, gradients and optimizer state against one full copy.
  double params = 0, grads = 0, optim = 0;
  for (const auto& [fqn, p] : optimizer_->params()) {
    params += static_cast<double>(p.nbytes());
    if (p.grad().defined()) grads += static_cast<double>(p.grad().nbytes());
  }
  for (const auto& [fqn, s] : optimizer_->state())
    optim += static_cast<double>(s.exp_avg.nbytes() + s.exp_avg_sq.nbytes() + s.step.nbytes());
  const double mib = 1024.0 * 1024.0, full = static_cast<double>(num_params_) * c10::elementSize(dtype_);
  log_info("Training state on this rank: parameters " + fmt("%.1f", params / mib) + " MiB, gradients " +
           fmt("%.1f", grads / mib) + " MiB, optimizer " + fmt("%.1f", optim / mib) + " MiB = " +
           fmt("%.1f", (params + grads + optim) / mib) + " MiB (" + fmt("%.3f", (params + grads + optim) / (4 * full)) +
           " of the unsharded " + fmt("%.1f", 4 * full / mib) + " MiB)");
}

checkpoint::Parts Trainer::checkpoint_parts() {
  using checkpoint::PartState;
  using checkpoint::ShardedTensor;
  // This rank's piece of a parameter (or of its optimizer state), where its placement puts it.
  auto piece = [this](std::string key, torch::Tensor local, const std::string& fqn) {
    ShardedTensor t = ShardedTensor::whole(std::move(key), std::move(local));
    t.global_shape = parallel_->placement(fqn).global_shape;
    t.offsets = parallel_->piece(fqn).offsets;
    t.save_here = parallel_->owns(fqn);
    return t;
  };
  auto rank0 = [this](std::string key, torch::Tensor t) {  // the same on every rank
    ShardedTensor out = ShardedTensor::whole(std::move(key), std::move(t));
    out.save_here = env_.rank == 0;
    return out;
  };
  checkpoint::Parts parts;
  checkpoint::Part& model_part = parts.add("model");
  model_part.save = [this, piece] {
    PartState s;
    for (const auto& [fqn, p] : parallel_->parameters()) s.tensors.push_back(piece(fqn, p, fqn));
    for (const auto& part : model_parts_)  // MoE balancing biases: the same on every rank of their stage
      for (const auto& b : part->named_buffers())
        if (b.key().size() > 12 && b.key().compare(b.key().size() - 12, 12, ".expert_bias") == 0) {
          ShardedTensor t = ShardedTensor::whole(b.key(), b.value());
          Placement whole{b.value().sizes().vec(), {}, std::nullopt};
          if (dims_.pp > 1) whole.pp_rank = dims_.coordinate(env_.rank, MeshDim::kPP);
          t.save_here = whole.owned_by(dims_, env_.rank);
          s.tensors.push_back(std::move(t));
        }
    return s;
  };
  checkpoint::Part& optimizer_part = parts.add("optimizer");
  optimizer_part.save = [this, piece] {
    PartState s;
    for (auto& [fqn, st] : optimizer_->state()) {
      const std::string prefix = "optimizer.state." + fqn + ".";
      s.tensors.push_back(piece(prefix + "exp_avg", st.exp_avg, fqn));
      s.tensors.push_back(piece(prefix + "exp_avg_sq", st.exp_avg_sq, fqn));
      ShardedTensor step = ShardedTensor::whole(prefix + "step", st.step);
      step.save_here = parallel_->owns_first_piece(fqn);  // once, by a rank holding the parameter (pipeline stages)
      s.tensors.push_back(std::move(step));
    }
    s.state = {{"param_groups", optimizer_->param_groups()}};
    return s;
  };
  checkpoint::Part& lr_scheduler_part = parts.add("lr_scheduler");
  lr_scheduler_part.save = [this] { return PartState{{}, lr_scheduler_->state()}; };
  lr_scheduler_part.load = [this](const PartState& s) { lr_scheduler_->load_state(s.state); };
  checkpoint::Part& dataloader_part = parts.add("dataloader");
  dataloader_part.save = [this] {
    const DataCursor& c = dataloader_->stream().cursor();
    return PartState{{}, {{"epoch", c.epoch}, {"documents", c.documents}, {"windows", c.windows}, {"buffer", c.buffer},
                          {"dp_degree", dims_.dp()}}};
  };
  dataloader_part.load = [this](const PartState& s) {
    DataCursor c;
    c.epoch = s.state.at("epoch").get<int64_t>();
    c.documents = s.state.at("documents").get<int64_t>();
    c.windows = s.state.at("windows").get<int64_t>();
    c.buffer = s.state.at("buffer").get<std::vector<int64_t>>();
    dataloader_->stream().restore(c);
  };
  checkpoint::Part& train_state_part = parts.add("train_state");
  train_state_part.save = [this, rank0] {
    return PartState{{rank0("train_state.rng_cpu", at::detail::getDefaultCPUGenerator().get_state())},
                     {{"step", state_.step}, {"ntokens_seen", state_.ntokens_seen}}};
  };
  train_state_part.load = [this](const PartState& s) {
    state_.step = s.state.at("step").get<int64_t>();
    state_.ntokens_seen = s.state.at("ntokens_seen").get<int64_t>();
    if (s.tensors.empty()) return;  // a TorchTitan (DCP) checkpoint holds no RNG state
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(s.tensors.at(0).local);
  };
  return parts;
}

void Trainer::create_seed_checkpoint() {
  if (!config_.checkpoint.enable)
    throw Err("checkpoint.create_seed_checkpoint needs --checkpoint.enable (the seed is saved as a checkpoint)");
  if (env_.world_size != 1)
    throw Err("checkpoint.create_seed_checkpoint must run on a single rank (NGPU=1, every parallelism degree 1), "
              "got world size " + std::to_string(env_.world_size));
  checkpointer_->save_seed();
  log_info("Created seed checkpoint " + checkpointer_->step_dir(0));
}

Trainer::StepResult Trainer::train_step() {
  parallel_->zero_grad();
  std::vector<Batch> micro;
  micro.reserve(static_cast<size_t>(grad_accum_steps_));
  int64_t tokens = 0;
  for (int64_t i = 0; i < grad_accum_steps_; ++i) {
    const auto start = std::chrono::steady_clock::now();
    micro.push_back(*dataloader_->next());  // training data loops: never at an end
    data_loading_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++data_loading_.batches;
    tokens += micro.back().labels.numel();
  }
  // Normalise by the valid tokens of the whole global batch, counted before any microbatch runs.
  int64_t valid = 0;
  for (const auto& b : micro) valid += b.labels.ne(-100).sum().item<int64_t>();
  double global_valid = static_cast<double>(valid);
  if (comm_) global_valid = comm_->group("dp").all_reduce_sum(global_valid);  // the batch's ranks: cp/tp peers hold the same labels
  global_valid = std::max(global_valid, 1.0);

  auto loss_total = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(device_));
  for (size_t i = 0; i < micro.size(); ++i) {
    const Batch& b = micro[i];
    const auto tokens = parallel_->shard_sequence(b.input).to(device_);  // (B, T / cp)
    const auto labels = parallel_->shard_sequence(b.labels).to(device_);
    if (pipeline_) {  // the schedule runs every microbatch's forward and backward; gradients sync at the end
      parallel_->set_gradient_sync(false);
      const auto inputs = tokens.tensor_split(pipeline_microbatches_);  // (mb, T / cp) each
      pipeline_labels_ = labels.tensor_split(pipeline_microbatches_);
      loss_total += pipeline_->step(inputs, [&](const torch::Tensor& loss_sum, int64_t) { return loss_sum / global_valid; });
      continue;
    }
    parallel_->set_gradient_sync(i + 1 == micro.size());  // the last microbatch's backward syncs
    torch::Tensor loss;
    {
      RECORD_USER_SCOPE("forward");
      loss = model_parts_.front()->forward(tokens, labels) / global_valid;
    }
    {
      RECORD_USER_SCOPE("backward");
      loss.backward();
    }
    loss_total += loss.detach();
  }
  parallel_->finish_gradient_sync();
  const double grad_norm = parallel_->grad_norm();
  update_expert_biases();
  const double lr = lr_scheduler_->lr();
  optimizer_->step(lr, clip_coefficient(grad_norm, config_.training.max_norm));  // clipped inside AdamW's pass
  lr_scheduler_->step();
  double loss = loss_total.item<double>();
  if (pipeline_) loss = comm_->group("pp").all_reduce_sum(loss);  // computed by the last stage's rank
  const double local_avg_loss = loss * global_valid / static_cast<double>(std::max<int64_t>(valid, 1));
  if (comm_) loss = comm_->group("loss").all_reduce_sum(loss);  // the global mean over valid tokens
  return {loss, local_avg_loss, grad_norm, lr, tokens};
}

void Trainer::check_validation_shape() const {
  const auto& v = config_.validation;
  const std::string seq_len = std::to_string(v.seq_len), training_seq_len = std::to_string(config_.training.seq_len);
  if (v.seq_len > config_.training.seq_len)
    throw Err("validation.seq_len " + seq_len + " exceeds training.seq_len " + training_seq_len +
              ", the length the model's RoPE table spans");
  if (dims_.cp > 1 && v.seq_len != config_.training.seq_len)
    throw Err("validation.seq_len " + seq_len + " differs from training.seq_len " + training_seq_len +
              " under context parallelism: not supported yet (the sequence split is set up for training.seq_len)");
  if (const int64_t divisor = dims_.tp * 2 * dims_.cp; dims_.tp > 1 && v.seq_len % divisor != 0)
    throw Err("validation.seq_len " + seq_len + " must be divisible by the product of TP degree (" + std::to_string(dims_.tp) +
              ") and 2 * CP degree (" + std::to_string(dims_.cp) + ").");
  const int64_t mb_size = config_.parallelism.pipeline_parallel_microbatch_size;
  if (dims_.pp > 1 && v.local_batch_size % mb_size != 0)
    throw Err("validation.local_batch_size " + std::to_string(v.local_batch_size) +
              " must be divisible by parallelism.pipeline_parallel_microbatch_size " + std::to_string(mb_size));
}

torch::Tensor Trainer::validation_loss_sum(const Batch& b) {
  const auto tokens = parallel_->shard_sequence(b.input).to(device_);  // (B, T / cp)
  const auto labels = parallel_->shard_sequence(b.labels).to(device_);
  if (!pipeline_) return model_parts_.front()->forward(tokens, labels);
  const int64_t mb_size = config_.parallelism.pipeline_parallel_microbatch_size, microbatches = tokens.size(0) / mb_size;
  const auto inputs = tokens.tensor_split(microbatches);
  pipeline_labels_ = labels.tensor_split(microbatches);
  const std::vector<int64_t> shape = {mb_size, tokens.size(1) / dims_.tp, model_args_.dim};  // hidden states between stages
  return pipeline_->evaluate(inputs, [](const torch::Tensor& loss_sum, int64_t) { return loss_sum; }, shape);
}

void Trainer::validate(double seconds_since_log, int64_t tokens_since_log) {
  const auto start = std::chrono::steady_clock::now();
  const Validator::Result r = validator_->validate();
  const double seconds = seconds_since_log + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // TorchTitan's: the tokens and time since the last log line.
  const double tps = tokens_per_second_per_device(tokens_since_log + r.tokens, seconds);
  const DeviceMemory memory = device_memory(device_);
  const double reserved_gib = memory.gib(memory.peak_bytes), reserved_percent = memory.percent(memory.peak_bytes);
  log_info(format_validation_line(state_.step, r.loss, reserved_gib, reserved_percent, tps,
                                  config_.metrics.disable_color_printing));
  if (metrics_file_)
    *metrics_file_ << format_validation_json_line(state_.step, r.loss, tps, reserved_gib, reserved_percent) << std::endl;
  if (!tensorboard_) return;
  auto scalars = memory_scalars("validation_metrics/", memory);
  scalars.push_back({"validation_metrics/loss", r.loss});
  scalars.push_back({"validation_metrics/throughput(tps)", tps});
  tensorboard_->add_scalars(state_.step, scalars);
}

double Trainer::tokens_per_second_per_device(int64_t tokens, double seconds) const {
  // As TorchTitan: the cp/tp/pp ranks of one batch share its tokens.
  return static_cast<double>(tokens) / std::max(seconds, 1e-9) / static_cast<double>(dims_.cp * dims_.tp * dims_.pp);
}

void Trainer::update_expert_biases() {
  std::vector<MoE> layers;
  for (const auto& part : model_parts_)
    for (const auto& moe : part->moe_layers())
      if (moe->expert_bias.defined()) layers.push_back(moe);
  if (layers.empty()) return;
  std::vector<torch::Tensor> counts;
  for (const auto& moe : layers) counts.push_back(moe->tokens_per_expert);
  auto summed = torch::stack(counts);  // (L, E): the tokens of every rank with other tokens (the loss group)
  if (comm_) comm_->group("loss").all_reduce(summed);
  for (size_t i = 0; i < layers.size(); ++i) {
    update_expert_bias(layers[i]->expert_bias, summed[static_cast<int64_t>(i)], *layers[i]->args().load_balance_coeff);
    layers[i]->tokens_per_expert.zero_();
  }
}

int64_t Trainer::metrics_rank() const {
  // TorchTitan's metrics rank: the first of the last pipeline stage (pp rank 0 under V schedules).
  const bool last_stage =
      dims_.pp > 1 && pipeline_schedule_kind(config_.parallelism.pipeline_parallel_schedule).style != StageStyle::kV;
  return last_stage ? env_.world_size / dims_.pp * (dims_.pp - 1) : 0;
}

void Trainer::open_tensorboard() {
  const auto& metrics = config_.metrics;
  if (!metrics.enable_tensorboard) return;
  // Every rank names the same folder: rank 0's clock (ranks may straddle a minute).
  auto now = static_cast<double>(std::time(nullptr));
  if (comm_ && metrics.save_for_all_ranks) now = comm_->world_cpu().all_reduce_sum(env_.rank == 0 ? now : 0.0);
  if (!metrics.save_for_all_ranks && env_.rank != metrics_rank()) return;
  const auto seconds = static_cast<std::time_t>(now);
  std::tm local{};
  localtime_r(&seconds, &local);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M", &local);
  fs::path folder = fs::path(config_.job.dump_folder) / metrics.save_tb_folder / stamp;
  if (metrics.save_for_all_ranks) folder /= "rank_" + std::to_string(env_.rank);
  tensorboard_ = std::make_unique<TensorBoardWriter>(folder.string());
  log_info("TensorBoard logging enabled. Logs will be saved at " + folder.string());
}

void Trainer::log_metrics(const StepResult& r, int64_t tokens_since_log, double seconds) {
  StepMetrics m;
  m.step = state_.step;
  m.loss = r.loss;
  m.grad_norm = r.grad_norm;
  m.lr = r.lr;
  m.tps = tokens_per_second_per_device(tokens_since_log, seconds);
  m.tflops = flops_per_token_ * m.tps / 1e12;
  m.mfu_percent = peak_flops_ > 0 ? 100.0 * flops_per_token_ * m.tps / peak_flops_ : 0.0;
  const DeviceMemory memory = device_memory(device_);
  m.memory_gib = memory.gib(memory.peak_bytes);
  m.memory_percent = memory.percent(memory.peak_bytes);
  log_info(format_step_line(m, config_.metrics.disable_color_printing));
  if (metrics_file_) *metrics_file_ << format_json_line(m) << std::endl;  // flushed: a killed run keeps its lines
  if (config_.metrics.enable_tensorboard) log_tensorboard(r, m, memory, seconds);
  data_loading_ = {};
}

void Trainer::log_tensorboard(const StepResult& r, const StepMetrics& m, const DeviceMemory& memory, double seconds) {
  // Every rank takes part in these reductions; only the writing ranks hold a writer.
  double max_loss = r.local_avg_loss, tokens_seen = static_cast<double>(state_.ntokens_seen);
  if (comm_) {
    max_loss = comm_->group("loss").all_reduce_max(max_loss);
    // Each batch once (TorchTitan sums over dp x cp, counting every batch cp times).
    tokens_seen = comm_->group("dp").all_reduce_sum(tokens_seen);
  }
  if (!tensorboard_) return;
  // TorchTitan's names (components/metrics.py); "memory" of the log line is max_reserved.
  auto scalars = memory_scalars("", memory);
  if (memory.active_peak_bytes) {
    scalars.push_back({"memory/num_alloc_retries", static_cast<double>(memory.num_alloc_retries)});
    scalars.push_back({"memory/num_ooms", static_cast<double>(memory.num_ooms)});
  }
  scalars.insert(scalars.end(), {
      {"loss_metrics/global_avg_loss", r.loss},
      {"loss_metrics/global_max_loss", max_loss},
      {"grad_norm", r.grad_norm},
      {"throughput(tps)", m.tps},
      {"tflops", m.tflops},
      {"mfu(%)", m.mfu_percent},
      {"time_metrics/end_to_end(s)", seconds / static_cast<double>(config_.metrics.log_freq)},
      {"time_metrics/data_loading(s)", data_loading_.seconds / static_cast<double>(std::max<int64_t>(data_loading_.batches, 1))},
      {"time_metrics/data_loading(%)", 100.0 * data_loading_.seconds / std::max(seconds, 1e-9)},
  });
  scalars.push_back({"n_tokens_seen", tokens_seen});
  scalars.push_back({"lr", r.lr});
  tensorboard_->add_scalars(state_.step, scalars);
}

bool Trainer::train() {
  checkpointer_->load();
  if (state_.step >= config_.training.steps)
    log_warning("the checkpoint is at step " + std::to_string(state_.step) + ", not before training.steps " +
                std::to_string(config_.training.steps) + ": nothing to train or save (raise --training.steps to continue)");
  const auto& prof = config_.profiling;
  std::optional<StepProfiler> profiler;
  if (prof.enable_profiling)
    profiler.emplace((fs::path(config_.job.dump_folder) / prof.save_traces_folder).string(), env_.rank,
                     device_.is_cuda(), prof.profile_freq, prof.profiler_warmup, prof.profiler_active);
  std::optional<MemorySnapshotter> snapshots;
  if (prof.enable_memory_snapshot)
    snapshots.emplace((fs::path(config_.job.dump_folder) / prof.save_memory_snapshot_folder).string(), env_.rank,
                      prof.profile_freq, device_.is_cuda());
  log_info("Training starts at step " + std::to_string(state_.step + 1));
  auto last_log = std::chrono::steady_clock::now();
  int64_t tokens_since_log = 0;
  while (state_.step < config_.training.steps) {
    if (profiler) profiler->begin_step(state_.step + 1);
    const StepResult r = [&] {
      try {
        return train_step();
      } catch (const c10::OutOfMemoryError&) {
        if (snapshots) snapshots->dump_on_out_of_memory(state_.step);
        throw;
      }
    }();
    ++state_.step;
    set_rank_exit_step(state_.step);
    state_.ntokens_seen += r.tokens;
    tokens_since_log += r.tokens;
    if (!std::isfinite(r.loss)) log_warning("step " + std::to_string(state_.step) + ": loss is not finite");
    if (comm_ && state_.step == 1) comm_->set_timeout(std::chrono::seconds(config_.comm.train_timeout_seconds));
    if (state_.step == 1) log_state_memory();

    if (should_log(state_.step)) {
      const auto now = std::chrono::steady_clock::now();
      log_metrics(r, tokens_since_log, std::chrono::duration<double>(now - last_log).count());
      last_log = now;
      tokens_since_log = 0;
    }
    checkpointer_->save(state_.step, state_.step == config_.training.steps);
    if (validator_ && validator_->should_validate(state_.step)) {  // after the save, as TorchTitan
      const auto now = std::chrono::steady_clock::now();
      validate(std::chrono::duration<double>(now - last_log).count(), tokens_since_log);
      last_log = std::chrono::steady_clock::now();  // TorchTitan's log_validation restarts the throughput window
      tokens_since_log = 0;
    }
    if (profiler) profiler->end_step();  // TorchTitan's profiler step spans the checkpoint save too
    if (snapshots) snapshots->end_step(state_.step);
    // Every rank stops after the same step: a signal reaches the ranks at different moments.
    bool stop = stop_requested();
    if (comm_) stop = comm_->world_cpu().all_reduce_sum(stop ? 1.0 : 0.0) > 0;
    if (stop) {
      checkpointer_->wait();
      log_warning("Interrupted: stopping after step " + std::to_string(state_.step));
      return false;
    }
  }
  checkpointer_->wait();
  log_info("Training completed");
  return true;
}

}  // namespace titan

// The training loop: builds model, data, optimizer and schedule from a JobConfig, then trains.
#pragma once

#include <atomic>
#include <fstream>
#include <memory>
#include <string>

#include "checkpoint/checkpoint_manager.h"
#include "models/common/torch_api.h"
#include "models/llama3/model.h"
#include "parallel/collectives.h"
#include "parallel/parallel_dims.h"
#include "parallel/parallelized_model.h"
#include "parallel/pipeline_runtime.h"
#include "parallel/pipeline_schedule.h"
#include "trainer/dataloader.h"
#include "trainer/device.h"
#include "trainer/job_config.h"
#include "trainer/lr_scheduler.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"
#include "trainer/tensorboard_writer.h"
#include "trainer/tokenizer.h"
#include "trainer/validator.h"

namespace titan {

struct TrainState {
  int64_t step = 0;          // last completed step
  int64_t ntokens_seen = 0;  // tokens consumed by this rank
};

class Trainer {
 public:
  explicit Trainer(JobConfig config);
  // Loads a checkpoint per [checkpoint], then runs steps train_state.step+1 .. training.steps,
  // saving as configured. Returns false when interrupted (Ctrl-C).
  bool train();
  // checkpoint.create_seed_checkpoint: saves the freshly initialised model as step-0.
  void create_seed_checkpoint();

  // Set from a signal handler: the loop stops after the current step.
  static std::atomic<bool>& stop_requested();

  const TrainState& train_state() const { return state_; }

 private:
  struct StepResult {
    double loss;            // global mean loss per valid token
    double local_avg_loss;  // this rank's batch: its loss over its own valid tokens
    double grad_norm;       // pre-clip
    double lr;              // the learning rate this step used
    int64_t tokens;         // input tokens of this step on this rank
  };
  StepResult train_step();
  bool should_log(int64_t step) const { return step == 1 || step % config_.metrics.log_freq == 0; }
  // The step line, and TensorBoard's scalars where enabled; `seconds` since the last logged step.
  void log_metrics(const StepResult& r, int64_t tokens_since_log, double seconds);
  void log_tensorboard(const StepResult& r, const StepMetrics& m, const DeviceMemory& memory, double seconds);
  // The rank that writes the metrics: TorchTitan's, the first of the last pipeline stage.
  int64_t metrics_rank() const;
  // metrics.enable_tensorboard: the writer of this rank, if it writes (TorchTitan's folder layout).
  void open_tensorboard();
  // Llama 4: each MoE layer's balancing bias moves before the optimizer step (TorchTitan's pre-step
  // hook), from the tokens its experts received across the loss group.
  void update_expert_biases();
  // [validation]: its sequence length and batch fit the layout (one-line errors naming the keys).
  void check_validation_shape() const;
  // This rank's summed validation loss of a batch, forward only through the layout's model.
  torch::Tensor validation_loss_sum(const Batch& b);
  // Runs the validator after step state_.step and logs its line (and TensorBoard's scalars).
  void validate(double seconds_since_log, int64_t tokens_since_log);
  double tokens_per_second_per_device(int64_t tokens, double seconds) const;
  // Under pipeline parallelism: the stages, their modules and ranks, and this rank's order of
  // actions (into pipeline_order_); returns the stages this rank runs.
  std::vector<int64_t> plan_pipeline(std::vector<std::vector<std::string>>& stage_modules);
  void log_startup();
  void log_state_memory();
  checkpoint::Parts checkpoint_parts();

  JobConfig config_;
  ParallelDims dims_;
  RankEnv env_;
  std::unique_ptr<Collectives> comm_;  // set when world_size > 1
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_ = torch::kFloat32;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string tokenizer_note_;  // which tokenizer file was chosen, when the folder has two
  llama3::ModelArgs model_args_;
  std::vector<llama3::Transformer> model_parts_;  // the whole model, or this rank's pipeline stages
  std::vector<torch::Tensor> pipeline_labels_;    // the labels of the microbatches the pipeline runs now
  int64_t num_params_ = 0;                        // of the whole model
  std::unique_ptr<ParallelizedModel> parallel_;   // the parts on the mesh: FSDP, DDP or one rank
  PipelineOrder pipeline_order_;                  // every pp rank's lowered actions
  std::vector<int64_t> pipeline_stage_ranks_;
  int64_t pipeline_microbatches_ = 1;
  std::unique_ptr<PipelineRuntime> pipeline_;     // set when pipeline_parallel_degree > 1
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<LRScheduler> lr_scheduler_;
  std::unique_ptr<DataLoader> dataloader_;
  std::unique_ptr<Validator> validator_;  // set when validation.enable
  std::unique_ptr<checkpoint::CheckpointManager> checkpointer_;
  TrainState state_;
  int64_t grad_accum_steps_ = 1;
  int64_t global_batch_size_ = 0;
  double peak_flops_ = 0;
  double flops_per_token_ = 0;
  std::unique_ptr<std::ofstream> metrics_file_;  // {dump_folder}/metrics.jsonl on the metrics rank
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  struct {
    double seconds = 0;
    int64_t batches = 0;
  } data_loading_;  // the batches fetched since the last logged step
};

}  // namespace titan

// The training loop: builds model, data, optimizer and schedule from a JobConfig, then trains.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <string>

#include "checkpoint/checkpoint_manager.h"
#include "models/llama3/model.h"
#include "parallel/collectives.h"
#include "parallel/parallel_dims.h"
#include "parallel/parallelized_model.h"
#include "trainer/dataloader.h"
#include "trainer/job_config.h"
#include "trainer/lr_scheduler.h"
#include "trainer/optimizer.h"
#include "trainer/tokenizer.h"

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
  llama3::Transformer& model() { return model_; }

 private:
  struct StepResult {
    double loss;       // global mean loss per valid token
    double grad_norm;  // pre-clip
    int64_t tokens;    // input tokens of this step on this rank
  };
  StepResult train_step();
  void log_startup();
  void log_state_memory();
  std::string dataset_path() const;
  checkpoint::Parts checkpoint_parts();

  JobConfig config_;
  ParallelDims dims_;
  RankEnv env_;
  std::unique_ptr<Collectives> comm_;  // set when world_size > 1
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_ = torch::kFloat32;
  std::unique_ptr<Tokenizer> tokenizer_;
  llama3::ModelArgs model_args_;
  llama3::Transformer model_{nullptr};
  int64_t num_params_ = 0;                   // of the whole model
  std::unique_ptr<ParallelizedModel> parallel_;  // the model on the mesh: FSDP, DDP or one rank
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<LRScheduler> lr_scheduler_;
  std::unique_ptr<DataLoader> dataloader_;
  std::unique_ptr<checkpoint::CheckpointManager> checkpointer_;
  TrainState state_;
  int64_t grad_accum_steps_ = 1;
  int64_t global_batch_size_ = 0;
  double peak_flops_ = 0;
  double flops_per_token_ = 0;
  std::unique_ptr<std::ofstream> metrics_file_;  // TITAN_TEST_METRICS_FILE: full-precision metrics
};

}  // namespace titan

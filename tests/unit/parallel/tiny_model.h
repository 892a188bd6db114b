// The tiny Llama 3 the data-parallel unit tests train: 3 blocks of dim 32, GQA (4 heads, 2 kv).
#pragma once

#include "models/llama3/model.h"

namespace titan::testing {

inline llama3::ModelArgs tiny_args(bool tied = false) {
  llama3::ModelArgs a;
  a.dim = 32;
  a.n_layers = 3;
  a.n_heads = 4;
  a.n_kv_heads = 2;
  a.vocab_size = 64;
  a.multiple_of = 16;
  a.max_seq_len = 8;
  a.tie_word_embeddings = tied;
  return a;
}

// Always the same weights: each parameter from its (seed 7, FQN) generator.
inline llama3::Transformer initialised(const llama3::ModelArgs& args) {
  llama3::Transformer m(args);
  m->init_weights(7);
  return m;
}

}  // namespace titan::testing

// The parts of libtorch's C++ API titan.cpp uses, included by every file in place of <torch/torch.h> and
// precompiled once for every target. <torch/torch.h> adds the data loaders, optimizers, nn layers and more, whose
// pending template instantiations GCC redoes in each translation unit under a precompiled header: an empty one
// took 5.8 s with it, 4.2 s with this.
#pragma once

#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/serialize.h>
#include <torch/types.h>
#include <torch/utils.h>

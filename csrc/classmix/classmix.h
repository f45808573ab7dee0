// Shared by the CPU (classmix.cpp) and CUDA (classmix_cuda.cu) kernels of the ClassMix ops:
// argument checks and the contiguous inputs / freshly allocated outputs of classmix.
#pragma once

#include <torch/types.h>

#include <optional>
#include <tuple>

namespace fastuda {

void check_class_presence_args(const at::Tensor& label, int64_t num_classes);

// Contiguous inputs and contiguous outputs of one classmix call. Weights that
// were not given stay undefined (ones).
struct ClassmixBuffers {
  at::Tensor src, tgt, src_lab, tgt_lab, table, src_w, tgt_w;  // inputs
  at::Tensor image, label, weight, mask;                        // outputs
  int64_t batch, channels, pixels, num_classes;

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> outputs() const { return {image, label, weight, mask}; }
};

// Checks shapes, dtypes and devices (raising ValueError / TypeError naming the
// argument), then prepares the buffers on the inputs' device.
ClassmixBuffers prepare_classmix(const at::Tensor& source_image, const at::Tensor& target_image,
                                 const at::Tensor& source_label, const at::Tensor& target_label,
                                 const at::Tensor& chosen, const std::optional<at::Tensor>& source_weight,
                                 const std::optional<at::Tensor>& target_weight);

}  // namespace fastuda

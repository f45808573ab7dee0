// CUDA kernels of the ClassMix ops (see classmix.cpp for the contracts).
//
// class_presence: each block marks the classes of its pixels in shared memory,
// then writes only the flags it saw, so global traffic is one read of the
// labels plus at most (num_classes + 1) byte stores per block.
// classmix: one thread per pixel (grid-stride); the thread reads the source
// label, looks its column up in the (B, num_classes + 1) table (tiny, cached),
// writes mask / label / weight, then copies the pixel of the SELECTED image
// for every channel, so each image value is read once from one of the two
// images. Consecutive threads touch consecutive pixels: coalesced.
//
// Labels outside [0, num_classes) other than ignore_index never cause an
// out-of-bounds access: class_presence skips them and classmix treats them as
// not chosen. fastuda.ops checks values before the launch when
// FASTUDA_DEBUG=1 (or set_value_checks("always")).

// c10's CUDA headers only: ATen/cuda/CUDAContext.h drags in cuBLAS / cuSPARSE
// headers that a bare CUDA toolkit may not ship.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "classmix.h"

namespace fastuda {


namespace {

constexpr int kThreads = 256;
constexpr int kPixelsPerThread = 16;

__global__ void class_presence_kernel(const int64_t* __restrict__ label,  // (B, H*W)
                                      bool* __restrict__ present,         // (B, num_classes + 1)
                                      int64_t pixels, int64_t num_classes, int64_t ignore_index) {
  extern __shared__ int seen[];  // (num_classes + 1,)
  for (int64_t c = threadIdx.x; c <= num_classes; c += blockDim.x) {
    seen[c] = 0;
  }
  __syncthreads();
  const int64_t b = blockIdx.y;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x * kPixelsPerThread;
  const int64_t* row = label + b * pixels;
  for (int i = 0; i < kPixelsPerThread; ++i) {
    const int64_t p = start + static_cast<int64_t>(i) * blockDim.x + threadIdx.x;
    if (p < pixels) {
      const int64_t c = row[p];
      if (c == ignore_index) {
        seen[num_classes] = 1;
      } else if (c >= 0 && c < num_classes) {
        seen[c] = 1;
      }
    }
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c <= num_classes; c += blockDim.x) {
    if (seen[c]) {
      present[b * (num_classes + 1) + c] = true;  // every writer stores the same value
    }
  }
}

at::Tensor class_presence_cuda(const at::Tensor& label, int64_t num_classes, int64_t ignore_index) {
  check_class_presence_args(label, num_classes);
  const c10::cuda::CUDAGuard guard(label.device());
  const int64_t B = label.size(0);
  const int64_t pixels = label.size(1) * label.size(2);
  auto out = at::zeros({B, num_classes + 1}, label.options().dtype(at::kBool));
  if (label.numel() == 0) {
    return out;
  }
  TORCH_CHECK_VALUE(B <= 65535, "label batch must be <= 65535 on CUDA, got ", B);
  TORCH_CHECK_VALUE((num_classes + 1) * sizeof(int) <= 48 * 1024, "num_classes too large for CUDA class_presence: ",
                    num_classes);
  const at::Tensor lab = label.contiguous();
  const int64_t per_block = static_cast<int64_t>(kThreads) * kPixelsPerThread;
  const dim3 grid(static_cast<unsigned>((pixels + per_block - 1) / per_block), static_cast<unsigned>(B));
  const size_t shared = (num_classes + 1) * sizeof(int);
  class_presence_kernel<<<grid, kThreads, shared, c10::cuda::getCurrentCUDAStream()>>>(
      lab.data_ptr<int64_t>(), out.data_ptr<bool>(), pixels, num_classes, ignore_index);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

template <typename scalar_t>
__global__ void classmix_kernel(const scalar_t* __restrict__ src_img,   // (B, C, H*W)
                                const scalar_t* __restrict__ tgt_img,   // (B, C, H*W)
                                const int64_t* __restrict__ src_lab,    // (B, H*W)
                                const int64_t* __restrict__ tgt_lab,    // (B, H*W)
                                const bool* __restrict__ chosen,        // (B, num_classes + 1)
                                const float* __restrict__ src_w,        // (B, H*W) or null (ones)
                                const float* __restrict__ tgt_w,        // (B, H*W) or null (ones)
                                scalar_t* __restrict__ out_img,         // (B, C, H*W)
                                int64_t* __restrict__ out_lab,          // (B, H*W)
                                float* __restrict__ out_w,              // (B, H*W)
                                bool* __restrict__ out_mask,            // (B, H*W)
                                int64_t total, int64_t pixels, int64_t channels, int64_t num_classes,
                                int64_t ignore_index) {
  const int64_t columns = num_classes + 1;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / pixels;
    const int64_t p = i - b * pixels;
    const int64_t c = src_lab[i];
    bool m = false;
    if (c == ignore_index) {
      m = chosen[b * columns + num_classes];
    } else if (c >= 0 && c < num_classes) {
      m = chosen[b * columns + c];
    }
    out_mask[i] = m;
    out_lab[i] = m ? c : tgt_lab[i];
    out_w[i] = m ? (src_w ? src_w[i] : 1.0f) : (tgt_w ? tgt_w[i] : 1.0f);
    const scalar_t* from = m ? src_img : tgt_img;
    for (int64_t k = 0; k < channels; ++k) {
      const int64_t idx = (b * channels + k) * pixels + p;
      out_img[idx] = from[idx];
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> classmix_cuda(
    const at::Tensor& source_image, const at::Tensor& target_image, const at::Tensor& source_label,
    const at::Tensor& target_label, const at::Tensor& chosen, const std::optional<at::Tensor>& source_weight,
    const std::optional<at::Tensor>& target_weight, int64_t ignore_index) {
  const c10::cuda::CUDAGuard guard(source_image.device());
  const ClassmixBuffers buf =
      prepare_classmix(source_image, target_image, source_label, target_label, chosen, source_weight, target_weight);
  const int64_t total = buf.batch * buf.pixels;
  if (total == 0) {
    return buf.outputs();
  }
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535LL * 8);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, buf.src.scalar_type(), "classmix_cuda", [&] {
    classmix_kernel<scalar_t><<<static_cast<unsigned>(blocks), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        buf.src.data_ptr<scalar_t>(), buf.tgt.data_ptr<scalar_t>(), buf.src_lab.data_ptr<int64_t>(),
        buf.tgt_lab.data_ptr<int64_t>(), buf.table.data_ptr<bool>(),
        buf.src_w.defined() ? buf.src_w.data_ptr<float>() : nullptr,
        buf.tgt_w.defined() ? buf.tgt_w.data_ptr<float>() : nullptr, buf.image.data_ptr<scalar_t>(),
        buf.label.data_ptr<int64_t>(), buf.weight.data_ptr<float>(), buf.mask.data_ptr<bool>(), total, buf.pixels,
        buf.channels, buf.num_classes, ignore_index);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return buf.outputs();
}

}  // namespace
}  // namespace fastuda

TORCH_LIBRARY_IMPL(fastuda, CUDA, m) {
  m.impl("class_presence", &fastuda::class_presence_cuda);
  m.impl("classmix", &fastuda::classmix_cuda);
}

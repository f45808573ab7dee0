// CUDA kernels of the ClassMix ops (see classmix.cpp for the contracts).
//
// class_presence: each block marks the classes of its pixels in shared memory,
// then writes only the flags it saw, so global traffic is one read of the
// labels plus at most (num_classes + 1) byte stores per block. Labels outside
// [0, num_classes) other than ignore_index are skipped (never an out-of-bounds
// write); fastuda.ops checks values before the launch when value checks are on.

// c10's CUDA headers only: ATen/cuda/CUDAContext.h drags in cuBLAS / cuSPARSE
// headers that a bare CUDA toolkit may not ship.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/types.h>

namespace fastuda {

void check_class_presence_args(const at::Tensor& label, int64_t num_classes);

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

}  // namespace
}  // namespace fastuda

TORCH_LIBRARY_IMPL(fastuda, CUDA, m) {
  m.impl("class_presence", &fastuda::class_presence_cuda);
}

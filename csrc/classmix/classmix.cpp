// ClassMix ops of fastuda: schema, Python module stub and CPU kernels.
//
// class_presence(label, num_classes, ignore_index) -> bool (B, num_classes + 1)
//   marks which classes occur in each image; the last column is the ignore
//   label. One pass over the labels. The CUDA kernel lives in
//   classmix_cuda.cu; fake (meta) implementations are registered in Python
//   (fastuda/ops/classmix.py).

#include <Python.h>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <atomic>

extern "C" {
// fastuda._C is imported for its side effect of registering the ops; it has
// no Python-level members.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

namespace fastuda {

void check_class_presence_args(const at::Tensor& label, int64_t num_classes) {
  TORCH_CHECK_VALUE(label.dim() == 3, "label must have shape (B, H, W), got ", label.sizes());
  TORCH_CHECK_TYPE(label.scalar_type() == at::kLong, "label must have dtype int64, got ", label.scalar_type());
  TORCH_CHECK_VALUE(num_classes >= 1, "num_classes must be >= 1, got ", num_classes);
}

namespace {

at::Tensor class_presence_cpu(const at::Tensor& label, int64_t num_classes, int64_t ignore_index) {
  check_class_presence_args(label, num_classes);
  const int64_t B = label.size(0);
  const int64_t pixels = label.size(1) * label.size(2);
  auto out = at::zeros({B, num_classes + 1}, label.options().dtype(at::kBool));
  if (label.numel() == 0) {
    return out;
  }
  const at::Tensor lab = label.contiguous();
  const int64_t* src = lab.data_ptr<int64_t>();
  bool* dst = out.data_ptr<bool>();
  std::atomic<bool> bad{false};
  std::atomic<int64_t> bad_value{0};
  // One image per task: each task owns one row of `out`, so no races.
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t* row = src + b * pixels;
      bool* present = dst + b * (num_classes + 1);
      for (int64_t p = 0; p < pixels; ++p) {
        const int64_t c = row[p];
        if (c == ignore_index) {
          present[num_classes] = true;
        } else if (c >= 0 && c < num_classes) {
          present[c] = true;
        } else if (!bad.exchange(true)) {
          bad_value = c;
        }
      }
    }
  });
  TORCH_CHECK_VALUE(!bad, "label must hold class indices in [0, ", num_classes, ") or ignore_index=",
                    ignore_index, ", found ", bad_value.load());
  return out;
}

}  // namespace
}  // namespace fastuda

TORCH_LIBRARY(fastuda, m) {
  m.def("class_presence(Tensor label, int num_classes, int ignore_index) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastuda, CPU, m) {
  m.impl("class_presence", &fastuda::class_presence_cpu);
}

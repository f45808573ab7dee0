// ClassMix ops of fastuda: schema, Python module stub and CPU kernels.
//
// class_presence(label, num_classes, ignore_index) -> bool (B, num_classes + 1)
//   marks which classes occur in each image; the last column is the ignore
//   label. One pass over the labels.
// classmix(source_image, target_image, source_label, target_label, chosen,
//          source_weight?, target_weight?, ignore_index) -> (image, label, weight, mask)
//   mask[b, p] = chosen[b, column of source_label[b, p]] (ignore -> last
//   column); image, label and weight take the source where the mask is set and
//   the target elsewhere. One pass over the pixels; only the selected image is
//   read at each pixel.
//
// Both CPU kernels raise on labels outside [0, num_classes) U {ignore_index}.
// The CUDA kernels live in classmix_cuda.cu; fake (meta) implementations and
// autograd are registered in Python (fastuda/ops/classmix.py).

#include <Python.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include "classmix.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

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

void check_classmix_args(const at::Tensor& source_image, const at::Tensor& target_image,
                         const at::Tensor& source_label, const at::Tensor& target_label, const at::Tensor& chosen,
                         const std::optional<at::Tensor>& source_weight,
                         const std::optional<at::Tensor>& target_weight) {
  TORCH_CHECK_VALUE(source_image.dim() == 4, "source_image must have shape (B, C, H, W), got ", source_image.sizes());
  TORCH_CHECK_VALUE(target_image.sizes() == source_image.sizes(), "target_image must have the shape of source_image ",
                    source_image.sizes(), ", got ", target_image.sizes());
  TORCH_CHECK_TYPE(target_image.scalar_type() == source_image.scalar_type(),
                   "target_image must have the dtype of source_image (", source_image.scalar_type(), "), got ",
                   target_image.scalar_type());
  const auto B = source_image.size(0), H = source_image.size(2), W = source_image.size(3);
  const std::vector<int64_t> bhw{B, H, W};
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"source_label", &source_label},
                                {"target_label", &target_label}}) {
    TORCH_CHECK_VALUE(t->sizes() == at::IntArrayRef(bhw), name, " must have shape (B, H, W) = ", bhw, ", got ",
                      t->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == at::kLong, name, " must have dtype int64, got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == source_image.device(), name, " must be on ", source_image.device());
  }
  for (const auto& [name, t] : {std::pair<const char*, const std::optional<at::Tensor>*>{"source_weight", &source_weight},
                                {"target_weight", &target_weight}}) {
    if (t->has_value()) {
      const at::Tensor& w = t->value();
      TORCH_CHECK_VALUE(w.sizes() == at::IntArrayRef(bhw), name, " must have shape (B, H, W) = ", bhw, ", got ",
                        w.sizes());
      TORCH_CHECK_TYPE(w.scalar_type() == at::kFloat, name, " must have dtype float32, got ", w.scalar_type());
      TORCH_CHECK_VALUE(w.device() == source_image.device(), name, " must be on ", source_image.device());
    }
  }
  TORCH_CHECK_VALUE(chosen.dim() == 2 && chosen.size(0) == B && chosen.size(1) >= 2,
                    "chosen must have shape (B, num_classes + 1) with B = ", B, ", got ", chosen.sizes());
  TORCH_CHECK_TYPE(chosen.scalar_type() == at::kBool, "chosen must have dtype bool, got ", chosen.scalar_type());
  TORCH_CHECK_VALUE(target_image.device() == source_image.device() && chosen.device() == source_image.device(),
                    "target_image and chosen must be on ", source_image.device());
}

}  // namespace

ClassmixBuffers prepare_classmix(const at::Tensor& source_image, const at::Tensor& target_image,
                                 const at::Tensor& source_label, const at::Tensor& target_label,
                                 const at::Tensor& chosen, const std::optional<at::Tensor>& source_weight,
                                 const std::optional<at::Tensor>& target_weight) {
  check_classmix_args(source_image, target_image, source_label, target_label, chosen, source_weight, target_weight);
  ClassmixBuffers buf;
  buf.src = source_image.contiguous();
  buf.tgt = target_image.contiguous();
  buf.src_lab = source_label.contiguous();
  buf.tgt_lab = target_label.contiguous();
  buf.table = chosen.contiguous();
  buf.src_w = source_weight.has_value() ? source_weight->contiguous() : at::Tensor();
  buf.tgt_w = target_weight.has_value() ? target_weight->contiguous() : at::Tensor();
  buf.image = at::empty_like(buf.src, at::MemoryFormat::Contiguous);
  buf.label = at::empty_like(buf.src_lab, at::MemoryFormat::Contiguous);
  buf.weight = at::empty(buf.src_lab.sizes(), buf.src_lab.options().dtype(at::kFloat));
  buf.mask = at::empty(buf.src_lab.sizes(), buf.src_lab.options().dtype(at::kBool));
  buf.batch = source_image.size(0);
  buf.channels = source_image.size(1);
  buf.pixels = source_image.size(2) * source_image.size(3);
  buf.num_classes = chosen.size(1) - 1;
  return buf;
}

namespace {

constexpr int64_t kPixelsPerTask = 4096;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> classmix_cpu(
    const at::Tensor& source_image, const at::Tensor& target_image, const at::Tensor& source_label,
    const at::Tensor& target_label, const at::Tensor& chosen, const std::optional<at::Tensor>& source_weight,
    const std::optional<at::Tensor>& target_weight, int64_t ignore_index) {
  const ClassmixBuffers buf =
      prepare_classmix(source_image, target_image, source_label, target_label, chosen, source_weight, target_weight);
  const int64_t B = buf.batch, channels = buf.channels, pixels = buf.pixels, num_classes = buf.num_classes;
  const int64_t columns = num_classes + 1;
  const at::Tensor &src = buf.src, &tgt = buf.tgt, &src_lab = buf.src_lab, &tgt_lab = buf.tgt_lab;
  const at::Tensor &table = buf.table, &src_w = buf.src_w, &tgt_w = buf.tgt_w;
  const at::Tensor &image = buf.image, &label = buf.label, &weight = buf.weight, &mask = buf.mask;
  if (B * pixels == 0) {
    return buf.outputs();
  }
  const int64_t* sl = src_lab.data_ptr<int64_t>();
  const int64_t* tl = tgt_lab.data_ptr<int64_t>();
  const bool* ch = table.data_ptr<bool>();
  const float* sw = src_w.defined() ? src_w.data_ptr<float>() : nullptr;
  const float* tw = tgt_w.defined() ? tgt_w.data_ptr<float>() : nullptr;
  int64_t* out_label = label.data_ptr<int64_t>();
  float* out_weight = weight.data_ptr<float>();
  bool* out_mask = mask.data_ptr<bool>();
  std::atomic<bool> bad{false};
  std::atomic<int64_t> bad_value{0};
  const int64_t tasks_per_image = (pixels + kPixelsPerTask - 1) / kPixelsPerTask;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "classmix_cpu", [&] {
    const scalar_t* s_img = src.data_ptr<scalar_t>();
    const scalar_t* t_img = tgt.data_ptr<scalar_t>();
    scalar_t* out_img = image.data_ptr<scalar_t>();
    // A task is a run of pixels of one image: the mask first, then the
    // channels one plane at a time (contiguous reads and writes).
    at::parallel_for(0, B * tasks_per_image, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / tasks_per_image;
        const int64_t p0 = (task % tasks_per_image) * kPixelsPerTask;
        const int64_t p1 = std::min(p0 + kPixelsPerTask, pixels);
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t i = b * pixels + p;
          const int64_t c = sl[i];
          bool m = false;
          if (c == ignore_index) {
            m = ch[b * columns + num_classes];
          } else if (c >= 0 && c < num_classes) {
            m = ch[b * columns + c];
          } else if (!bad.exchange(true)) {
            bad_value = c;
          }
          out_mask[i] = m;
          out_label[i] = m ? c : tl[i];
          out_weight[i] = m ? (sw ? sw[i] : 1.0f) : (tw ? tw[i] : 1.0f);
        }
        for (int64_t k = 0; k < channels; ++k) {
          const int64_t plane = (b * channels + k) * pixels;
          for (int64_t p = p0; p < p1; ++p) {
            out_img[plane + p] = out_mask[b * pixels + p] ? s_img[plane + p] : t_img[plane + p];
          }
        }
      }
    });
  });
  TORCH_CHECK_VALUE(!bad, "source_label must hold class indices in [0, ", num_classes, ") or ignore_index=",
                    ignore_index, ", found ", bad_value.load());
  return buf.outputs();
}

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
  m.def(
      "classmix(Tensor source_image, Tensor target_image, Tensor source_label, Tensor target_label, Tensor chosen, "
      "Tensor? source_weight, Tensor? target_weight, int ignore_index) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastuda, CPU, m) {
  m.impl("class_presence", &fastuda::class_presence_cpu);
  m.impl("classmix", &fastuda::classmix_cpu);
}

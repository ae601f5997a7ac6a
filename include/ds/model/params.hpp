// The parameter registry: every parameter is declared once, with its Hugging Face name, shape,
// and the properties the rest of the system reads (weight decay, FP8-quantisable, expert index
// for expert parallelism). Checkpoint IO, the optimiser, ds-convert-fp8 and the distributed
// sharding all iterate this one list. Values and gradients are F32 master copies.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "ds/core/tensor.hpp"

namespace ds::model {

struct ParamInfo {
  std::string name;          // Hugging Face name: "model.layers.3.mlp.experts.7.up_proj.weight"
  Shape shape;
  bool decay = true;         // AdamW weight decay applies (matrices); false for norm gains
  bool fp8 = false;          // quantised to FP8 (128x128 blocks) in released checkpoints
  int layer = -1;            // transformer layer index (MTP layers after the main ones), -1 = none
  int expert = -1;           // routed expert index, -1 = not a routed expert
  double init_std = 0.0;     // Normal(0, init_std); 0 with init_one = gain of 1
  bool init_one = false;     // RMSNorm gains
};

struct Param {
  ParamInfo info;
  Tensor value;              // F32, on the store's device
  Tensor grad;               // F32, same shape (allocated by alloc_grads)
};

// Buffers are tensors saved with the model but not trained (the router's
// e_score_correction_bias, updated by the load-balancing rule).
class ParamStore {
 public:
  // Shape-only mode (allocate = false): add() records ParamInfo but leaves value undefined, so
  // the full parameter list of a huge config (671B) can be inspected without memory. Buffers
  // are always allocated (they are small). Set before registering anything.
  void set_allocate(bool on) { allocate_ = on; }
  bool allocate() const { return allocate_; }
  // Device of every value, gradient and buffer (default cpu). Set before registering
  // anything; init() draws on the host and copies, so values do not depend on the device.
  void set_device(Device d);
  Device device() const { return device_; }
  Param& add(ParamInfo info);                       // allocates value (zeros) unless shape-only
  // Lays the values of the registered parameters `names` (same trailing dims, no gradients
  // yet) out as consecutive row blocks of one allocation in this order, and alloc_grads
  // their gradients the same way, so that a GEMM can read them as one matrix (Tensor::join0:
  // an MLP's gate_proj and up_proj, moe_grouped.cpp). Values are copied over; registration
  // order, names and everything else are unchanged. A shape-only store records the stack, so
  // that gradients allocated after values were shared in (set_allocate(true), alloc_grads)
  // are stacked; the values are then whatever was shared in.
  void stack(const std::vector<std::string>& names);
  Tensor& add_buffer(const std::string& name, const Shape& shape);
  Param& get(const std::string& name);              // InternalError if absent
  const Param* find(const std::string& name) const;
  Tensor* find_buffer(const std::string& name);
  std::deque<Param>& params() { return params_; }   // registration order (stable addresses)
  const std::deque<Param>& params() const { return params_; }
  const std::vector<std::pair<std::string, Tensor>>& buffers() const { return buffers_; }
  std::vector<std::pair<std::string, Tensor>>& buffers() { return buffers_; }
  void alloc_grads();
  void zero_grads();
  int64_t numel() const;                            // from the declared shapes
  void init(uint64_t seed);                         // Normal(0, std) per parameter; gains 1

 private:
  std::deque<Param> params_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::vector<size_t>> stacks_;          // indices into params_ (stack())
  std::vector<std::pair<std::string, Tensor>> buffers_;
  bool allocate_ = true;
  Device device_ = Device::cpu;
};

}  // namespace ds::model

// Parameter registry (see include/ds/model/params.hpp). Initial values are a pure function
// of (seed, parameter name), so adding a parameter never changes the others' values.
#include "ds/model/params.hpp"

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/rng.hpp"

namespace ds::model {

Param& ParamStore::add(ParamInfo info) {
  DS_CHECK(!index_.count(info.name), "parameter {} declared twice", info.name);
  Param p;
  if (allocate_) p.value = Tensor::zeros(info.shape);
  p.info = std::move(info);
  index_[p.info.name] = params_.size();
  params_.push_back(std::move(p));
  return params_.back();
}

Tensor& ParamStore::add_buffer(const std::string& name, const Shape& shape) {
  for (auto& b : buffers_) DS_CHECK(b.first != name, "buffer {} declared twice", name);
  buffers_.emplace_back(name, Tensor::zeros(shape));
  return buffers_.back().second;
}

Param& ParamStore::get(const std::string& name) {
  auto it = index_.find(name);
  DS_CHECK(it != index_.end(), "no parameter named {}", name);
  return params_[it->second];
}

const Param* ParamStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

Tensor* ParamStore::find_buffer(const std::string& name) {
  for (auto& b : buffers_)
    if (b.first == name) return &b.second;
  return nullptr;
}

void ParamStore::alloc_grads() {
  DS_CHECK(allocate_, "alloc_grads on a shape-only parameter store");
  for (auto& p : params_)
    if (!p.grad.defined()) p.grad = Tensor::zeros(p.info.shape);
}

void ParamStore::zero_grads() {
  for (auto& p : params_)
    if (p.grad.defined()) p.grad.zero_();
}

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (auto& p : params_) n += shape_numel(p.info.shape);
  return n;
}

void ParamStore::init(uint64_t seed) {
  DS_CHECK(allocate_, "init on a shape-only parameter store");
  for (auto& p : params_) {
    float* w = p.value.f32();
    int64_t n = p.value.numel();
    if (p.info.init_one) {
      for (int64_t i = 0; i < n; ++i) w[i] = 1.0f;
      continue;
    }
    Rng rng(seed, rng_stream("init:" + p.info.name));
    double sd = p.info.init_std;
    for (int64_t i = 0; i < n; ++i) w[i] = float(sd * rng.normal());
  }
  for (auto& b : buffers_) b.second.zero_();
}

}  // namespace ds::model

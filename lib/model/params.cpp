// Parameter registry (see include/ds/model/params.hpp). Initial values are a pure function
// of (seed, parameter name), so adding a parameter never changes the others' values.
#include "ds/model/params.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/core/hash.hpp"
#include "ds/core/rng.hpp"
#include "ds/ops/ops.hpp"

namespace ds::model {

void ParamStore::set_device(Device d) {
  DS_CHECK(params_.empty() && buffers_.empty(), "ParamStore::set_device after registration");
  device_ = d;
}

Param& ParamStore::add(ParamInfo info) {
  DS_CHECK(!index_.count(info.name), "parameter {} declared twice", info.name);
  Param p;
  if (allocate_) p.value = Tensor::zeros(info.shape, DType::f32, device_);
  p.info = std::move(info);
  index_[p.info.name] = params_.size();
  params_.push_back(std::move(p));
  return params_.back();
}

namespace {
// One zero allocation holding the row blocks of `shapes` (same trailing dims) in order.
std::vector<Tensor> stacked_zeros(const std::vector<Shape>& shapes, Device d) {
  Shape all = shapes.front();
  all[0] = 0;
  for (const Shape& s : shapes) all[0] += s[0];
  const Tensor t = Tensor::zeros(all, DType::f32, d);
  std::vector<Tensor> parts;
  int64_t r = 0;
  for (const Shape& s : shapes) {
    parts.push_back(t.slice0(r, r + s[0]));
    r += s[0];
  }
  return parts;
}
}  // namespace

void ParamStore::stack(const std::vector<std::string>& names) {
  DS_CHECK(names.size() >= 2, "ParamStore::stack of {} parameter(s)", names.size());
  std::vector<size_t> idx;
  std::vector<Shape> shapes;
  for (const std::string& n : names) {
    auto it = index_.find(n);
    DS_CHECK(it != index_.end(), "ParamStore::stack: no parameter named {}", n);
    const Param& p = params_[it->second];
    const Shape& s = p.info.shape;
    DS_CHECK(!s.empty(), "ParamStore::stack: {} is a scalar", n);
    DS_CHECK(!p.grad.defined(), "ParamStore::stack: {} already has a gradient", n);
    for (const std::vector<size_t>& st : stacks_)
      DS_CHECK(std::find(st.begin(), st.end(), it->second) == st.end(),
               "ParamStore::stack: {} is already stacked", n);
    if (!shapes.empty())
      DS_CHECK(s.size() == shapes.front().size() &&
                   std::equal(s.begin() + 1, s.end(), shapes.front().begin() + 1),
               "ParamStore::stack: {} {} does not stack on {}", n, shape_str(s),
               shape_str(shapes.front()));
    idx.push_back(it->second);
    shapes.push_back(s);
  }
  stacks_.push_back(idx);   // shape-only too: gradients allocated later are stacked
  if (!allocate_) return;
  std::vector<Tensor> values = stacked_zeros(shapes, device_);
  for (size_t i = 0; i < idx.size(); ++i) {
    values[i].copy_from(params_[idx[i]].value);
    params_[idx[i]].value = values[i];
  }
}

Tensor& ParamStore::add_buffer(const std::string& name, const Shape& shape) {
  for (auto& b : buffers_) DS_CHECK(b.first != name, "buffer {} declared twice", name);
  buffers_.emplace_back(name, Tensor::zeros(shape, DType::f32, device_));
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
  for (const std::vector<size_t>& st : stacks_) {
    if (std::any_of(st.begin(), st.end(), [&](size_t i) { return params_[i].grad.defined(); }))
      continue;   // a gradient set from outside: the rest of the stack gets its own below
    std::vector<Shape> shapes;
    for (size_t i : st) shapes.push_back(params_[i].info.shape);
    std::vector<Tensor> grads = stacked_zeros(shapes, device_);
    for (size_t i = 0; i < st.size(); ++i) params_[st[i]].grad = grads[i];
  }
  for (auto& p : params_)
    if (!p.grad.defined()) p.grad = Tensor::zeros(p.info.shape, DType::f32, device_);
}

void ParamStore::zero_grads() {
  std::vector<Tensor*> g;
  for (auto& p : params_)
    if (p.grad.defined()) g.push_back(&p.grad);
  ops::Context ctx;   // one launch for all gradients on the GPU
  ctx.device = device_;
  ops::zero_multi(ctx, g);
}

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (auto& p : params_) n += shape_numel(p.info.shape);
  return n;
}

void ParamStore::init(uint64_t seed) {
  DS_CHECK(allocate_, "init on a shape-only parameter store");
  // Each parameter has its own random stream, so parameters are drawn in parallel (large
  // models) with the same values as one thread; device values are drawn on the host first.
  auto draw = [&](Param& p) {
    Tensor host = device_ == Device::cpu ? p.value : Tensor::empty(p.info.shape);
    float* w = host.f32();
    const int64_t n = host.numel();
    if (p.info.init_one) {
      for (int64_t i = 0; i < n; ++i) w[i] = 1.0f;
    } else {
      Rng rng(seed, rng_stream("init:" + p.info.name));
      const double sd = p.info.init_std;
      for (int64_t i = 0; i < n; ++i) w[i] = float(sd * rng.normal());
    }
    if (device_ != Device::cpu) p.value.copy_from(host);
  };
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const unsigned nt = numel() > (int64_t(1) << 24) ? std::min<unsigned>(hw, 16) : 1;
  if (nt == 1) {
    for (auto& p : params_) draw(p);
  } else {
    std::atomic<size_t> next{0};
    std::vector<std::thread> pool;
    std::exception_ptr err;
    std::mutex err_mu;
    for (unsigned t = 0; t < nt; ++t)
      pool.emplace_back([&] {
        for (size_t i = next++; i < params_.size(); i = next++) {
          try {
            draw(params_[i]);
          } catch (...) {
            std::lock_guard<std::mutex> lock(err_mu);
            if (!err) err = std::current_exception();
          }
        }
      });
    for (auto& th : pool) th.join();
    if (err) std::rethrow_exception(err);
  }
  for (auto& b : buffers_) b.second.zero_();
}

}  // namespace ds::model

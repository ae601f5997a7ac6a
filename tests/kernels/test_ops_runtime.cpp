// The CUDA runtime layer from several host threads (kernels/runtime.cu): a new host thread
// starts on device 0, and the allocation and copy functions bind it to the backend's GPU
// first. This is what ParamStore::init's parallel weight upload does. On one GPU the test
// shows that uploads from worker threads are whole and in order with the main thread's work.
// On a machine with several GPUs it also covers a backend on a GPU other than 0. Also checked:
// the backend drives one GPU per process, and asking for another is a clear error.
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ds/core/error.hpp"
#include "gpu_harness.hpp"
#include "kernels/runtime.cuh"

namespace ds::gpu_test {

TEST_CASE("gpu runtime: uploads and frees from worker threads, as ParamStore::init makes them") {
  const int n = 48, threads = 8;
  std::vector<Tensor> host;
  std::vector<Tensor> dev(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)   // every third tensor is larger than one 512 KiB staging slot
    host.push_back(rand_f32({int64_t(i % 3 == 0 ? 300000 + 17 * i : 1000 + 37 * i)}));
  std::exception_ptr err;
  std::mutex mu;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      try {
        for (int i = t; i < n; i += threads) {
          Tensor scratch = Tensor::zeros({4096}, DType::f32, Device::cuda);   // freed here
          dev[size_t(i)] = Tensor::empty(host[size_t(i)].shape(), DType::f32, Device::cuda);
          dev[size_t(i)].copy_from(host[size_t(i)]);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!err) err = std::current_exception();
      }
    });
  for (auto& th : pool) th.join();
  if (err) std::rethrow_exception(err);
  // the main thread's next op reads what the workers uploaded
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    Tensor twice = Tensor::empty(host[size_t(i)].shape(), DType::f32, Device::cuda);
    ops::add(gpu(), dev[size_t(i)], dev[size_t(i)], twice);
    Tensor want = host[size_t(i)].clone();
    ops::add_(cpu_ref(), want, host[size_t(i)]);
    expect_exact(twice, want, "2x, from a worker thread's upload");
  }
}

TEST_CASE("gpu runtime: one GPU per process; asking for another is an error") {
  const int mine = ds::cuda::device_index();
  ops::init_device(Device::cuda, mine);   // the same GPU again: nothing happens
  std::string what;
  try {
    ops::init_device(Device::cuda, mine + 1);
  } catch (const CudaError& e) {
    what = e.what();
  }
  CHECK(what.find("one GPU per process") != std::string::npos);
  CHECK(ds::cuda::device_index() == mine);
}

}  // namespace ds::gpu_test

// doctest main of the GPU suites: exits 77 (CTest "skipped") when this machine has no usable
// GPU, otherwise turns the CUDA backend on and runs every test case.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "ds/ops/ops.hpp"
#include "kernels/runtime.cuh"

int main(int argc, char** argv) {
  if (ds::cuda::device_count() == 0) {
    std::fprintf(stderr, "no CUDA device: GPU tests skipped\n");
    return 77;
  }
  ds::ops::init_device(ds::Device::cuda);
  std::fprintf(stderr, "GPU: %s\n", ds::ops::device_description(ds::Device::cuda).c_str());
  doctest::Context ctx(argc, argv);
  return ctx.run();
}

// Helper program for safetensors_python_check.py (the Python side of the format test):
//   st_fixture write FILE   writes deterministic tensors of several dtypes
//   st_fixture dump FILE    prints every tensor as one JSON line {name, dtype, shape, values}
// reference: include/ds/io/safetensors.hpp.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/io/safetensors.hpp"

using ds::DType;
using ds::io::TensorSource;

namespace {

int write_fixture(const char* path) {
  ds::Tensor x = ds::Tensor::empty({6, 7});   // [6, 7] values in (-2, 14)
  for (int i = 0; i < 42; ++i) x.f32()[i] = float(i) * 0.37f - 1.9f;
  std::vector<int64_t> i64(10);
  std::vector<int32_t> i32(10);
  std::vector<uint8_t> u8(10), f8(42);
  for (int i = 0; i < 10; ++i) {
    i64[size_t(i)] = int64_t(i) * 1000000007LL - 5;
    i32[size_t(i)] = -7 * i;
    u8[size_t(i)] = uint8_t(i * 29);
  }
  for (int i = 0; i < 42; ++i) f8[size_t(i)] = ds::f32_to_e4m3(x.f32()[i]);
  std::vector<TensorSource> src = {
      TensorSource::from_tensor("x.f32", x, DType::f32),
      TensorSource::from_tensor("x.bf16", x, DType::bf16),
      TensorSource::from_tensor("x.f16", x, DType::f16),
      TensorSource::raw("x.f8", DType::f8_e4m3, {6, 7}, f8.data()),
      TensorSource::raw("i64", DType::i64, {2, 5}, i64.data()),
      TensorSource::raw("i32", DType::i32, {10}, i32.data()),
      TensorSource::raw("u8", DType::u8, {10, 1}, u8.data()),
  };
  ds::io::write_safetensors(path, src);
  return 0;
}

double element(const ds::io::TensorView& v, int64_t i) {
  switch (v.dtype) {
    case DType::i64: { int64_t a; std::memcpy(&a, v.data + 8 * i, 8); return double(a); }
    case DType::i32: { int32_t a; std::memcpy(&a, v.data + 4 * i, 4); return double(a); }
    case DType::u8: return double(v.data[i]);
    case DType::f8_e4m3: return double(ds::e4m3_to_f32(v.data[i]));
    default:
      DS_THROW(FormatError, "tensor {}: dtype {} not dumped", v.name, ds::dtype_name(v.dtype));
  }
}

int dump(const char* path) {
  ds::io::SafetensorsFile f(path);
  for (const std::string& n : f.names()) {
    const auto& v = f.get(n);
    std::string shape;
    for (size_t k = 0; k < v.shape.size(); ++k) {
      if (k) shape.push_back(',');
      shape.append(std::to_string(v.shape[k]));
    }
    std::printf("{\"name\":\"%s\",\"dtype\":\"%s\",\"shape\":[%s],\"values\":[", n.c_str(),
                std::string(ds::dtype_name(v.dtype)).c_str(), shape.c_str());
    bool is_float = v.dtype == DType::f32 || v.dtype == DType::bf16 || v.dtype == DType::f16;
    ds::Tensor t = is_float ? f.load_f32(n) : ds::Tensor();
    for (int64_t i = 0; i < v.numel(); ++i)
      std::printf("%s%.17g", i ? "," : "", is_float ? double(t.f32()[i]) : element(v, i));
    std::printf("]}\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: st_fixture write|dump FILE\n");
    return 2;
  }
  try {
    if (std::string(argv[1]) == "write") return write_fixture(argv[2]);
    if (std::string(argv[1]) == "dump") return dump(argv[2]);
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "st_fixture: %s\n", e.what());
    return 1;
  }
  return 2;
}

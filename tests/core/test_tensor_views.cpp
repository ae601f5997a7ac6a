// Tensor views: slice0 and join0 (two row blocks that follow each other in one storage as one
// tensor, how model::ParamStore::stack hands gate_proj and up_proj to one GEMM).
#include <doctest/doctest.h>

#include "ds/core/tensor.hpp"

using namespace ds;

TEST_CASE("join0: adjacent row blocks of one storage join, anything else does not") {
  Tensor t = Tensor::empty({10, 4});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(i);
  const Tensor a = t.slice0(2, 5), b = t.slice0(5, 9);
  const Tensor j = a.join0(b);
  REQUIRE(j.defined());
  CHECK(j.shape() == Shape{7, 4});
  CHECK(j.raw() == a.raw());
  CHECK(j.f32()[0] == 8.0f);
  CHECK(j.f32()[27] == 35.0f);   // b's last element
  CHECK(t.slice0(0, 0).join0(t.slice0(0, 3)).shape() == Shape{3, 4});   // empty first block
  CHECK_FALSE(b.join0(a).defined());                   // wrong order
  CHECK_FALSE(a.join0(t.slice0(6, 9)).defined());      // a gap
  CHECK_FALSE(a.join0(t.slice0(4, 6)).defined());      // overlap
  CHECK_FALSE(a.join0(b.clone()).defined());           // another storage
  CHECK_FALSE(a.join0(b.view({8, 2})).defined());      // another row shape
  CHECK_FALSE(a.join0(Tensor()).defined());
  CHECK_FALSE(Tensor().join0(b).defined());
  const Tensor flat = t.view({40});
  CHECK(flat.slice0(0, 8).join0(flat.slice0(8, 9)).shape() == Shape{9});   // 1-D
}

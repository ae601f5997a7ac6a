// ops::linear_forward with BF16 weights: the same weights as F32 through the F32 path give the
// same result within float summation tolerance (|diff| <= 4e-7 (in + 4) sum_k |x||w| per
// output) for the optimised path at 1-3 threads (decode sizes N <= 8 on the small-M kernel,
// larger N on the blocked F32 GEMM), odd in/out sizes, outputs inside guard rows; the
// reference BF16 path equals the reference F32 path exactly (same double sums); the portable
// small-M BF16 kernel (used without AVX-512) is checked directly with a guarded, strided c.
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/gemm_kernels.hpp"
#include "ds/core/dtype.hpp"
#include "ops_test_util.hpp"

using namespace ds;
using namespace ds::ops;
using namespace ds::ops::test;

namespace {

// Random (O, I) weights rounded to BF16: the F32 tensor and its BF16 twin hold equal values.
struct Weights {
  Tensor f32, bf16;
  Weights(int64_t O, int64_t I) {
    f32 = rand_f32({O, I});
    bf16 = Tensor::empty({O, I}, DType::bf16);
    for (int64_t i = 0; i < O * I; ++i) {
      const uint16_t h = f32_to_bf16(f32.f32()[i]);
      bf16.data<uint16_t>()[i] = h;
      f32.f32()[i] = bf16_to_f32(h);
    }
  }
};

// Per-output bound on the FP32 summation error: 4e-7 (I + 4) sum_k |x_nk w_ok|.
double tol(const Tensor& x, const Tensor& w, int64_t n, int64_t o) {
  const int64_t I = x.size(1);
  double s = 0;
  for (int64_t k = 0; k < I; ++k) s += std::fabs(double(x.f32()[n * I + k]) * w.f32()[o * I + k]);
  return 4e-7 * double(I + 4) * s + 1e-30;
}

int count_bad(const Tensor& got, const Tensor& want, const Tensor& x, const Tensor& wf) {
  int bad = 0;
  const int64_t N = got.size(0), O = got.size(1);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      const double d = std::fabs(double(got.f32()[n * O + o]) - want.f32()[n * O + o]);
      bad += !(d <= tol(x, wf, n, o));
    }
  return bad;
}

struct Dims { int64_t O, I; };

}  // namespace

TEST_CASE("linear_forward BF16 weights == F32 weights (optimised, 1-3 threads, odd sizes)") {
  const int64_t Ns[] = {1, 2, 3, 5, 8, 9, 33};
  const Dims dims[] = {{1, 1}, {7, 13}, {37, 45}, {130, 257}, {19, 300}, {1030, 771}};
  for (const Dims d : dims) {
    const Weights w(d.O, d.I);
    for (int64_t N : Ns) {
      const Tensor x = rand_f32({N, d.I});
      Tensor want = Tensor::empty({N, d.O});
      linear_forward(opt_ctx(1), x, w.f32, want);
      for (int threads = 1; threads <= 3; ++threads) {
        Guarded y({N, d.O});
        linear_forward(opt_ctx(threads), x, w.bf16, y.t);
        INFO("N ", N, " out ", d.O, " in ", d.I, " threads ", threads);
        CHECK(count_bad(y.t, want, x, w.f32) == 0);
        CHECK(y.intact());
      }
    }
  }
}

TEST_CASE("linear_forward BF16 weights: reference == F32 reference exactly") {
  for (const Dims d : {Dims{5, 17}, Dims{33, 64}, Dims{64, 129}}) {
    const Weights w(d.O, d.I);
    for (int64_t N : {1, 4, 9}) {
      const Tensor x = rand_f32({N, d.I});
      Tensor want = Tensor::empty({N, d.O});
      Guarded y({N, d.O});
      linear_forward(ref_ctx(), x, w.f32, want);
      linear_forward(ref_ctx(), x, w.bf16, y.t);
      INFO("N ", N, " out ", d.O, " in ", d.I);
      CHECK(std::memcmp(y.t.f32(), want.f32(), size_t(want.nbytes())) == 0);
      CHECK(y.intact());
      // and the optimised BF16 path against the reference within summation tolerance
      Guarded z({N, d.O});
      linear_forward(opt_ctx(2), x, w.bf16, z.t);
      CHECK(count_bad(z.t, want, x, w.f32) == 0);
    }
  }
}

TEST_CASE("linear_forward BF16: shape errors are reported") {
  const Weights w(6, 10);
  Tensor x = rand_f32({2, 9}), y = Tensor::empty({2, 6});
  CHECK_THROWS(linear_forward(opt_ctx(), x, w.bf16, y));
  Tensor x2 = rand_f32({2, 10}), y2 = Tensor::empty({2, 5});
  CHECK_THROWS(linear_forward(opt_ctx(), x2, w.bf16, y2));
}

TEST_CASE("small-M BF16 kernels (portable, AVX2, AVX-512) == reference, strided c with guards") {
  namespace gk = ds::ops::opt::gemm;
  using Kern = void (*)(const float*, int64_t, const uint16_t*, int64_t, float*, int64_t, int64_t,
                        int64_t, int64_t);
  std::vector<Kern> kerns{gk::small_m_bf16_portable};
  if (gk::avx512_available()) kerns.push_back(gk::small_m_bf16_avx512);
  else MESSAGE("no AVX-512 on this CPU: AVX-512 BF16 kernel not exercised");
  if (gk::avx2_available()) kerns.push_back(gk::small_m_bf16_avx2);
  else MESSAGE("no AVX2 on this CPU: AVX2 BF16 kernel not exercised");
  for (const Dims d :
       {Dims{1, 1}, Dims{9, 15}, Dims{17, 16}, Dims{11, 13}, Dims{33, 47}, Dims{70, 200}}) {
    const Weights w(d.O, d.I);
    for (int64_t M = 1; M <= gk::kSmallM; ++M) {
      const Tensor x = rand_f32({M, d.I});
      Tensor want = Tensor::empty({M, d.O});
      linear_forward(ref_ctx(), x, w.f32, want);
      for (size_t ki = 0; ki < kerns.size(); ++ki) {
        const Kern k = kerns[ki];
        const int64_t ldc = d.O + 3, rows = M + 2;
        std::vector<float> buf(size_t(rows * ldc), kSentinel);
        k(x.f32(), d.I, w.bf16.data<uint16_t>(), d.I, buf.data() + ldc + 1, ldc, M, d.O, d.I);
        Tensor got = Tensor::empty({M, d.O});
        int guard = 0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t q = 0; q < ldc; ++q) {
            const float v = buf[size_t(r * ldc + q)];
            if (r >= 1 && r <= M && q >= 1 && q <= d.O) got.f32()[(r - 1) * d.O + q - 1] = v;
            else guard += std::memcmp(&v, &kSentinel, 4) != 0;
          }
        INFO("M ", M, " out ", d.O, " in ", d.I, " kernel ", ki);
        CHECK(count_bad(got, want, x, w.f32) == 0);
        CHECK(guard == 0);
      }
    }
  }
}

// Reference SwiGLU (spec §1.8): out = silu(gate) * up, silu(g) = g * sigmoid(g).
// Backward: dup = dout * silu(g); dgate = dout * up * sig(g) * (1 + g * (1 - sig(g))).
#include <cmath>

#include "ref.hpp"

namespace ds::ops::ref {

template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = double(gate[i]);
    double sig = 1.0 / (1.0 + std::exp(-g));
    out[i] = T(g * sig * double(up[i]));
  }
}

template <class T>
void swiglu_backward(const T* gate, const T* up, const T* dout, T* dgate, T* dup, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = double(gate[i]), u = double(up[i]), d = double(dout[i]);
    double sig = 1.0 / (1.0 + std::exp(-g));
    dup[i] = T(d * g * sig);
    dgate[i] = T(d * u * sig * (1.0 + g * (1.0 - sig)));
  }
}

#define DS_INST(T)                                                        \
  template void swiglu_forward<T>(const T*, const T*, T*, int64_t);       \
  template void swiglu_backward<T>(const T*, const T*, const T*, T*, T*, int64_t);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref

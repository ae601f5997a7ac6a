// Reference interleaved RoPE (spec §1.7: pairs (2i, 2i+1) rotated by pos * f_i) and the head
// layout helpers (split/concat along the last dim, broadcast of one shared head, head sums).
// The angle is float(pos) * f_i rounded to FP32, as DeepSeek's model.py builds freqs_cis.
#include <cmath>
#include <cstring>

#include "ref.hpp"

namespace ds::ops::ref {

template <class T>
void rope(const T* x, const int32_t* pos, const float* freqs, T* out, int64_t N, int64_t H,
          int64_t Dr, int dir, int64_t row, int64_t off) {
  const int64_t P = Dr / 2;
  if (row < 0) row = Dr;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < P; ++i) {
      float ang = float(pos[n]) * freqs[i];
      double c = std::cos(double(ang)), s = double(dir) * std::sin(double(ang));
      for (int64_t h = 0; h < H; ++h) {
        const T* xp = x + (n * H + h) * row + off + 2 * i;
        T* op = out + (n * H + h) * row + off + 2 * i;
        double x0 = double(xp[0]), x1 = double(xp[1]);
        op[0] = T(x0 * c - x1 * s);
        op[1] = T(x0 * s + x1 * c);
      }
    }
  }
}

template <class T>
void split_last(const T* x, T* a, T* b, int64_t R, int64_t A, int64_t B) {
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t i = 0; i < A; ++i) a[r * A + i] = x[r * (A + B) + i];
    for (int64_t i = 0; i < B; ++i) b[r * B + i] = x[r * (A + B) + A + i];
  }
}

template <class T>
void concat_last(const T* a, const T* b, T* x, int64_t R, int64_t A, int64_t B) {
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t i = 0; i < A; ++i) x[r * (A + B) + i] = a[r * A + i];
    for (int64_t i = 0; i < B; ++i) x[r * (A + B) + A + i] = b[r * B + i];
  }
}

template <class T>
void broadcast_heads(const T* x, T* out, int64_t N, int64_t H, int64_t D) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) out[(n * H + h) * D + d] = x[n * D + d];
}

template <class T>
void sum_heads(const T* dout, T* dx, int64_t N, int64_t H, int64_t D) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) {
      T acc = 0;
      for (int64_t h = 0; h < H; ++h) acc += dout[(n * H + h) * D + d];
      dx[n * D + d] = acc;
    }
}

template <class T>
void mla_kv_split(const T* kv, const T* krot, T* k, T* v, int64_t N, int64_t H, int64_t Dn,
                  int64_t Dr, int64_t Dv) {
  for (int64_t r = 0; r < N * H; ++r) {
    for (int64_t i = 0; i < Dn; ++i) k[r * (Dn + Dr) + i] = kv[r * (Dn + Dv) + i];
    for (int64_t i = 0; i < Dr; ++i) k[r * (Dn + Dr) + Dn + i] = krot[(r / H) * Dr + i];
    for (int64_t i = 0; i < Dv; ++i) v[r * Dv + i] = kv[r * (Dn + Dv) + Dn + i];
  }
}

template <class T>
void mla_kv_split_backward(const T* dk, const T* dv, T* dkv, T* dkrot, int64_t N, int64_t H,
                           int64_t Dn, int64_t Dr, int64_t Dv) {
  for (int64_t r = 0; r < N * H; ++r) {
    for (int64_t i = 0; i < Dn; ++i) dkv[r * (Dn + Dv) + i] = dk[r * (Dn + Dr) + i];
    for (int64_t i = 0; i < Dv; ++i) dkv[r * (Dn + Dv) + Dn + i] = dv[r * Dv + i];
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < Dr; ++d) {
      T acc = 0;
      for (int64_t h = 0; h < H; ++h) acc += dk[(n * H + h) * (Dn + Dr) + Dn + d];
      dkrot[n * Dr + d] = acc;
    }
}

#define DS_INST(T)                                                                            \
  template void rope<T>(const T*, const int32_t*, const float*, T*, int64_t, int64_t, int64_t, \
                        int, int64_t, int64_t);                                               \
  template void split_last<T>(const T*, T*, T*, int64_t, int64_t, int64_t);                   \
  template void concat_last<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);            \
  template void broadcast_heads<T>(const T*, T*, int64_t, int64_t, int64_t);                  \
  template void sum_heads<T>(const T*, T*, int64_t, int64_t, int64_t);                        \
  template void mla_kv_split<T>(const T*, const T*, T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                int64_t);                                                      \
  template void mla_kv_split_backward<T>(const T*, const T*, T*, T*, int64_t, int64_t, int64_t, \
                                         int64_t, int64_t);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref

// Reference token permutation for experts: row gather, weighted scatter-add in order of m,
// and the per-row dot product that is the gradient of the scatter weights.
#include "ref.hpp"

namespace ds::ops::ref {

template <class T>
void gather_rows(const T* src, const int32_t* rows, T* dst, int64_t M, int64_t C) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < C; ++c) dst[m * C + c] = src[int64_t(rows[m]) * C + c];
}

template <class T>
void scatter_add_rows(const T* src, const int32_t* rows, const T* w, T* dst, int64_t M,
                      int64_t C) {
  for (int64_t m = 0; m < M; ++m) {
    T wm = w ? w[m] : T(1);
    for (int64_t c = 0; c < C; ++c) dst[int64_t(rows[m]) * C + c] += wm * src[m * C + c];
  }
}

template <class T>
void gather_rows_dot(const T* a, const int32_t* rows, const T* b, T* out, int64_t M, int64_t C) {
  for (int64_t m = 0; m < M; ++m) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += double(a[int64_t(rows[m]) * C + c]) * double(b[m * C + c]);
    out[m] = T(s);
  }
}

#define DS_INST(T)                                                                           \
  template void gather_rows<T>(const T*, const int32_t*, T*, int64_t, int64_t);              \
  template void scatter_add_rows<T>(const T*, const int32_t*, const T*, T*, int64_t, int64_t); \
  template void gather_rows_dot<T>(const T*, const int32_t*, const T*, T*, int64_t, int64_t);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref

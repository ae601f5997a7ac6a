// Reference embedding lookup and its gradient (rows of the table added up per id, in token
// order). Ids are range-checked by the dispatcher (lib/ops/ops.cpp).
#include "ref.hpp"

namespace ds::ops::ref {

template <class T>
void embedding_forward(const T* table, const int32_t* ids, T* out, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = table[int64_t(ids[n]) * C + c];
}

template <class T>
void embedding_backward(const int32_t* ids, const T* dout, T* dtable, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) dtable[int64_t(ids[n]) * C + c] += dout[n * C + c];
}

#define DS_INST(T)                                                                     \
  template void embedding_forward<T>(const T*, const int32_t*, T*, int64_t, int64_t);  \
  template void embedding_backward<T>(const int32_t*, const T*, T*, int64_t, int64_t);
DS_INST(float)
DS_INST(double)
#undef DS_INST

}  // namespace ds::ops::ref

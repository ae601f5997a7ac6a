// CUDA runtime helpers (see runtime.cuh and common.cuh). Without a driver cudaGetDeviceCount
// returns an error and leaves the count untouched, so it is initialised to 0. Allocation uses
// the device's default memory pool with an unlimited release threshold: freed blocks stay
// cached for the next step, as a caching allocator would.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/common.cuh"

namespace ds::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();   // clear the sticky error
    return 0;
  }
  return n;
}

std::string device_name(int index) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, index) != cudaSuccess) return "";
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) +
         ", " + std::to_string(p.totalGlobalMem >> 30) + " GiB)";
}

static bool ok(cudaError_t e, std::string* error) {
  if (e == cudaSuccess) return true;
  if (error) *error = cudaGetErrorString(e);
  return false;
}

bool malloc_device(void** ptr, size_t bytes, std::string* error) {
  bind_thread();
  return ok(cudaMalloc(ptr, bytes), error);
}
void free_device(void* ptr) {
  bind_thread();
  cudaFree(ptr);
}
bool copy_to_device(void* dst, const void* src, size_t bytes, std::string* error) {
  bind_thread();
  return ok(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), error);
}
bool copy_to_host(void* dst, const void* src, size_t bytes, std::string* error) {
  bind_thread();
  return ok(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), error);
}
bool synchronize(std::string* error) {
  bind_thread();
  return ok(cudaDeviceSynchronize(), error);
}

cudaStream_t stream() { return cudaStream_t(0); }   // the legacy default stream

namespace {
int g_device = 0;   // the GPU this process drives (set_device_info)
}  // namespace

int device_index() { return g_device; }

// A host thread starts on device 0: one that is not yet bound (ParamStore::init's workers
// uploading weights, say) would put its copies on device 0's default stream, unordered with
// the backend's device, and fail to record the staging events created there. Never throws
// (pool_free runs in destructors): should cudaSetDevice fail (the index was checked when the
// backend was installed), the thread stays unbound and the next CUDA call reports the error.
void bind_thread() noexcept {
  thread_local int bound = -1;
  if (bound == g_device) return;
  if (cudaSetDevice(g_device) == cudaSuccess) bound = g_device;
}

namespace {
std::atomic<size_t> g_used{0}, g_peak{0};
std::mutex g_mu;
cublasHandle_t g_cublas = nullptr;
cublasLtHandle_t g_lt = nullptr;
void* g_lt_ws = nullptr;
constexpr size_t kLtWorkspace = size_t(32) << 20;
int g_sms = 0, g_major = 0;

// Size of each live allocation, for the in-use counter.
struct SizeMap {
  std::mutex mu;
  std::unordered_map<void*, size_t> m;
};
SizeMap& sizes() {
  static SizeMap* s = new SizeMap();
  return *s;
}
}  // namespace

void* pool_alloc(size_t bytes) {
  bind_thread();
  void* p = nullptr;
  if (bytes == 0) bytes = 1;
  cudaError_t e = cudaMallocAsync(&p, bytes, stream());
  if (e != cudaSuccess) {
    cudaGetLastError();
    // Out of memory: give cached blocks back and retry once.
    cudaMemPool_t pool;
    int dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetDefaultMemPool(&pool, dev);
    cudaStreamSynchronize(stream());
    cudaMemPoolTrimTo(pool, 0);
    DS_CUDA_CHECK(cudaMallocAsync(&p, bytes, stream()));
  }
  {
    auto& s = sizes();
    std::lock_guard<std::mutex> lock(s.mu);
    s.m[p] = bytes;
  }
  size_t u = g_used.fetch_add(bytes) + bytes;
  size_t pk = g_peak.load();
  while (u > pk && !g_peak.compare_exchange_weak(pk, u)) {
  }
  return p;
}

void pool_free(void* ptr) {
  if (!ptr) return;
  bind_thread();
  {
    auto& s = sizes();
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.m.find(ptr);
    if (it != s.m.end()) {
      g_used.fetch_sub(it->second);
      s.m.erase(it);
    }
  }
  cudaFreeAsync(ptr, stream());   // errors here would be reported by the next sync
}

void memset0(void* ptr, size_t bytes) {
  bind_thread();
  if (bytes) DS_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream()));
}

void copy(void* dst, const void* src, size_t bytes) {
  bind_thread();
  if (bytes) DS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

void sync() {
  bind_thread();
  DS_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

namespace {
// Pinned staging for copy_to_device_async: a ring of slots, each reused only once the copy
// that last read it has run (its event), so a staged copy never waits for the stream unless
// the host is kSlots uploads ahead of the GPU.
struct Staging {
  static constexpr int kSlots = 64;
  static constexpr size_t kSlotBytes = size_t(512) << 10;   // 32 MiB pinned in all
  std::mutex mu;
  unsigned char* host = nullptr;
  cudaEvent_t done[kSlots] = {};
  int next = 0;
};
Staging& staging() {
  static Staging* s = [] {
    auto* st = new Staging();
    DS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&st->host),
                                Staging::kSlots * Staging::kSlotBytes, cudaHostAllocDefault));
    for (cudaEvent_t& e : st->done)
      DS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return st;
  }();
  return *s;
}
}  // namespace

bool fused_ops() {
  static const bool on = [] {
    const char* v = std::getenv("DS_CUDA_FUSED");
    if (!v || !*v || std::strcmp(v, "1") == 0) return true;
    if (std::strcmp(v, "0") == 0) return false;
    throw_cuda_error(std::string("DS_CUDA_FUSED=") + v + ": expected 0 or 1", __FILE__,
                     __LINE__);
  }();
  return on;
}

void copy_to_device_async(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  bind_thread();
  if (!fused_ops()) {   // DS_CUDA_FUSED=0: the runtime stages the pageable source itself
    DS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
    return;
  }
  // A table larger than a slot (an AdamW table past 5,461 tensors, a full DeepSeek-V3
  // parameter list) goes through consecutive slots, one piece each: a pageable copy of that
  // size would wait for the stream to drain. Past the whole ring a piece waits for this
  // call's own earlier piece to be copied, which is already queued.
  Staging& s = staging();
  std::lock_guard<std::mutex> lock(s.mu);
  for (size_t off = 0; off < bytes; off += Staging::kSlotBytes) {
    const size_t n = std::min(Staging::kSlotBytes, bytes - off);
    const int i = s.next;
    s.next = (i + 1) % Staging::kSlots;
    DS_CUDA_CHECK(cudaEventSynchronize(s.done[i]));   // the slot's previous copy has run
    unsigned char* slot = s.host + size_t(i) * Staging::kSlotBytes;
    std::memcpy(slot, static_cast<const unsigned char*>(src) + off, n);
    DS_CUDA_CHECK(cudaMemcpyAsync(static_cast<unsigned char*>(dst) + off, slot, n,
                                  cudaMemcpyHostToDevice, stream()));
    DS_CUDA_CHECK(cudaEventRecord(s.done[i], stream()));
  }
}

namespace {
struct TimingEvents {
  std::mutex mu;
  std::vector<cudaEvent_t> free;
};
TimingEvents& timing_events() {
  static TimingEvents* t = new TimingEvents();   // never destroyed: events outlive statics
  return *t;
}
}  // namespace

void* timing_event_record() {
  TimingEvents& t = timing_events();
  cudaEvent_t e = nullptr;
  {
    std::lock_guard<std::mutex> lock(t.mu);
    if (!t.free.empty()) {
      e = t.free.back();
      t.free.pop_back();
    }
  }
  bind_thread();
  if (!e) DS_CUDA_CHECK(cudaEventCreate(&e));   // timing enabled
  const cudaError_t err = cudaEventRecord(e, stream());
  if (err != cudaSuccess) {   // back to the free list, not leaked
    std::lock_guard<std::mutex> lock(t.mu);
    t.free.push_back(e);
  }
  if (err != cudaSuccess) raise_cuda("cudaEventRecord", err, __FILE__, __LINE__);
  return e;
}

bool timing_event_done(void* e) {
  const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(e));
  if (err == cudaErrorNotReady) return false;
  if (err != cudaSuccess) raise_cuda("cudaEventQuery", err, __FILE__, __LINE__);
  return true;
}

float timing_event_elapsed_release(void* e0, void* e1) {
  auto a = static_cast<cudaEvent_t>(e0), b = static_cast<cudaEvent_t>(e1);
  float ms = 0;
  const cudaError_t err = cudaEventElapsedTime(&ms, a, b);
  TimingEvents& t = timing_events();
  {
    std::lock_guard<std::mutex> lock(t.mu);
    t.free.push_back(a);
    t.free.push_back(b);
  }
  if (err != cudaSuccess) raise_cuda("cudaEventElapsedTime", err, __FILE__, __LINE__);
  return ms;
}

size_t pool_reserved_bytes() {
  cudaMemPool_t pool;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetDefaultMemPool(&pool, dev) != cudaSuccess)
    return 0;
  uint64_t v = 0;
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &v);
  return size_t(v);
}
size_t pool_peak_used_bytes() { return g_peak.load(); }
void pool_reset_peak() { g_peak.store(g_used.load()); }

cublasHandle_t cublas() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_cublas) {
    DS_CUBLAS_CHECK(cublasCreate(&g_cublas));
    DS_CUBLAS_CHECK(cublasSetStream(g_cublas, stream()));
  }
  return g_cublas;
}

cublasLtHandle_t cublaslt() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_lt) DS_CUBLAS_CHECK(cublasLtCreate(&g_lt));
  return g_lt;
}

void* lt_workspace(size_t* bytes) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_lt_ws) DS_CUDA_CHECK(cudaMalloc(&g_lt_ws, kLtWorkspace));
  *bytes = kLtWorkspace;
  return g_lt_ws;
}

void* scratch(size_t bytes) {
  thread_local void* buf = nullptr;
  thread_local size_t cap = 0;
  if (bytes > cap) {
    if (buf) pool_free(buf);
    buf = nullptr;   // nothing held should the allocation below throw
    cap = 0;
    const size_t want = bytes < (size_t(1) << 20) ? (size_t(1) << 20) : bytes + bytes / 4;
    buf = pool_alloc(want);
    cap = want;
  }
  return buf;
}

int sm_count() { return g_sms; }
int sm_major() { return g_major; }

void set_device_info(int index);   // kernels/backend.cpp calls this once
void set_device_info(int index) {
  g_device = index;
  DS_CUDA_CHECK(cudaSetDevice(index));
  bind_thread();
  cudaDeviceProp p{};
  DS_CUDA_CHECK(cudaGetDeviceProperties(&p, index));
  g_sms = p.multiProcessorCount;
  g_major = p.major;
  cudaMemPool_t pool;
  DS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, index));
  uint64_t keep = UINT64_MAX;
  DS_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
}

}  // namespace ds::cuda

// TCP rendezvous for bootstrapping (the NCCL unique id of GPU runs launched without MPI):
// rank 0 listens on the port (all interfaces, IPv6 dual-stack when available) and answers each
// of the other ranks' hello with the blob. Never used for collectives.
// Wire format, little-endian: hello = u32 magic "DSRV", u32 rank; reply = u64 length, blob.
// reference: POSIX sockets (getaddrinfo, poll); include/ds/dist/topology.hpp tcp_rendezvous.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/dist/topology.hpp"

namespace ds::dist {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x56525344;          // "DSRV"
constexpr uint64_t kMaxBlob = uint64_t(64) << 20;  // a bootstrap blob, not a payload

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept { std::swap(fd, o.fd); return *this; }
  ~Fd() { if (fd >= 0) ::close(fd); }
};

int ms_left(Clock::time_point deadline) {
  auto d = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return d > 0 ? int(std::min<int64_t>(d, 1 << 30)) : 0;
}

// Waits until fd is readable/writable; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

// Reads or writes exactly n bytes before the deadline; false on EOF, error or timeout.
bool io_full(int fd, void* buf, size_t n, bool write, Clock::time_point deadline) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    if (!wait_fd(fd, write ? POLLOUT : POLLIN, deadline)) return false;
    ssize_t k = write ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) return false;
    p += k;
    n -= size_t(k);
  }
  return true;
}

void put_u32(char* p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = char(v >> (8 * i)); }
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(p[i])) << (8 * i);
  return v;
}

// A listening socket on every interface at `port`: IPv6 dual-stack, or IPv4 where IPv6 is off.
Fd listen_any(const std::string& where, int port, int backlog) {
  Fd s(::socket(AF_INET6, SOCK_STREAM, 0));
  const int one = 1, zero = 0;
  if (s.fd >= 0) {
    ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(s.fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(uint16_t(port));
    if (::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) s = Fd();
  }
  if (s.fd < 0) {
    s = Fd(::socket(AF_INET, SOCK_STREAM, 0));
    if (s.fd < 0) DS_THROW(IoError, "tcp rendezvous {}: socket: {}", where, std::strerror(errno));
    ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(uint16_t(port));
    if (::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      DS_THROW(IoError, "tcp rendezvous {}: cannot listen on port {}: {}", where, port,
               std::strerror(errno));
  }
  if (::listen(s.fd, backlog) != 0)
    DS_THROW(IoError, "tcp rendezvous {}: listen: {}", where, std::strerror(errno));
  return s;
}

std::string serve(const std::string& where, int port, int world_size, const std::string& blob,
                  Clock::time_point deadline, double timeout_s) {
  Fd lst = listen_any(where, port, world_size);
  std::vector<bool> seen(size_t(world_size), false);
  for (int done = 0; done < world_size - 1;) {
    if (!wait_fd(lst.fd, POLLIN, deadline))
      DS_THROW(IoError, "tcp rendezvous {}: only {} of {} ranks connected within {} s", where,
               done, world_size - 1, timeout_s);
    Fd c(::accept(lst.fd, nullptr, nullptr));
    if (c.fd < 0) continue;   // the peer gave up between poll and accept; it will retry
    char hello[8];
    if (!io_full(c.fd, hello, 8, false, deadline) || get_u32(hello) != kMagic) continue;
    const uint32_t r = get_u32(hello + 4);
    if (r == 0 || r >= uint32_t(world_size) || seen[r])
      DS_THROW(IoError, "tcp rendezvous {}: unexpected hello from rank {} (world of {})", where,
               r, world_size);
    char len[8];
    put_u32(len, uint32_t(blob.size()));
    put_u32(len + 4, uint32_t(uint64_t(blob.size()) >> 32));
    if (!io_full(c.fd, len, 8, true, deadline) ||
        !io_full(c.fd, const_cast<char*>(blob.data()), blob.size(), true, deadline))
      DS_THROW(IoError, "tcp rendezvous {}: sending to rank {} failed", where, r);
    seen[r] = true;
    ++done;
  }
  return blob;
}

// A connected socket to addr:port, retrying until the deadline (rank 0 may start later).
Fd connect_retry(const std::string& addr, int port, const std::string& where,
                 Clock::time_point deadline, double timeout_s) {
  std::string last = "no attempt";
  const std::string service = std::to_string(port);
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int gai = ::getaddrinfo(addr.c_str(), service.c_str(), &hints, &res);
    if (gai != 0) {
      last = ::gai_strerror(gai);
    } else {
      for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        Fd s(::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol));
        if (s.fd < 0) continue;
        // Bounds each attempt: a silent host must not eat the whole timeout in one connect.
        timeval tv{2, 0};
        ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (::connect(s.fd, ai->ai_addr, ai->ai_addrlen) == 0) {
          ::freeaddrinfo(res);
          return s;
        }
        last = std::strerror(errno);
      }
      ::freeaddrinfo(res);
    }
    if (ms_left(deadline) == 0)
      DS_THROW(IoError, "tcp rendezvous {}: cannot connect within {} s ({}); is rank 0 running "
               "and --master-addr/--master-port right?", where, timeout_s, last);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, ms_left(deadline))));
  }
}

std::string join(const std::string& addr, int port, int rank, const std::string& where,
                 Clock::time_point deadline, double timeout_s) {
  Fd s = connect_retry(addr, port, where, deadline, timeout_s);
  char hello[8];
  put_u32(hello, kMagic);
  put_u32(hello + 4, uint32_t(rank));
  char len[8];
  if (!io_full(s.fd, hello, 8, true, deadline) || !io_full(s.fd, len, 8, false, deadline))
    DS_THROW(IoError, "tcp rendezvous {}: no answer from rank 0 within {} s", where, timeout_s);
  const uint64_t n = uint64_t(get_u32(len)) | (uint64_t(get_u32(len + 4)) << 32);
  if (n > kMaxBlob) DS_THROW(IoError, "tcp rendezvous {}: blob of {} bytes announced", where, n);
  std::string blob(size_t(n), '\0');
  if (!io_full(s.fd, blob.data(), blob.size(), false, deadline))
    DS_THROW(IoError, "tcp rendezvous {}: connection closed during the blob", where);
  return blob;
}

}  // namespace

std::string tcp_rendezvous(const std::string& addr, int port, int rank, int world_size,
                           const std::string& blob, double timeout_s) {
  const std::string where = addr + ":" + std::to_string(port);
  if (world_size < 1 || rank < 0 || rank >= world_size)
    DS_THROW(UsageError, "tcp rendezvous {}: rank {} outside a world of {}", where, rank,
             world_size);
  if (port < 1 || port > 65535) DS_THROW(UsageError, "tcp rendezvous {}: bad port", where);
  if (world_size == 1) return blob;
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(int64_t(std::max(0.0, timeout_s) * 1000.0));
  if (rank == 0) return serve(where, port, world_size, blob, deadline, timeout_s);
  if (addr.empty())
    DS_THROW(UsageError, "tcp rendezvous: rank {} needs --master-addr (the host of rank 0)", rank);
  return join(addr, port, rank, where, deadline, timeout_s);
}

}  // namespace ds::dist

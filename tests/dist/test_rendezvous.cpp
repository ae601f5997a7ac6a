// tcp_rendezvous between threads on localhost: the blob reaches every rank; a rank with no one
// listening, and a rank 0 nobody joins, fail with IoError naming addr:port after the timeout.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/dist/topology.hpp"

using ds::dist::tcp_rendezvous;

namespace {

// A port that was free a moment ago (the kernel picks it; SO_REUSEADDR lets us take it again).
int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(s >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(s);
  return ntohs(a.sin_port);
}

template <typename F>
std::string io_error(F&& f) {
  try {
    f();
  } catch (const ds::IoError& e) {
    return e.what();
  }
  return "(no IoError)";
}

}  // namespace

TEST_CASE("tcp_rendezvous: rank 0's blob reaches every rank, whoever starts first") {
  const int port = free_port();
  const int W = 4;
  std::string blob(128, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = char(i * 37 + 1);   // includes NUL bytes
  std::vector<std::future<std::string>> ranks;
  // Clients first: they retry until rank 0 listens.
  for (int r = 1; r < W; ++r)
    ranks.push_back(std::async(std::launch::async, [=] {
      return tcp_rendezvous("127.0.0.1", port, r, W, "", 20.0);
    }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(tcp_rendezvous("127.0.0.1", port, 0, W, blob, 20.0) == blob);
  for (auto& f : ranks) CHECK(f.get() == blob);
  // A hostname, and a second round on the same port straight away (SO_REUSEADDR).
  auto one = std::async(std::launch::async, [=] {
    return tcp_rendezvous("localhost", port, 1, 2, "", 20.0);
  });
  CHECK(tcp_rendezvous("localhost", port, 0, 2, "id", 20.0) == "id");
  CHECK(one.get() == "id");
  CHECK(tcp_rendezvous("", port, 0, 1, "alone", 1.0) == "alone");
}

TEST_CASE("tcp_rendezvous: timeouts name addr:port") {
  const int port = free_port();
  const std::string where = "127.0.0.1:" + std::to_string(port);
  std::string msg = io_error([&] { tcp_rendezvous("127.0.0.1", port, 1, 2, "", 0.5); });
  CHECK(msg.find(where) != std::string::npos);
  CHECK(msg.find("cannot connect") != std::string::npos);
  msg = io_error([&] { tcp_rendezvous("127.0.0.1", port, 0, 3, "x", 0.3); });
  CHECK(msg.find(where) != std::string::npos);
  CHECK(msg.find("0 of 2 ranks") != std::string::npos);
  CHECK_THROWS_AS(tcp_rendezvous("127.0.0.1", port, 2, 2, "", 0.1), ds::UsageError);
}

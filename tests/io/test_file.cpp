// Atomic writes: nothing visible until commit; an abandoned write leaves no file behind; links
// written through, FIFOs and devices written into. read_input's one read of a FIFO. Status
// reads that fail for another reason than a missing path.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"

namespace fs = std::filesystem;

TEST_CASE("AtomicFile publishes only on commit") {
  fs::path dir = fs::temp_directory_path() / "ds_test_io_atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path p = dir / "out.bin";
  {
    ds::io::AtomicFile f(p);
    f.write("hello");
    CHECK_FALSE(fs::exists(p));
    f.pwrite("J", 1, 0);
    f.commit();
  }
  CHECK(ds::io::read_file(p) == "Jello");
  {
    ds::io::AtomicFile f(p);
    f.write("partial");
    // destroyed without commit: the old file stays, the temporary file is gone
  }
  CHECK(ds::io::read_file(p) == "Jello");
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) { (void)e; ++n; }
  CHECK(n == 1);
  CHECK_THROWS_AS(ds::io::read_file(dir / "missing"), ds::IoError);
  fs::remove_all(dir);
}

TEST_CASE("exists / is_directory / is_regular_file: an unreadable status is an IoError") {
  const fs::path dir = fs::temp_directory_path() / "ds_test_io_status";
  fs::remove_all(dir);
  fs::create_directories(dir / "d");
  ds::io::write_file_atomic(dir / "f", "x");
  CHECK(ds::io::exists(dir / "f"));
  CHECK(ds::io::is_regular_file(dir / "f"));
  CHECK(ds::io::is_directory(dir / "d"));
  CHECK_FALSE(ds::io::exists(dir / "missing"));
  CHECK_FALSE(ds::io::is_directory(dir / "f"));
  CHECK_FALSE(ds::io::exists(dir / "f" / "below_a_file"));  // ENOTDIR reads as missing
  // a name over NAME_MAX (a shard name taken from an index file): std::filesystem throws its
  // own filesystem_error here, which no reader catches
  const fs::path long_name = dir / std::string(300, 'l');
  try {
    (void)ds::io::exists(long_name);
    FAIL("a name too long was read as a status");
  } catch (const ds::IoError& e) {
    CHECK(std::string(e.what()).find(std::string(300, 'l')) != std::string::npos);
  }
  CHECK_THROWS_AS((void)ds::io::is_directory(long_name), ds::IoError);
  CHECK_THROWS_AS((void)ds::io::is_regular_file(long_name), ds::IoError);
  fs::remove_all(dir);
}

TEST_CASE("is_inside: relative and absolute spellings, missing paths, links") {
  using ds::io::is_inside;
  const fs::path dir = fs::temp_directory_path() / "ds_test_io_inside";
  fs::remove_all(dir);
  fs::create_directories(dir / "a");
  fs::create_directory_symlink(dir / "a", dir / "link");
  CHECK(is_inside(dir / "a", dir / "a"));
  CHECK(is_inside(dir / "a" / "b" / "c", dir / "a"));         // need not exist
  CHECK(is_inside(dir / "link" / "x", dir / "a"));            // through the link
  CHECK(is_inside(dir / "a" / "x", dir / "a" / ""));          // a trailing slash
  CHECK(is_inside(dir / "a" / ".." / "a" / "x", dir / "a"));
  CHECK_FALSE(is_inside(dir / "ab", dir / "a"));              // a prefix is not a parent
  CHECK_FALSE(is_inside(dir, dir / "a"));
  CHECK_FALSE(is_inside(dir / "a", ""));
  // a missing relative path and the same path spelled ./
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  CHECK(is_inside("run", "./run"));
  CHECK(is_inside("run/m", "run/"));
  CHECK_FALSE(is_inside("run2", "run"));
  fs::current_path(cwd);
  fs::remove_all(dir);
}

TEST_CASE("AtomicFile writes through a link and straight into a FIFO or device") {
  const fs::path dir = fs::temp_directory_path() / "ds_test_io_atomic_links";
  fs::remove_all(dir);
  fs::create_directories(dir / "real");
  // a link to a regular file: the target is replaced, the link stays a link
  ds::io::write_file_atomic(dir / "real" / "r.json", "old");
  fs::create_symlink("real/r.json", dir / "link.json");
  ds::io::write_file_atomic(dir / "link.json", "new");
  CHECK(fs::is_symlink(dir / "link.json"));
  CHECK(ds::io::read_file(dir / "real" / "r.json") == "new");
  // a dangling link: its target is created
  fs::create_symlink("real/made.json", dir / "dangling.json");
  ds::io::write_file_atomic(dir / "dangling.json", "made");
  CHECK(fs::is_symlink(dir / "dangling.json"));
  CHECK(ds::io::read_file(dir / "real" / "made.json") == "made");
  // a device is written into, never replaced (ds-eval --out /dev/null once made it a file)
  if (fs::exists("/dev/null")) {
    ds::io::write_file_atomic("/dev/null", "discarded");
    CHECK(fs::is_character_file("/dev/null"));
    ds::io::AtomicFile f("/dev/null");
    CHECK_THROWS_AS(f.pwrite("x", 1, 0), ds::IoError);   // nothing to patch
  }
  // a FIFO: the reader gets the bytes, the FIFO stays one
  const fs::path fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string got;
  std::thread reader([&] { got = ds::io::read_file(fifo); });
  CHECK_NOTHROW(ds::io::write_file_atomic(fifo, "through the pipe"));
  const int unblock = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);   // should the write fail
  if (unblock >= 0) ::close(unblock);
  reader.join();
  CHECK(got == "through the pipe");
  CHECK(fs::is_fifo(fifo));
  size_t n = 0;   // no temporary file left anywhere
  for (auto& e : fs::recursive_directory_iterator(dir))
    n += e.path().string().find(".tmp.") != std::string::npos;
  CHECK(n == 0);
  fs::remove_all(dir);
}

TEST_CASE("read_input: a FIFO is read once, a later read gets the same bytes") {
  const fs::path dir = fs::temp_directory_path() / "ds_test_io_read_input";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::thread writer([&] { ds::io::write_file_atomic(fifo, "{\"a\":1}\n"); });
  std::string first;
  CHECK_NOTHROW(first = ds::io::read_input(fifo));
  const int unblock = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);   // should the read fail
  writer.join();
  ::close(unblock);
  CHECK(first == "{\"a\":1}\n");
  // no writer now: a second open of the FIFO would wait forever; the kept bytes come back
  CHECK(ds::io::read_input(fifo) == "{\"a\":1}\n");
  // a regular file is read anew
  ds::io::write_file_atomic(dir / "f", "one");
  CHECK(ds::io::read_input(dir / "f") == "one");
  ds::io::write_file_atomic(dir / "f", "two");
  CHECK(ds::io::read_input(dir / "f") == "two");
  CHECK_THROWS_AS(ds::io::read_input(dir / "missing"), ds::IoError);
  fs::remove_all(dir);
}

TEST_CASE("AtomicFile on /proc/self/fd/N: this process's stream, written at its offset") {
  const fs::path dir = fs::temp_directory_path() / "ds_test_io_fd_link";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path f = dir / "all.jsonl";   // as `tool --out /dev/stdout >> all.jsonl`
  ds::io::write_file_atomic(f, "earlier\n");
  const int fd = ::open(f.c_str(), O_WRONLY | O_APPEND);
  REQUIRE(fd >= 0);
  struct stat before {};
  REQUIRE(::fstat(fd, &before) == 0);
  const fs::path link = "/proc/self/fd/" + std::to_string(fd);
  CHECK(ds::io::open_fd_link(link) == fd);
  CHECK(ds::io::open_fd_link("/dev/fd/" + std::to_string(fd)) == fd);
  CHECK_FALSE(ds::io::open_fd_link(f).has_value());
  CHECK_FALSE(ds::io::open_fd_link("/proc/self/fd/999999").has_value());   // not open
  ds::io::write_file_atomic(link, "report\n");   // was: renamed over all.jsonl, "earlier" lost
  ::close(fd);
  struct stat after {};
  REQUIRE(::stat(f.c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);
  CHECK(ds::io::read_file(f) == "earlier\nreport\n");
  fs::remove_all(dir);
}

TEST_CASE("copy_file: the bytes in pieces, and errors that name the file and the cause") {
  const fs::path dir = fs::temp_directory_path() / "ds_test_io_copy";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string big((size_t(1) << 20) * 2 + 77, '\0');   // more than one piece
  for (size_t i = 0; i < big.size(); ++i) big[i] = char(i * 131 % 251);
  ds::io::write_file_atomic(dir / "src", big);
  ds::io::copy_file(dir / "src", dir / "dst");
  CHECK(ds::io::read_file(dir / "dst") == big);
  for (const auto mode : {fs::perms(0600), fs::perms(0755)}) {   // the mode is kept
    fs::permissions(dir / "src", mode);
    ds::io::copy_file(dir / "src", dir / "dst");
    CHECK((fs::status(dir / "dst").permissions() & fs::perms::all) == mode);
  }
  auto message = [](const fs::path& s, const fs::path& d) -> std::string {
    try {
      ds::io::copy_file(s, d);
    } catch (const ds::IoError& e) {
      return e.what();
    }
    return "";
  };
  const std::string missing = message(dir / "missing", dir / "dst2");
  CHECK(missing.find("missing: cannot open") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "dst2"));
  if (fs::exists("/dev/full")) {   // a full disk says so (fs::copy_file's sendfile said EIO)
    const std::string full = message(dir / "src", "/dev/full");
    INFO(full);
    CHECK(full.find(std::strerror(ENOSPC)) != std::string::npos);
  }
  fs::remove_all(dir);
}

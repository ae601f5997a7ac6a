// Atomic writes: nothing visible until commit; an abandoned write leaves no file behind.
#include <doctest/doctest.h>

#include <filesystem>

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

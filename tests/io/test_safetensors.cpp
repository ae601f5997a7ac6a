// safetensors: round trips of every dtype, F32 conversion, the header layout HF expects,
// rejection of corrupt files (FormatError naming the file), sharded writes + index reads.
// reference: huggingface/safetensors format; include/ds/io/safetensors.hpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ds/core/error.hpp"
#include "ds/io/file.hpp"
#include "ds/io/safetensors.hpp"

namespace fs = std::filesystem;
using ds::DType;
using ds::io::SafetensorsDir;
using ds::io::SafetensorsFile;
using ds::io::TensorSource;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("ds_test_st_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<uint8_t> pattern_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) { x = x * 1664525u + 1013904223u; b = uint8_t(x >> 24); }
  return v;
}

// Builds a file from raw header text and data, with an optionally forged header length.
void write_raw(const fs::path& p, const std::string& header, const std::string& data,
               int64_t forced_len = -1) {
  uint64_t n = forced_len >= 0 ? uint64_t(forced_len) : header.size();
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(n >> (8 * i));
  ds::io::write_file_atomic(p, s + header + data);
}

// Expects FormatError whose message names the file and contains `what`.
void expect_format_error(const fs::path& p, const std::string& what) {
  try {
    SafetensorsFile f(p);
    FAIL("no error for " << p.string());
  } catch (const ds::FormatError& e) {
    std::string m = e.what();
    CHECK_MESSAGE(m.find(p.string()) != std::string::npos, m);
    CHECK_MESSAGE(m.find(what) != std::string::npos, m);
  }
}

}  // namespace

TEST_CASE("safetensors round trip of every dtype, with HF header layout") {
  fs::path d = fresh_dir("rt");
  struct Item { std::string name; DType dt; ds::Shape shape; std::vector<uint8_t> bytes; };
  std::vector<Item> items;
  uint32_t seed = 1;
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f8_e4m3, DType::f8_e5m2,
                   DType::i32, DType::i64, DType::u8, DType::u16, DType::u32}) {
    ds::Shape s = {3, int64_t(seed % 4 + 1), 5};
    items.push_back({"t." + std::string(ds::dtype_name(dt)), dt, s,
                     pattern_bytes(size_t(ds::shape_numel(s)) * ds::dtype_size(dt), seed++)});
  }
  items.push_back({"scalar", DType::f32, {}, pattern_bytes(4, 99)});
  items.push_back({"empty", DType::bf16, {0, 7}, {}});
  std::vector<TensorSource> src;
  for (auto& it : items)
    src.push_back(TensorSource::raw(it.name, it.dt, it.shape, it.bytes.data()));
  fs::path p = d / "x.safetensors";
  ds::io::write_safetensors(p, src, {{"note", "hello"}});

  SafetensorsFile f(p);
  CHECK((8 + f.header_size()) % 8 == 0);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "hello");
  REQUIRE(f.names().size() == items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    CHECK(f.names()[i] == items[i].name);   // offset order == order given
    const auto& v = f.get(items[i].name);
    CHECK(v.dtype == items[i].dt);
    CHECK(v.shape == items[i].shape);
    REQUIRE(v.nbytes == items[i].bytes.size());
    CHECK(std::equal(items[i].bytes.begin(), items[i].bytes.end(), v.data));   // (none: empty)
  }
  // header text: __metadata__ first, tensors in the order given, space padding only
  std::string all = ds::io::read_file(p);
  std::string header = all.substr(8, f.header_size());
  CHECK(header.find("{\"__metadata__\"") == 0);
  CHECK(header.find("\"t.F32\"") < header.find("\"t.BF16\""));
  size_t last = header.find_last_not_of(' ');
  CHECK(header[last] == '}');
  CHECK_THROWS_AS(f.get("nope"), ds::FormatError);
  fs::remove_all(d);
}

TEST_CASE("to_f32 converts F32, BF16 (from an F32 master) and F16") {
  fs::path d = fresh_dir("f32");
  ds::Tensor t = ds::Tensor::empty({4, 3});
  for (int i = 0; i < 12; ++i) t.f32()[i] = float(i) * 0.37f - 1.9f + (i == 5 ? 1e-3f : 0.f);
  std::vector<TensorSource> src = {TensorSource::from_tensor("a", t, DType::f32),
                                   TensorSource::from_tensor("b", t, DType::bf16),
                                   TensorSource::from_tensor("c", t, DType::f16)};
  std::vector<uint8_t> f8(12, 0x38);   // 1.0 in e4m3
  src.push_back(TensorSource::raw("q", DType::f8_e4m3, {4, 3}, f8.data()));
  ds::io::write_safetensors(d / "m.safetensors", src);
  SafetensorsFile f(d / "m.safetensors");
  CHECK(f.get("b").dtype == DType::bf16);
  ds::Tensor a = f.load_f32("a"), b = f.load_f32("b"), c = f.load_f32("c");
  CHECK(a.shape() == ds::Shape{4, 3});
  for (int i = 0; i < 12; ++i) {
    float x = t.f32()[i];
    CHECK(a.f32()[i] == x);
    CHECK(b.f32()[i] == ds::bf16_to_f32(ds::f32_to_bf16(x)));
    CHECK(c.f32()[i] == ds::f16_to_f32(ds::f32_to_f16(x)));
    CHECK(std::fabs(b.f32()[i] - x) <= std::fabs(x) * (1.0f / 256));
  }
  CHECK(b.f32()[1] != t.f32()[1]);   // bf16 really rounds (0.37 - 1.9 is not representable)
  CHECK_THROWS_AS(f.load_f32("q"), ds::FormatError);   // FP8 needs its scales
  CHECK(f.get("q").data[0] == 0x38);                    // but is exposed raw
  fs::remove_all(d);
}

TEST_CASE("first_nonfinite_released: positions past the first 16 MiB piece; data still readable") {
  fs::path d = fresh_dir("released");
  const int64_t n = (int64_t(9) << 20) + 5;   // 9 Mi + 5 BF16 values: 16 MiB + 16 MiB + a tail
  std::vector<uint16_t> v(size_t(n), ds::f32_to_bf16(1.0f));
  std::vector<uint16_t> clean = v;
  v[size_t(n - 2)] = 0x7fc0;   // NaN in the last piece
  ds::io::write_safetensors(d / "m.safetensors",
                            {TensorSource::raw("nan", DType::bf16, {n}, v.data()),
                             TensorSource::raw("ok", DType::bf16, {n}, clean.data())});
  SafetensorsFile f(d / "m.safetensors");
  CHECK(ds::io::first_nonfinite_released(f.get("nan")) == n - 2);
  CHECK(ds::io::first_nonfinite(f.get("nan")) == n - 2);
  CHECK_FALSE(ds::io::first_nonfinite_released(f.get("ok")).has_value());
  // the released pages fault back in from the file
  const auto* back = reinterpret_cast<const uint16_t*>(f.get("nan").data);
  CHECK(back[0] == v[0]);
  CHECK(back[size_t(n - 2)] == 0x7fc0);
  fs::remove_all(d);
}

TEST_CASE("corrupt safetensors files are rejected with FormatError naming the file") {
  fs::path d = fresh_dir("bad");
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string data(16, '\1');
  fs::path p = d / "bad.safetensors";

  write_raw(p, ok, data);
  CHECK_NOTHROW(SafetensorsFile{p});   // the baseline is valid (no padding is legal)

  ds::io::write_file_atomic(p, std::string("\x05\0\0", 3));
  expect_format_error(p, "8-byte");                          // shorter than the length field
  write_raw(p, ok, data.substr(0, 10));
  expect_format_error(p, "w");                               // truncated data
  write_raw(p, ok, data, int64_t(ok.size()) + 100);
  expect_format_error(p, "header length");                   // length beyond the file
  write_raw(p, ok, data, int64_t(1) << 40);
  expect_format_error(p, "header length");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})", data);
  expect_format_error(p, "JSON");                            // bad JSON
  write_raw(p, R"([1,2])", "");
  expect_format_error(p, "object");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,32]}})", data);
  expect_format_error(p, "out of range");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", data);
  expect_format_error(p, "needs 24");                        // shape/offset mismatch
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,0]},)"
               R"("v":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data);
  expect_format_error(p, "needs 2^64 bytes or more");   // not wrapped around to 0 bytes
  write_raw(p, R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", data);
  expect_format_error(p, "unknown dtype F64");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}})", data);
  expect_format_error(p, "non-negative");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2,2]}})", data);
  expect_format_error(p, "data_offsets");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data.substr(0, 12));
  expect_format_error(p, "overlaps");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data);
  expect_format_error(p, "unused bytes");                    // hole before the data
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data);
  expect_format_error(p, "after the last");                  // trailing garbage
  write_raw(p, R"({"__metadata__":{"format":1}})", "");
  expect_format_error(p, "__metadata__");
  write_raw(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data);
  expect_format_error(p, "key \"w\" appears twice");    // the last would win silently
  CHECK_THROWS_AS(SafetensorsFile{d / "missing.safetensors"}, ds::IoError);
  fs::remove_all(d);
}

TEST_CASE("sharded write with index, read back through SafetensorsDir") {
  fs::path d = fresh_dir("shard");
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<TensorSource> src;
  const int64_t rows[] = {10, 30, 5, 40, 1};   // bytes = rows * 16
  for (int i = 0; i < 5; ++i) {
    bufs.push_back(pattern_bytes(size_t(rows[i]) * 16, uint32_t(i + 7)));
    src.push_back(TensorSource::raw("layer." + std::to_string(i), DType::f32, {rows[i], 4},
                                    bufs.back().data()));
  }
  // limit 600 B, greedy: {0:160} | {1:480, 2:80} | {3:640, alone, over the limit} | {4:16}
  auto files = ds::io::write_safetensors_dir(d, src, 600);
  REQUIRE(files.size() == 5);
  CHECK(files[0] == "model-00001-of-00004.safetensors");
  CHECK(files[3] == "model-00004-of-00004.safetensors");
  CHECK(files[4] == "model.safetensors.index.json");
  CHECK_FALSE(fs::exists(d / "model.safetensors"));
  auto idx = nlohmann::json::parse(ds::io::read_file(d / "model.safetensors.index.json"));
  CHECK(idx["metadata"]["total_size"].get<uint64_t>() == (10 + 30 + 5 + 40 + 1) * 16);
  CHECK(idx["weight_map"]["layer.2"] == "model-00002-of-00004.safetensors");
  CHECK(idx["weight_map"]["layer.3"] == "model-00003-of-00004.safetensors");

  SafetensorsDir dir(d);
  CHECK(dir.num_files() == 4);
  CHECK(dir.names().size() == 5);
  for (int i = 0; i < 5; ++i) {
    const auto& v = dir.get("layer." + std::to_string(i));
    CHECK(v.shape == ds::Shape{rows[i], 4});
    CHECK(std::memcmp(v.data, bufs[size_t(i)].data(), v.nbytes) == 0);
  }
  CHECK(dir.file_of("layer.4").filename() == "model-00004-of-00004.safetensors");
  CHECK_THROWS_AS(dir.get("layer.9"), ds::FormatError);

  // everything fits: a single model.safetensors, no index
  fs::path d1 = fresh_dir("single");
  auto one = ds::io::write_safetensors_dir(d1, src, uint64_t(1) << 30);
  CHECK(one == std::vector<std::string>{"model.safetensors"});
  CHECK_FALSE(fs::exists(d1 / "model.safetensors.index.json"));
  // both layouts in one directory: ambiguous (transformers would load the single file)
  fs::copy_file(d1 / "model.safetensors", d / "model.safetensors");
  CHECK_THROWS_WITH_AS(SafetensorsDir{d}, doctest::Contains("both model.safetensors and "
                                                            "model.safetensors.index.json"),
                       ds::FormatError);
  fs::remove(d / "model.safetensors");
  SafetensorsDir single(d1);
  CHECK(single.names().size() == 5);
  // unless the index maps every tensor to model.safetensors itself (some hub repositories)
  nlohmann::json self = idx;
  for (auto& [name, file] : self["weight_map"].items()) file = "model.safetensors";
  ds::io::write_file_atomic(d1 / "model.safetensors.index.json", self.dump());
  CHECK(SafetensorsDir(d1).names().size() == 5);
  self["weight_map"] = nlohmann::json::object();   // an empty index would hide the file's tensors
  ds::io::write_file_atomic(d1 / "model.safetensors.index.json", self.dump());
  CHECK_THROWS_WITH_AS(SafetensorsDir{d1}, doctest::Contains("a stale one?"), ds::FormatError);
  fs::remove(d1 / "model.safetensors.index.json");
  CHECK(SafetensorsDir(d1 / "model.safetensors").num_files() == 1);

  // a missing shard, and an index naming a tensor its shard lacks
  fs::rename(d / files[2], d / "moved");
  try {
    SafetensorsDir broken(d);
    FAIL("missing shard accepted");
  } catch (const ds::IoError& e) {
    CHECK(std::string(e.what()).find("model-00003-of-00004.safetensors") != std::string::npos);
  }
  fs::rename(d / "moved", d / files[2]);
  idx["weight_map"]["ghost"] = "model-00001-of-00004.safetensors";
  ds::io::write_file_atomic(d / "model.safetensors.index.json", idx.dump());
  try {
    SafetensorsDir broken(d);
    FAIL("index naming an absent tensor accepted");
  } catch (const ds::FormatError& e) {
    CHECK(std::string(e.what()).find("ghost") != std::string::npos);
  }
  // ... and a shard holding a tensor the index does not map (it was silently left out)
  idx["weight_map"].erase("ghost");
  idx["weight_map"].erase("layer.2");
  ds::io::write_file_atomic(d / "model.safetensors.index.json", idx.dump());
  try {
    SafetensorsDir broken(d);
    FAIL("unmapped tensor accepted");
  } catch (const ds::FormatError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("model-00002-of-00004.safetensors: tensor layer.2 is not in") !=
          std::string::npos);
  }
  CHECK_THROWS_AS(SafetensorsDir(fresh_dir("nothing")), ds::IoError);
  // a shard that is a directory: named as such (mmap said "No such device")
  const fs::path as_dir = fresh_dir("dir-shard") / "model.safetensors";
  fs::create_directories(as_dir);
  CHECK_THROWS_WITH_AS(ds::io::SafetensorsFile{as_dir},
                       doctest::Contains("model.safetensors: not a regular file (a directory)"),
                       ds::IoError);
  fs::remove_all(d);
  fs::remove_all(d1);
}

// Writes the seed corpora of the file-format fuzz targets (scripts/fuzz.sh) under one root:
//   ROOT/fuzz_shard_reader/   small valid token shards (2- and 4-byte tokens, empty documents,
//                             several blocks);
//   ROOT/fuzz_safetensors/    a selector byte (0: a file, 1: an index) and a valid file or
//                             model.safetensors.index.json;
//   ROOT/fuzz_model_config/   the presets' config.json, one with an FP8 quantization_config;
//   ROOT/fuzz_jsonl_records/  a selector byte (0-2: an SFT line, 3: an RL prompt file, 4-5: a
//                             messages array, 6: a tokenizer_config.json, 7: a
//                             generation_config.json) and text;
//   ROOT/fuzz_run_files/      two selector bytes and a trainer_state.json, a metrics file or a
//                             dataset's manifest.json;
//   ROOT/fuzz_eval_tasks/     two selector bytes and a PIQA (with its labels), ARC-style,
//                             HellaSwag-style or GSM8K file.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ds/data/shard.hpp"
#include "ds/io/safetensors.hpp"
#include "ds/model/config.hpp"
#include "ds/tokenizer/bpe_trainer.hpp"

namespace {

namespace fs = std::filesystem;

// The selector bytes of the target, then the text.
void write_seed(const fs::path& path, std::initializer_list<char> selector,
                const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  for (char c : selector) f.put(c);
  f << text;
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

std::string read_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void shard_seeds(const fs::path& dir) {
  struct Seed { const char* name; uint32_t vocab; uint32_t block; int docs; };
  const Seed seeds[] = {{"seed-w2.dst", 300, 16, 3}, {"seed-w4.dst", 129280, 8, 4},
                        {"seed-empty.dst", 50, 4, 0}};
  for (const auto& s : seeds) {
    ds::data::ShardWriter w(dir / s.name, s.vocab, "0123456789abcdef", s.block);
    for (int d = 0; d < s.docs; ++d) {
      std::vector<uint32_t> toks;
      for (int i = 0; i < 5 + 7 * d; ++i) toks.push_back(uint32_t((i * 37 + d) % s.vocab));
      if (d == 1) toks.clear();   // an empty document
      w.append(toks);
      w.end_document();
    }
    w.finish();
  }
}

void safetensors_seeds(const fs::path& dir) {
  const float f[6] = {1.0f, -2.0f, 0.5f, 3.0f, 0.0f, -0.25f};
  const uint16_t h[4] = {0x3f80, 0xc000, 0x3c00, 0x0000};
  const int32_t i[2] = {7, -1};
  using ds::io::TensorSource;
  const fs::path tmp = dir / "tmp.safetensors";
  ds::io::write_safetensors(tmp, {TensorSource::raw("w", ds::DType::f32, {2, 3}, f),
                                  TensorSource::raw("b", ds::DType::bf16, {4}, h),
                                  TensorSource::raw("h", ds::DType::f16, {2, 2}, h),
                                  TensorSource::raw("n", ds::DType::i32, {2}, i),
                                  TensorSource::raw("e", ds::DType::f32, {0}, f)},
                            {{"note", "seed"}});
  write_seed(dir / "seed-file", {0}, read_bytes(tmp));
  ds::io::write_safetensors(tmp, {});
  write_seed(dir / "seed-empty", {0}, read_bytes(tmp));
  fs::remove(tmp);
  // the shards fuzz_safetensors writes beside the index hold a, b and c
  write_seed(dir / "seed-index", {1},
             R"({"metadata":{"total_size":28},"weight_map":{"a":"model-00001-of-00002.)"
             R"(safetensors","b":"model-00001-of-00002.safetensors",)"
             R"("c":"model-00002-of-00002.safetensors"}})");
}

void config_seeds(const fs::path& dir) {
  for (const auto& name : ds::model::preset_names())
    write_seed(dir / ("seed-" + name + ".json"), {},
               ds::model::to_hf_json(ds::model::preset(name)));
  // an FP8 checkpoint's config (read_quant_config)
  auto fp8 = nlohmann::json::parse(ds::model::to_hf_json(ds::model::preset("tiny")));
  fp8["quantization_config"] = {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"},
                                {"quant_method", "fp8"}, {"weight_block_size", {128, 128}}};
  write_seed(dir / "seed-tiny-fp8.json", {}, fp8.dump());
}

void jsonl_seeds(const fs::path& dir) {
  const std::string chat =
      R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},)"
      R"({"role":"assistant","content":"Hello."},{"role":"user","content":"2+2?"},)"
      R"({"role":"assistant","content":"4"}]})";
  const std::string tools =
      R"({"messages":[{"role":"user","content":"time?"},{"role":"assistant","content":null,)"
      R"("tool_calls":[{"type":"function","function":{"name":"now","arguments":"{}"}}]},)"
      R"({"role":"tool","content":"12:00"},{"role":"assistant","content":"Noon."}]})";
  const std::string pc = R"({"prompt":"Add 2 and 3.","completion":"5","system":"Math."})";
  write_seed(dir / "seed-sft-chat", {0}, chat);
  write_seed(dir / "seed-sft-tools", {1}, tools);
  write_seed(dir / "seed-sft-pc", {2}, pc);
  write_seed(dir / "seed-messages", {4},
             R"([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},)"
             R"({"role":"assistant","content":null,"tool_calls":[{"type":"function",)"
             R"("function":{"name":"now","arguments":"{}"}}]},{"role":"tool","content":"12"}])");
  write_seed(dir / "seed-messages-gen", {5}, R"([{"role":"user","content":"2+2?"}])");
  nlohmann::json cfg = {{"bos_token", {{"content", "<｜begin▁of▁sentence｜>"}}},
                        {"eos_token", "<｜end▁of▁sentence｜>"},
                        {"chat_template", std::string(ds::tok::ds_chat_template())}};
  write_seed(dir / "seed-tokenizer-config", {6}, cfg.dump());
  write_seed(dir / "seed-generation-config", {7},
             R"({"_from_model_config": true, "bos_token_id": 0, "eos_token_id": [1, 7],)"
             R"( "do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20,)"
             R"( "max_new_tokens": 64, "stop_strings": ["\n\n"], "repetition_penalty": 1.1})");
  write_seed(dir / "seed-rl", {3},
             R"({"prompt":"What is 6*7?","reference":"42"})" "\n\n"
             R"({"messages":[{"role":"user","content":"Capital of France?"}],"answer":"Paris"})"
             "\n");
}

void run_file_seeds(const fs::path& dir) {
  write_seed(dir / "seed-state", {0, 0},
             R"({"format":"ds-trainer-state","version":1,"kind":"sft","step":12,)"
             R"("tokens_seen":3072,"data":{"epoch":1,"position":4},"nonfinite_skipped":0,)"
             R"("optimizer_steps":12,"seed":1234,"seq_len":256,"total_steps":100,)"
             R"("total_tokens":0,"data_fingerprint":"0123456789abcdef"})");
  write_seed(dir / "seed-metrics", {1, 2},
             R"({"step":1,"loss":10.5,"lr":0.001})" "\n"
             R"({"step":2,"loss":9.25,"val_loss":9.5})" "\n"
             R"({"step":3,"loss":8.0})" "\n");
  // Blank lines and a last line without its newline (once kept as they were: CI's fuzz run).
  write_seed(dir / "seed-metrics-blank", {1, 7}, "\n\n" R"({"step":1})" "\n\n" R"({"step":2})");
  const fs::path tmp = dir / "tmp-dataset";
  ds::data::DatasetWriter w(tmp, 300, "0123456789abcdef", 64, 16);
  for (int d = 0; d < 3; ++d) {
    std::vector<uint32_t> toks;
    for (int i = 0; i < 40 + d; ++i) toks.push_back(uint32_t((i * 7 + d) % 300));
    w.add_document(toks);
  }
  w.finish(R"({"source":"seed","fim_rate":0.5})");
  write_seed(dir / "seed-manifest", {2, 0}, read_bytes(tmp / "manifest.json"));
  fs::remove_all(tmp);
}

void eval_seeds(const fs::path& dir) {
  write_seed(dir / "seed-piqa", {0, 1},
             std::string(R"({"goal":"Open a jar","sol1":"Twist the lid.","sol2":"Eat it."})"
                         "\n"
                         R"({"goal":"Dry hair","sol1":"Use a towel.","sol2":"Use water."})"
                         "\n") +
                 std::string(1, '\0') + "0\n0\n");
  write_seed(dir / "seed-arc", {1, 1},
             R"({"question":"Which is a gas?","choices":{"text":["ice","steam","rock"],)"
             R"("label":["A","B","C"]},"answerKey":"B"})" "\n"
             R"({"question":"2+2?","choices":{"text":["3","4"]},"answerKey":"2"})" "\n");
  write_seed(dir / "seed-hellaswag", {2, 1},
             R"({"ctx":"He picks up the ball and","ending0":"throws it.","ending1":"eats it.",)"
             R"("ending2":"sings.","ending3":"sleeps.","label":1})" "\n");
  write_seed(dir / "seed-gsm8k", {3, 1},
             R"({"question":"Tom has 3 apples and buys 4. How many?",)"
             R"("answer":"3 + 4 = 7\n#### 7"})" "\n"
             R"({"question":"Half of $1,250?","answer":"#### 625.00"})" "\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds CORPUS_ROOT\n");
    return 2;
  }
  try {
    const fs::path root = argv[1];
    for (const char* t : {"fuzz_shard_reader", "fuzz_safetensors", "fuzz_model_config",
                          "fuzz_jsonl_records", "fuzz_run_files", "fuzz_eval_tasks"})
      fs::create_directories(root / t);
    shard_seeds(root / "fuzz_shard_reader");
    safetensors_seeds(root / "fuzz_safetensors");
    config_seeds(root / "fuzz_model_config");
    jsonl_seeds(root / "fuzz_jsonl_records");
    run_file_seeds(root / "fuzz_run_files");
    eval_seeds(root / "fuzz_eval_tasks");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}

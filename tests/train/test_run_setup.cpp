// resolve_model_args: the vocabulary of a preset and config.json's BOS/EOS ids follow the
// tokenizer the run trains with (the checkpoint loaders compare them with tokenizer.json).
#include <doctest/doctest.h>

#include <string>

#include "../model/hf_checkpoint_util.hpp"
#include "../temp_dir.hpp"
#include "ds/model/config.hpp"
#include "ds/train/run_setup.hpp"

using ds::testing::TempDir;
namespace mt = ds::model::testing;

TEST_CASE("resolve_model_args: BOS/EOS ids and a preset's vocabulary from the tokenizer") {
  TempDir tmp("run_setup");
  const auto tj = tmp.write("tokenizer.json", mt::tiny_tokenizer_json());
  ds::train::PretrainOptions o;
  o.tokenizer = tj.string();
  o.preset = "tiny";
  ds::model::ModelArgs a = ds::train::resolve_model_args(o);
  CHECK(a.vocab_size == 384);   // 263 ids, rounded up to a multiple of 128
  CHECK(a.bos_token_id == mt::kTinyBos);
  CHECK(a.eos_token_id == mt::kTinyEos);
  // a config.json written for another tokenizer (DeepSeek-V3's 0 / 1) keeps its vocabulary
  ds::model::ModelArgs cfg = ds::model::preset("tiny");
  cfg.vocab_size = 512;
  REQUIRE(cfg.bos_token_id == 0);
  REQUIRE(cfg.eos_token_id == 1);
  o.preset.clear();
  o.model_config = tmp.write("config.json", ds::model::to_hf_json(cfg)).string();
  a = ds::train::resolve_model_args(o);
  CHECK(a.vocab_size == 512);
  CHECK(a.bos_token_id == mt::kTinyBos);
  CHECK(a.eos_token_id == mt::kTinyEos);
  // without a tokenizer the config's ids stay
  o.tokenizer.clear();
  a = ds::train::resolve_model_args(o);
  CHECK(a.bos_token_id == 0);
  CHECK(a.eos_token_id == 1);
}

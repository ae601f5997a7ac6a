// resolve_model_args: the vocabulary of a preset and config.json's BOS/EOS ids follow the
// tokenizer the run trains with (the checkpoint loaders compare them with tokenizer.json);
// check_resume_config lets a checkpoint written with other ids resume.
#include <doctest/doctest.h>

#include <string>

#include "../model/hf_checkpoint_util.hpp"
#include "../temp_dir.hpp"
#include "ds/model/config.hpp"
#include "ds/core/error.hpp"
#include "ds/train/run_setup.hpp"
#include "ds/train/trainer.hpp"

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

TEST_CASE("check_resume_config: BOS/EOS ids may differ, the model may not") {
  TempDir tmp("resume_config");
  ds::model::ModelArgs saved = ds::model::preset("tiny");
  saved.vocab_size = 384;
  tmp.write("config.json", ds::model::to_hf_json(saved));
  ds::model::ModelArgs run = saved;
  run.bos_token_id = mt::kTinyBos;   // a checkpoint written before the ids followed the tokenizer
  run.eos_token_id = mt::kTinyEos;
  CHECK_NOTHROW(ds::train::check_resume_config(tmp.path(), run, "the same --preset"));
  run.n_layers += 1;
  CHECK_THROWS_WITH_AS(ds::train::check_resume_config(tmp.path(), run, "the same --preset"),
                       doctest::Contains("num_hidden_layers"), ds::UsageError);
}

// ds-tokenize: train a byte-level BPE tokenizer, encode documents into token shards (with
// optional FIM), encode/decode JSON Lines on stdio, decode shards, inspect a dataset.
// Thin CLI: flags bind to ds::tokenize option structs (defaults live there), one library
// entry point per subcommand, exit codes from ds::cli::run_tool. Contract: man ds-tokenize.
#include <CLI/CLI.hpp>

#include <iostream>

#include "ds/cli/common.hpp"
#include "ds/tokenize/tokenize.hpp"

namespace dt = ds::tokenize;

namespace {

void add_input_options(CLI::App& sub, dt::InputOptions& in) {
  sub.add_option("INPUT", in.inputs, "Input files; none or '-' reads standard input");
  sub.add_option("--format", in.format, "Input format: text or jsonl")
      ->check(CLI::IsMember(dt::kFormats))->capture_default_str();
  sub.add_option("--field", in.field, "JSONL field holding the document text")
      ->capture_default_str();
  sub.add_option("--doc-split", in.doc_split,
                 "Text documents: one per file, per line, or per blank-line-separated block")
      ->check(CLI::IsMember(dt::kDocSplits))->capture_default_str();
  sub.add_flag("--skip-bad-lines", in.skip_bad_lines,
               "JSONL: skip and count malformed lines instead of failing");
  sub.add_option("--chunk-bytes", in.chunk_bytes,
                 "Cut longer documents into pieces at tokenization-neutral points")
      ->check(ds::cli::positive_number())->capture_default_str();
}

void print_line(const std::string& s) { std::cout << s << '\n' << std::flush; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train, encode, decode and inspect DeepSeek-V3 style tokenized datasets",
               "ds-tokenize"};
  ds::cli::CommonOptions common;
  ds::cli::add_common_options(app, common, "ds-tokenize");
  app.require_subcommand(1);
  app.fallthrough();

  // train
  dt::TrainOptions tr;
  auto* train = app.add_subcommand("train", "Train a byte-level BPE tokenizer on documents");
  train->add_option("-o,--out", tr.out, "Directory for tokenizer.json and tokenizer_config.json")
      ->required();
  train->add_option("--vocab-size", tr.vocab_size, "Vocabulary size, special tokens included")
      ->check(ds::cli::positive_number())->capture_default_str();
  train->add_option("--min-frequency", tr.min_frequency, "Never merge pairs seen fewer times")
      ->capture_default_str();
  train->add_option("--special-tokens", tr.special_tokens,
                    "Comma-separated special tokens (default: DeepSeek-V3's set)")
      ->delimiter(',')->allow_extra_args(false);   // one argument: inputs follow it
  train->add_option("--threads", tr.threads, "Worker threads (0: all cores)")
      ->capture_default_str();
  train->add_flag("--force", tr.force, "Replace a tokenizer already in --out");
  add_input_options(*train, tr.input);

  // encode
  dt::EncodeOptions en;
  dt::EncodeJsonlOptions ej;
  bool jsonl_mode = false;
  auto* encode =
      app.add_subcommand("encode", "Encode documents into token shards, or JSONL on stdio");
  encode->add_option("--tokenizer", en.tokenizer, "tokenizer.json to encode with")
      ->required()->check(CLI::ExistingFile);
  auto* enc_out = encode->add_option("-o,--out", en.out, "Dataset directory to create");
  auto* fim_rate =
      encode->add_option("--fim-rate", en.fim_rate, "Probability of rewriting a document as FIM "
                         "(PSM)")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  auto* split_rate =
      encode->add_option("--punct-newline-split-rate", en.punct_newline_split_rate,
                         "Probability of splitting a token that joins punctuation and line breaks")
          ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  encode->add_option("--seed", en.seed, "Seed of the FIM and split decisions")
      ->capture_default_str();
  encode->add_flag("--add-bos", en.add_bos, "Put BOS before every document");
  encode->add_flag_callback("--no-match-added-tokens", [&] { en.match_added_tokens = false; },
                            "Treat added-token strings in the text as plain text");
  encode->add_option("--threads", en.threads, "Worker threads (0: all cores)")
      ->capture_default_str();
  encode->add_option("--max-shard-bytes", en.max_shard_bytes, "Start a new shard past this size")
      ->check(ds::cli::positive_number())->capture_default_str();
  encode->add_flag("--force", en.force, "Replace an existing non-empty --out directory");
  auto* jsonl = encode->add_flag("--jsonl", jsonl_mode,
                                 "Stdio mode: {\"text\":...} lines in, {\"ids\":[...]} lines out");
  encode->add_flag("--add-special-tokens", ej.add_special_tokens, "--jsonl: prepend BOS")
      ->needs(jsonl);
  add_input_options(*encode, en.input);
  jsonl->excludes(enc_out)->excludes(encode->get_option("INPUT"))->excludes(fim_rate)
      ->excludes(split_rate);

  // decode
  dt::DecodeOptions de;
  auto* decode = app.add_subcommand("decode", "Decode token shards or JSONL ids back to text");
  decode->add_option("--tokenizer", de.tokenizer, "tokenizer.json the data was made with")
      ->required()->check(CLI::ExistingFile);
  auto* de_data = decode->add_option("--data", de.data, "Dataset directory, manifest.json or shard")
      ->check(CLI::ExistingPath);
  decode->add_option("--start", de.start, "First document to decode")->capture_default_str();
  decode->add_option("--count", de.count, "Number of documents (-1: to the end)")
      ->capture_default_str();
  decode->add_flag("--jsonl", de.jsonl, "Stdio mode: {\"ids\":[...]} lines in, {\"text\":...} out")
      ->excludes(de_data);
  decode->add_flag("--skip-special-tokens", de.skip_special_tokens,
                   "Drop special tokens (BOS, EOS, pad) from the text");

  // inspect
  dt::InspectOptions in;
  auto* inspect = app.add_subcommand("inspect", "Summarise (and verify) a tokenized dataset");
  inspect->add_option("--data", in.data, "Dataset directory, manifest.json or shard")
      ->required()->check(CLI::ExistingPath);
  inspect->add_option("--tokenizer", in.tokenizer, "Check the dataset was made with this file")
      ->check(CLI::ExistingFile);
  inspect->add_flag("--verify", in.verify, "Decompress and check every block");

  return ds::cli::run_tool(app, argc, argv, common, [&] {
    if (*train) {
      print_line(dt::to_json(dt::train(tr)));
    } else if (*encode && jsonl_mode) {
      ej.tokenizer = en.tokenizer;
      ej.field = en.input.field;
      ej.match_added_tokens = en.match_added_tokens;
      dt::encode_jsonl(ej, std::cin, std::cout);
    } else if (*encode) {
      print_line(dt::to_json(dt::encode(en)));
    } else if (*decode) {
      dt::decode(de, std::cin, std::cout);
    } else if (*inspect) {
      dt::inspect(in, std::cout);
    }
  });
}

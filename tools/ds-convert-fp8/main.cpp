// ds-convert-fp8: convert a DeepSeek-V3 checkpoint between BF16/F32 and the released FP8 format
// (E4M3 weights with 128x128 block scales, <weight>_scale_inv F32), and report per-tensor errors
// between two checkpoints. Thin CLI: flags bind to ds::convert::{Convert,Verify}Options
// (defaults live there), then ds::convert::{quantize,dequantize,verify}(); exit codes from
// ds::cli::run_tool. Contract: man ds-convert-fp8.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "ds/cli/common.hpp"
#include "ds/convert/fp8_convert.hpp"

namespace {

void add_convert(CLI::App* sub, ds::convert::ConvertOptions& o, bool threads) {
  sub->add_option("--model", o.model, "Input checkpoint directory (config.json + safetensors)")
      ->required();
  sub->add_option("--out", o.out, "Output checkpoint directory (published atomically)")->required();
  sub->add_flag("--force", o.force, "Replace OUT if it exists");
  sub->add_flag("--allow-missing-scale", o.allow_missing_scale,
                "Copy an F8_E4M3 weight without its weight_scale_inv unchanged (default: error)");
  if (threads) {
    sub->add_option("--threads", o.threads, "CPU threads for the block quantisation (0: all cores)")
        ->capture_default_str();
    sub->add_option("--device", o.device, "cpu or cuda: where the block quantisation runs")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Convert DeepSeek-V3 checkpoints between BF16/F32 and FP8 (e4m3, 128x128 block "
               "scales); compare two checkpoints", "ds-convert-fp8"};
  ds::cli::CommonOptions common;
  ds::cli::add_common_options(app, common, "ds-convert-fp8");
  app.require_subcommand(1);
  app.fallthrough();

  ds::convert::ConvertOptions q;
  auto* quant = app.add_subcommand("quantize", "BF16/F32 checkpoint -> FP8 e4m3 with block scales");
  add_convert(quant, q, true);

  ds::convert::ConvertOptions d;
  auto* dequant =
      app.add_subcommand("dequantize", "FP8 checkpoint -> BF16 (W * scale_inv per block)");
  add_convert(dequant, d, false);

  ds::convert::VerifyOptions v;
  auto* ver =
      app.add_subcommand("verify", "Per-tensor max absolute / relative error of two checkpoints");
  ver->add_option("--model", v.model,
                  "Checkpoint A (directory, index .json or .safetensors)")->required();
  ver->add_option("--reference", v.reference, "Checkpoint B, the reference")->required();
  ver->add_option("--max-abs-error", v.max_abs_error,
                  "Fail when a tensor's max |a-b| exceeds X (<0: no limit)")
      ->capture_default_str();
  ver->add_option("--max-rel-error", v.max_rel_error,
                  "Fail when a tensor's max |a-b| / max |b| exceeds X (<0: no limit)")
      ->capture_default_str();
  ver->add_option("--format", v.format, "jsonl (one object per tensor + summary) or table")
      ->check(CLI::IsMember({"jsonl", "table"}))->capture_default_str();
  ver->add_flag("--allow-missing-scale", v.allow_missing_scale,
                "Compare an F8_E4M3 weight without its scale as unscaled codes (default: error)");

  return ds::cli::run_tool(app, argc, argv, common, [&] {
    if (quant->parsed()) std::cout << ds::convert::quantize(q).to_json() << std::endl;
    else if (dequant->parsed()) std::cout << ds::convert::dequantize(d).to_json() << std::endl;
    else ds::convert::verify(v, std::cout);
  });
}

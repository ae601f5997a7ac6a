// ds-convert-fp8's library entry points: a BF16/F32 checkpoint -> the DeepSeek-V3 FP8 format
// (E4M3 weights with 128x128 block scales stored as <weight>_scale_inv, F32) and back, and a
// per-tensor error report between two checkpoints. Which tensors are quantised comes from the
// parameter registry of the checkpoint's config.json (model::describe_params, ParamInfo::fp8:
// attention projections, dense / shared / routed expert projections, the MTP layers' too);
// everything else (embeddings, head, norms, router, biases, eh_proj, unknown extras) is copied
// byte for byte. Conversion streams one tensor (in bands of rows) at a time, so memory stays
// bounded whatever the checkpoint's size; output directories are published atomically and are
// byte-identical for the same input. Format and rules: docs/formats.md "FP8 checkpoints".
// reference: spec §1.13 (tensor list), §3.1 (E4M3), §3.3 (released format, dequantisation).
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "ds/core/tensor.hpp"

namespace ds::convert {

struct ConvertOptions {
  std::string model;                 // input checkpoint directory (config.json + safetensors)
  std::string out;                   // output directory; must not exist unless `force`
  bool force = false;                // replace an existing output directory
  bool allow_missing_scale = false;  // copy an FP8 weight without its scale (warning), not fail
  int threads = 1;                   // CPU threads of the block quantisation (0: all cores);
                                     // one already outruns the disk (docs/benchmarks.md)
  std::string device = "cpu";        // cpu | cuda: where the block quantisation runs
};

struct ConvertStats {
  std::string command;               // "quantize" / "dequantize"
  int64_t tensors_in = 0, tensors_out = 0;
  int64_t quantized = 0;             // weights made FP8 (each with a new scale tensor)
  int64_t dequantized = 0;           // FP8 weights made BF16 (their scales dropped)
  int64_t copied = 0;                // tensors copied unchanged (FP8 ones with their scales too)
  int64_t missing_scale = 0;         // FP8 weights without a scale copied (allow_missing_scale)
  int64_t files = 0;                 // safetensors files written
  uint64_t bytes_in = 0, bytes_out = 0;   // tensor data read / written
  double seconds = 0;
  std::string to_json() const;       // one line
};

// Errors (nothing is left at `out`): UsageError when `out` exists without `force` or is the
// input; IoError / FormatError naming the file or tensor for an unreadable checkpoint, an FP8
// weight without its scale (unless allow_missing_scale), a scale of the wrong shape or dtype,
// a scale without an FP8 weight, an unsupported dtype (F8_E5M2; integers where a weight must
// be quantised), a quantisable weight whose shape differs from config.json's; NumericsError for
// a non-finite value in a weight to quantise.
ConvertStats quantize(const ConvertOptions& opt);
ConvertStats dequantize(const ConvertOptions& opt);

struct VerifyOptions {
  std::string model;                 // checkpoint A (directory, index or .safetensors file)
  std::string reference;             // checkpoint B
  double max_abs_error = -1;         // fail when a tensor's max |a - b| exceeds this (< 0: off)
  double max_rel_error = -1;         // fail when max |a - b| / max |b| exceeds this (< 0: off)
  std::string format = "jsonl";      // "jsonl" (one object per tensor + summary) or "table"
  bool allow_missing_scale = false;  // compare an FP8 weight without its scale as raw codes
};

// One tensor of the report. FP8 weights are dequantised with their scales first (spec §3.3);
// scale tensors consumed that way are not listed on their own.
struct TensorDiff {
  std::string name;
  std::string status;                // ok | exceeds | nonfinite | missing_in_model |
                                     // missing_in_reference | shape_mismatch
  Shape shape;                       // the model's (or the present side's)
  Shape reference_shape;
  std::string dtype, reference_dtype;   // as stored (F8_E4M3 for a quantised weight)
  double max_abs_error = 0;          // max |a - b|
  double max_rel_error = 0;          // max |a - b| / max |b| (0 when both are all zero)
  double rms_rel_error = 0;          // ||a - b||_2 / ||b||_2 (0 when both are all zero)
  double reference_amax = 0;         // max |b|
  int64_t nonfinite_mismatches = 0;  // elements where exactly one side is NaN/inf or they differ
};

struct VerifyReport {
  std::vector<TensorDiff> tensors;   // sorted by name
  int64_t compared = 0, exceeded = 0, nonfinite = 0, missing_in_model = 0,
          missing_in_reference = 0, shape_mismatch = 0;
  double max_abs_error = 0, max_rel_error = 0;   // over the compared tensors
  bool ok() const {
    return exceeded == 0 && nonfinite == 0 && missing_in_model == 0 &&
           missing_in_reference == 0 && shape_mismatch == 0;
  }
};

// The report only (nothing printed, no error for differences).
VerifyReport compare_checkpoints(const VerifyOptions& opt);
// compare_checkpoints, then the report on `out` (opt.format) with a summary; throws
// FormatError (tensors missing on one side, shapes differ) or NumericsError (thresholds
// exceeded, non-finite mismatches) after printing when !ok().
VerifyReport verify(const VerifyOptions& opt, std::ostream& out);

}  // namespace ds::convert

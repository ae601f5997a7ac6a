// Launchers of the causal (optionally segment-masked) attention kernels of kernels/
// flash_attention_simt.cu (exact kernels; the launchers below live there too) and
// flash_attention_tc.cu (tensor cores), which share kernels/flash_attention_common.cuh:
// FlashAttention-2 style forward (online softmax over key tiles, lse saved) and backward (P
// recomputed from lse; a dQ pass over key tiles and a dK/dV pass over query tiles, both
// deterministic). Two implementations behind one entry point:
//   exact:  FP32 SIMT kernels, any head dims (shared memory permitting: see simt_supported);
//   tensor: mma.sync m16n8k16 BF16 operands with FP32 accumulation, softmax/lse in FP32, for
//           Dk, Dv multiples of 16 with Dk <= 192, Dv <= 128 (zero-padded to the nearest of the
//           compiled tile shapes 64/64, 128/128, 192/128; DeepSeek-V3 is 192/128).
// Plain C++ header (no CUDA types) so lib/ops/cuda/attention.cpp (g++) can include it.
// Layouts: q, k (B, T, H, Dk); v, out, dout (B, T, H, Dv); lse (B, H, T); seg (B, T) or null
// (query t sees key j iff j <= t and seg[j] == seg[t]). All device pointers, F32 / I32.
#pragma once
#include <cstdint>

namespace ds::cuda {

struct AttnShape {
  int64_t B = 0, T = 0, H = 0, Dk = 0, Dv = 0;
};

// Whether the exact kernels fit these head dims in shared memory (about Dk + Dv <= 1100).
bool attention_simt_supported(int64_t Dk, int64_t Dv);
// Whether the tensor-core kernels take these head dims (pointer alignment is checked at launch:
// misaligned tensors silently use the exact kernels).
bool attention_tc_supported(int64_t Dk, int64_t Dv);

// The tensor-core kernels on Hopper: true (default; DS_ATTENTION=wgmma) the wgmma forward and
// backward (flash_attention_sm90.cu) where they take the head dims ((64, 64), (96, 64), (128,
// 128), (192, 128)) and the sm_90a build is loaded, false (DS_ATTENTION=mma) the mma.sync
// kernels. Process-wide; the setter overrides the environment.
void set_attention_wgmma(bool on);
bool attention_wgmma();
// The wgmma backward's dK and dV: false (default; DS_ATTENTION_BWD=split) a pass each, true
// (DS_ATTENTION_BWD=fused) one pass that computes S^T and dP^T once for both, where the head
// dims allow it (up to 96 / 64: attention_bwd_fused_supported; the others keep the split
// passes); the same dK and dV to the bit. Not yet run on a GPU. Process-wide; the setter
// overrides the environment; how many fused passes have run in this process (tests check).
void set_attention_bwd_fused(bool on);
bool attention_bwd_fused();
bool attention_bwd_fused_supported(int64_t Dk, int64_t Dv);
int64_t attention_bwd_fused_launches();
// The backward's mode, all three: 0 split, 1 fused (above), 2 one pass (DS_ATTENTION_BWD=
// onepass, where attention_bwd_fused_supported): the fused pass also computes each query
// tile's dQ products and adds them into dQ with F32 atomics, so no dQ pass runs; dK and dV
// are the fused pass's to the bit, dQ is not bit-reproducible (the key blocks' order of adds
// varies). Not yet run on a GPU. Save and restore it with these (the bool setter above sets 0
// or 1); how many one-pass backwards have run in this process.
int attention_bwd_mode();
void set_attention_bwd_mode(int mode);
int64_t attention_bwd_onepass_launches();
// The wgmma kernels' blocks: false (default; DS_ATTENTION_ROWS=128) 128 rows, two warpgroups
// stepping through the tiles together; true (DS_ATTENTION_ROWS=64) 64 rows, one warpgroup,
// for the kernels whose shared memory lets two such blocks share an SM (the forward up to
// 128 / 128, the backward passes at 64 / 64 and 96 / 64, the dV pass at every size; the
// occupancy calculator decides, else 128 rows): two independent blocks, so one's softmax can
// run under the other's products. The same numbers per row for finite inputs (a 64-row block
// skips tiles none of its rows sees, which add exact zeros). Not yet run on a GPU.
// Process-wide; the setter overrides the environment; how many 64-row kernels have run.
void set_attention_rows64(bool on);
bool attention_rows64();
int64_t attention_rows64_launches();
// The wgmma kernels' 128-row blocks: false (default; DS_ATTENTION_SCHEDULE=lockstep) both
// warpgroups meet the ring barrier of each tile before its products; true
// (DS_ATTENTION_SCHEDULE=staggered) warpgroup 1 meets it a phase later, after its first
// products of the previous tile, so that one warpgroup's softmax step runs under the other's
// products (FlashAttention-3's ping-pong by the ring barrier alone), with one more stage of
// shared memory: the forward at every head dim, the backward passes where that fits (all but
// dQ and dK at 192 / 128). 64-row blocks, where selected and resident, go first. The same
// numbers per row. Not yet run on a GPU. Process-wide; the setter overrides the environment;
// how many staggered kernels have run (tests check).
void set_attention_staggered(bool on);
bool attention_staggered();
int64_t attention_staggered_launches();
// DS_ATTENTION_SCHEDULE=pipelined: each warpgroup issues a tile's first products (S, and dP
// in the backward) and then the previous tile's output products as two wgmma groups, waits
// for the first only and runs the tile's softmax step (P, dS) while the outputs run
// (FlashAttention-3's intra-warpgroup overlap), on the staggered schedule's ring and where it
// fits; staggered and pipelined exclude each other (the schedule is one of lockstep,
// staggered, pipelined; set_attention_staggered(false) and set_attention_pipelined(false)
// both select lockstep). The same bits as lockstep: each accumulator sees the same operations
// in the same order. Not yet run on a GPU. attention_schedule(): 0, 1, 2.
void set_attention_pipelined(bool on);
bool attention_pipelined();
int64_t attention_pipelined_launches();
int attention_schedule();
void set_attention_schedule(int schedule);   // 0, 1 or 2 (a saved attention_schedule())
// The split dK and dV passes' per-query lse and D: false (default; DS_ATTENTION_QSTATS=inline)
// loaded per element from lse and D with a test of q < T; true (DS_ATTENTION_QSTATS=table)
// from the {lse, D} table the fused pass reads (two queries a 16-byte load, +inf past T). The
// same bits for finite inputs. Not yet run on a GPU. Process-wide; the setter overrides the
// environment; how many split passes have read the table (tests check).
void set_attention_bwd_qstats(bool on);
bool attention_bwd_qstats();
int64_t attention_bwd_qstats_launches();
// Whether the wgmma kernels can run (Dk, Dv) here, selected or not; and how many forwards
// (backwards) they have run in this process (tests check that they did).
bool attention_wgmma_supported(int64_t Dk, int64_t Dv);
int64_t attention_wgmma_launches(bool backward = false);

// q, k, v as the caller holds them: F32, or BF16 codes (bf16 true: the values the
// tensor-core kernels read, taken as they are instead of converted in a pass of their own).
struct AttnQKV {
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  bool bf16 = false;
};
// Whether the tensor-core kernels run these inputs (tensor_cores, supported dims, 16-byte
// aligned operands); BF16 inputs must (the exact kernels read F32).
bool attention_tc_runs(const AttnQKV& in, const AttnShape& s, bool tensor_cores);

// out, lse overwritten. tensor_cores: use the BF16 kernels when attention_tc_supported.
void attention_forward(const AttnQKV& in, const int32_t* seg, float scale, float* out,
                       float* lse, const AttnShape& s, bool tensor_cores);
// dq, dk, dv overwritten; out and lse are the forward's.
void attention_backward(const AttnQKV& in, const int32_t* seg, float scale, const float* out,
                        const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        const AttnShape& s, bool tensor_cores);

}  // namespace ds::cuda

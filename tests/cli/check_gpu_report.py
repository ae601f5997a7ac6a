#!/usr/bin/env python3
"""scripts/gpu-report.py on a gpu-check.sh output folder written here (synthetic JSON lines in
the benchmarks' formats): the tables carry the figures of the lines, a benchmark that did not
run is named, the verdicts and test rows of console.txt come through, and a folder without
benchmark output is an error (exit 1, one line); Nsight Compute's raw CSV becomes a table
(kernel name shortened, stall reasons largest first, the issuing warps left out)."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "gpu-report.py")
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def run(*args):
    p = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def write(d, name, recs, text=""):
    with open(os.path.join(d, name), "w") as f:
        f.write(text)
        for r in recs:
            f.write(json.dumps(r) + "\n")


with tempfile.TemporaryDirectory() as d:
    rc, out, err = run(d)
    check(rc == 1 and len(err.strip().splitlines()) == 1 and "no benchmark output" in err,
          f"empty folder: rc {rc}, stderr {err!r}")
    step = {"bench": "train_step", "impl": "ds", "preset": "1b", "precision": "bf16",
            "batch": 4, "seq": 4096, "step_ms": 321.5, "tokens_per_s": 50960.0, "tflops": 87.2,
            "mfu": 0.0882, "peak_tflops": 989.4, "flops_per_token": 1.712e9, "loss": 10.1,
            "gpu_peak_gib": 33.3}
    prof = {"bench": "train_step_profile", "precision": "bf16", "profile": {
        "step_seconds": 0.32, "op_gbytes_per_step": 250.0, "op_share": {"outside_ops": 0.05},
        "ops": [{"op": "grouped_matmul", "calls": 96, "seconds": 0.08, "bytes": 2e10,
                 "gbytes_per_s": 250.0, "gflops": 400000.0},
                {"op": "attention_backward", "calls": 13, "seconds": 0.04, "bytes": 1e9,
                 "gbytes_per_s": 25.0, "gflops": 150000.0}]}}
    write(d, "bench_train.txt", [step, prof], "train step 1b bf16 ...\n")
    write(d, "bench_train_b16out.txt", [dict(step, step_ms=300.25)])
    write(d, "bench_torch.txt", [{"bench": "train_step", "impl": "torch", "device": "cuda",
                                  "step_ms": 700.0, "tokens_per_s": 23405.7, "mfu": 0.0401,
                                  "max_mem_gib": 48.25}], "torch 2.11 bf16-autocast ...\n")
    write(d, "bench_attention.txt", [
        {"bench": "attention", "precision": "bf16", "B": 2, "T": 4096, "H": 16, "Dk": 192,
         "Dv": 128, "fwd_ms": 1.07, "fwd_tflops": 160.0, "bwd_ms": 3.74, "bwd_tflops": 115.0},
        {"bench": "mla_decode", "cache": "bf16", "N": 64, "H": 128, "L": 4096, "ms": 0.5,
         "gbps": 2400.0, "hbm_fraction": 0.5, "tflops": 300.0}])
    # Nsight Compute's raw CSV after the application's own output, as gpu-check.sh saves it
    metrics = ["gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
               "dram__throughput.avg.pct_of_peak_sustained_elapsed",
               "launch__registers_per_thread", "sm__warps_active.avg.pct_of_peak_sustained_active",
               "smsp__issue_active.avg.pct_of_peak_sustained_active",
               "sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active",
               "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
               "smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_selected_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_wait_per_issue_active.ratio",
               "smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio"]
    head = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream",
            "Block Size", "Grid Size", "Device", "CC"]
    units = [""] * len(head) + ["nsecond", "%", "%", "register/thread", "%", "%", "%", "%"] + \
        ["inst"] * 5
    def name(p, bq, stag, pipe):   # as ncu demangles flash_attention_sm90.cu's kernel
        return ("void ds::cuda::flash::<unnamed>::sm90_bwd_kernel<(int)96, (int)64, "
                f"(int){p}, (int){bq}, (bool){stag}, (bool)0, {'true' if pipe else 'false'}>"
                "(const __nv_bfloat16 *, const int *, float, float *, int, int, int)")
    fig = ["2,583,104", "26.68", "2.50", "180", "12.49", "26.7", "25.2", "19.9", "3.10", "0.85",
           "1.00", "0.40", "1.75"]
    vals = [["0", "77", "bench_attention", "127.0.0.1", name(1, 128, 0, 0), "1", "7",
             "(256, 1, 1)", "(32, 64, 1)", "0", "9.0"] + fig,
            # the one-pass kernel, then the first kernel again (a later variant's run of the
            # same kernel: reported once), then the fused pass pipelined in 64-row blocks
            ["1", "77", "bench_attention", "127.0.0.1", name(4, 128, 0, 0), "1", "7",
             "(256, 1, 1)", "(32, 64, 1)", "0", "9.0"] + ["1,000,000"] + fig[1:],
            ["2", "77", "bench_attention", "127.0.0.1", name(1, 128, 0, 0), "1", "7",
             "(256, 1, 1)", "(32, 64, 1)", "0", "9.0"] + ["9,999,999"] + fig[1:],
            ["3", "77", "bench_attention", "127.0.0.1", name(3, 64, 0, 1), "1", "7",
             "(256, 1, 1)", "(32, 64, 1)", "0", "9.0"] + fig]
    with open(os.path.join(d, "ncu_attn_bwd.csv"), "w") as f:
        f.write("attention bf16 B=4 T= 4096 ...\n")
        for r in [head + metrics, units] + vals:
            f.write(",".join('"' + x + '"' for x in r) + "\n")
    write(d, "bench_attention_wgmma.txt", [
        {"bench": "attention_wgmma", "B": 4, "T": 4096, "H": 16, "Dk": 96, "Dv": 64,
         "fwd_ms": 1.05, "fwd_tflops": 162.7, "fwd_speedup": 1.36, "bwd_ms": 5.29,
         "bwd_tflops": 81.2, "bwd_speedup": 1.05, "nmse_out": 2.3e-7, "nmse_dq": 0.0,
         "nmse_dk": 0.0, "nmse_dv": 0.0, "bwd_fused_ms": 4.1, "bwd_fused_tflops": 104.8,
         "bwd_fused_identical": True},
        {"bench": "attention_wgmma", "B": 2, "T": 4096, "H": 16, "Dk": 192, "Dv": 128,
         "fwd_ms": 0.73, "fwd_tflops": 235.3, "fwd_speedup": 1.32, "bwd_ms": 3.52,
         "bwd_tflops": 121.9, "bwd_speedup": 1.03, "nmse_out": 2.2e-7, "nmse_dq": 0.0,
         "nmse_dk": 0.0, "nmse_dv": 0.0, "bwd_fused_ms": -1, "bwd_fused_tflops": -1,
         "bwd_fused_identical": None},
        {"bench": "attention_pipelined", "B": 4, "T": 4096, "H": 16, "Dk": 96, "Dv": 64,
         "fwd_tflops": 201.0, "fwd_speedup": 1.24, "fwd_launches": 7, "bwd_tflops": 99.5,
         "bwd_speedup": 1.22, "bwd_launches": 21, "bwd_fused_tflops": 120.0,
         "identical": True},
        {"bench": "attention_onepass", "schedule": "pipelined", "B": 4, "T": 4096, "H": 16,
         "Dk": 96, "Dv": 64,
         "bwd_ms": 3.1, "bwd_tflops": 138.6, "bwd_speedup": 1.71, "vs_fused": 1.32,
         "launches": 3, "dkdv_identical": True, "nmse_dq": 3.2e-12}])
    write(d, "bench_train_onepass.txt", [dict(step, step_ms=150.0)])
    write(d, "bench_train_pipe.txt", [dict(step, step_ms=170.0)])
    write(d, "bench_gemm.txt", [
        {"bench": "grouped_gemm", "shape": "fwd gate/up", "M": 98304, "N": 768, "K": 1024,
         "cublas_tflops": 135.0, "kernel_tflops": 243.0, "wgmma_tflops": 410.5,
         "bf16_out_tflops": 270.0, "fp8_tflops": 255.0}])
    with open(os.path.join(d, "console.txt"), "w") as f:
        f.write("[row] ds_test_backend_ops-ops-new      PASS   (3s)\n")
        f.write("[row] switch: expert outputs BF16 (opt-in) INFO   bf16 tests pass; faster\n")
        f.write("[row] switch: attention pipelined (opt-in; X=1)  INFO   bf16 tests pass; "
                "without 183.0 ms, with 160.5 ms: faster with it\n")
        f.write("[row] switch: wgmma attention (default; DS_ATTENTION=mma) INFO   bf16 tests "
                "FAIL1 (ops-attn-wgmma); without 190.0 ms, with 183.0 ms: tests not all "
                "passed: fix it, or keep it off\n")
        f.write("[row] switch: rows (opt-in; Y=1)   INFO   bf16 tests pass; without 183.0 ms, "
                "with 183.5 ms: no difference (within 4%)\n")
        f.write("noise line\n")
    rc, out, err = run(d, "--commit", "abc1234", "--date", "2026-12-01")
    check(rc == 0, f"report: rc {rc}, stderr {err!r}")
    check("commit abc1234" in out and "2026-12-01" in out, "header lacks date/commit")
    check("| default | bf16 | 321.5 | 50960 | 87.2 | 8.8% | 33.3 |" in out,
          "default step row missing:\n" + out)
    check("| PyTorch | bf16 autocast | 700.0 | 23406 | – | 4.0% | 48.2 |" in out or
          "| PyTorch | bf16 autocast | 700.0 | 23406 | – | 4.0% | 48.3 |" in out,
          "PyTorch row missing:\n" + out)
    check("| expert outputs BF16 (opt-in) | bf16 | 300.2 |" in out or
          "| expert outputs BF16 (opt-in) | bf16 | 300.3 |" in out, "variant row missing")
    check("| grouped_matmul | 96 | 80.00 | 25.0% | 20.00 | 250 | 400.0 |" in out,
          "profile row missing:\n" + out)
    check("| bf16 | 2×4096 | 16 | 192/128 | 1.070 | 160.0 | 3.740 | 115.0 |" in out,
          "attention row missing")
    check("| bf16 | 64 | 128 | 4096 | 0.500 | 2400 | 50.0% | 300.0 |" in out, "decode row missing")
    check("Not in this run" not in out, "a table named missing:\n" + out)
    check("| fwd gate/up | 98304 | 768 | 1024 | 135.0 | 243.0 | 410.5 | 270.0 | 255.0 |" in out,
          "grouped GEMM row (with the wgmma kernel) missing:\n" + out)
    check("- expert outputs BF16 (opt-in) INFO   bf16 tests pass; faster" in out, "verdict missing")
    check("`ds_test_backend_ops-ops-new      PASS   (3s)`" in out, "test row missing")
    check("noise" not in out, "non-row console line copied")
    check("| pipelined | 4×4096 | 16 | 96/64 | 201.0 | 1.24× | 7 | 99.5 | 1.22× | 21 | 120.0 | "
          "yes |" in out, "pipelined attention row missing:\n" + out)
    check("| pipelined | 4×4096 | 16 | 96/64 | 3.100 | 138.6 | 1.71× | 1.32× | 3 | yes | "
          "3.2e-12 |" in out,
          "one-pass attention row missing:\n" + out)
    check("| attention backward in one pass, dQ by atomics (opt-in) | bf16 | 150.0 |" in out,
          "one-pass step row missing:\n" + out)
    check("| attention warpgroups pipelined (opt-in) | bf16 | 170.0 |" in out,
          "pipelined step row missing:\n" + out)
    check("- make the default: attention pipelined (opt-in; X=1) (183.0 -> 160.5 ms)" in out,
          "the opt-in to flip not named:\n" + out)
    check("- a default whose tests fail: wgmma attention (default; DS_ATTENTION=mma) "
          "(FAIL1 (ops-attn-wgmma))" in out, "the failing default not named")
    check("rows (opt-in; Y=1) (" not in out, "a no-difference opt-in named")
    check("| 4×4096 | 16 | 96/64 | 162.7 | 1.36× | 81.2 | 1.05× | 104.8 | yes | 2.3e-07 |" in out,
          "wgmma row with the fused pass missing:\n" + out)
    check("| 2×4096 | 16 | 192/128 | 235.3 | 1.32× | 121.9 | 1.03× | – | – | 2.2e-07 |" in out,
          "wgmma row without the fused pass missing")
    check("| sm90_bwd_kernel<96, 64, 1, 128, 0, 0, false> | default | 2.583 | 27 | 2 | 27 | 20 "
          "| 25 | 180 | 12.5 | barrier 3.10, math_pipe_throttle 1.75, long_scoreboard 0.85 |"
          in out, "Nsight Compute row missing:\n" + out)
    check("| sm90_bwd_kernel<96, 64, 4, 128, 0, 0, false> | one pass | 1.000 |" in out,
          "Nsight Compute one-pass row missing:\n" + out)
    check("9.999" not in out, "a kernel profiled twice reported twice:\n" + out)
    check("| sm90_bwd_kernel<96, 64, 3, 64, 0, 0, true> | 64-row blocks + pipelined + dK/dV "
          "fused |" in out, "Nsight Compute combined opt-ins' row missing:\n" + out)
    # gpu-check.sh's rows: ncu_summary.py --labels, a variant and a tab before each line
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ncu_summary.py"),
                        "--labels", os.path.join(d, "ncu_attn_bwd.csv")],
                       capture_output=True, text=True)
    lab = [ln.split("\t")[0] for ln in p.stdout.splitlines()]
    check(p.returncode == 0 and lab == ["", "one pass", "64-row blocks + pipelined + dK/dV fused"],
          f"ncu_summary --labels: rc {p.returncode}, labels {lab}")

if failures:
    print("check_gpu_report: FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("check_gpu_report: all checks passed")

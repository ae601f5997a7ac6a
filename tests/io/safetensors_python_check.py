#!/usr/bin/env python3
# Cross-checks ds's safetensors files against PyTorch, with a reader/writer written here from
# the documented format (u64 LE header length, JSON header, raw little-endian data), since the
# `safetensors` package is not assumed. Exit 77 (CTest skip) when torch is unavailable.
# usage: safetensors_python_check.py ST_FIXTURE_BINARY WORK_DIR
import json, os, struct, subprocess, sys

try:
    import torch
except Exception:
    print("torch not importable: skipping"); sys.exit(77)

DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64,
      "I32": torch.int32, "U8": torch.uint8}
HAVE_F8 = hasattr(torch, "float8_e4m3fn")   # torch >= 2.1; else FP8 is read as raw bytes
DT["F8_E4M3"] = torch.float8_e4m3fn if HAVE_F8 else torch.uint8

def e4m3_decode(b):   # OCP e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits, no inf
    s, e, m = -1.0 if b & 0x80 else 1.0, (b >> 3) & 15, b & 7
    if e == 15 and m == 7: return float("nan")
    return s * (m / 8) * 2.0 ** -6 if e == 0 else s * (1 + m / 8) * 2.0 ** (e - 7)

def read(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert (8 + n) % 8 == 0, "data not 8-byte aligned"
    assert header["__metadata__"]["format"] == "pt"
    data, out = raw[8 + n:], {}
    for name, e in header.items():
        if name == "__metadata__": continue
        b, en = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:en]), dtype=DT[e["dtype"]]) if en > b else torch.empty(0, dtype=DT[e["dtype"]])
        out[name] = t.reshape(e["shape"])
    return out

def write(path, tensors):
    header, blobs, pos = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        rev = {v: k for k, v in DT.items()}
        b = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": rev[t.dtype], "shape": list(t.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b); pos += len(b)
    h = json.dumps(header).encode(); h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def main():
    exe, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    a = os.path.join(work, "from_ds.safetensors")
    subprocess.run([exe, "write", a], check=True)
    t = read(a)
    x = t["x.f32"]
    ref = torch.arange(42, dtype=torch.float64).reshape(6, 7) * 0.37 - 1.9
    assert torch.allclose(x.double(), ref, atol=1e-5), "F32 values"
    for name, dt in (("x.bf16", torch.bfloat16), ("x.f16", torch.float16)) + ((("x.f8", DT["F8_E4M3"]),) if HAVE_F8 else ()):
        size = torch.empty(0, dtype=dt).element_size()
        want = x.to(dt).view(torch.uint8 if size == 1 else torch.int16)
        got = t[name].view(torch.uint8 if size == 1 else torch.int16)
        assert torch.equal(got, want), f"{name}: rounding differs from torch"
    f8 = [e4m3_decode(int(v)) for v in t["x.f8"].view(torch.uint8).flatten().tolist()]
    for xv, fv in zip(x.flatten().tolist(), f8):   # nearest e4m3: relative error <= 2^-4
        assert abs(fv - xv) <= abs(xv) * 2.0 ** -4 + 2.0 ** -10, f"x.f8: {xv} -> {fv}"
    assert t["i64"].flatten().tolist() == [i * 1000000007 - 5 for i in range(10)]
    assert t["i32"].tolist() == [-7 * i for i in range(10)]
    assert t["u8"].shape == (10, 1) and t["u8"].flatten().tolist() == [(29 * i) % 256 for i in range(10)]

    b = os.path.join(work, "from_py.safetensors")
    g = torch.Generator().manual_seed(0)
    mine = {"w": torch.randn(3, 5, generator=g), "h": torch.randn(4, 2, generator=g).to(torch.bfloat16),
            "f": torch.randn(7, generator=g).to(torch.float16), "ids": torch.arange(-3, 6, dtype=torch.int64),
            "s": torch.tensor(2.5), "z": torch.empty(0, 4)}
    write(b, mine)
    out = subprocess.run([exe, "dump", b], check=True, capture_output=True, text=True).stdout
    got = {d["name"]: d for d in map(json.loads, out.splitlines())}
    assert set(got) == set(mine), f"names {sorted(got)}"
    for name, ten in mine.items():
        assert got[name]["shape"] == list(ten.shape), name
        v = torch.tensor(got[name]["values"], dtype=torch.float64)
        assert torch.equal(v, ten.double().flatten()), f"{name}: values differ"
    print("safetensors python cross-check: OK")

main()

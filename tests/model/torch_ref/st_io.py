# Minimal safetensors reader/writer for the PyTorch reference scripts (no safetensors package
# on the system Python). Format: u64 little-endian header length n, n bytes of JSON
# {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}} padded with
# spaces to a multiple of 8, then the raw little-endian tensor bytes.
# reference: huggingface/safetensors format description.
import json
import struct

import numpy as np
import torch

_TO_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8}
_FROM_TORCH = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
               torch.uint8: "U8"}


def save(path, tensors, metadata=None):
    """tensors: ordered {name: torch tensor} (stored in its own dtype); metadata: {str: str}."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        dt = _FROM_TORCH[t.dtype]
        raw = t.numpy().astype(np.dtype(_TO_NP[dt]).newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def load(path):
    """Returns ({name: torch tensor}, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode())
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        arr = np.frombuffer(data[base + b:base + en], dtype=np.dtype(_TO_NP[e["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.astype(_TO_NP[e["dtype"]]).reshape(e["shape"]).copy())
    return out, meta

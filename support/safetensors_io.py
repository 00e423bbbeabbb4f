"""The .safetensors format read and written by hand: no pickles, one tensor in memory at a time,
and exactly as strict as the format's own library (tests/test_hostile_files.py fuzzes the two
against each other on hundreds of damaged files).

    for key, tensor in read_safetensors("model.safetensors"): ...
    write_safetensors("out.safetensors", {"w": torch.zeros(2, 3)})

The format: 8 bytes, a little-endian u64 N; N bytes of UTF-8 JSON,
    {"__metadata__": {"format": "pt"}, "KEY": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...}
then the data: every tensor's raw little-endian bytes, back to back. A file comes from people
you may not know, so the whole header is checked before anything is allocated: its length
(within the file, at most MAX_HEADER bytes), a JSON object, every entry a known dtype, a list of
non-negative integer dimensions and two integer data offsets; shape x dtype size equal to the
offsets' span; and the spans, sorted, contiguous from 0 with no overlap or hole, ending
exactly at the end of the file. A file that breaks any rule is a ValueError naming the file and
the key; nothing is read into memory until all of them hold, so a 2^40-element shape in a 1 KB
file is an error, not a 4 TB allocation.
"""
import json
import os
import struct
from collections import Counter

import torch

MAX_HEADER = 100_000_000        # bytes, as the safetensors library allows
U64 = 1 << 64                   # sizes and offsets are u64 in the format

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F8_E5M2": torch.float8_e5m2, "F8_E4M3": torch.float8_e4m3fn,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
          "C64": torch.complex64}
NAMES = {v: k for k, v in DTYPES.items()}


def _int(x):
    """A JSON number that is a u64: an int, not a bool, not a float like 4.0."""
    return type(x) is int and 0 <= x < U64


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")         # Python's json accepts NaN and Infinity; the format does not


def _int_or_minus_zero(text):
    return float(text) if text == "-0" else int(text)     # "-0" is a float to the format's parser, not 0


class _Object(dict):
    """A JSON object that remembers which keys it was given twice (the last value wins). The library
    refuses a repeated __metadata__ or a tensor entry's repeated field; a repeated tensor name (or
    metadata key) it takes like Python does, the last one winning."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.repeated = {k for k, n in Counter(k for k, _ in pairs).items() if n > 1}


def read_header(f, path, size):
    """(N, [(key, dtype, shape, start, end), ...] sorted by offsets) after checking every rule."""
    n, header = _read_json_header(f, path, size)
    entries = []
    for key, info in header.items():
        _check_text(path, key, key)
        if key == "__metadata__":       # null, or an object of strings to strings
            if info is not None and not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                raise ValueError(f"{path}: __metadata__ must map strings to strings")
            for k, v in (info or {}).items():
                _check_text(path, "__metadata__", k + v)
        else:
            entries.append(_tensor_entry(path, key, info))
    entries.sort(key=lambda e: (e[3], e[4]))
    pos = 0
    for key, _, _, start, end in entries:         # back to back from 0: no overlap, no hole
        if start != pos:
            raise ValueError(f"{path}: {key}: data starts at {start}, expected {pos} "
                             f"({'overlaps the tensor before' if start < pos else 'a hole before it'})")
        pos = end
    if 8 + n + pos != size:                       # and ending exactly at the end of the file
        raise ValueError(f"{path}: the tensors end at byte {8 + n + pos}, the file at {size} "
                         f"({'truncated' if 8 + n + pos > size else 'trailing bytes'})")
    return n, entries


def _read_json_header(f, path, size):
    """(N, the header as a JSON object) from the file's first 8 + N bytes, its length checked first."""
    if size < 8:
        raise ValueError(f"{path}: {size} bytes: too small to be a safetensors file")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER:
        raise ValueError(f"{path}: header length {n} exceeds {MAX_HEADER} bytes (not a safetensors file?)")
    if 8 + n > size:
        raise ValueError(f"{path}: header length {n} runs past the end of the file ({size} bytes; truncated?)")
    try:
        header = json.loads(f.read(n).decode("utf-8"), parse_constant=_reject_constant,
                            parse_int=_int_or_minus_zero, object_pairs_hook=_Object)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header is not a JSON object")
    if "__metadata__" in header.repeated:
        raise ValueError(f"{path}: __metadata__ is given twice")
    return n, header


def _tensor_entry(path, key, info):
    """(key, dtype, shape, start, end) of one tensor's header entry, once its fields, its shape's
    size and its data_offsets' span all agree."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise ValueError(f"{path}: {key}: needs dtype, shape and data_offsets")
    twice = sorted(info.repeated & {"dtype", "shape", "data_offsets"})
    if twice:
        raise ValueError(f"{path}: {key}: {', '.join(twice)} given twice")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise ValueError(f"{path}: {key}: unknown or unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_int(d) for d in shape):
        raise ValueError(f"{path}: {key}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(o) for o in offsets)):
        raise ValueError(f"{path}: {key}: data_offsets {offsets!r} is not two non-negative integers")
    numel = 1
    for d in shape:             # left to right, stopping at u64 as the library does ([2^63, 4, 0])
        numel *= d
        if numel >= U64 or d >= U64 // 2:      # (and torch cannot hold a dimension of 2^63)
            raise ValueError(f"{path}: {key}: shape {shape} overflows the format's sizes")
    nbytes = numel * DTYPES[dtype].itemsize
    start, end = offsets
    if nbytes >= U64 or end < start or end - start != nbytes:
        raise ValueError(f"{path}: {key}: shape {shape} of {dtype} is {nbytes} bytes, but data_offsets "
                         f"{offsets} span {end - start}")
    return key, dtype, shape, start, end


def _check_text(path, where, s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:          # a lone surrogate escape, "\ud800": not Unicode text
        raise ValueError(f"{path}: {where!r}: invalid Unicode in the header") from None


def read_safetensors(path):
    """Yield (key, tensor) in the order of their data in the file, each read into a fresh buffer."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n, entries = read_header(f, path, size)
        for key, dtype, shape, start, end in entries:
            t = torch.empty(shape, dtype=DTYPES[dtype])
            if end > start:
                f.seek(8 + n + start)
                if f.readinto(t.view(-1).view(torch.uint8).numpy()) != end - start:
                    raise ValueError(f"{path}: {key}: short read (the file changed while reading?)")
            yield key, t


def write_safetensors(path, tensors):
    """Stream tensors into the format and fsync. Refuses what it cannot hold as given: an unknown
    dtype, or a view that is not contiguous (it would be copied silently; pass .contiguous())."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for k, v in tensors.items():
        if v.dtype not in NAMES:
            raise ValueError(f"{path}: {k}: dtype {v.dtype} has no safetensors name")
        if not v.is_contiguous():
            raise ValueError(f"{path}: {k}: a non-contiguous view; pass tensor.contiguous() to write a copy")
        n = v.numel() * v.element_size()
        header[k] = {"dtype": NAMES[v.dtype], "shape": list(v.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for v in tensors.values():
            f.write(v.detach().view(-1).view(torch.uint8).cpu().numpy().tobytes())
        f.flush()
        os.fsync(f.fileno())


# ---- Hugging Face folders: one file, or shards and an index ----

def checkpoint_files(folder):
    """The .safetensors files of an HF folder: model.safetensors, or those its index names."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            try:
                wmap = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{index}: not an index (a JSON object with a 'weight_map')") from None
        names = sorted(set(wmap.values())) if isinstance(wmap, dict) else [None]
        for n in names:     # plain file names in this folder: never a path that leads out of it
            if not (isinstance(n, str) and n.endswith(".safetensors") and os.path.basename(n) == n):
                raise ValueError(f"{index}: weight_map names {n!r}, not a .safetensors file in the folder")
        files = [os.path.join(folder, n) for n in names]
    else:
        files = [os.path.join(folder, "model.safetensors")]
    for p in files:
        if not os.path.exists(p):
            alt = " (found pytorch_model.bin: convert it to safetensors; we never unpickle)" \
                if os.path.exists(os.path.join(folder, "pytorch_model.bin")) else ""
            raise FileNotFoundError(f"{p}: checkpoint file not found{alt}")
    return files


def save_sharded(folder, tensors, max_shard_size="5GB"):
    """tensors into folder as HF writes them: model.safetensors, or above max_shard_size the
    files model-0000i-of-0000n.safetensors and model.safetensors.index.json naming each key's file."""
    limit = parse_size(max_shard_size)
    shards, cur, cur_size = [], {}, 0
    for k, v in tensors.items():
        n = v.numel() * v.element_size()
        if cur and cur_size + n > limit:
            shards.append(cur)
            cur, cur_size = {}, 0
        cur[k], cur_size = v, cur_size + n
    shards.append(cur)
    if len(shards) == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), shards[0])
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(folder, name), shard)
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")


def parse_size(s):
    """Bytes in "5GB", "200MiB", "1000" (an int passes through)."""
    if isinstance(s, int):
        return s
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    s = s.strip().upper()
    for u, mult in units.items():       # no unit ends another ("MIB" does not end in "MB")
        if s.endswith(u):
            return int(float(s[:-len(u)]) * mult)
    return int(s)

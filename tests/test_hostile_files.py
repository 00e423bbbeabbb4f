"""Model folders from people you do not know: safetensors, config.json and tokenizer.model.

The hand-written safetensors reader is exactly as strict as the safetensors library.
A few hundred damaged files (byte flips, truncations, appended bytes, a header length that
lies, and edits to the header's JSON: shapes that are strings, negative or 2^40, offsets that
overlap, leave a hole or run past the end, unknown dtypes, metadata that is not text...),
seeded, each given to both readers. On every one they must agree: the same tensors (keys,
dtypes, shapes, bytes), or both refuse, ours with a ValueError and nothing else. A config.json
with sizes that are not positive integers, or that describe a model bigger than the machine's
memory, is one line naming the key before anything is built; a corrupt tokenizer.model is one
line naming the file wherever it is read.
"""
import json
import random
import struct

import pytest
import torch
from safetensors.torch import load as library_load
from safetensors.torch import save as library_save

from support.safetensors_io import read_safetensors, write_safetensors


def originals(tmp_path):
    """Valid files to damage: ours and the library's, with the dtypes and shapes a model has."""
    g = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(5, 4, generator=g),
               "model.norm.weight": torch.randn(4, generator=g).to(torch.bfloat16),
               "lm_head.weight": torch.randn(3, 4, generator=g).half(),
               "step": torch.tensor(7), "empty": torch.zeros(0, 3), "mask": torch.tensor([True, False, True])}
    write_safetensors(tmp_path / "ours.safetensors", tensors)
    return [(tmp_path / "ours.safetensors").read_bytes(), library_save(tensors, metadata={"format": "pt"})]


def split(data):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(header, body, pad=True):
    blob = json.dumps(header).encode()
    if pad:
        blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + body


def edit_header(rng, data):
    """One structured edit of the JSON header: the rules a reader must check."""
    header, body = split(data)
    keys = [k for k in header if k != "__metadata__"]
    k = rng.choice(keys)
    info = header[k]
    kind = rng.randrange(26)
    if kind == 0:
        del info[rng.choice(["dtype", "shape", "data_offsets"])]
    elif kind == 1:
        info["shape"] = rng.choice(["5,4", None, 3, {"a": 1}, [[5], 4]])
    elif kind == 2:
        info["shape"] = [-d if d else -1 for d in info["shape"]] or [-1]
    elif kind == 3:
        info["shape"] = [1 << 40] + info["shape"]                      # 4 TB of floats in a tiny file
    elif kind == 4:
        info["shape"] = [float(d) for d in info["shape"]] or [1.0]
    elif kind == 5:
        info["shape"] = [True] * max(1, len(info["shape"]))
    elif kind == 6:
        info["data_offsets"] = info["data_offsets"][::-1]
    elif kind == 7:
        d = rng.choice([-2, -1, 1, 2, 4, 1000])
        info["data_offsets"] = [o + d for o in info["data_offsets"]]
    elif kind == 8:
        info["data_offsets"] = [info["data_offsets"][0], info["data_offsets"][1] + rng.choice([1, 4, 8, 1 << 50])]
    elif kind == 9:
        info["data_offsets"] = rng.choice([[0], [0, 1, 2], "0,4", [0.0, 4.0], [-4, 0], None, [0, 1 << 64]])
    elif kind == 10:
        info["dtype"] = rng.choice(["F33", "f32", "float32", "", None, 32, "U32", "I32", "F64", "U16", "I8", "U8",
                                    "BOOL", "F8_E4M3", "F4", "C64"])
    elif kind == 11:                      # a second key on the same bytes
        header[k + ".copy"] = dict(info)
    elif kind == 12:                      # a hole: every later tensor moved up
        for other in keys:
            if header[other]["data_offsets"][0] >= info["data_offsets"][1]:
                header[other]["data_offsets"] = [o + 4 for o in header[other]["data_offsets"]]
        body = body + b"\0" * 4
    elif kind == 13:
        header["__metadata__"] = rng.choice([{"format": 1}, ["pt"], "pt", {"a": None}, None, {}, {"a": "b"}])
    elif kind == 14:
        return json.dumps([header]).encode()
    elif kind == 15:
        header["\ud800" + k] = header.pop(k)
    elif kind == 16:
        info["shape"] = [float("nan")]
    elif kind == 17:
        info["extra"] = "ignored?"
    elif kind == 18:
        return join(header, body, pad=False)
    elif kind == 19:
        blob = b"  " + json.dumps(header).encode()                      # whitespace before the object
        return struct.pack("<Q", len(blob)) + blob + body
    elif kind == 20:
        info["shape"], info["data_offsets"] = [], [info["data_offsets"][0], info["data_offsets"][0] + 4]
    elif kind == 21:
        del header[k]                     # its bytes become a hole (or a tail, when last)
    elif kind == 22:                      # a field of one entry given twice (Python's json keeps the last)
        field = rng.choice(["dtype", "shape", "data_offsets", "extra"])
        text = json.dumps(header).replace(json.dumps(k) + ": {", json.dumps(k) + ': {"%s": [], ' % field, 1)
        return struct.pack("<Q", len(text.encode())) + text.encode() + body
    elif kind == 23:                      # __metadata__ twice, or one metadata key twice
        extra = rng.choice(['"__metadata__": {"a": "b"}, ', '"__metadata__": {"a": "b", "a": "c"}, '])
        header.pop("__metadata__", None)
        text = "{" + extra + json.dumps(header)[1:]
        return struct.pack("<Q", len(text.encode())) + text.encode() + body
    elif kind == 24:                      # "-0", which the format's parser reads as a float
        info[rng.choice(["shape", "data_offsets"])][0:1] = ["MINUS_ZERO"]
        text = json.dumps(header).replace('"MINUS_ZERO"', "-0")
        return struct.pack("<Q", len(text.encode())) + text.encode() + body
    else:                                 # an empty tensor at the end whose other dimensions are huge
        end = max(v["data_offsets"][1] for key, v in header.items() if key != "__metadata__")
        header["zz"] = {"dtype": "F32", "shape": rng.choice([[1 << 63, 0], [1 << 32, 1 << 32, 0], [1 << 63, 4, 0],
                                                             [1 << 62, 0], [0, 1 << 63]]), "data_offsets": [end, end]}
    return join(header, body)


def mutate(rng, data):
    kind = rng.randrange(6)
    b = bytearray(data)
    if kind == 0:                          # flip bytes, mostly in the header
        n = struct.unpack("<Q", data[:8])[0]
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(8 + n) if rng.random() < 0.8 else rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 1:
        return data[:rng.randrange(len(data))]
    if kind == 2:
        return data + bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 8, 40])))
    if kind == 3:
        n = struct.unpack("<Q", data[:8])[0]
        lie = rng.choice([0, 1, 7, n - 1, n + 1, n + 8, len(data), 1 << 40, (1 << 64) - 1, 100_000_001])
        return struct.pack("<Q", lie) + data[8:]
    return edit_header(rng, data)


def outcome(read, path_or_bytes):
    try:
        return {k: (v.dtype, tuple(v.shape), v.contiguous().view(-1).view(torch.uint8).tolist())
                for k, v in read(path_or_bytes).items()}
    except Exception as e:                 # whatever the library raises is a refusal
        return e


def test_the_reader_agrees_with_the_library_on_damaged_files(tmp_path):
    rng = random.Random(1234)
    cases = [mutate(rng, data) for data in originals(tmp_path) for _ in range(200)]
    agreed, refused, disagreements = 0, 0, []
    for i, data in enumerate(cases):
        path = tmp_path / f"case{i}.safetensors"
        path.write_bytes(data)
        theirs = outcome(library_load, data)
        ours = outcome(lambda p: dict(read_safetensors(p)), path)
        if isinstance(ours, Exception) and not isinstance(ours, ValueError):
            disagreements.append((i, f"ours raised {type(ours).__name__}: {ours}"))
        elif isinstance(ours, Exception) != isinstance(theirs, Exception):
            disagreements.append((i, f"ours: {ours!r:.150} / library: {theirs!r:.150}"))
        elif not isinstance(ours, Exception) and ours != theirs:
            disagreements.append((i, "different tensors"))
        else:
            agreed += 1
            refused += isinstance(ours, Exception)
    assert not disagreements, f"{len(disagreements)} of {len(cases)}: {disagreements[:8]}"
    assert agreed == 400 and 250 < refused < 400            # most damage is refused, some is harmless


def test_the_originals_read_back_identically(tmp_path):
    for data in originals(tmp_path):
        (tmp_path / "x.safetensors").write_bytes(data)
        assert outcome(lambda p: dict(read_safetensors(p)), tmp_path / "x.safetensors") == outcome(library_load, data)


def test_a_huge_shape_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    header = {"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}}
    (tmp_path / "x.safetensors").write_bytes(join(header, b"\0" * 16))
    monkeypatch.setattr(torch, "empty", lambda *a, **k: pytest.fail("allocated before validating"))
    with pytest.raises(ValueError, match=r"x\.safetensors: the tensors end at byte .*truncated"):
        list(read_safetensors(tmp_path / "x.safetensors"))



@pytest.mark.parametrize("n, why", [(100_000_001, "header length 100000001 exceeds 100000000 bytes"),
                                    (100_000_000, "header length 100000000 runs past the end of the file")],
                         ids=["over", "at"])
def test_a_header_length_over_the_librarys_100mb_limit_is_refused_before_reading(tmp_path, n, why):
    import struct
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", n) + b"{}")
    with pytest.raises(ValueError, match=why):
        list(read_safetensors(tmp_path / "x.safetensors"))

def test_the_writer_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="w: a non-contiguous view"):
        write_safetensors(tmp_path / "a.safetensors", {"w": torch.zeros(3, 4).t()})
    with pytest.raises(ValueError, match="w: dtype torch.float8_e4m3fnuz has no safetensors name"):
        write_safetensors(tmp_path / "b.safetensors", {"w": torch.zeros(2, dtype=torch.float8_e4m3fnuz)})
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


# ---- config.json ----

def tiny_folder(tmp_path, base_spm, **config):
    """A tiny model folder, then config.json edited (a key set to None is removed)."""
    import shutil

    from model import Llama, LlamaConfig
    folder = tmp_path / "m"
    Llama(LlamaConfig(vocab_size=2000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).save_pretrained(folder)
    shutil.copy(base_spm, folder / "tokenizer.model")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(config)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return folder


@pytest.mark.parametrize("key,value,why", [
    ("hidden_size", 0, "hidden_size must be an integer in \\[1, "), ("num_hidden_layers", -2, "num_hidden_layers must"),
    ("vocab_size", "32000", "vocab_size must be an integer"), ("intermediate_size", 1.5, "intermediate_size must"),
    ("num_key_value_heads", 3, "not a multiple of num_key_value_heads=3"), ("rms_norm_eps", 0, "rms_norm_eps must"),
    ("rope_theta", "fast", "rope_theta must be a number > 0"), ("head_dim", 7, "head_dim=7 is odd"),
    ("max_position_embeddings", True, "max_position_embeddings must"), ("num_attention_heads", 0, "num_attention_h"),
])
def test_a_config_with_impossible_sizes_is_one_line_naming_the_key(tmp_path, base_spm, key, value, why):
    from model import Llama
    folder = tiny_folder(tmp_path, base_spm, **{key: value})
    with pytest.raises(ValueError, match=f"config.json: .*{why}"):
        Llama.from_pretrained(folder)


def test_a_config_bigger_than_memory_is_refused_before_allocating(tmp_path, base_spm, monkeypatch):
    from model import Llama
    folder = tiny_folder(tmp_path, base_spm, hidden_size=1 << 20, num_hidden_layers=1000, vocab_size=1 << 20)
    monkeypatch.setattr(torch, "empty", lambda *a, **k: pytest.fail("allocated before checking the size"))
    with pytest.raises(ValueError, match=r"config.json: .*B parameters \(hidden_size=1048576, num_hidden_layers="
                                         r"1000, vocab_size=1048576\) need .* GiB .* more than the .* GiB of cpu"):
        Llama.from_pretrained(folder)


@pytest.mark.parametrize("index,why", [
    ({"weight_map": {"w": "../../elsewhere.safetensors"}}, "weight_map names '../../elsewhere.safetensors'"),
    ({"weight_map": {"w": "/etc/passwd"}}, "weight_map names '/etc/passwd'"),
    ({"weight_map": ["model.safetensors"]}, "weight_map names None"),
    ({"metadata": {}}, "not an index"),
])
def test_a_sharded_index_cannot_point_outside_its_folder(tmp_path, base_spm, index, why):
    from model import Llama
    folder = tiny_folder(tmp_path, base_spm)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"model.safetensors.index.json: .*{why}"):
        Llama.from_pretrained(folder)


# ---- tokenizer.model ----

CORRUPT = {"truncated": lambda good: good[:len(good) // 3],
           "random bytes": lambda good: random.Random(0).randbytes(500),
           "a text file": lambda good: b"<unk>\t0\n<s>\t0\n</s>\t0\n" * 20}


@pytest.mark.parametrize("damage", list(CORRUPT))
def test_a_corrupt_tokenizer_model_is_one_line_wherever_it_is_read(tmp_path, base_spm, damage, capsys):
    """merge, expand, tokenize, eval and generate: exit code 1, one line naming the file."""
    import redwhale
    from support import cli
    folder = tiny_folder(tmp_path, base_spm)
    bad = folder / "tokenizer.model"
    bad.write_bytes(CORRUPT[damage](bad.read_bytes()))
    (tmp_path / "c.jsonl").write_text('{"text": "안녕하세요 반갑습니다"}\n', encoding="utf-8")
    for argv in (["merge", "--base", str(bad), "--korean", str(base_spm), "--out", str(tmp_path / "o")],
                 ["merge", "--base", str(base_spm), "--korean", str(bad), "--out", str(tmp_path / "o")],
                 ["expand", "--model", str(folder), "--tokenizer", str(bad), "--out", str(tmp_path / "o")],
                 ["tokenize", str(tmp_path / "c.jsonl"), "--tokenizer", str(bad), "--out", str(tmp_path / "o"),
                  "--workers", "1"],
                 ["eval", "--model", str(folder), "--output", ""],
                 ["generate", "--model", str(folder)]):
        with pytest.raises(SystemExit) as e:
            cli.run(redwhale.main, argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 1 and len(err) == 1 and str(bad) in err[0] and "SentencePiece" in err[0], (argv, err)
        assert not (tmp_path / "o").exists()

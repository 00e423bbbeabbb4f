"""The token-shard format end to end: tokenize() writes it, TokenShards reads it for train.py.

    python data.py tokenize clean/clean.jsonl --tokenizer merged/ --out tokens/ --val-docs 500

    DIR/meta.json  {"dtype": "uint16"|"uint32", "vocab_size", "eos_id", "bos_id", "add_bos",
                    "num_tokens", "num_docs", "shards": [{"file", "num_tokens"}],
                    "val_num_tokens", "val_num_docs", "val_shards": [...] (optional),
                    "tokenizer", "inputs", "skipped", "skipped_examples"}
                   (TokenShards needs only dtype, vocab_size and shards)
    DIR/<file>     raw little-endian token ids: train_NNNN.bin, val_NNNN.bin

Writing: every document of the cleaned corpus (read by corpus_io.py) is encoded with the
SentencePiece model in --workers processes, in input order, and followed by EOS (optionally
preceded by BOS). uint16 ids overflow above 65,536 pieces, so the dtype follows the vocabulary.
A document goes to val by a seeded per-document coin (--val-fraction) or an exact seeded draw
(--val-docs); shards are written as .tmp files and renamed only when all succeeded.

Reading: training samples are windows of T+1 tokens starting every T tokens inside one shard
(never across files). Sample g of a run is window perm_e[g % N] of epoch e = g // N, where
perm_e is a permutation seeded by (seed, e): the data order is a pure function of the sample
index, so a resumed run, or a run with a different number of ranks, reads exactly the same
batches. Without val_shards, the tail of the last shard is held out for the eval loss.

torch is imported only by the methods that return tensors: data.py imports this module for
tokenize(), and neither it nor its worker processes should pay seconds for torch.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from corpus_io import DataError, ReadConfig, expand_inputs, ordered_map, read_docs, write_atomic

# ----------------------------------------------------------------------------------------
# Writing: tokenize() turns cleaned text into shards of token ids, each document followed by EOS.
# `python data.py tokenize ...` is its command line.

def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65536 else np.uint32  # uint16 overflows above 65,536 pieces


_SP = {}  # a worker's SentencePiece processor


def _tok_init(model_proto):
    import sentencepiece as spm
    _SP["sp"] = spm.SentencePieceProcessor(model_proto=model_proto)


def _tok_batch(texts):
    ids = _SP["sp"].encode(texts)
    lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
    flat = np.fromiter((t for d in ids for t in d), np.int64, count=int(lengths.sum()))
    return flat, lengths


def _is_val(i, seed, fraction):  # a per-document coin, the same for any number of workers
    h = hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


def tokenize(inputs, tokenizer, out_dir, text_field="text", shard_tokens=100_000_000, val_fraction=0.0,
             val_docs=0, seed=0, workers=1, add_bos=False, progress=True, batch_docs=256):
    """Encode every document of `inputs` with the SentencePiece model `tokenizer` (a .model
    file or a folder holding tokenizer.model); write out_dir/train_NNNN.bin (and val_NNNN.bin)
    and out_dir/meta.json; returns the meta dict."""
    import sentencepiece as spm
    tok = Path(tokenizer)
    if tok.is_dir():
        tok = tok / "tokenizer.model"
    if not tok.is_file():
        raise DataError(f"{tokenizer}: no SentencePiece model (a .model file or a folder with tokenizer.model)")
    proto = tok.read_bytes()
    try:
        sp = spm.SentencePieceProcessor(model_proto=proto)
    except Exception as e:
        raise DataError(f"{tok}: not a SentencePiece model ({e})") from None
    vocab, eos, bos = sp.get_piece_size(), sp.eos_id(), sp.bos_id()
    if eos < 0:
        raise DataError(f"{tok}: the tokenizer has no EOS piece to separate documents")
    dtype = token_dtype(vocab)
    cfg = ReadConfig(text_field=text_field)
    files = expand_inputs(inputs)
    val_set = None
    if val_docs:  # exactly val_docs held-out documents: count first, then draw indices
        total = sum(1 for p in files for _, t, r in read_docs(p, cfg, {}) if r is None)
        if val_docs >= total:
            raise DataError(f"--val-docs {val_docs} leaves no training documents (the input has {total})")
        val_set = set(np.random.default_rng(seed).choice(total, val_docs, replace=False).tolist())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = {s: {"shards": [], "f": None, "n": 0, "docs": 0} for s in ("train", "val")}

    def write(split, ids):
        w = writers[split]
        if w["f"] is None or w["shards"][-1]["num_tokens"] >= shard_tokens:
            if w["f"]:
                w["f"].close()
            w["shards"].append({"file": f"{split}_{len(w['shards']):04d}.bin", "num_tokens": 0})
            w["f"] = open(out_dir / (w["shards"][-1]["file"] + ".tmp"), "wb")
        w["f"].write(ids.astype("<" + np.dtype(dtype).str[1:]).tobytes())  # little-endian on any host
        w["shards"][-1]["num_tokens"] += len(ids)
        w["n"] += len(ids)
        w["docs"] += 1

    def texts():
        for p in files:
            for ln, t, r in read_docs(p, cfg, stats := {}):
                if r is None:
                    yield t
                else:
                    skipped.append(f"{p}:{ln}: {r}")
            if "error" in stats:
                skipped.append(stats["error"])

    def batches():
        b = []
        for t in texts():
            b.append(t)
            if len(b) == batch_docs:
                yield b
                b = []
        if b:
            yield b

    skipped, doc_i = [], 0
    bar = tqdm(desc="tokenize", unit=" docs", disable=not progress or None)
    results = ordered_map(_tok_batch, batches(), workers, _tok_init, (proto,))
    try:
        for _, (flat, lengths) in results:
            if len(flat) and (flat.max() >= vocab or flat.min() < 0):
                raise DataError(f"{tok}: produced id {int(flat.max())} outside the vocabulary of {vocab}")
            for doc in np.split(flat, np.cumsum(lengths)[:-1]):
                ids = np.concatenate([[bos] if add_bos else [], doc, [eos]]).astype(np.int64)
                is_val = (doc_i in val_set) if val_set is not None else \
                    val_fraction > 0 and _is_val(doc_i, seed, val_fraction)
                write("val" if is_val else "train", ids)
                doc_i += 1
            bar.update(len(lengths))
    except BaseException:  # leave no half-written shard behind
        for w in writers.values():
            if w["f"]:
                w["f"].close()
            for s in w["shards"]:
                (out_dir / (s["file"] + ".tmp")).unlink(missing_ok=True)
        raise
    finally:
        bar.close()
        results.close()  # stops the worker pool, also after an error
        for w in writers.values():
            if w["f"]:
                w["f"].close()
    if doc_i == 0:
        raise DataError("no documents to tokenize in: " + ", ".join(map(str, files)))
    for w in writers.values():
        for s in w["shards"]:
            os.replace(out_dir / (s["file"] + ".tmp"), out_dir / s["file"])
    meta = {"dtype": np.dtype(dtype).name, "vocab_size": vocab, "eos_id": eos, "bos_id": bos,
            "add_bos": add_bos, "num_tokens": writers["train"]["n"], "num_docs": writers["train"]["docs"],
            "shards": writers["train"]["shards"], "val_num_tokens": writers["val"]["n"],
            "val_num_docs": writers["val"]["docs"], "val_shards": writers["val"]["shards"],
            "tokenizer": str(tok.resolve()), "inputs": [str(p) for p in files],
            "skipped": len(skipped), "skipped_examples": skipped[:20]}
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable documents, e.g. {skipped[0]}", file=sys.stderr)
    write_atomic(out_dir / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return meta


# ----------------------------------------------------------------------------------------
# Reading: whole splits for tests and inspection; TokenShards for training.

def load_tokens(meta_dir, split="train"):
    """All token ids of a split as one array (tests and inspection; train.py memory-maps)."""
    meta = json.loads((Path(meta_dir) / "meta.json").read_text())
    parts = [np.fromfile(Path(meta_dir) / s["file"], dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
             for s in meta["shards" if split == "train" else "val_shards"]]
    return np.concatenate(parts) if parts else np.zeros(0, np.dtype(meta["dtype"]))


class TokenShards:
    """tokenize()'s shards: DIR/meta.json + raw little-endian id files, read through np.memmap.
    Training windows are T+1 tokens starting every T tokens inside one shard; window g of the
    whole run is perm_epoch[g % N] with perm_epoch a permutation seeded by (seed, epoch)."""

    def __init__(self, folder, seq_len, model_vocab, val_tokens=None, seed=0):
        self.T, self.seed, self.vocab = seq_len, seed, model_vocab
        mpath = os.path.join(folder, "meta.json")
        if not os.path.exists(mpath):
            raise SystemExit(f"error: {mpath} not found (is {folder} a data.py shard folder?)")
        with open(mpath, encoding="utf-8") as f:
            try:
                meta = json.load(f)
            except ValueError as e:
                raise SystemExit(f"error: {mpath}: not valid JSON ({e})") from None
        for k in ("dtype", "vocab_size", "shards"):
            if k not in meta:
                raise SystemExit(f"error: {mpath}: missing key {k!r}")
        if meta["dtype"] not in ("uint16", "uint32"):
            raise SystemExit(f"error: {mpath}: dtype {meta['dtype']!r} is not uint16 or uint32")
        if meta["vocab_size"] > model_vocab:
            raise SystemExit(f"error: {mpath}: vocab_size {meta['vocab_size']} exceeds the model's vocab_size "
                             f"{model_vocab}: the shards were tokenized with a bigger tokenizer than the "
                             "model has rows (expand the model first, or use its tokenizer)")
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")

        def open_all(key):
            arrs = []
            for i, s in enumerate(meta.get(key) or []):
                p = os.path.join(folder, s.get("file", ""))
                if "file" not in s or not os.path.exists(p):
                    raise SystemExit(f"error: {mpath}: {key}[{i}]: shard file {p} not found")
                n = os.path.getsize(p) // dtype.itemsize
                if n != s.get("num_tokens", n) or os.path.getsize(p) % dtype.itemsize:
                    raise SystemExit(f"error: {p}: {os.path.getsize(p)} bytes, meta.json says "
                                     f"{s.get('num_tokens')} {meta['dtype']} tokens (truncated?)")
                arrs.append(np.memmap(p, dtype=dtype, mode="r"))
            return arrs

        self.train = open_all("shards")
        if not self.train:
            raise SystemExit(f"error: {mpath}: 'shards' is empty")
        self.val = open_all("val_shards")
        if not self.val:                 # hold out the tail of the last shard for eval loss
            last = self.train[-1]
            if val_tokens is None:
                val_tokens = min(len(last) // 10, 1 << 20)
            val_tokens = val_tokens if val_tokens > seq_len else 0
            if val_tokens:
                self.train[-1], self.val = last[:-val_tokens], [last[-val_tokens:]]
        self.counts = [max(0, (len(a) - 1) // seq_len) for a in self.train]
        self.starts = np.cumsum([0] + self.counts)
        self.N = int(self.starts[-1])
        if self.N == 0:
            raise SystemExit(f"error: {folder}: fewer than seq-len + 1 = {seq_len + 1} tokens in every shard")
        self.val_windows = [(a, j * seq_len) for a in self.val for j in range((len(a) - 1) // seq_len)]
        self._perm = (None, None)

    def _window(self, arr, start, where):
        import torch
        w = torch.from_numpy(arr[start:start + self.T + 1].astype(np.int64))
        if int(w.max()) >= self.vocab:
            raise SystemExit(f"error: {where}: token id {int(w.max())} >= model vocab_size {self.vocab}")
        return w

    def train_window(self, g):
        epoch, i = divmod(g, self.N)
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.N))
        w = int(self._perm[1][i])
        s = int(np.searchsorted(self.starts, w, side="right") - 1)
        return self._window(self.train[s], (w - self.starts[s]) * self.T, f"train shard {s}")

    def batch(self, first, B):
        """(x, y) of shape (B, T): windows first .. first+B-1 of the run's sample order."""
        import torch
        w = torch.stack([self.train_window(first + b) for b in range(B)])
        return w[:, :-1], w[:, 1:]

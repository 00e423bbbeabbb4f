"""Token shards written by data.py, read back for training through np.memmap.

    DIR/meta.json  {"dtype": "uint16"|"uint32", "vocab_size", "eos_id", "bos_id", "num_tokens",
                    "shards": [{"file", "num_tokens"}], "val_shards": [...] (optional)}
    DIR/<file>     raw little-endian token ids

Training samples are windows of T+1 tokens starting every T tokens inside one shard (never
across files). Sample g of a run is window perm_e[g % N] of epoch e = g // N, where perm_e is a
permutation seeded by (seed, e): the data order is a pure function of the sample index, so a
resumed run, or a run with a different number of ranks, reads exactly the same batches.
Without val_shards, the tail of the last shard is held out for the eval loss.
"""
import json
import os

import numpy as np
import torch


class TokenShards:
    """data.py's shards: DIR/meta.json + raw little-endian id files, read through np.memmap.
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
        w = torch.stack([self.train_window(first + b) for b in range(B)])
        return w[:, :-1], w[:, 1:]

"""The token-shard format end to end: tokenize() writes it, TokenShards reads it for train.py.

    python data.py tokenize clean/ --tokenizer merged/ --out tokens/ --val-docs 500

    DIR/meta.json  {"dtype": "uint16"|"uint32", "vocab_size", "eos_id", "bos_id" (-1: none), "add_bos",
                    "num_tokens", "num_docs", "num_chars", "shards": [{"file", "num_tokens"}],
                    "val_num_tokens", "val_num_docs", "val_num_chars", "val_shards": [...] (optional),
                    "tokenizer", "inputs", "skipped", "skipped_examples", "notes"}
                   (TokenShards needs only dtype, vocab_size and shards)
    DIR/<file>     raw little-endian token ids: train_NNNN.bin, val_NNNN.bin
    DIR/val.jsonl  with --val-text: the held-out documents' text, to score with any tokenizer (tools/score.py)

Writing: every document of the cleaned corpus (read by corpus/readers.py; a data.py clean folder
through its report.json, clean_files) is encoded in --workers processes, in input order, and
followed by EOS (optionally preceded by BOS); the dtype follows the vocabulary. A document goes to
val by a seeded per-document coin (--val-fraction) or an exact seeded draw (--val-docs). A record
that cannot be read (bad JSON, no text, a lone surrogate, the rest of a broken .gz) is skipped and
counted. DIR is replaced whole only when all succeeded (readers.staged_output): it never mixes the
shards of two runs, and a failed run leaves it as it was.

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
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from corpus.readers import (
    DataError,
    ReadConfig,
    chunked,
    expand_inputs,
    no_documents_error,
    ordered_map,
    read_docs,
    setting,
    size_type,
    staged_output,
)
from support import cli, outputs
from support.tokenizer_io import Tokenizer

# ----------------------------------------------------------------------------------------
# Writing: tokenize() turns cleaned text into shards of token ids, each document followed by EOS.
# `python data.py tokenize ...` is its command line.

def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 65536 else np.uint32  # uint16 overflows above 65,536 pieces


_TOK = {}  # a worker's Tokenizer (it pickles as its model bytes)


def _tok_init(tok):
    _TOK["tok"] = tok


def _tok_batch(texts):
    ids = _TOK["tok"].encode(texts)
    lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
    flat = np.fromiter((t for d in ids for t in d), np.int64, count=int(lengths.sum()))
    return flat, lengths


def _is_val(i, seed, fraction):  # a per-document coin, the same for any number of workers
    h = hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


@dataclass
class TokenizeConfig(ReadConfig):
    """How tokenize reads (ReadConfig) and writes: each setting declared once (readers.setting),
    with its default, --help line and range; data.py's tokenize flags are these (but ReadConfig's
    --txt-mode, --encoding and --on-invalid), and an API user's values are checked the same way."""
    shard_tokens: int = setting(100_000_000, "tokens per shard (e.g. 100M)", lo=1, type=size_type(1))
    val_fraction: float = setting(0.0, "share of documents held out as val", lo=0, hi=1, hi_open=True)
    val_docs: int = setting(0, "exactly this many held-out documents", lo=0)
    seed: int = setting(0, "seed of the held-out choice", lo=0)
    add_bos: bool = setting(False, "start every document with BOS")
    val_text: bool = setting(False, "also write val.jsonl, the held-out documents' text (to score with any "
                             "tokenizer: redwhale.py score)")
    # the command line uses every core; an API user asks for more than one
    workers: int = setting(1, "encoding processes", lo=1, cli_default=os.cpu_count() or 1)
    progress: bool = setting(True, "no progress bar")
    batch_docs: int = setting(256, None, lo=1)  # documents per worker task (no flag)


def clean_files(inputs, notes):
    """The files to tokenize. A folder holding data.py clean's report.json: exactly the clean
    files its "outputs" lists (never dropped.jsonl). Any other folder: every .txt/.jsonl in it
    but dropped.jsonl and report.json (a note says so). Files: themselves."""
    files = []
    for p in map(Path, inputs):
        report = p / "report.json"
        if p.is_dir() and report.is_file():
            try:
                names = json.loads(report.read_text(encoding="utf-8")).get("outputs")
            except (ValueError, AttributeError):
                names = None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DataError(f"{report}: not a data.py clean report (no list of 'outputs')")
            for name in names:
                if name != "dropped.jsonl":
                    if not (p / name).is_file():
                        raise DataError(f"{p / name}: listed in {report} but missing")
                    files.append(p / name)
        elif p.is_dir():
            files += expand_inputs([p], exclude=("dropped.jsonl", "report.json"))
            notes.append(f"{p} has no report.json: read every .txt/.jsonl in it except dropped.jsonl and report.json")
        else:
            files += expand_inputs([p])
    if not files:
        raise DataError("no input files given")
    return files


def tokenize(inputs, tokenizer, out_dir, cfg=None, force=False, **settings):
    """Encode every document of `inputs` with `tokenizer` (a .model file or a folder holding
    tokenizer.model) into out_dir, the files above; returns the meta dict. `cfg` is a TokenizeConfig,
    or give its settings as keywords (val_docs=500); force=True replaces an earlier out_dir."""
    cfg = replace(cfg or TokenizeConfig(), **settings)
    tok = Tokenizer.load(tokenizer)
    if tok.eos_id is None:
        raise DataError(f"{tok.name}: the tokenizer has no EOS piece to separate documents")
    if cfg.add_bos and tok.bos_id is None:
        raise DataError(f"{tok.name}: --add-bos, but the tokenizer has no BOS piece")
    notes = []
    files = clean_files(inputs, notes)
    with staged_output(out_dir, [*inputs, *files, tokenizer], force, step="tokenize") as out:
        val_set = _draw_val(files, cfg) if cfg.val_docs else None
        meta = _write_shards(files, cfg, out, tok, val_set)
        meta["notes"] = notes
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        outputs.write_atomic(out / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return meta


def _draw_val(files, cfg):
    """Exactly cfg.val_docs held-out documents: count the readable ones, draw that many indices."""
    file_stats = []
    total = sum(1 for _ in _readable_texts(files, cfg, file_stats, []))
    if total == 0:
        raise no_documents_error(file_stats, cfg.text_field, "no documents to tokenize in")
    if cfg.val_docs >= total:
        raise DataError(f"--val-docs {cfg.val_docs} leaves no training documents (the input has {total})")
    return set(np.random.default_rng(cfg.seed).choice(total, cfg.val_docs, replace=False).tolist())


def _write_shards(files, cfg, out, tok, val_set):
    """Encode and write every document into `out` (the staged folder) as TokenizeConfig `cfg`
    says; returns meta.json's dict."""
    vocab, eos, bos = tok.vocab_size, tok.eos_id, tok.bos_id
    dtype = token_dtype(vocab)
    writers = {s: {"shards": [], "f": None, "n": 0, "docs": 0, "chars": 0} for s in ("train", "val")}
    val_texts = open(out / "val.jsonl", "w", encoding="utf-8") if cfg.val_text else None
    skipped, file_stats, doc_i = [], [], 0

    def write(split, ids, text):
        w = writers[split]
        w["chars"] += len(text)                 # code points, as tools/score.py counts them
        if split == "val" and val_texts:
            val_texts.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        if w["f"] is None or w["shards"][-1]["num_tokens"] >= cfg.shard_tokens:
            if w["f"]:
                w["f"].close()
            w["shards"].append({"file": f"{split}_{len(w['shards']):04d}.bin", "num_tokens": 0})
            w["f"] = open(out / w["shards"][-1]["file"], "wb")
        w["f"].write(ids.astype("<" + np.dtype(dtype).str[1:]).tobytes())  # little-endian on any host
        w["shards"][-1]["num_tokens"] += len(ids)
        w["n"] += len(ids)
        w["docs"] += 1

    bar = cli.progress(desc="tokenize", unit=" docs", disable=not cfg.progress)
    try:
        batches = chunked(_readable_texts(files, cfg, file_stats, skipped), cfg.batch_docs)
        with closing(ordered_map(_tok_batch, batches, cfg.workers, _tok_init, (tok,))) as results:
            for batch, (flat, lengths) in results:
                if len(flat) and (flat.max() >= vocab or flat.min() < 0):
                    raise DataError(f"{tok.name}: produced id {int(flat.max())} outside the vocabulary of {vocab}")
                for text, doc in zip(batch, np.split(flat, np.cumsum(lengths)[:-1])):
                    ids = np.concatenate([[bos] if cfg.add_bos else [], doc, [eos]]).astype(np.int64)
                    is_val = (doc_i in val_set) if val_set is not None else \
                        cfg.val_fraction > 0 and _is_val(doc_i, cfg.seed, cfg.val_fraction)
                    write("val" if is_val else "train", ids, text)
                    doc_i += 1
                bar.update(len(lengths))
    finally:
        bar.close()
        for w in writers.values():
            if w["f"]:
                w["f"].close()
        if val_texts:
            val_texts.close()
    if doc_i == 0:
        raise no_documents_error(file_stats, cfg.text_field, "no documents to tokenize in")
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable documents, e.g. {skipped[0]}", file=sys.stderr)
    return {"dtype": np.dtype(dtype).name, "vocab_size": vocab, "eos_id": eos,
            "bos_id": -1 if bos is None else bos, "add_bos": cfg.add_bos,
            "num_tokens": writers["train"]["n"], "num_docs": writers["train"]["docs"],
            "num_chars": writers["train"]["chars"], "val_num_chars": writers["val"]["chars"],
            "shards": writers["train"]["shards"], "val_num_tokens": writers["val"]["n"],
            "val_num_docs": writers["val"]["docs"], "val_shards": writers["val"]["shards"],
            "tokenizer": str(Path(tok.name).resolve()), "inputs": [str(p) for p in files],
            "skipped": len(skipped), "skipped_examples": skipped[:20]}


def _readable_texts(files, cfg, file_stats, skipped):
    """Yield the text of every readable document of `files`, in order; a stats dict per file goes
    into file_stats and a line per unreadable document into skipped."""
    for p in files:
        file_stats.append(stats := {})
        for ln, t, r in read_docs(p, cfg, stats):
            if r is None:
                yield t
            else:
                skipped.append(f"{p}:{ln}: {r}")
        if "error" in stats:  # a broken .gz: the rest of that file is one skip
            skipped.append(stats["error"])


# ----------------------------------------------------------------------------------------
# Reading: TokenShards, for training.

def _check_ids(arr, vocab, path, chunk=1 << 26):
    """Every id of a shard below the model's vocabulary, checked once at start-up (a pass over the
    memmap, in chunks: seconds per GB) rather than when a bad window happens to be sampled."""
    for i in range(0, len(arr), chunk):
        part = arr[i:i + chunk]
        top = int(part.max()) if len(part) else 0
        if top >= vocab:
            at = i + int(np.argmax(part >= vocab))
            raise DataError(f"{path}: token {at} has id {int(arr[at])} >= the model's vocab_size {vocab} "
                            "(tokenized with another tokenizer?)")


class TokenShards:
    """tokenize()'s shards: DIR/meta.json + raw little-endian id files, read through np.memmap;
    training windows in the order the module docstring gives (a pure function of the index)."""

    def __init__(self, folder, seq_len, model_vocab, val_tokens=None, seed=0, check_ids=True):
        self.T, self.seed = seq_len, seed
        mpath = os.path.join(folder, "meta.json")
        if not os.path.exists(mpath):
            raise DataError(f"{mpath} not found (is {folder} a data.py shard folder?)")
        with open(mpath, encoding="utf-8") as f:
            try:
                meta = json.load(f)
            except ValueError as e:
                raise DataError(f"{mpath}: not valid JSON ({e})") from None
        for k in ("dtype", "vocab_size", "shards"):
            if k not in meta:
                raise DataError(f"{mpath}: missing key {k!r}")
        if meta["dtype"] not in ("uint16", "uint32"):
            raise DataError(f"{mpath}: dtype {meta['dtype']!r} is not uint16 or uint32")
        if meta["vocab_size"] > model_vocab:
            raise DataError(f"{mpath}: vocab_size {meta['vocab_size']} exceeds the model's vocab_size "
                            f"{model_vocab}: the shards were tokenized with a bigger tokenizer than the "
                            "model has rows (expand the model first, or use its tokenizer)")
        dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        self.meta = meta

        def open_all(key):
            arrs = []
            for i, s in enumerate(meta.get(key) or []):
                p = os.path.join(folder, s.get("file", ""))
                if "file" not in s or not os.path.exists(p):
                    raise DataError(f"{mpath}: {key}[{i}]: shard file {p} not found")
                n = os.path.getsize(p) // dtype.itemsize
                if n != s.get("num_tokens", n) or os.path.getsize(p) % dtype.itemsize:
                    raise DataError(f"{p}: {os.path.getsize(p)} bytes, meta.json says "
                                    f"{s.get('num_tokens')} {meta['dtype']} tokens (truncated?)")
                arrs.append(np.memmap(p, dtype=dtype, mode="r"))
                if check_ids:                     # under torchrun, rank 0 alone reads every id
                    _check_ids(arrs[-1], model_vocab, p)
            return arrs

        self.train = open_all("shards")
        if not self.train:
            raise DataError(f"{mpath}: 'shards' is empty")
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
            raise DataError(f"{folder}: fewer than seq-len + 1 = {seq_len + 1} tokens in every shard")
        self.val_windows = [(a, j * seq_len) for a in self.val for j in range((len(a) - 1) // seq_len)]
        self._perm = (None, None)

    def evaluate_all(self):
        """A folder tokenized only to be evaluated (train.py --eval-data, built with val_tokens=0):
        without a val split, every window of it is held out."""
        if not self.val_windows:
            self.val_windows = [(a, j * self.T) for a in self.train for j in range((len(a) - 1) // self.T)]
        return self

    def tokens_per_char(self):
        """Tokens per character of the held-out text, from meta.json's counts (None without them:
        TokenShards needs only dtype, vocab_size and shards): bits/char = loss per token x this
        / ln 2. The split's average ratio (the corpus' when there is no val split), so train.py's
        bits per character are an estimate over the windows it evaluates; tools/score.py counts exactly."""
        split = "val_" if self.meta.get("val_shards") else ""
        tokens, chars = self.meta.get(f"{split}num_tokens"), self.meta.get(f"{split}num_chars")
        return tokens / chars if tokens and chars else None

    def _window(self, arr, start):    # every id was checked against the model's vocabulary at start-up
        import torch
        return torch.from_numpy(arr[start:start + self.T + 1].astype(np.int64))

    def train_window(self, g):
        epoch, i = divmod(g, self.N)
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.N))
        w = int(self._perm[1][i])
        s = int(np.searchsorted(self.starts, w, side="right") - 1)
        return self._window(self.train[s], (w - self.starts[s]) * self.T)

    def batch(self, first, B):
        """(x, y) of shape (B, T): windows first .. first+B-1 of the run's sample order."""
        import torch
        w = torch.stack([self.train_window(first + b) for b in range(B)])
        return w[:, :-1], w[:, 1:]

"""The Korean corpus pipeline: raw text in, cleaned JSONL and token shards out.

    # clean: normalize -> rule filters -> exact dedup -> MinHash near-dedup -> perplexity -> sample
    python data.py clean raw/ more.jsonl.gz --out clean/ --workers 8
    python data.py clean raw/ --out clean/ --ppl-ref wiki_ko.txt --ppl-percentile 90 --target-bytes 40G --force
    python data.py clean raw/ --out clean/ --ppl-model SOLAR-10.7B/ --ppl-model-device cuda  # 2nd stage
    # tokenize: cleaned text + a SentencePiece model -> uint16/uint32 .bin shards + meta.json
    python data.py tokenize clean/ --tokenizer merged/ --out tokens/ --val-docs 500

`clean` writes DIR/clean.jsonl (one {"text": ...} per line; clean_NNNNN.jsonl with
--shard-docs), DIR/report.json (documents and sizes in and out of every step, dropped
documents by reason: docs_in == docs_out + sum(dropped)) and, with --keep-dropped,
DIR/dropped.jsonl (each dropped document with its reason and source file:line).
`tokenize` is corpus.shards.tokenize (corpus/shards.py owns the token-shard format, writing and reading);
this file keeps its command line, and data.tokenize / data.load_tokens still work. Given a
clean folder, tokenize reads exactly the files its report.json lists (never dropped.jsonl).

Both write through support/outputs.py (corpus.readers.staged_output): the output folder is built beside
--out and replaces it whole only when the run succeeded, so it always holds exactly the
files report.json (meta.json) lists, and a failed run (a bad input, a full disk, a worker
killed by the OOM killer) leaves the previous output as it was. An existing --out is
replaced only with --force, and only when this project wrote it; an --out that is, holds
or is inside an input is refused. Every numeric flag is range-checked up front (RANGES).

What lives where: reading raw files (folders, gzip, encodings, invalid bytes) is corpus/readers.py;
the per-document steps are corpus/textclean.py (normalize, rule filters), corpus/dedup.py (hashes, MinHash,
LSH) and corpus/perplexity.py; this file runs them over a whole corpus and writes the report.

It streams: pass 1 runs the per-document steps (decode, normalize, filter, hash, MinHash,
n-gram perplexity) in --workers processes and spills the survivors to a hidden folder inside
the staged output, with about 0.7 KB of numbers per document (exact hash, MinHash signature,
LSH band keys, perplexity, sizes). The dedup, perplexity and sampling decisions are then
numpy sorts over those arrays (about 150 MB of RAM per million documents at the peak), and
pass 2 copies the kept lines out. The text itself never sits in RAM. Every decision is a
pure function of the input order and the seed, so 1 and N workers give identical output.
"""
import argparse
import hashlib
import json
import os
import shutil
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from corpus.dedup import MinHasher, exact_duplicates, near_duplicates
from corpus.perplexity import NgramLM, model_perplexities
from corpus.readers import (
    DataError,
    ReadConfig,
    chunked,
    expand_inputs,
    missing_field_error,
    ordered_map,
    read_docs,
    staged_output,
)
from corpus.shards import load_tokens, token_dtype, tokenize  # noqa: F401 (python data.py tokenize, data.tokenize)
from corpus.textclean import RULE_DEFAULTS, filter_reason, normalize
from support import cli, outputs
from tokenizer import load_proto


def _parse_ngram_thresholds(spec, flag="--top-ngram"):
    """"2:0.20,3:0.18" -> {2: 0.2, 3: 0.18}; "" -> {}."""
    out = {}
    for part in filter(None, (spec or "").split(",")):
        try:
            n, v = part.split(":")
            out[int(n)] = float(v)
        except ValueError:
            raise DataError(f"{flag}: bad n-gram threshold {part!r} in {spec!r}: expected N:FRACTION,...") from None
        if out[int(n)] != out[int(n)] or not (int(n) >= 2 and 0 <= out[int(n)] <= 1):
            raise DataError(f"{flag}: {part!r} in {spec!r}: N must be >= 2 and FRACTION in [0, 1]")
    return out


# ----------------------------------------------------------------------------------------
# Settings. The first four (text_field, txt_mode, encoding, on_invalid) are
# corpus.readers.ReadConfig: how each raw file is read and decoded.

# the range of every numeric setting, (kind, lo, hi, lo_open): the command line checks its
# flags with cli.number, CleanConfig checks API users' values with cli.check
RANGES = {
    "max_repeat": (int, 0, None, False), "min_chars": (int, 0, None, False), "max_chars": (int, 0, None, False),
    "min_hangul_frac": (float, 0, 1, False), "max_symbol_frac": (float, 0, 1, False),
    "max_dup_line_frac": (float, 0, 1, False), "max_dup_line_char_frac": (float, 0, 1, False),
    "rep_min_words": (int, 0, None, False), "max_digit_frac": (float, 0, 1, False),
    "rep_full_words": (int, 0, None, False), "min_sentence_frac": (float, 0, 1, False),
    "sentence_min_lines": (int, 1, None, False), "max_sentence_chars": (int, 1, None, False),
    "jaccard": (float, 0, 1, True), "num_perm": (int, 1, None, False),
    "shingle": (int, 1, None, False), "lsh_bands": (int, 0, None, False), "lsh_rows": (int, 0, None, False),
    "ppl_order": (int, 1, None, False), "ppl_percentile": (float, 0, 100, False), "ppl_max": (float, 0, None, False),
    "ppl_model_percentile": (float, 0, 100, False), "ppl_model_max": (float, 0, None, False),
    "ppl_model_tokens": (int, 1, None, False), "ppl_model_batch": (int, 1, None, False),
    "target_docs": (int, 0, None, False), "target_chars": (int, 0, None, False), "target_bytes": (int, 0, None, False),
    "seed": (int, 0, None, False), "workers": (int, 1, None, False), "batch_docs": (int, 1, None, False),
    "shard_docs": (int, 0, None, False),
}


def _flag(name):
    return "--" + name.replace("_", "-")


@dataclass
class CleanConfig(ReadConfig):
    normalize: bool = True
    max_repeat: int = 5             # cap runs of one character at this length (0: off)
    filter: bool = True
    min_chars: int = 20
    max_chars: int = 200_000
    min_hangul_frac: float = 0.4    # Hangul share of letters (Latin, Hanja, kana... count as letters)
    max_symbol_frac: float = 0.3    # share of non-space characters that are punctuation or symbols (digits
                                    # count only outside sentences: "2018년 4.5%" in prose is prose)
    max_dup_line_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    top_ngram: str = "2:0.20,3:0.18,4:0.16"  # Gopher: chars in the most frequent word n-gram
    dup_ngram: str = "5:0.15,6:0.14,7:0.13,8:0.12,9:0.11,10:0.10"  # chars in repeated n-grams
    rep_min_words: int = 50         # the n-gram checks apply to documents of this many words or more
    max_digit_frac: float = RULE_DEFAULTS["max_digit_frac"]       # share of non-space characters that are digits
    rep_full_words: int = RULE_DEFAULTS["rep_full_words"]         # shorter documents judged as if this long (0: Gopher)
    min_sentence_frac: float = RULE_DEFAULTS["min_sentence_frac"]  # share of the text in sentences, for documents
    sentence_min_lines: int = RULE_DEFAULTS["sentence_min_lines"]  # of this many lines or more (menus, listings)
    max_sentence_chars: int = RULE_DEFAULTS["max_sentence_chars"]  # a longer stretch to a sentence end is none
    exact_dedup: bool = True
    near_dedup: bool = True
    jaccard: float = 0.8
    num_perm: int = 128
    shingle: int = 5                # character n-gram size of MinHash shingles
    lsh_bands: int = 0              # 0: chosen from --jaccard and --num-perm
    lsh_rows: int = 0
    ppl_ref: list = field(default_factory=list)  # reference texts (or a saved .npz model)
    ppl_tokenizer: str = ""         # SentencePiece model for the n-gram LM ("" = characters)
    ppl_order: int = 3
    ppl_percentile: float = 0.0     # drop documents above this perplexity percentile (0: off)
    ppl_max: float = 0.0            # drop documents above this perplexity (0: off)
    ppl_model: str = ""             # second stage: a model.py (HF-format) folder scoring survivors
    ppl_model_tokenizer: str = ""   # its SentencePiece model (default: PPL_MODEL/tokenizer.model)
    ppl_model_percentile: float = 90.0  # drop documents above this percentile of model perplexity
    ppl_model_max: float = 0.0      # ... or above this model perplexity (0: off)
    ppl_model_tokens: int = 512     # score the first this many tokens of each document
    ppl_model_batch: int = 8
    ppl_model_device: str = "cpu"
    target_docs: int = 0            # random selection to a size (0: keep all)
    target_chars: int = 0
    target_bytes: int = 0
    seed: int = 0
    workers: int = 1
    batch_docs: int = 256
    shard_docs: int = 0             # >0: clean_NNNNN.jsonl files of this many documents
    keep_dropped: bool = False
    progress: bool = True

    def __post_init__(self):
        for name, (kind, lo, hi, lo_open) in RANGES.items():  # the flags' ranges, for API users too
            try:
                cli.check(_flag(name), getattr(self, name), kind, lo, hi, lo_open)
            except ValueError as e:
                raise DataError(str(e)) from None
        self.top_ngrams = _parse_ngram_thresholds(self.top_ngram, "--top-ngram")
        self.dup_ngrams = _parse_ngram_thresholds(self.dup_ngram, "--dup-ngram")
        super().__post_init__()  # --txt-mode, --encoding, --on-invalid
        if bool(self.lsh_bands) != bool(self.lsh_rows):
            raise DataError("--lsh-bands and --lsh-rows go together: give both, or neither")
        if self.lsh_bands * self.lsh_rows > self.num_perm:
            raise DataError(f"--lsh-bands * --lsh-rows = {self.lsh_bands * self.lsh_rows} "
                            f"exceeds --num-perm {self.num_perm}")


# ----------------------------------------------------------------------------------------
# Pass 1: the per-document steps, run in worker processes on batches, results in order
# (readers.ordered_map).

def _docs(files, cfg, file_stats, progress):
    """(file index, line, text, reason) of every document of every file, in order."""
    for fi, path in enumerate(files):
        stats = {}
        file_stats.append(stats)
        for ln, text, reason in read_docs(path, cfg, stats, progress):
            yield fi, ln, text, reason


_W = {}


def _init_worker(cfg, lm):
    _W.update(cfg=cfg, lm=lm,
              mh=MinHasher(cfg.num_perm, cfg.shingle, cfg.lsh_bands or None, cfg.lsh_rows or None, cfg.jaccard)
              if cfg.near_dedup else None)


def _process(batch):
    """Normalize and filter each readable text of a batch of (file, line, text, reason), then
    hash, MinHash and score the survivors together."""
    cfg, mh, lm = _W["cfg"], _W["mh"], _W["lm"]
    texts = [d[2] for d in batch if d[3] is None]
    t = dict.fromkeys(("normalize", "filter", "exact_dedup", "near_dedup", "perplexity"), 0.0)
    out = {"text": [], "reason": [], "in_chars": 0, "in_bytes": 0}
    for raw in texts:
        t0 = time.process_time()
        out["in_chars"] += len(raw)
        out["in_bytes"] += len(raw.encode("utf-8"))
        text = normalize(raw, cfg.max_repeat) if cfg.normalize else raw
        t1 = time.process_time()
        reason = "empty" if not text else filter_reason(text, cfg) if cfg.filter else None
        t["normalize"] += t1 - t0
        t["filter"] += time.process_time() - t1
        out["text"].append(text)
        out["reason"].append(reason)
    t0 = time.process_time()
    kept = [x for x, r in zip(out["text"], out["reason"]) if not r]
    enc = [x.encode("utf-8") for x in kept]
    out["chars"] = np.fromiter(map(len, kept), np.int64, count=len(kept))
    out["bytes"] = np.fromiter(map(len, enc), np.int64, count=len(kept))
    out["hash"] = np.frombuffer(b"".join(hashlib.blake2b(b, digest_size=8).digest() for b in enc), "<u8")
    t1 = time.process_time()
    out["sig"] = mh.signatures(kept) if mh else np.zeros((len(kept), 0), np.uint32)
    out["keys"] = mh.band_keys(out["sig"]) if mh else np.zeros((len(kept), 0), np.uint64)
    t2 = time.process_time()
    out["ppl"] = lm.perplexities(kept).astype(np.float32) if lm else np.zeros(len(kept), np.float32)
    t["exact_dedup"] += t1 - t0
    t["near_dedup"] += t2 - t1
    t["perplexity"] += time.process_time() - t2
    out["seconds"] = t
    return out


# ----------------------------------------------------------------------------------------
# Between the passes: sampling to a size (dedup decisions are in corpus/dedup.py).

def sample_to_target(sizes, alive, target, seed):
    """Random documents (seeded) whose total size stays within `target`; (n,) bool."""
    idx = np.random.default_rng(seed).permutation(np.flatnonzero(alive))
    keep = np.zeros(len(alive), bool)
    keep[idx[np.cumsum(sizes[idx]) <= target]] = True
    return keep


# ----------------------------------------------------------------------------------------
# clean(): the whole pipeline, built inside a staged output folder (corpus.readers.staged_output).

STEPS = ("read", "normalize", "filter", "exact_dedup", "near_dedup", "perplexity", "sample")
# pass 2's decision per document: kept, or the reason it is dropped (an index into CODES)
KEPT, EXACT_DUP, NEAR_DUP, PERPLEXITY, SAMPLED_OUT, MODEL_PERPLEXITY = range(6)
CODES = [None, "exact_dup", "near_dup", "perplexity", "sampled_out", "model_perplexity"]  # the report's names


def load_ppl_model(cfg):
    if not cfg.ppl_ref:
        return None
    if len(cfg.ppl_ref) == 1 and str(cfg.ppl_ref[0]).endswith(".npz"):
        return NgramLM.load(cfg.ppl_ref[0])
    ref_cfg = ReadConfig(text_field=cfg.text_field, txt_mode=cfg.txt_mode, encoding=cfg.encoding)
    texts = [normalize(t, cfg.max_repeat) if cfg.normalize else t
             for p in expand_inputs(cfg.ppl_ref) for _, t, r in read_docs(p, ref_cfg, {}) if r is None]
    # load_proto checks the bytes first: a corrupt file is one line naming it, not a SentencePiece abort
    sp = load_proto(cfg.ppl_tokenizer).SerializeToString() if cfg.ppl_tokenizer else None
    return NgramLM(cfg.ppl_order, sp_model=sp).fit(t for t in texts if t)


class _Drops:
    """Dropped documents: counted per step and reason, and (--keep-dropped) written out."""

    def __init__(self, files, path):
        self.files = files
        self.steps = {s: {"docs_in": 0, "docs_out": 0, "dropped": {}, "cpu_seconds": 0.0} for s in STEPS}
        self.f = open(path, "w", encoding="utf-8") if path else None

    def count(self, step, reason, k=1):
        d = self.steps[step]["dropped"]
        d[reason] = d.get(reason, 0) + k

    def record(self, fi, ln, text, reason, dup=None):
        if self.f:
            rec = {"reason": reason, "source": f"{self.files[fi]}:{ln}", "text": text}
            if dup is not None:
                rec["duplicate_of"] = f"{self.files[dup[0]]}:{dup[1]}"
            self.f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _pass1(files, cfg, lm, spill, drops):
    """The per-document steps in the workers; survivors' text to spill/stage.jsonl and their
    numbers to spill/<array>. Returns (survivors, input sizes, per-file read stats)."""
    stage = open(spill / "stage.jsonl", "w", encoding="utf-8")
    arrays = {k: open(spill / k, "wb") for k in ("hash", "keys", "sig", "ppl", "chars", "bytes", "file", "line")}
    file_stats, n_stage, sizes_in = [], 0, {"chars": 0, "bytes": 0}
    bar = cli.progress(total=sum(os.path.getsize(f) for f in files), unit="B", unit_scale=True, desc="clean",
                       disable=not cfg.progress)
    batches = chunked(_docs(files, cfg, file_stats, bar), cfg.batch_docs)
    results = ordered_map(_process, batches, cfg.workers, _init_worker, (cfg, lm))
    with closing(results):  # an error here stops the workers now, not when its traceback is freed
        for batch, res in results:
            n_stage += _spill(batch, res, drops, stage, arrays, sizes_in)
    bar.close()
    for f in (stage, *arrays.values()):
        f.close()
    return n_stage, sizes_in, file_stats


def _spill(batch, res, drops, stage, arrays, sizes_in):
    """Count and record one batch's drops; spill its survivors' text and numbers; returns
    how many survived."""
    steps = drops.steps
    steps["read"]["docs_in"] += len(batch)
    j, fis, lns = 0, [], []
    for fi, ln, text, reason in batch:
        if reason:
            drops.count("read", reason)
            drops.record(fi, ln, None, reason)
            continue
        why, norm = res["reason"][j], res["text"][j]
        j += 1
        if why:
            drops.count("normalize" if why == "empty" else "filter", why)
            drops.record(fi, ln, norm, why)
            continue
        stage.write(json.dumps({"text": norm}, ensure_ascii=False) + "\n")
        fis.append(fi)
        lns.append(ln)
    sizes_in["chars"] += res["in_chars"]
    sizes_in["bytes"] += res["in_bytes"]
    arrays["file"].write(np.asarray(fis, np.int32).tobytes())
    arrays["line"].write(np.asarray(lns, np.int64).tobytes())
    for k in ("hash", "keys", "sig", "ppl", "chars", "bytes"):
        arrays[k].write(np.ascontiguousarray(res[k]).tobytes())
    for s, sec in res["seconds"].items():
        steps[s]["cpu_seconds"] += sec
    return len(fis)


def _check_readable(cfg, steps, file_stats):
    """Fail when there was nothing to read at all, or when nothing was readable because no
    record has --text-field (say which fields the records do have)."""
    if steps["read"]["docs_in"] == 0:
        raise DataError("no documents in the input: " + "; ".join(
            s.get("warning") or s.get("error") or s["path"] for s in file_stats))
    if steps["read"]["docs_in"] == sum(steps["read"]["dropped"].values()):
        msg = missing_field_error(cfg.text_field, file_stats)
        if msg:
            raise DataError(msg)


def _decide(spill, n, cfg, lm, steps):
    """Exact dedup, near dedup, perplexity and sampling over the spilled arrays: (n,) reason
    codes (KEPT, EXACT_DUP, ...), the index each duplicate duplicates, and the cutoffs."""
    def spilled(name, dtype):   # one spilled array, by its file name
        return np.fromfile(spill / name, dtype=dtype)

    reason = np.zeros(n, np.int8)
    dup_of = np.full(n, -1, np.int64)
    t0 = time.process_time()  # CPU seconds, like the workers' timings: robust to a busy machine
    if cfg.exact_dedup:
        d = exact_duplicates(spilled("hash", np.uint64))
        reason[d >= 0], dup_of[d >= 0] = EXACT_DUP, d[d >= 0]
    t1 = time.process_time()
    if cfg.near_dedup and n:
        keys = np.memmap(spill / "keys", dtype=np.uint64, mode="r").reshape(n, -1)
        sig = np.memmap(spill / "sig", dtype=np.uint32, mode="r").reshape(n, -1)
        d = near_duplicates(keys, reason == KEPT, sig, cfg.jaccard)
        reason[d >= 0], dup_of[d >= 0] = NEAR_DUP, d[d >= 0]
        del keys, sig
    t2 = time.process_time()
    ppl = spilled("ppl", np.float32)
    ppl_cut = None
    if lm is not None and (cfg.ppl_percentile or cfg.ppl_max) and (reason == KEPT).any():
        cuts = [cfg.ppl_max] if cfg.ppl_max else []
        if cfg.ppl_percentile:
            cuts.append(float(np.percentile(ppl[reason == KEPT], cfg.ppl_percentile)))
        ppl_cut = min(cuts)
        reason[(reason == KEPT) & (ppl > ppl_cut)] = PERPLEXITY
    model_cut = _model_perplexity(spill, cfg, reason) if cfg.ppl_model and (reason == KEPT).any() else None
    t3 = time.process_time()
    for unit, target in (("docs", cfg.target_docs), ("chars", cfg.target_chars), ("bytes", cfg.target_bytes)):
        if target:
            sizes = np.ones(n, np.int64) if unit == "docs" else spilled(unit, np.int64)
            alive = reason == KEPT
            reason[alive & ~sample_to_target(sizes, alive, target, cfg.seed)] = SAMPLED_OUT
    t4 = time.process_time()
    for s, sec, codes in (("exact_dedup", t1 - t0, [EXACT_DUP]), ("near_dedup", t2 - t1, [NEAR_DUP]),
                          ("perplexity", t3 - t2, [PERPLEXITY, MODEL_PERPLEXITY]), ("sample", t4 - t3, [SAMPLED_OUT])):
        steps[s]["cpu_seconds"] += sec
        for code in codes:
            k = int((reason == code).sum())
            if k:
                steps[s]["dropped"][CODES[code]] = steps[s]["dropped"].get(CODES[code], 0) + k
    return reason, dup_of, ppl_cut, model_cut


def _model_perplexity(spill, cfg, reason):
    """Second stage: score the survivors under a real model; mark those above the cut (5)."""
    alive = reason == KEPT

    def alive_texts():
        with open(spill / "stage.jsonl", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if alive[i]:
                    yield json.loads(line)["text"]
    try:
        mp = np.fromiter(cli.progress(model_perplexities(
            alive_texts(), cfg.ppl_model, cfg.ppl_model_tokenizer, cfg.ppl_model_tokens,
            cfg.ppl_model_batch, cfg.ppl_model_device), total=int(alive.sum()), desc="model perplexity",
            disable=not cfg.progress), np.float64, count=int(alive.sum()))
    except (ValueError, KeyError, OSError) as e:  # a bad model folder or tokenizer
        raise DataError(f"--ppl-model {cfg.ppl_model}: {e}") from None
    cuts = [cfg.ppl_model_max] if cfg.ppl_model_max else []
    if cfg.ppl_model_percentile:
        cuts.append(float(np.percentile(mp[np.isfinite(mp)], cfg.ppl_model_percentile))
                    if np.isfinite(mp).any() else np.inf)
    if not cuts:
        return None
    idx = np.flatnonzero(alive)
    reason[idx[mp > min(cuts)]] = MODEL_PERPLEXITY
    return min(cuts)


def _pass2(spill, out, reason, dup_of, cfg, drops):
    """Copy the kept lines of spill/stage.jsonl to out/clean.jsonl (or clean_NNNNN.jsonl
    shards), the dropped ones to dropped.jsonl; returns (file names, documents, sizes)."""
    names, out_f, n_out, sizes_out = [], None, 0, {"chars": 0, "bytes": 0}
    chars, nbytes = np.fromfile(spill / "chars", np.int64), np.fromfile(spill / "bytes", np.int64)
    src_file, src_line = np.fromfile(spill / "file", np.int32), np.fromfile(spill / "line", np.int64)
    with open(spill / "stage.jsonl", encoding="utf-8") as stage:
        for i, line in enumerate(stage):
            if reason[i] != KEPT:
                if drops.f:
                    dup = (src_file[dup_of[i]], src_line[dup_of[i]]) if dup_of[i] >= 0 else None
                    drops.record(src_file[i], src_line[i], json.loads(line)["text"], CODES[reason[i]], dup)
                continue
            if out_f is None or (cfg.shard_docs and n_out % cfg.shard_docs == 0):
                if out_f:
                    out_f.close()
                name = f"clean_{len(names):05d}.jsonl" if cfg.shard_docs else "clean.jsonl"
                names.append(name)
                out_f = open(out / name, "w", encoding="utf-8")
            out_f.write(line)
            n_out += 1
            sizes_out["chars"] += int(chars[i])
            sizes_out["bytes"] += int(nbytes[i])
    if out_f is None:  # nothing kept: still write an (empty) clean.jsonl
        names.append("clean_00000.jsonl" if cfg.shard_docs else "clean.jsonl")
        open(out / names[0], "w").close()
    else:
        out_f.close()
    return names, n_out, sizes_out


def _report(cfg, steps, file_stats, sizes_in, names, n_out, sizes_out, cuts, notes, t_start):
    # the counts reconcile: each step's docs_out is the next step's docs_in
    flow = steps["read"]["docs_in"]
    for s in steps.values():
        s["docs_in"] = flow
        flow -= sum(s["dropped"].values())
        s["docs_out"] = flow
        s["cpu_seconds"] = round(s["cpu_seconds"], 3)
    dropped = {}
    for s in steps.values():
        for r, k in s["dropped"].items():
            dropped[r] = dropped.get(r, 0) + k
    assert flow == n_out, (flow, n_out)
    if n_out == 0:
        notes.append("every document was dropped: see 'dropped' for why")
    for s in file_stats:
        notes += [s[k] for k in ("warning", "error") if k in s]
    return {"docs_in": steps["read"]["docs_in"], "docs_out": n_out, "dropped": dropped,
            "chars_in": sizes_in["chars"], "bytes_in": sizes_in["bytes"],
            "chars_out": sizes_out["chars"], "bytes_out": sizes_out["bytes"],
            "steps": steps, "files": file_stats, "outputs": names, "notes": notes,
            "read_errors": sum("error" in s for s in file_stats),  # files cut short (a broken .gz)
            "perplexity_cutoff": cuts[0], "model_perplexity_cutoff": cuts[1],
            "seconds": round(time.time() - t_start, 3),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}}


def clean(inputs, out_dir, cfg=None, force=False):
    """Run the pipeline on `inputs` (files or folders), write out_dir/clean.jsonl (or shards)
    and out_dir/report.json; returns the report dict. out_dir is replaced whole when the run
    succeeds (an existing one only with force=True, and only if this project wrote it)."""
    cfg = cfg or CleanConfig()
    t_start = time.time()
    files = expand_inputs(inputs)
    if cfg.ppl_model and not Path(cfg.ppl_model).is_dir():
        raise DataError(f"--ppl-model {cfg.ppl_model}: no such model folder")
    if not cfg.ppl_ref and (cfg.ppl_percentile or cfg.ppl_max):
        raise DataError("--ppl-percentile/--ppl-max need a reference text: --ppl-ref FILE")
    # every file read, as found (a symlink inside an input folder is checked where it leads)
    uses = [*inputs, *files, *cfg.ppl_ref, cfg.ppl_tokenizer, cfg.ppl_model, cfg.ppl_model_tokenizer]
    with staged_output(out_dir, uses, force, step="clean") as out:
        try:
            lm = load_ppl_model(cfg)
        except ValueError as e:  # NgramLM's complaints about the reference, as a one-line error
            raise DataError(f"--ppl-ref: {e}") from None
        notes = [] if lm is not None else ["perplexity filter skipped: no --ppl-ref given"]
        spill = out / ".spill"  # inside the staged folder: a killed run's leftovers go with it
        spill.mkdir()
        drops = _Drops(files, out / "dropped.jsonl" if cfg.keep_dropped else None)
        n, sizes_in, file_stats = _pass1(files, cfg, lm, spill, drops)
        _check_readable(cfg, drops.steps, file_stats)
        reason, dup_of, *cuts = _decide(spill, n, cfg, lm, drops.steps)
        names, n_out, sizes_out = _pass2(spill, out, reason, dup_of, cfg, drops)
        if drops.f:
            drops.f.close()
            names.append("dropped.jsonl")
        shutil.rmtree(spill)
        report = _report(cfg, drops.steps, file_stats, sizes_in, names, n_out, sizes_out, cuts, notes, t_start)
        outputs.write_atomic(out / "report.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return report


# ----------------------------------------------------------------------------------------
# Command line

def _size(lo=0):
    """An argparse type: '40G', '1.5M', '1000' -> int (decimal units: K=1e3, M=1e6, G=1e9,
    T=1e12), at least `lo`."""
    def parse(text):
        s = str(text).strip().upper()
        mult = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}.get(s[-1:], 1)
        try:
            value = int(float(s[:-1] if mult > 1 else s) * mult)
        except (ValueError, OverflowError):  # OverflowError: "inf"
            value = None
        if value is None or value < lo:
            raise argparse.ArgumentTypeError(f"must be a size >= {lo} (e.g. 5000, 20M, 40G), got {text!r}")
        return value
    return parse


def _number(name):
    return cli.number(*RANGES[name])


def _ngram_spec(flag):
    def parse(text):
        try:
            _parse_ngram_thresholds(text, flag)
        except DataError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(flag + ": ")) from None
        return text
    return parse


def _add_clean_args(p):
    d = CleanConfig()
    p.add_argument("inputs", nargs="+", help=".txt/.jsonl files (optionally .gz) or folders of them")
    p.add_argument("--out", required=True, help="output folder: clean.jsonl, report.json")
    cli.add_force(p)
    p.add_argument("--text-field", default=d.text_field, help="JSONL field holding the text")
    p.add_argument("--txt-mode", default=d.txt_mode, choices=["blocks", "lines"],
                   help=".txt documents: blank-line separated blocks, or one per line")
    p.add_argument("--encoding", default=d.encoding, choices=["auto", "utf-8", "cp949", "euc-kr"],
                   help="input encoding; auto tries UTF-8 then CP949 per file, and per line where a line fails")
    p.add_argument("--on-invalid", default=d.on_invalid, choices=["replace", "drop"],
                   help="a line with undecodable bytes: replace them with U+FFFD, or drop the line")
    p.add_argument("--no-normalize", dest="normalize", action="store_false", help="skip normalization")
    p.add_argument("--max-repeat", type=_number("max_repeat"), default=d.max_repeat, help="cap character runs (0: off)")
    p.add_argument("--no-filter", dest="filter", action="store_false", help="skip the rule filters")
    p.add_argument("--min-chars", type=_number("min_chars"), default=d.min_chars, help="drop shorter documents")
    p.add_argument("--max-chars", type=_number("max_chars"), default=d.max_chars,
                   help="drop longer documents (0: no limit)")
    p.add_argument("--min-hangul-frac", type=_number("min_hangul_frac"), default=d.min_hangul_frac,
                   help="min Hangul share of letters")
    p.add_argument("--max-symbol-frac", type=_number("max_symbol_frac"), default=d.max_symbol_frac,
                   help="max share of non-space characters that are punctuation or symbols (digits count only "
                        "outside sentences)")
    p.add_argument("--max-dup-line-frac", type=_number("max_dup_line_frac"), default=d.max_dup_line_frac,
                   help="max share of repeated lines")
    p.add_argument("--max-dup-line-char-frac", type=_number("max_dup_line_char_frac"),
                   default=d.max_dup_line_char_frac, help="max share of characters in repeated lines")
    p.add_argument("--top-ngram", type=_ngram_spec("--top-ngram"), default=d.top_ngram,
                   help="N:FRAC,... max char share of the top word n-gram")
    p.add_argument("--dup-ngram", type=_ngram_spec("--dup-ngram"), default=d.dup_ngram,
                   help="N:FRAC,... max char share in repeated word n-grams")
    p.add_argument("--rep-min-words", type=_number("rep_min_words"), default=d.rep_min_words,
                   help="apply the n-gram repetition checks to documents of at least this many words")
    p.add_argument("--max-digit-frac", type=_number("max_digit_frac"), default=d.max_digit_frac,
                   help="max share of non-space characters that are digits (1: off)")
    p.add_argument("--rep-full-words", type=_number("rep_full_words"), default=d.rep_full_words,
                   help="the n-gram checks judge a shorter document as if it had this many words (0: Gopher as is)")
    p.add_argument("--min-sentence-frac", type=_number("min_sentence_frac"), default=d.min_sentence_frac,
                   help="min share of the text in sentences, for documents of --sentence-min-lines lines (0: off)")
    p.add_argument("--sentence-min-lines", type=_number("sentence_min_lines"), default=d.sentence_min_lines,
                   help="lines from which --min-sentence-frac applies")
    p.add_argument("--max-sentence-chars", type=_number("max_sentence_chars"), default=d.max_sentence_chars,
                   help="a longer stretch up to a sentence end is no sentence")
    p.add_argument("--no-exact-dedup", dest="exact_dedup", action="store_false", help="skip exact dedup")
    p.add_argument("--no-near-dedup", dest="near_dedup", action="store_false", help="skip MinHash dedup")
    p.add_argument("--jaccard", type=_number("jaccard"), default=d.jaccard, help="near-duplicate Jaccard threshold")
    p.add_argument("--num-perm", type=_number("num_perm"), default=d.num_perm, help="MinHash permutations")
    p.add_argument("--shingle", type=_number("shingle"), default=d.shingle, help="character n-gram size of shingles")
    p.add_argument("--lsh-bands", type=_number("lsh_bands"), default=0, help="LSH bands (0: chosen from --jaccard)")
    p.add_argument("--lsh-rows", type=_number("lsh_rows"), default=0, help="LSH rows per band (with --lsh-bands)")
    p.add_argument("--ppl-ref", nargs="+", default=[], help="reference text files (or a saved .npz n-gram model)")
    p.add_argument("--ppl-tokenizer", default="", help="SentencePiece model for the n-gram LM (default: characters)")
    p.add_argument("--ppl-order", type=_number("ppl_order"), default=d.ppl_order, help="n-gram order")
    p.add_argument("--ppl-percentile", type=_number("ppl_percentile"), default=0.0,
                   help="drop documents above this percentile")
    p.add_argument("--ppl-max", type=_number("ppl_max"), default=0.0, help="drop documents above this perplexity")
    p.add_argument("--ppl-model", default="", help="second stage: a model folder (config.json + safetensors)")
    p.add_argument("--ppl-model-tokenizer", default="", help="its tokenizer.model (default: in the folder)")
    p.add_argument("--ppl-model-percentile", type=_number("ppl_model_percentile"), default=90.0,
                   help="drop above this model percentile")
    p.add_argument("--ppl-model-max", type=_number("ppl_model_max"), default=0.0,
                   help="drop above this model perplexity")
    p.add_argument("--ppl-model-tokens", type=_number("ppl_model_tokens"), default=512,
                   help="tokens scored per document")
    p.add_argument("--ppl-model-batch", type=_number("ppl_model_batch"), default=8, help="documents per forward pass")
    p.add_argument("--ppl-model-device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--target-docs", type=_size(), default=0, help="random selection to this many documents")
    p.add_argument("--target-chars", type=_size(), default=0, help="... or characters (e.g. 500M)")
    p.add_argument("--target-bytes", type=_size(), default=0, help="... or UTF-8 bytes (e.g. 40G)")
    p.add_argument("--seed", type=_number("seed"), default=0, help="seed of the random selection")
    p.add_argument("--workers", type=_number("workers"), default=os.cpu_count() or 1,
                   help="processes for per-document steps")
    p.add_argument("--shard-docs", type=_number("shard_docs"), default=0,
                   help="write clean_NNNNN.jsonl of this many documents")
    p.add_argument("--keep-dropped", action="store_true", help="also write dropped.jsonl with reasons")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _add_tokenize_args(p):
    p.add_argument("inputs", nargs="+", help="a clean folder (its report.json's outputs), or .jsonl/.txt files "
                                             "(optionally .gz) and folders of them")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model or a folder holding one")
    p.add_argument("--out", required=True, help="output folder for train_NNNN.bin, val_NNNN.bin, meta.json")
    cli.add_force(p)
    p.add_argument("--text-field", default="text", help="JSONL field holding the text")
    p.add_argument("--shard-tokens", type=_size(1), default=100_000_000, help="tokens per shard (e.g. 100M)")
    p.add_argument("--val-fraction", type=cli.number(float, 0, 1, hi_open=True), default=0.0,
                   help="share of documents held out as val")
    p.add_argument("--val-docs", type=cli.number(int, 0), default=0, help="exactly this many held-out documents")
    p.add_argument("--seed", type=cli.number(int, 0), default=0, help="seed of the held-out choice")
    p.add_argument("--add-bos", action="store_true", help="start every document with BOS")
    p.add_argument("--val-text", action="store_true",
                   help="also write val.jsonl, the held-out documents' text (to score with any tokenizer: "
                        "redwhale.py score)")
    p.add_argument("--workers", type=cli.number(int, 1), default=os.cpu_count() or 1, help="encoding processes")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def main(argv=None):
    """Returns 0; a bad input, flag or output raises (DataError, OSError...), which cli.run
    turns into one line `error: ...` and exit code 1."""
    ap = argparse.ArgumentParser(description="Korean corpus pipeline: clean raw text, tokenize to shards.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_clean_args(sub.add_parser("clean", help="normalize, filter, deduplicate, sample -> clean.jsonl"))
    _add_tokenize_args(sub.add_parser("tokenize", help="JSONL + SentencePiece model -> .bin token shards + meta.json"))
    args = ap.parse_args(argv)
    if args.cmd == "clean":
        kw = {k: v for k, v in vars(args).items() if k not in ("cmd", "inputs", "out", "force")}
        rep = clean(args.inputs, args.out, CleanConfig(**kw), force=args.force)
        print(f"{rep['docs_in']} documents in, {rep['docs_out']} out ({rep['bytes_out'] / 1e6:.1f} MB) "
              f"in {rep['seconds']:.1f}s; dropped: {json.dumps(rep['dropped'], ensure_ascii=False)}")
        for note in rep["notes"]:
            print("note:", note)
        print(f"wrote {', '.join(rep['outputs'])} and report.json to {args.out}")
    else:
        meta = tokenize(args.inputs, args.tokenizer, args.out, args.text_field, args.shard_tokens, args.val_fraction,
                        args.val_docs, args.seed, args.workers, args.add_bos, args.progress, force=args.force,
                        val_text=args.val_text)
        print(f"{meta['num_tokens']} train tokens in {len(meta['shards'])} shard(s), {meta['val_num_tokens']} val "
              f"tokens, dtype {meta['dtype']}, vocab {meta['vocab_size']} -> {args.out}/meta.json")
    return 0


if __name__ == "__main__":
    cli.run(main)

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
`tokenize` is corpus.shards.tokenize, whose module owns the token-shard format (its flags: TokenizeConfig);
given a clean folder it reads exactly the files its report.json lists, never dropped.jsonl.

Both write through support/outputs.py's guard (corpus.readers.staged_output): --out is replaced
whole when the run succeeds, so it holds exactly the files report.json (meta.json) lists, and a
failed run (a bad input, a full disk, a worker OOM-killed) leaves it as it was. Every numeric flag
is range-checked up front (CleanConfig).

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from corpus.dedup import MinHasher, exact_duplicates, near_duplicates
from corpus.perplexity import NgramLM, model_perplexities
from corpus.readers import (
    DataError,
    ReadConfig,
    add_flags,
    chunked,
    expand_inputs,
    flag_name,
    no_documents_error,
    ordered_map,
    read_docs,
    setting,
    size_type,
    staged_output,
)
from corpus.shards import TokenizeConfig, token_dtype, tokenize  # noqa: F401 (data.tokenize, data.token_dtype)
from corpus.textclean import filter_reason, normalize
from support import cli, outputs
from support.tokenizer_io import Tokenizer

# ----------------------------------------------------------------------------------------
# Settings: CleanConfig declares each one once; its flags, their checks and the report's "config" follow.

def _parse_ngram_thresholds(spec):
    """"2:0.20,3:0.18" -> {2: 0.2, 3: 0.18}; "" -> {}."""
    out = {}
    for part in filter(None, (spec or "").split(",")):
        try:
            n, v = part.split(":")
            out[int(n)] = float(v)
        except ValueError:
            raise ValueError(f"bad n-gram threshold {part!r} in {spec!r}: expected N:FRACTION,...") from None
        if out[int(n)] != out[int(n)] or not (int(n) >= 2 and 0 <= out[int(n)] <= 1):
            raise ValueError(f"{part!r} in {spec!r}: N must be >= 2 and FRACTION in [0, 1]")
    return out


def _ngram_spec(text):
    """The argparse type of --top-ngram and --dup-ngram: the text, once it parses."""
    try:
        _parse_ngram_thresholds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


@dataclass
class CleanConfig(ReadConfig):
    """Every setting of `data.py clean`, each with its default, --help line and range (a
    bool's help is its flag's: --no-NAME when on by default, else --NAME). The first four, how
    each raw file is read, are ReadConfig's (text_field, txt_mode, encoding, on_invalid)."""
    normalize: bool = setting(True, "skip normalization")
    max_repeat: int = setting(5, "cap character runs (0: off)", lo=0)
    filter: bool = setting(True, "skip the rule filters")
    min_chars: int = setting(20, "drop shorter documents", lo=0)
    max_chars: int = setting(200_000, "drop longer documents (0: no limit)", lo=0)
    min_hangul_frac: float = setting(0.4, "min Hangul share of letters", lo=0, hi=1)  # Latin, Hanja, kana... too
    max_symbol_frac: float = setting(0.3, "max share of non-space characters that are punctuation or symbols "
                                     "(digits count only outside sentences)", lo=0, hi=1)
    max_dup_line_frac: float = setting(0.3, "max share of repeated lines", lo=0, hi=1)
    max_dup_line_char_frac: float = setting(0.2, "max share of characters in repeated lines", lo=0, hi=1)
    # Gopher's (Rae et al. 2021) n-gram repetition thresholds
    top_ngram: str = setting("2:0.20,3:0.18,4:0.16", "N:FRAC,... max char share of the top word n-gram",
                             type=_ngram_spec)
    dup_ngram: str = setting("5:0.15,6:0.14,7:0.13,8:0.12,9:0.11,10:0.10",
                             "N:FRAC,... max char share in repeated word n-grams", type=_ngram_spec)
    rep_min_words: int = setting(50, "apply the n-gram repetition checks to documents of at least this many words",
                                 lo=0)
    # real prose stays under 0.35 (bench/filter_bench.py)
    max_digit_frac: float = setting(0.5, "max share of non-space characters that are digits (1: off)", lo=0, hi=1)
    rep_full_words: int = setting(150, "the n-gram checks judge a shorter document as if it had this many words "
                                  "(0: Gopher as is)", lo=0)
    # tables, price lists, menus and listings are lines with (almost) no sentences
    min_sentence_frac: float = setting(0.2, "min share of the text in sentences, for documents of "
                                       "--sentence-min-lines lines (0: off)", lo=0, hi=1)
    sentence_min_lines: int = setting(3, "lines from which --min-sentence-frac applies", lo=1)
    # real sentences stay under 320 characters
    max_sentence_chars: int = setting(500, "a longer stretch up to a sentence end is no sentence", lo=1)
    exact_dedup: bool = setting(True, "skip exact dedup")
    near_dedup: bool = setting(True, "skip MinHash dedup")
    jaccard: float = setting(0.8, "near-duplicate Jaccard threshold", lo=0, hi=1, lo_open=True)
    num_perm: int = setting(128, "MinHash permutations", lo=1)
    shingle: int = setting(5, "character n-gram size of shingles", lo=1)
    lsh_bands: int = setting(0, "LSH bands (0: chosen from --jaccard)", lo=0)
    lsh_rows: int = setting(0, "LSH rows per band (with --lsh-bands)", lo=0)
    ppl_ref: list = setting([], "reference text files (or a saved .npz n-gram model)", nargs="+")
    ppl_tokenizer: str = setting("", "SentencePiece model for the n-gram LM (default: characters)")
    ppl_order: int = setting(3, "n-gram order", lo=1)
    ppl_percentile: float = setting(0.0, "drop documents above this percentile", lo=0, hi=100)  # 0: off
    ppl_max: float = setting(0.0, "drop documents above this perplexity", lo=0)  # 0: off
    ppl_model: str = setting("", "second stage: a model folder (config.json + safetensors)")
    ppl_model_tokenizer: str = setting("", "its tokenizer.model (default: in the folder)")
    ppl_model_percentile: float = setting(90.0, "drop above this model percentile", lo=0, hi=100)
    ppl_model_max: float = setting(0.0, "drop above this model perplexity", lo=0)  # 0: off
    ppl_model_tokens: int = setting(512, "tokens scored per document", lo=1)
    ppl_model_batch: int = setting(8, "documents per forward pass", lo=1)
    ppl_model_device: str = setting("cpu", "cpu, cuda, cuda:1, ...")
    target_docs: int = setting(0, "random selection to this many documents", lo=0, type=size_type())  # 0: keep all
    target_chars: int = setting(0, "... or characters (e.g. 500M)", lo=0, type=size_type())
    target_bytes: int = setting(0, "... or UTF-8 bytes (e.g. 40G)", lo=0, type=size_type())
    seed: int = setting(0, "seed of the random selection", lo=0)
    # the command line uses every core; an API user asks for more than one
    workers: int = setting(1, "processes for per-document steps", lo=1, cli_default=os.cpu_count() or 1)
    batch_docs: int = setting(256, None, lo=1)  # documents per worker task (no flag)
    shard_docs: int = setting(0, "write clean_NNNNN.jsonl of this many documents", lo=0)
    keep_dropped: bool = setting(False, "also write dropped.jsonl with reasons")
    progress: bool = setting(True, "no progress bar")

    def __post_init__(self):
        super().__post_init__()  # every range and choice above
        for name in ("top_ngram", "dup_ngram"):  # -> top_ngrams, dup_ngrams: {n: share}
            try:
                setattr(self, name + "s", _parse_ngram_thresholds(getattr(self, name)))
            except ValueError as e:
                raise DataError(f"{flag_name(name)}: {e}") from None
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
        file_stats.append(stats := {})
        yield from ((fi, *doc) for doc in read_docs(path, cfg, stats, progress))


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
    tok = Tokenizer(cfg.ppl_tokenizer) if cfg.ppl_tokenizer else None  # a corrupt file: one line naming it
    return NgramLM(cfg.ppl_order, tokenizer=tok).fit(t for t in texts if t)


class _Drops:
    """Dropped documents: counted per step and reason, and (--keep-dropped) written out."""

    def __init__(self, files, path):
        self.files = files
        self.steps = {s: {"docs_in": 0, "docs_out": 0, "dropped": {}, "cpu_seconds": 0.0} for s in STEPS}
        self.f = open(path, "w", encoding="utf-8") if path else None

    def count(self, step, reason):
        d = self.steps[step]["dropped"]
        d[reason] = d.get(reason, 0) + 1

    def record(self, fi, ln, text, reason, dup=None):
        if self.f:
            rec = {"reason": reason, "source": f"{self.files[fi]}:{ln}", "text": text}
            if dup is not None:
                rec["duplicate_of"] = f"{self.files[dup[0]]}:{dup[1]}"
            self.f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _pass1(files, cfg, lm, spill, drops):
    """The per-document steps in the workers; survivors' text to spill/stage.jsonl and their
    numbers to spill/<array>. Returns (survivors, what was read: per-file stats and sizes).
    Fails when there was nothing to read at all, or when nothing was readable because no record
    has --text-field (saying which fields the records do have)."""
    stage = open(spill / "stage.jsonl", "w", encoding="utf-8")
    arrays = {k: open(spill / k, "wb") for k in ("hash", "keys", "sig", "ppl", "chars", "bytes", "file", "line")}
    n_stage, read = 0, {"files": [], "chars": 0, "bytes": 0}
    bar = cli.progress(total=sum(os.path.getsize(f) for f in files), unit="B", unit_scale=True, desc="clean",
                       disable=not cfg.progress)
    batches = chunked(_docs(files, cfg, read["files"], bar), cfg.batch_docs)
    results = ordered_map(_process, batches, cfg.workers, _init_worker, (cfg, lm))
    with closing(results):  # an error here stops the workers now, not when its traceback is freed
        for batch, res in results:
            n_stage += _spill(batch, res, drops, stage, arrays, read)
    bar.close()
    for f in (stage, *arrays.values()):
        f.close()
    got = drops.steps["read"]
    if got["docs_in"] == 0 or (got["docs_in"] == sum(got["dropped"].values())
                               and any("missing_field" in s for s in read["files"])):
        raise no_documents_error(read["files"], cfg.text_field, "no documents in the input")
    return n_stage, read


def _spill(batch, res, drops, stage, arrays, read):
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
    read["chars"] += res["in_chars"]
    read["bytes"] += res["in_bytes"]
    arrays["file"].write(np.asarray(fis, np.int32).tobytes())
    arrays["line"].write(np.asarray(lns, np.int64).tobytes())
    for k in ("hash", "keys", "sig", "ppl", "chars", "bytes"):
        arrays[k].write(np.ascontiguousarray(res[k]).tobytes())
    for s, sec in res["seconds"].items():
        steps[s]["cpu_seconds"] += sec
    return len(fis)


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
        for code in codes:      # (nothing else drops in these steps)
            if k := int((reason == code).sum()):
                steps[s]["dropped"][CODES[code]] = k
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
    shards), the dropped ones to dropped.jsonl; returns the files written and what they hold."""
    names, out_f = [], None
    written = {"outputs": names, "docs": 0, "chars": 0, "bytes": 0}
    src_file, src_line = np.fromfile(spill / "file", np.int32), np.fromfile(spill / "line", np.int64)
    with open(spill / "stage.jsonl", encoding="utf-8") as stage:
        for i, line in enumerate(stage):
            if reason[i] != KEPT:
                if drops.f:
                    dup = (src_file[dup_of[i]], src_line[dup_of[i]]) if dup_of[i] >= 0 else None
                    drops.record(src_file[i], src_line[i], json.loads(line)["text"], CODES[reason[i]], dup)
                continue
            if out_f is None or (cfg.shard_docs and written["docs"] % cfg.shard_docs == 0):
                if out_f:
                    out_f.close()
                name = f"clean_{len(names):05d}.jsonl" if cfg.shard_docs else "clean.jsonl"
                names.append(name)
                out_f = open(out / name, "w", encoding="utf-8")
            out_f.write(line)
            written["docs"] += 1
    written.update({k: int(np.fromfile(spill / k, np.int64)[reason == KEPT].sum()) for k in ("chars", "bytes")})
    if out_f is None:  # nothing kept: still write an (empty) clean.jsonl
        names.append("clean_00000.jsonl" if cfg.shard_docs else "clean.jsonl")
        open(out / names[0], "w").close()
    else:
        out_f.close()
    return written


def _report(cfg, steps, read, written, cuts, notes, t_start):
    """report.json. The counts reconcile: each step's docs_out is the next step's docs_in."""
    flow, dropped = steps["read"]["docs_in"], {}
    for s in steps.values():
        s["docs_in"] = flow
        flow -= sum(s["dropped"].values())
        s["docs_out"] = flow
        s["cpu_seconds"] = round(s["cpu_seconds"], 3)
        for r, k in s["dropped"].items():
            dropped[r] = dropped.get(r, 0) + k
    assert flow == written["docs"], (flow, written["docs"])
    if written["docs"] == 0:
        notes.append("every document was dropped: see 'dropped' for why")
    for s in read["files"]:
        notes += [s[k] for k in ("warning", "error") if k in s]
    return {"docs_in": steps["read"]["docs_in"], "docs_out": written["docs"], "dropped": dropped,
            "chars_in": read["chars"], "bytes_in": read["bytes"],
            "chars_out": written["chars"], "bytes_out": written["bytes"],
            "steps": steps, "files": read["files"], "outputs": written["outputs"], "notes": notes,
            "read_errors": sum("error" in s for s in read["files"]),  # files cut short (a broken .gz)
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
        n, read = _pass1(files, cfg, lm, spill, drops)
        reason, dup_of, *cuts = _decide(spill, n, cfg, lm, drops.steps)
        written = _pass2(spill, out, reason, dup_of, cfg, drops)
        if drops.f:
            drops.f.close()
            written["outputs"].append("dropped.jsonl")
        shutil.rmtree(spill)
        report = _report(cfg, drops.steps, read, written, cuts, notes, t_start)
        outputs.write_atomic(out / "report.json", json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    return report


# ----------------------------------------------------------------------------------------
# Command line

def _add_clean_args(p):
    p.add_argument("inputs", nargs="+", help=".txt/.jsonl files (optionally .gz) or folders of them")
    p.add_argument("--out", required=True, help="output folder: clean.jsonl, report.json")
    cli.add_force(p)
    add_flags(p, CleanConfig)  # --text-field ... --no-progress: every setting, in CleanConfig's order


def _add_tokenize_args(p):
    p.add_argument("inputs", nargs="+", help="a clean folder (its report.json's outputs), or .jsonl/.txt files "
                                             "(optionally .gz) and folders of them")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model or a folder holding one")
    p.add_argument("--out", required=True, help="output folder for train_NNNN.bin, val_NNNN.bin, meta.json")
    cli.add_force(p)
    add_flags(p, TokenizeConfig, skip=("txt_mode", "encoding", "on_invalid"))  # --text-field ... --no-progress


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
        kw = {k: v for k, v in vars(args).items() if k not in ("cmd", "inputs", "tokenizer", "out")}
        meta = tokenize(args.inputs, args.tokenizer, args.out, **kw)
        print(f"{meta['num_tokens']} train tokens in {len(meta['shards'])} shard(s), {meta['val_num_tokens']} val "
              f"tokens, dtype {meta['dtype']}, vocab {meta['vocab_size']} -> {args.out}/meta.json")
    return 0


if __name__ == "__main__":
    cli.run(main)

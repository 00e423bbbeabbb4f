"""Reading raw corpora: files, folders, gzip, encodings, invalid bytes.

Shared by data.py clean (raw text in) and shards.py tokenize (cleaned text in); the tests
are in tests/test_data.py. Inputs are .txt (documents are blank-line separated blocks, or
lines) and .jsonl (one {"text": ...} per line), each optionally .gz, given as files or
folders (searched recursively). The encoding is decided per file from its first MiB; each
line is then decoded on its own, so one bad line is replaced or dropped (and counted),
never fatal. A truncated .gz keeps what was read and says where it stopped.

Also here, because both readers need them: ordered_map, which streams documents through
worker processes without reading a whole corpus ahead, and write_atomic for small reports.
"""
import codecs
import gzip
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input or settings; the message names the file, line or flag."""


@dataclass
class ReadConfig:
    """How read_docs reads a file; data.py's CleanConfig adds the cleaning settings."""
    text_field: str = "text"        # JSONL field holding the document
    txt_mode: str = "blocks"        # .txt documents: "blocks" (blank-line separated) or "lines"
    encoding: str = "auto"          # auto (UTF-8, else CP949) | utf-8 | cp949 | euc-kr
    on_invalid: str = "replace"     # undecodable line: "replace" bytes with U+FFFD, or "drop" it

    def __post_init__(self):
        for name, choices in (("txt_mode", ("blocks", "lines")), ("on_invalid", ("replace", "drop")),
                              ("encoding", ("auto", "utf-8", "cp949", "euc-kr"))):
            if getattr(self, name) not in choices:
                raise DataError(f"--{name.replace('_', '-')} must be one of {choices}, got {getattr(self, name)!r}")


def expand_inputs(inputs, skip=None):
    """Files and folders (searched recursively, sorted; hidden files and folders and the
    folder `skip`, our own output, left out) -> list of input files."""
    out = []
    skip = Path(skip).resolve() if skip else None
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f, strict=False)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts)
                           and not (skip and f.resolve().is_relative_to(skip)))
            if not found:
                raise DataError(f"{p}: folder holds no .txt/.jsonl (optionally .gz) files")
            out += found
        elif p.is_file():
            _kind(p)
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError("no input files given")
    return out


def _kind(path, strict=True):
    name = path.name.lower().removesuffix(".gz")
    for suffix, kind in ((".txt", "txt"), (".jsonl", "jsonl"), (".json", "jsonl")):
        if name.endswith(suffix):
            return kind
    if strict:
        raise DataError(f"{path}: unknown input type (expected .txt or .jsonl, optionally .gz)")
    return None


def _open(path):
    raw = open(path, "rb")
    return raw, (gzip.GzipFile(fileobj=raw) if path.name.lower().endswith(".gz") else raw)


def detect_encoding(path, choice="auto"):
    if choice != "auto":
        return choice
    raw, f = _open(path)
    with raw:
        try:
            head = f.read(1 << 20)
        except (OSError, EOFError):
            return "utf-8"  # a broken .gz: reading it reports the error
    # CP949 Hangul is invalid UTF-8 at almost every character, while UTF-8 Hangul often
    # decodes as CP949 without error: so UTF-8 wins unless it fails on more than 1% of
    # the non-ASCII bytes and CP949 fails less.
    bad = {enc: codecs.getincrementaldecoder(enc)(errors="replace").decode(head).count("\ufffd")
           for enc in ("utf-8", "cp949")}
    non_ascii = int(np.count_nonzero(np.frombuffer(head, np.uint8) >= 0x80))
    if bad["utf-8"] > 0.01 * non_ascii and bad["cp949"] < bad["utf-8"]:
        return "cp949"
    return "utf-8"


def read_docs(path, cfg, stats, progress=None):
    """Yield (line_no, text, reason) for one file; text is None when reason says why.
    `cfg` is a ReadConfig (or a CleanConfig); `stats` (a dict for the report) collects the
    encoding and what was replaced or dropped; `progress` (a tqdm bar) advances by bytes."""
    kind, enc = _kind(path), detect_encoding(path, cfg.encoding)
    stats.update(path=str(path), encoding=enc, docs=0, replaced_lines=0, dropped_lines=0)
    raw, f = _open(path)
    block, block_start, pos = [], 0, 0
    with raw:
        try:
            for ln, line in enumerate(f, start=1):
                if progress is not None:
                    now = raw.tell()
                    progress.update(now - pos)
                    pos = now
                try:
                    text = line.decode(enc)
                except UnicodeDecodeError:
                    if cfg.on_invalid == "drop":
                        stats["dropped_lines"] += 1
                        if kind == "jsonl" or cfg.txt_mode == "lines":
                            stats["docs"] += 1
                            yield ln, None, "bad_encoding"
                        continue
                    stats["replaced_lines"] += 1
                    text = line.decode(enc, errors="replace")
                if ln == 1:
                    text = text.lstrip("\ufeff")
                if kind == "jsonl":
                    if not text.strip():
                        continue
                    stats["docs"] += 1
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        yield ln, None, "bad_json"
                        continue
                    doc = obj.get(cfg.text_field) if isinstance(obj, dict) else None
                    yield (ln, doc, None) if isinstance(doc, str) else (ln, None, "no_text")
                elif cfg.txt_mode == "lines":
                    if text.strip():
                        stats["docs"] += 1
                        yield ln, text.rstrip("\r\n"), None
                elif text.strip():
                    if not block:
                        block_start = ln
                    block.append(text)
                elif block:
                    stats["docs"] += 1
                    yield block_start, "".join(block).rstrip("\r\n"), None
                    block = []
        except (OSError, EOFError) as e:  # truncated or corrupt gzip: keep what was read
            stats["error"] = f"{path}: read stopped after line {stats['docs']}: {e}"
            print(f"warning: {stats['error']}", file=sys.stderr)
    if block:
        stats["docs"] += 1
        yield block_start, "".join(block).rstrip("\r\n"), None
    if progress is not None:
        progress.update(os.path.getsize(path) - pos)
    if stats["docs"] == 0:
        stats["warning"] = f"{path}: no documents (empty file)"
        print(f"warning: {stats['warning']}", file=sys.stderr)


# ----------------------------------------------------------------------------------------
# Streaming through worker processes, and writing small files whole.

def ordered_map(fn, items, workers, init, initargs):
    """Yield (item, fn(item)) in input order from `workers` processes, with at most 4 items
    per worker in flight: Pool.imap reads all of its input ahead, a 100 GB corpus included."""
    if workers <= 1:
        init(*initargs)
        for item in items:
            yield item, fn(item)
        return
    import multiprocessing as mp
    from collections import deque
    with mp.get_context("spawn").Pool(workers, init, initargs) as pool:
        pending = deque()
        for item in items:
            pending.append((item, pool.apply_async(fn, (item,))))
            if len(pending) >= 4 * workers:
                item, r = pending.popleft()
                yield item, r.get()
        while pending:
            item, r = pending.popleft()
            yield item, r.get()


def write_atomic(path, text):
    """Write a temp file, then rename: a reader never sees half a report or meta.json."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

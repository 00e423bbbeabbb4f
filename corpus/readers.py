"""Reading raw corpora: files, folders, gzip, encodings, invalid bytes.

Shared by data.py clean (raw text in) and corpus/shards.py tokenize (cleaned text in); the tests
are in tests/test_data.py and tests/test_data_reliability.py. Inputs are .txt (documents are
blank-line separated blocks, or lines) and .jsonl (one {"text": ...} per line), each
optionally .gz, given as files or folders (searched recursively). The encoding is decided
per file from its first MiB; each line is then decoded on its own, so one bad line is
replaced or dropped (and counted), never fatal. With --encoding auto a line that fails the
file's encoding is tried in the other one (UTF-8, then CP949), so a file that mixes both
loses nothing (counted as mixed_encoding_lines). A record whose text is not valid Unicode
(a lone surrogate such as "\\ud800" escaped in JSON) is dropped as bad_text. A truncated or
corrupt .gz keeps what was read and says where it stopped. A JSONL file in which no record
has the --text-field is reported with the fields its first record has.

Also here, because both readers need them: setting() and add_flags (a setting declared once,
its flag and its check follow), ordered_map (worker processes) and staged_output (outputs.staged).
"""
import argparse
import codecs
import gzip
import itertools
import json
import os
import re
import sys
import zlib
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np

from support import cli, outputs


class DataError(ValueError):
    """Bad input or settings; the message names the file, line or flag."""


class WorkerDied(RuntimeError):
    """A worker process of ordered_map died (killed, or out of memory): the run stopped."""


# ----------------------------------------------------------------------------------------
# Settings, each declared once: its default, --help line and range in one dataclass field.

def setting(default, help, lo=None, hi=None, lo_open=False, hi_open=False, cli_default=None, **flag):
    """A dataclass field for one setting: its default; its --help line (None: no flag, an API
    setting); for a number, its range [lo, hi] (open at either end with lo_open, hi_open), of
    the field's type; the command line's own default where it differs; and add_argument keywords
    its flag needs (choices, nargs, type, metavar; option: a name other than --NAME). A bool is a
    switch: --no-NAME when on by default, else --NAME, and its help is that flag's (unless it
    gives its own action)."""
    meta = {"help": help, "flag": flag, "cli_default": cli_default}
    if lo is not None or hi is not None:
        meta["range"] = (lo, hi, lo_open, hi_open)
    if isinstance(default, list):  # a mutable default: each config gets its own
        return field(default_factory=default.copy, metadata=meta)
    return field(default=default, metadata=meta)


def flag_name(name):
    return "--" + name.replace("_", "-")


def add_flags(parser, config, skip=()):
    """A flag for each setting of the dataclass `config` that has a --help line and is not in
    `skip`, in field order; a number's is checked by cli.number, so a bad value is argparse's
    one-line error."""
    for f in fields(config):
        m = f.metadata
        if m.get("help") is None or f.name in skip:
            continue
        default = f.default_factory() if f.default is MISSING else f.default
        if f.type is bool and "action" not in m["flag"]:
            parser.add_argument(flag_name("no_" + f.name if default else f.name), dest=f.name, help=m["help"],
                                action="store_false" if default else "store_true")
            continue
        kw = {"dest": f.name, "default": default if m["cli_default"] is None else m["cli_default"], **m["flag"]}
        if "range" in m:
            kw.setdefault("type", cli.number(f.type, *m["range"]))
        parser.add_argument(kw.pop("option", flag_name(f.name)), help=m["help"], **kw)


def size_type(lo=0):
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


@dataclass
class ReadConfig:
    """How read_docs reads a file; data.py's CleanConfig adds the cleaning settings."""
    text_field: str = setting("text", "JSONL field holding the text")
    txt_mode: str = setting("blocks", ".txt documents: blank-line separated blocks, or one per line",
                            choices=("blocks", "lines"))
    encoding: str = setting("auto", "input encoding; auto tries UTF-8 then CP949 per file, and per line where a "
                            "line fails", choices=("auto", "utf-8", "cp949", "euc-kr"))
    on_invalid: str = setting("replace", "a line with undecodable bytes: replace them with U+FFFD, or drop the line",
                              choices=("replace", "drop"))

    def __post_init__(self):
        """The flags' ranges and choices, for API users too (of every subclass' settings):
        DataError naming the first setting outside them."""
        for f in fields(self):
            value, m = getattr(self, f.name), f.metadata
            choices = m.get("flag", {}).get("choices")
            why = cli.problem(value, f.type, *m["range"]) if "range" in m else None
            why = why or (f"must be one of {choices}" if choices and value not in choices else None)
            if why:
                raise DataError(f"{flag_name(f.name)} {why}, got {value!r}")


def expand_inputs(inputs, exclude=()):
    """Files and folders (searched recursively, sorted; hidden files and folders, and files
    named in `exclude`, left out) -> list of input files. An output is never inside an input
    folder (support/outputs.py refuses it), so our own output is never read back."""
    out = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f, strict=False)
                           and f.name not in exclude
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
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


# what a broken .gz raises: truncated (EOFError), a bad header or CRC (gzip.BadGzipFile, an
# OSError), corrupt deflate data (zlib.error)
GZIP_ERRORS = (OSError, EOFError, zlib.error)


def detect_encoding(path, choice="auto"):
    if choice != "auto":
        return choice
    raw, f = _open(path)
    with raw:
        try:
            head = f.read(1 << 20)
        except GZIP_ERRORS:
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


def _mostly_hangul(text):
    """Are Hangul syllables most of the non-ASCII characters? Real CP949 Korean is; UTF-8
    Korean with a broken byte, misread as CP949, is mostly Hanja and symbols."""
    non_ascii = [c for c in text if c >= "\x80"]
    return 2 * sum("\uac00" <= c <= "\ud7a3" for c in non_ascii) > len(non_ascii)


def decode_line(line, enc, auto):
    """(text, how): how is None (the file's encoding), "mixed" (with `auto`, the line fails the
    file's encoding but is valid in the other one: a file that mixes UTF-8 and CP949 lines),
    or "bad" (text None: valid in neither)."""
    for other in [enc] + [e for e in ("utf-8", "cp949") if auto and e != enc]:
        try:
            text = line.decode(other)
        except UnicodeDecodeError:
            continue
        if other == enc:
            return text, None
        # strict UTF-8 that decodes is UTF-8; CP949 decodes much garbage, so it must look Korean
        if other == "utf-8" or _mostly_hangul(text):
            return text, "mixed"
    return None, "bad"


_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can escape a lone one; no encoder takes it


def read_docs(path, cfg, stats, progress=None):
    """Yield (line_no, text, reason) for one file; text is None when reason says why.
    `cfg` is a ReadConfig (or a CleanConfig); `stats` (a dict for the report) collects the
    encoding and what was replaced, re-decoded or dropped; `progress` (a bar) advances by bytes."""
    kind, enc = _kind(path), detect_encoding(path, cfg.encoding)
    stats.update(path=str(path), encoding=enc, docs=0, replaced_lines=0, dropped_lines=0, mixed_encoding_lines=0)
    fields = {"records": 0, "first": None, "with_field": 0}  # does any JSONL record have --text-field?
    raw, f = _open(path)
    block, block_start, pos = [], 0, 0
    with raw:
        try:
            for ln, line in enumerate(f, start=1):
                if progress is not None:
                    progress.update(raw.tell() - pos)
                    pos = raw.tell()
                text = _decode(line, ln, enc, cfg, stats)
                if text is None:        # dropped: in a file of a document per line, that document
                    if kind == "jsonl" or cfg.txt_mode == "lines":
                        stats["docs"] += 1
                        yield ln, None, "bad_encoding"
                    continue
                if kind == "jsonl":
                    if not text.strip():
                        continue
                    stats["docs"] += 1
                    yield (ln, *_json_doc(text, cfg.text_field, fields))
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
        except GZIP_ERRORS as e:  # truncated or corrupt gzip: keep what was read, skip the rest
            stats["error"] = f"{path}: read stopped after line {stats['docs']}, the rest skipped: {e}"
            print(f"warning: {stats['error']}", file=sys.stderr)
    if block:
        stats["docs"] += 1
        yield block_start, "".join(block).rstrip("\r\n"), None
    if progress is not None:
        progress.update(os.path.getsize(path) - pos)
    _warn_if_nothing_read(path, cfg, stats, fields)


def _decode(line, ln, enc, cfg, stats):
    """Line number ln of a file as text (the BOM off the first), counted in stats when re-decoded
    or replaced; None when cfg.on_invalid drops an undecodable line."""
    text, how = decode_line(line, enc, cfg.encoding == "auto")
    if how == "mixed":
        stats["mixed_encoding_lines"] += 1
    elif how == "bad":
        if cfg.on_invalid == "drop":
            stats["dropped_lines"] += 1
            return None
        stats["replaced_lines"] += 1
        text = line.decode(enc, errors="replace")
    if ln == 1:
        text = text.lstrip("\ufeff")
    return text


def _warn_if_nothing_read(path, cfg, stats, fields):
    """A warning, in stats and on stderr, for a file with no documents or no record with --text-field."""
    if stats["docs"] == 0:
        stats["warning"] = f"{path}: no documents (empty file)"
    elif fields["records"] and not fields["with_field"]:
        stats["missing_field"] = fields["first"]  # what the user may have meant instead
        stats["warning"] = f"{path}: no record has the field {cfg.text_field!r}; {_first_fields(fields['first'])}"
    if "warning" in stats:
        print(f"warning: {stats['warning']}", file=sys.stderr)


def _json_doc(text, field, fields):
    """(text, reason) of one JSONL line; notes in `fields` what the records hold."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None, "bad_json"
    fields["records"] += 1
    if not isinstance(obj, dict):
        return None, "no_text"
    if fields["first"] is None:
        fields["first"] = list(obj)
    fields["with_field"] += field in obj
    doc = obj.get(field)
    if not isinstance(doc, str):
        return None, "no_text"
    if _SURROGATE.search(doc):  # "\ud800": would fail in every encoder, tokenizer and writer
        return None, "bad_text"
    return doc, None


def no_documents_error(file_stats, text_field, what):
    """The error when not one document was readable: a wrong --text-field named as such (no JSONL
    record has it: say which fields they do have), else `what` and each file with what went wrong
    in it (empty, a broken .gz)."""
    bad = [s for s in file_stats if "missing_field" in s]
    if not bad:
        return DataError(f"{what}: " + "; ".join(s.get("warning") or s.get("error") or s["path"] for s in file_stats))
    where = bad[0]["path"] + (f" (nor in {len(bad) - 1} other file(s))" if len(bad) > 1 else "")
    return DataError(f"--text-field {text_field!r}: no record in {where} has it; "
                     f"{_first_fields(bad[0]['missing_field'])}")


def _first_fields(first):
    return f"the first record's fields are {first}" if first is not None else "its records are not JSON objects"


# ----------------------------------------------------------------------------------------
# Streaming through worker processes, and writing output folders whole.

def chunked(items, size):
    """Lists of `size` items in order (the last one shorter): a worker's unit of work."""
    items = iter(items)
    return iter(lambda: list(itertools.islice(items, size)), [])


def ordered_map(fn, items, workers, init, initargs):
    """Yield (item, fn(item)) in input order from `workers` processes, with at most 4 items
    per worker in flight (Pool.imap reads all of its input ahead, a 100 GB corpus included).
    A worker that dies (SIGKILL, the OOM killer) breaks the pool: raise WorkerDied at once,
    cancel what is queued and stop the other workers (mp.Pool would wait for it forever)."""
    if workers <= 1:
        init(*initargs)
        for item in items:
            yield item, fn(item)
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    pool = ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=init, initargs=initargs)
    pending = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 4 * workers:
                item, r = pending.popleft()
                yield item, r.result()
        while pending:
            item, r = pending.popleft()
            yield item, r.result()
    except BrokenProcessPool:
        raise WorkerDied("a --workers process died (killed, or out of memory?): the run stopped; "
                         "try fewer --workers") from None
    finally:  # also when the caller stops early: no worker outlives the run
        pool.shutdown(wait=True, cancel_futures=True)


def _about_output(e, out):
    """Is this OSError about writing `out`: no file named (a full disk), or a file in the
    staged folder beside it (.NAME.partial-HOST-PID, .NAME.old-HOST-PID)?"""
    if not isinstance(e.filename, (str, bytes, os.PathLike)):
        return True
    name = Path(os.fsdecode(e.filename)).resolve()
    return name == out or str(name).startswith(str(out.parent / f".{out.name}."))


@contextmanager
def staged_output(out, inputs=(), force=False, step=""):
    """outputs.staged (a hidden sibling folder that becomes `out` only when the block
    succeeds), its refusals raised as DataError, and a failed write naming `out`."""
    try:
        with outputs.staged(out, inputs, force, step) as tmp:
            yield tmp
    except outputs.Refused as e:        # the guard's, before anything is written
        raise DataError(str(e)) from None
    except OSError as e:
        if str(e).startswith("--out ") or not _about_output(e, Path(out).resolve()):
            raise  # outputs.staged named --out already, or an input it could not read names itself
        where = f" ({e.filename})" if e.filename else ""
        raise OSError(f"--out {out}: cannot write: {e.strerror or e}{where}; the previous "
                      "output, if any, is unchanged") from e

"""data.py clean/tokenize when things go wrong: stale outputs, dead workers, odd inputs, bad flags.

    python -m pytest -q tests/test_data_reliability.py

Every input is built in the test's temp folder. A failing command must end with exit code
!= 0 and one `error:` line naming the culprit, never a traceback, and leave every input and
every earlier output byte for byte as it was.
"""
import argparse
import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, korean_docs, load_tokens

import data
from corpus import shards
from corpus.textclean import normalize
from data import CleanConfig, DataError, clean, tokenize
from support import cli, outputs

DATA = str(ROOT / "data.py")


def long_docs(n, min_chars=200):
    return [d for d in korean_docs() if len(d) >= min_chars][:n]


def jsonl(texts, **extra):
    return "".join(json.dumps({"text": t, **extra}, ensure_ascii=False) + "\n" for t in texts)


def cfg(**kw):
    kw.setdefault("progress", False)
    return CleanConfig(**kw)


def tree(folder):
    """{relative path: sha256 (or 'dir')} of everything under `folder`, hidden files included."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def run_data(*args, cwd):
    return subprocess.run([sys.executable, DATA, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_matches_report(out):
    """The folder holds exactly what report.json lists, report.json and the marker."""
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in out.iterdir()) == sorted(rep["outputs"] + ["report.json", outputs.MARKER])
    return rep


def run_cli(argv, capsys):
    """data.py's command line in this process, as `python data.py` runs it: (exit code, stderr)."""
    with pytest.raises(SystemExit) as e:
        cli.run(data.main, argv)
    return e.value.code, capsys.readouterr().err


@pytest.fixture
def corpus(tmp_path):
    """raw/a.jsonl: 40 documents, 5 of them too short and 5 exact copies (so some are dropped)."""
    (tmp_path / "raw").mkdir()
    docs = long_docs(30) + [f"짧은 글 {i}" for i in range(5)] + long_docs(5)
    (tmp_path / "raw" / "a.jsonl").write_text(jsonl(docs, id=1), encoding="utf-8")
    return tmp_path / "raw" / "a.jsonl"


# ------------------------------------------------------------------ 1. outputs replaced whole

def test_rerun_replaces_the_whole_folder_never_leaving_stale_files(corpus, tmp_path):
    out = tmp_path / "out"
    rep = clean([corpus], out, cfg(shard_docs=4, keep_dropped=True))
    assert len(rep["outputs"]) == 9 and rep["outputs"][-1] == "dropped.jsonl"  # 8 shards of 30 kept
    assert_matches_report(out)
    before = tree(out)
    with pytest.raises(DataError, match="already exists and is not empty; pass --force"):
        clean([corpus], out, cfg())
    assert tree(out) == before
    rep = clean([corpus], out, cfg(shard_docs=20), force=True)  # fewer shards, no --keep-dropped
    assert rep["outputs"] == ["clean_00000.jsonl", "clean_00001.jsonl"]
    assert_matches_report(out)  # no clean_00002.jsonl ... nor dropped.jsonl of the first run
    rep = clean([corpus], out, cfg(), force=True)
    assert_matches_report(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # nothing staged left beside it


def test_tokenize_replaces_the_whole_folder(corpus, tmp_path, base_spm):
    out = tmp_path / "tok"
    meta = tokenize([corpus], base_spm, out, shard_tokens=500, val_docs=3, progress=False)
    assert len(meta["shards"]) > 2
    meta = tokenize([corpus], base_spm, out, progress=False, force=True)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([s["file"] for s in meta["shards"]] + ["meta.json", outputs.MARKER])
    assert files == [outputs.MARKER, "meta.json", "train_0000.bin"]  # no val_ nor train_0001.bin left over


def test_spill_lives_inside_the_staged_folder_and_leftovers_are_swept(corpus, tmp_path, monkeypatch, capsys):
    seen = []
    real = data._decide

    def spy(spill, *a):
        seen.append((spill, sorted(p.name for p in spill.parent.iterdir())))
        return real(spill, *a)
    monkeypatch.setattr(data, "_decide", spy)
    # a killed run's leftover: its staged folder (with the marker) and its spill inside
    dead = tmp_path / f".out.partial-{outputs._tag().rsplit('-', 1)[0]}-999999999"  # this host, no such pid
    (dead / ".spill").mkdir(parents=True)
    (dead / outputs.MARKER).write_text("{}")
    clean([corpus], tmp_path / "out", cfg())
    spill, beside = seen[0]
    assert spill.name == ".spill" and spill.parent.name == f".out.partial-{outputs._tag()}"
    assert beside == sorted([".spill", outputs.MARKER])
    assert "removed" in capsys.readouterr().err and not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]
    assert not (tmp_path / "out" / ".spill").exists()


def test_full_disk_mid_run_leaves_the_previous_output(corpus, tmp_path, monkeypatch, capsys, base_spm):
    monkeypatch.delenv("REDWHALE_DEBUG", raising=False)
    clean([corpus], tmp_path / "out", cfg(keep_dropped=True))
    tokenize([corpus], base_spm, tmp_path / "tok", progress=False)
    before = tree(tmp_path)

    def full(real):
        def write(*a, **kw):
            real(*a, **kw)  # every file of the new output written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return write
    monkeypatch.setattr(data, "_pass2", full(data._pass2))
    code, err = run_cli(["clean", str(corpus), "--out", str(tmp_path / "out"), "--force", "--workers", "1",
                         "--no-progress", "--shard-docs", "3"], capsys)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: --out ") and str(tmp_path / "out") in last and "No space left" in last
    monkeypatch.setattr(shards, "_write_shards", full(shards._write_shards))
    code, err = run_cli(["tokenize", str(corpus), "--tokenizer", str(base_spm), "--out", str(tmp_path / "tok"),
                         "--force", "--workers", "1", "--no-progress"], capsys)
    assert code == 1 and "No space left" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert tree(tmp_path) == before


def test_read_only_parent_leaves_the_previous_output(corpus, tmp_path, monkeypatch, capsys):
    """Simulated in-process (works as root too): creating the staged folder is refused."""
    monkeypatch.delenv("REDWHALE_DEBUG", raising=False)
    clean([corpus], tmp_path / "ro" / "out", cfg())
    before = tree(tmp_path)
    real_mkdir, ro = Path.mkdir, (tmp_path / "ro").resolve()

    def mkdir(self, *a, **kw):
        if self.resolve().parent == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **kw)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    code, err = run_cli(["clean", str(corpus), "--out", str(tmp_path / "ro" / "out"), "--force", "--workers", "1",
                         "--no-progress"], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == (f"error: --out {tmp_path / 'ro' / 'out'}: cannot write there "
                                            "(Permission denied)")
    assert tree(tmp_path) == before


def _as_unprivileged():
    """A command prefix under which permission bits hold: none for a user; for root, setpriv
    without the capabilities that override them; None when there is no such way."""
    if os.name != "posix":
        return None
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    works = shutil.which("setpriv") and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
    return prefix if works else None


@pytest.mark.skipif(_as_unprivileged() is None, reason="root writes into read-only folders (and no setpriv)")
def test_read_only_parent_for_real(corpus, tmp_path):
    (tmp_path / "ro").mkdir()
    assert run_data("clean", corpus, "--out", "ro/out", "--workers", "1", "--no-progress", cwd=tmp_path).returncode == 0
    before = tree(tmp_path)
    (tmp_path / "ro").chmod(0o555)
    try:
        r = subprocess.run([*_as_unprivileged(), sys.executable, DATA, "clean", str(corpus), "--out", "ro/out",
                            "--force", "--workers", "1", "--no-progress"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "ro/out" in r.stderr.strip().splitlines()[-1] and "Permission denied" in r.stderr
    assert tree(tmp_path) == before


# ------------------------------------------------------------------ 2. a worker dies

def _children(pid):
    """{child pid: its command line} of a live process (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
    return out


def _gone(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is gone
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through Linux /proc")
def test_a_killed_worker_stops_the_run_with_one_line(tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text(jsonl(long_docs(5)), encoding="utf-8")
    assert run_data("clean", small, "--out", "out", "--workers", "1", "--no-progress", cwd=tmp_path).returncode == 0
    before = tree(tmp_path / "out")
    big = tmp_path / "big.jsonl"
    big.write_text(jsonl(korean_docs()), encoding="utf-8")
    # 4096 permutations: a few seconds of MinHash per batch, so the workers are busy when one is killed
    proc = subprocess.Popen([sys.executable, DATA, "clean", str(big), "--out", "out", "--force", "--workers", "2",
                             "--num-perm", "4096", "--no-progress"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, workers, children = time.time() + 60, {}, {}
        while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
            children.update(_children(proc.pid))  # the workers, and multiprocessing's resource tracker
            workers = {p: c for p, c in children.items() if "spawn_main" in c}
            time.sleep(0.05)
        assert len(workers) == 2, (children, proc.poll())
        time.sleep(0.5)  # let them start on a batch
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)  # as the OOM killer would
        t = time.time()
        out, err = proc.communicate(timeout=60)  # returns at EOF: no process of the run holds the pipes
        took = time.time() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and took < 30
    assert err.strip().splitlines()[-1].startswith("error: a --workers process died")
    deadline = time.time() + 10  # the pipes closed as each exited; /proc may lag a moment behind
    while not all(_gone(p) for p in children) and time.time() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in children), {p: children[p] for p in children if not _gone(p)}
    assert tree(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl", "out", "small.jsonl"]


def test_workers_keep_order_and_bounded_read_ahead(tmp_path):
    """Two workers give the same output as one, reading at most 4 batches per worker ahead."""
    from corpus.readers import ordered_map
    fed = []

    def items():
        for i in range(200):
            fed.append(i)
            yield i
    got = []
    for item, res in ordered_map(abs, items(), 2, int, ()):
        got.append(res)
        assert len(fed) - len(got) <= 4 * 2
    assert got == list(range(200))


# ------------------------------------------------------------------ 3. tokenize a clean folder

def test_tokenize_a_clean_folder_reads_exactly_its_outputs(corpus, tmp_path, base_spm):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    rep = clean([corpus], tmp_path / "c", cfg(keep_dropped=True, shard_docs=7))
    dropped = [json.loads(x) for x in (tmp_path / "c" / "dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    short = [r["text"] for r in dropped if r["reason"] == "too_short"]
    assert len(short) == 5 and rep["docs_out"] == 30
    kept = [json.loads(x)["text"] for name in rep["outputs"][:-1]
            for x in (tmp_path / "c" / name).read_text(encoding="utf-8").splitlines()]

    def docs_of(folder):
        ids = load_tokens(folder)
        return [d.tolist() for d in np.split(ids, np.flatnonzero(ids == 2)[:-1] + 1)]
    meta = tokenize([tmp_path / "c"], base_spm, tmp_path / "t", progress=False)
    assert [Path(p).name for p in meta["inputs"]] == rep["outputs"][:-1]  # never dropped.jsonl nor report.json
    assert meta["num_docs"] == 30 and meta["skipped"] == 0 and meta["notes"] == []
    assert docs_of(tmp_path / "t") == [sp.encode(t) + [2] for t in kept]
    # a folder without report.json: every .jsonl but dropped.jsonl, and a note says so
    (tmp_path / "bare").mkdir()
    for name in ["clean_00000.jsonl", "dropped.jsonl"]:
        (tmp_path / "bare" / name).write_bytes((tmp_path / "c" / name).read_bytes())
    (tmp_path / "bare" / "report.json").write_text("{}")  # not clean's: refused, not guessed at
    with pytest.raises(DataError, match="not a data.py clean report"):
        tokenize([tmp_path / "bare"], base_spm, tmp_path / "t2", progress=False)
    (tmp_path / "bare" / "report.json").unlink()
    meta = tokenize([tmp_path / "bare"], base_spm, tmp_path / "t2", progress=False)
    assert [Path(p).name for p in meta["inputs"]] == ["clean_00000.jsonl"] and meta["num_docs"] == 7
    assert "has no report.json" in meta["notes"][0] and "dropped.jsonl" in meta["notes"][0]
    assert not any(sp.encode(t) + [2] in docs_of(tmp_path / "t2") for t in short)


# ------------------------------------------------------------------ 4. mixed encodings

def _cp949_docs(n):
    out = []
    for d in long_docs(200):
        try:
            d.encode("cp949")
        except UnicodeEncodeError:
            continue
        line = json.dumps({"text": d}, ensure_ascii=False).encode()
        try:
            line.decode("cp949")  # keep only UTF-8 lines that really fail as CP949 (almost all do)
        except UnicodeDecodeError:
            out.append(d)
        if len(out) == n:
            return out


@pytest.mark.parametrize("major", ["utf-8", "cp949"])
def test_a_file_mixing_utf8_and_cp949_lines_loses_nothing(tmp_path, major):
    docs = _cp949_docs(12)
    minor = "cp949" if major == "utf-8" else "utf-8"
    encs = [minor if i % 4 == 1 else major for i in range(len(docs))]  # 3 lines of 12 in the other one
    (tmp_path / "m.jsonl").write_bytes(b"".join(
        (json.dumps({"text": d}, ensure_ascii=False) + "\n").encode(e) for d, e in zip(docs, encs)))
    rep = clean([tmp_path / "m.jsonl"], tmp_path / "o", cfg())
    f = rep["files"][0]
    assert f["encoding"] == major and f["mixed_encoding_lines"] == 3 and f["replaced_lines"] == 0
    got = [json.loads(x)["text"] for x in (tmp_path / "o" / "clean.jsonl").read_text(encoding="utf-8").splitlines()]
    assert got == [normalize(d) for d in docs]
    # an encoding the user names is taken at its word: the other lines are replaced, and counted
    rep = clean([tmp_path / "m.jsonl"], tmp_path / "o2", cfg(encoding=major))
    assert rep["files"][0]["mixed_encoding_lines"] == 0 and rep["files"][0]["replaced_lines"] == 3


def test_broken_utf8_is_not_mistaken_for_cp949():
    from corpus.readers import decode_line
    good = "한국어 문장입니다 정말로".encode()
    assert decode_line(good[:7] + b"\xff" + good[7:], "utf-8", True) == (None, "bad")
    assert decode_line("한국어 문장".encode("cp949"), "utf-8", True) == ("한국어 문장", "mixed")
    assert decode_line("한국어 문장".encode(), "cp949", True) == ("한국어 문장", "mixed")
    assert decode_line("한국어 문장".encode(), "cp949", False) == (None, "bad")


# ------------------------------------------------------------------ 5. bad records

def _surrogate_line():
    return '{"text": "\\ud800 깨진 글자가 들어 있는 문서입니다. 이 문서는 읽을 수 없습니다."}\n'


def test_lone_surrogate_is_a_counted_drop_and_skip(tmp_path, base_spm):
    good = long_docs(3)
    (tmp_path / "s.jsonl").write_text(jsonl(good[:2]) + _surrogate_line() + jsonl(good[2:]), encoding="utf-8")
    rep = clean([tmp_path / "s.jsonl"], tmp_path / "o", cfg(keep_dropped=True))
    assert rep["dropped"] == {"bad_text": 1} and rep["docs_out"] == 3 and rep["docs_in"] == 4
    assert json.loads((tmp_path / "o" / "dropped.jsonl").read_text())["source"].endswith("s.jsonl:3")
    meta = tokenize([tmp_path / "s.jsonl"], base_spm, tmp_path / "t", progress=False)
    assert meta["num_docs"] == 3 and meta["skipped"] == 1 and meta["skipped_examples"][0].endswith(":3: bad_text")


def test_lone_surrogate_only_document_is_no_traceback(tmp_path, base_spm):
    (tmp_path / "s.jsonl").write_text(_surrogate_line(), encoding="utf-8")
    r = run_data("clean", "s.jsonl", "--out", "o", "--workers", "1", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    rep = assert_matches_report(tmp_path / "o")
    assert rep["dropped"] == {"bad_text": 1} and rep["docs_out"] == 0
    r = run_data("tokenize", "s.jsonl", "--tokenizer", base_spm, "--out", "t", "--workers", "1", "--no-progress",
                 cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: no documents to tokenize in: s.jsonl"


def _corrupt_gz(path, good, bad):
    """A .gz of two members: `good` intact, `bad` with its deflate data damaged (zlib.error)."""
    member = bytearray(gzip.compress(jsonl(bad).encode(), mtime=0))
    for k in range(10, 18):
        member[k] ^= 0xFF
    path.write_bytes((gzip.compress(jsonl(good).encode(), mtime=0) if good else b"") + bytes(member))
    with pytest.raises(zlib.error):  # corrupt, not truncated: what used to abort the run
        list(gzip.open(path))
    return path


def test_corrupt_gz_keeps_what_was_read_and_says_so(tmp_path, base_spm, capsys):
    docs = long_docs(8)
    gz = _corrupt_gz(tmp_path / "c.jsonl.gz", docs[:5], docs[5:])
    rep = clean([gz], tmp_path / "o", cfg())
    assert rep["docs_out"] == 5 and rep["read_errors"] == 1
    assert "c.jsonl.gz: read stopped after line 5" in rep["files"][0]["error"]
    assert any("c.jsonl.gz: read stopped" in n for n in rep["notes"])
    assert "warning: " + str(gz) in capsys.readouterr().err
    meta = tokenize([gz], base_spm, tmp_path / "t", progress=False)
    assert meta["num_docs"] == 5 and meta["skipped"] == 1 and "c.jsonl.gz: read stopped" in meta["skipped_examples"][0]


# ------------------------------------------------------------------ 6. a wrong --text-field

def test_wrong_text_field_names_the_field_and_the_fields_there_are(corpus, tmp_path, base_spm):
    msg = f"--text-field 'body': no record in {corpus} has it; the first record's fields are ['text', 'id']"
    with pytest.raises(DataError) as e:
        clean([corpus], tmp_path / "o", cfg(text_field="body"))
    assert str(e.value) == msg
    with pytest.raises(DataError) as e:
        tokenize([corpus], base_spm, tmp_path / "t", text_field="body", progress=False)
    assert str(e.value) == msg
    with pytest.raises(DataError) as e:  # the count for --val-docs is where it shows first
        tokenize([corpus], base_spm, tmp_path / "t", text_field="body", val_docs=2, progress=False)
    assert str(e.value) == msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
    # a field missing from one file only: the others are cleaned, and a note names that file
    (tmp_path / "raw" / "b.jsonl").write_text(jsonl(long_docs(3)).replace('"text"', '"body"'), encoding="utf-8")
    rep = clean([tmp_path / "raw"], tmp_path / "o", cfg())
    assert rep["docs_out"] == 30 and any("b.jsonl: no record has the field 'text'" in n for n in rep["notes"])


# ------------------------------------------------------------------ 7. numeric flags and settings

@pytest.mark.parametrize("flag,value", [
    ("--workers", "0"), ("--min-chars", "-1"), ("--min-hangul-frac", "1.5"), ("--max-symbol-frac", "-0.1"),
    ("--jaccard", "0"), ("--jaccard", "nan"), ("--num-perm", "0"), ("--shingle", "0"), ("--ppl-percentile", "101"),
    ("--ppl-order", "0"), ("--shard-docs", "-2"), ("--target-bytes", "-5G"), ("--target-docs", "lots"),
    ("--seed", "-1"), ("--max-repeat", "1.5"), ("--top-ngram", "2:1.5"), ("--dup-ngram", "x")])
def test_clean_flags_are_range_checked_up_front(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        data.main(["clean", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"), f"{flag}={value}"])
    assert e.value.code == 2  # argparse's own exit code for a bad flag, before any file is looked at
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: " in last and repr(value) in last


@pytest.mark.parametrize("flag,value", [("--shard-tokens", "0"), ("--val-fraction", "1"), ("--val-fraction", "-0.1"),
                                        ("--val-docs", "-1"), ("--workers", "-3")])
def test_tokenize_flags_are_range_checked_up_front(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit):
        data.main(["tokenize", "x.jsonl", "--tokenizer", "t.model", "--out", str(tmp_path / "o"), f"{flag}={value}"])
    assert f"argument {flag}: " in capsys.readouterr().err.strip().splitlines()[-1]


def test_api_settings_are_range_checked(tmp_path, base_spm):
    for kw, flag in [(dict(workers=0), "--workers"), (dict(jaccard=1.5), "--jaccard"),
                     (dict(min_hangul_frac=-1), "--min-hangul-frac"), (dict(num_perm=2.5), "--num-perm"),
                     (dict(lsh_bands=4), "--lsh-bands and --lsh-rows"), (dict(top_ngram="1:0.2"), "--top-ngram"),
                     (dict(encoding="latin-1"), "--encoding must be one of")]:
        with pytest.raises(DataError, match=flag):
            CleanConfig(**kw)
    for kw, flag in [(dict(val_fraction=1.0), "--val-fraction"), (dict(shard_tokens=0), "--shard-tokens"),
                     (dict(workers=0), "--workers")]:
        with pytest.raises(DataError, match=flag):
            tokenize([tmp_path / "x.jsonl"], base_spm, tmp_path / "o", **kw)


def test_each_setting_is_declared_once_for_its_flag_and_its_check(tmp_path, capsys):
    """The flags' defaults are CleanConfig's (but --workers: every core), and a value just outside
    a setting's range is refused both by its flag (argparse, exit 2) and by CleanConfig."""
    p = argparse.ArgumentParser()
    data._add_clean_args(p)
    flags = vars(p.parse_args(["x.jsonl", "--out", "o"]))
    want = {k: v for k, v in asdict(CleanConfig()).items() if k != "batch_docs"}  # the one setting with no flag
    assert {k: flags[k] for k in want} == {**want, "workers": os.cpu_count() or 1}
    assert sorted(flags) == sorted([*want, "inputs", "out", "force"])
    checked = 0
    for f in fields(CleanConfig):
        if "range" not in f.metadata:
            continue
        lo, hi, lo_open, _ = f.metadata["range"]
        flag = "--" + f.name.replace("_", "-")
        for bad in [lo if lo_open else lo - 1] + ([hi * 1.5] if hi is not None else []):
            with pytest.raises(DataError, match=flag):
                CleanConfig(**{f.name: bad})
            if f.metadata["help"]:
                with pytest.raises(SystemExit):
                    p.parse_args(["x.jsonl", "--out", "o", f"{flag}={bad}"])
                assert f"argument {flag}: " in capsys.readouterr().err
            checked += 1
    assert checked >= 40


def test_tokenize_flags_are_tokenize_config_settings(capsys):
    """data.py tokenize's flags are TokenizeConfig's settings (but ReadConfig's --txt-mode, --encoding
    and --on-invalid): the same defaults (but --workers), and the same ranges for flag and API user."""
    p = argparse.ArgumentParser()
    data._add_tokenize_args(p)
    flags = vars(p.parse_args(["x.jsonl", "--tokenizer", "t", "--out", "o"]))
    want = {k: v for k, v in asdict(shards.TokenizeConfig()).items()
            if k not in ("txt_mode", "encoding", "on_invalid", "batch_docs")}
    assert {k: flags[k] for k in want} == {**want, "workers": os.cpu_count() or 1}
    assert sorted(flags) == sorted([*want, "inputs", "tokenizer", "out", "force"])
    for flag, bad in [("--shard-tokens", "0"), ("--val-fraction", "1"), ("--val-docs", "-1"), ("--seed", "-1"),
                      ("--workers", "0")]:
        with pytest.raises(DataError, match=f"{flag} must be "):
            shards.TokenizeConfig(**{flag[2:].replace("-", "_"): float(bad)})
        with pytest.raises(SystemExit):
            p.parse_args(["x.jsonl", "--tokenizer", "t", "--out", "o", f"{flag}={bad}"])
        assert f"argument {flag}: must be a" in capsys.readouterr().err


# ------------------------------------------------------------------ 9. every bad input, one line each

def _setup(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl").write_text(jsonl(long_docs(4), id=1), encoding="utf-8")
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "clean.jsonl").write_text(jsonl(long_docs(3)), encoding="utf-8")
    (tmp_path / "afile.txt").write_text("an existing file")
    (tmp_path / "notours").mkdir()
    (tmp_path / "notours" / "keep.txt").write_text("someone's finished work")
    _corrupt_gz(tmp_path / "bad.jsonl.gz", [], long_docs(3))


TOK = "TOKENIZER"  # replaced by the session's tokenizer
CASES = {  # id: (arguments, what the last line must name)
    "out_is_input": (["clean", "raw", "--out", "raw", "--force"], ["--out raw", "the input raw"]),
    "out_holds_input": (["clean", "same/clean.jsonl", "--out", "same"], ["--out same", "same/clean.jsonl"]),
    "out_inside_input": (["clean", "raw", "--out", "raw/o"], ["--out raw/o", "raw"]),
    "out_is_a_file": (["clean", "raw", "--out", "afile.txt"], ["--out afile.txt", "is a file"]),
    "force_without_marker": (["clean", "raw", "--out", "notours", "--force"], ["--out notours", outputs.MARKER]),
    "exists_without_force": (["clean", "raw", "--out", "notours"], ["--out notours", "--force"]),
    "negative_workers": (["clean", "raw", "--out", "o", "--workers", "-1"], ["--workers", "'-1'"]),
    "jaccard_2": (["clean", "raw", "--out", "o", "--jaccard", "2"], ["--jaccard", "'2'"]),
    "wrong_text_field": (["clean", "raw", "--out", "o", "--text-field", "body"],
                         ["--text-field 'body'", "raw/a.jsonl", "['text', 'id']"]),
    "missing_input": (["clean", "raw/nope.jsonl", "--out", "o"], ["raw/nope.jsonl"]),
    "corrupt_gz": (["clean", "bad.jsonl.gz", "--out", "o"], ["bad.jsonl.gz"]),
    "tok_wrong_text_field": (["tokenize", "raw/a.jsonl", "--tokenizer", TOK, "--out", "o", "--text-field", "body"],
                             ["--text-field 'body'", "raw/a.jsonl"]),
    "tok_out_inside_input": (["tokenize", "same", "--tokenizer", TOK, "--out", "same/tok"], ["--out same/tok"]),
    "tok_out_is_input_file": (["tokenize", "afile.txt", "--tokenizer", TOK, "--out", "afile.txt"], ["afile.txt"]),
    "tok_val_fraction_1": (["tokenize", "raw/a.jsonl", "--tokenizer", TOK, "--out", "o", "--val-fraction", "1"],
                           ["--val-fraction"]),
    "tok_missing_tokenizer": (["tokenize", "raw/a.jsonl", "--tokenizer", "none.model", "--out", "o"],
                              ["none.model"]),
    "tok_missing_input": (["tokenize", "gone", "--tokenizer", TOK, "--out", "o"], ["gone"]),
    "tok_corrupt_gz": (["tokenize", "bad.jsonl.gz", "--tokenizer", TOK, "--out", "o"], ["bad.jsonl.gz"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_inputs_fail_in_one_line_and_touch_nothing(case, tmp_path, base_spm):
    _setup(tmp_path)
    before = tree(tmp_path)
    args, culprits = CASES[case]
    args = [str(base_spm) if a == TOK else a for a in args]
    r = run_data(*args, "--workers", "1", "--no-progress", cwd=tmp_path) if "--workers" not in args else \
        run_data(*args, "--no-progress", cwd=tmp_path)
    both = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in both, both[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "error: " in last and all(c in last for c in culprits), last
    assert tree(tmp_path) == before  # inputs, earlier outputs: byte for byte; nothing new either

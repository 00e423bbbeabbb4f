"""data.py's clean pipeline as a whole: planted duplicates, the report, seeds and workers,
sampling to a size, encodings, failures that keep the previous output, folders and gzip,
and the command line (clean, then tokenize). The steps inside have their own files:
test_textclean.py, test_dedup.py, test_perplexity.py, test_readers.py, test_shards.py.

    python -m pytest -q tests/test_data.py

Every corpus is built inside the test from the embedded KoBEST-train text (conftest).
"""
import json
import random
import subprocess
import sys

import pytest
from conftest import ROOT, edit_words, long_docs, read_clean, shingle_jaccard, write_jsonl
from conftest import clean_cfg as cfg

import data
from corpus import textclean
from corpus.textclean import normalize
from data import DataError, clean

# ---------------------------------------------------------------------------- clean()

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """300 distinct documents plus an exact duplicate, 10 near-duplicates and 5 distinct
    documents that share a boilerplate line."""
    rng = random.Random(1)
    docs = [d for d in long_docs(330) if textclean.filter_reason(normalize(d), cfg()) is None][:320]
    base, extra = docs[:300], docs[300:]
    near = [edit_words(base[i], 0.03, rng) for i in range(10, 20)]
    boiler = [d + "\n저작권자 © 한국일보 무단 전재 및 재배포 금지" for d in extra[:5]]
    corpus = base + [base[5]] + near + boiler
    rng.shuffle(corpus)
    d = tmp_path_factory.mktemp("planted")
    write_jsonl(d / "corpus.jsonl", corpus)
    return d / "corpus.jsonl", base, near, boiler


def test_clean_removes_planted_duplicates_and_keeps_distinct_documents(planted, tmp_path):
    path, base, near, boiler = planted
    assert all(shingle_jaccard(normalize(b), normalize(n)) >= 0.8
               for b, n in zip(base[10:20], near))  # the plants really are near-duplicates
    rep = clean([path], tmp_path, cfg(keep_dropped=True))
    out = read_clean(tmp_path)
    assert rep["dropped"].get("exact_dup") == 1
    assert rep["dropped"].get("near_dup") == 10
    assert len(out) == len(set(out)) == 305
    # the distinct documents all stay (a shared boilerplate line makes no duplicate)...
    assert {normalize(b) for b in base[:10] + base[20:] + boiler} <= set(out)
    # ...and of each planted pair the first one in the corpus (either one: it was shuffled)
    assert all((normalize(b) in out) != (normalize(n) in out) for b, n in zip(base[10:20], near))
    dropped = [json.loads(line) for line in open(tmp_path / "dropped.jsonl", encoding="utf-8")]
    assert sorted(r["reason"] for r in dropped) == ["exact_dup"] + ["near_dup"] * 10
    assert all(r["duplicate_of"].startswith(str(path)) for r in dropped)


def test_report_reconciles(planted, tmp_path):
    path = planted[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "\xff\xfe broken bytes"}\nnot json\n{"other": 1}\n{"text": "short"}\n')
    rep = clean([path, bad], tmp_path / "out", cfg(target_docs=200, keep_dropped=True))
    assert rep["docs_in"] == 316 + 4
    assert rep["docs_in"] == rep["docs_out"] + sum(rep["dropped"].values())
    assert rep["docs_out"] == 200 == len(read_clean(tmp_path / "out"))
    flow = rep["docs_in"]
    for step in rep["steps"].values():
        assert step["docs_in"] == flow
        flow = step["docs_out"]
        assert step["docs_in"] - step["docs_out"] == sum(step["dropped"].values())
    assert flow == rep["docs_out"]
    assert {"bad_json", "no_text", "too_short", "exact_dup", "near_dup", "sampled_out"} <= set(rep["dropped"])
    n_dropped = sum(1 for _ in open(tmp_path / "out" / "dropped.jsonl"))
    assert n_dropped == sum(rep["dropped"].values())
    assert rep["bytes_out"] == sum(len(t.encode()) for t in read_clean(tmp_path / "out"))
    assert rep["bytes_in"] > rep["bytes_out"] > 0


def test_same_seed_same_bytes_and_workers_do_not_change_output(planted, tmp_path):
    path = planted[0]
    runs = {}
    for name, kw in {"a": dict(seed=3), "b": dict(seed=3, workers=2, batch_docs=16), "c": dict(seed=4)}.items():
        clean([path], tmp_path / name, cfg(target_chars=40_000, **kw))
        runs[name] = (tmp_path / name / "clean.jsonl").read_bytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]  # the seed matters
    kept = read_clean(tmp_path / "a")
    assert sum(map(len, kept)) <= 40_000 < sum(map(len, kept)) + 2000


def test_sampling_to_a_size_keeps_that_many_documents_or_at_most_that_many_bytes(planted, tmp_path):
    clean([planted[0]], tmp_path / "d", cfg(target_docs=17, seed=1))
    assert len(read_clean(tmp_path / "d")) == 17
    rep = clean([planted[0]], tmp_path / "b", cfg(target_bytes=30_000, seed=1))
    sizes = [len(t.encode("utf-8")) for t in read_clean(tmp_path / "b")]
    assert sum(sizes) <= 30_000 < sum(sizes) + 2 * max(sizes)         # stops at the first that would not fit
    assert rep["dropped"]["sampled_out"] > 0


def test_cp949_and_euc_kr_inputs_decode(tmp_path):
    docs = long_docs(3)
    (tmp_path / "a.txt").write_bytes("\n\n".join(docs).encode("cp949"))
    (tmp_path / "b.txt").write_bytes("\n".join(docs).encode("euc-kr"))
    rep = clean([tmp_path / "a.txt"], tmp_path / "o1", cfg())
    assert rep["files"][0]["encoding"] == "cp949"
    assert read_clean(tmp_path / "o1") == [normalize(d) for d in docs]
    clean([tmp_path / "b.txt"], tmp_path / "o2", cfg(encoding="euc-kr", txt_mode="lines"))
    assert read_clean(tmp_path / "o2") == [normalize(d) for d in docs]


def test_invalid_utf8_is_counted_not_fatal(tmp_path):
    good = long_docs(3)
    lines = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in good]
    lines.insert(1, b'{"text": "' + good[0][:60].encode() + b'\xff\xc3 \xed\xa0\x80"}')  # invalid bytes
    (tmp_path / "x.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rep = clean([tmp_path / "x.jsonl"], tmp_path / "r", cfg())  # auto: still UTF-8, one bad line
    assert rep["files"][0]["encoding"] == "utf-8"
    assert rep["files"][0]["replaced_lines"] == 1 and rep["docs_out"] == 4
    assert any("\ufffd" in t for t in read_clean(tmp_path / "r"))
    rep = clean([tmp_path / "x.jsonl"], tmp_path / "d", cfg(on_invalid="drop"))
    assert rep["files"][0]["dropped_lines"] == 1 and rep["dropped"] == {"bad_encoding": 1}
    assert read_clean(tmp_path / "d") == [normalize(t) for t in good]


def test_empty_file_and_empty_corpus_give_clear_messages(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    write_jsonl(tmp_path / "some.jsonl", long_docs(2))
    rep = clean([tmp_path / "empty.txt", tmp_path / "some.jsonl"], tmp_path / "o", cfg())
    assert rep["docs_out"] == 2
    assert any("empty.txt: no documents (empty file)" in n for n in rep["notes"])
    with pytest.raises(DataError, match=r"no documents in the input: .*empty\.txt"):
        clean([tmp_path / "empty.txt"], tmp_path / "o2", cfg())
    with pytest.raises(DataError, match="no documents in the input"):  # cli.run prints it as one line
        data.main(["clean", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o3")])
    assert not (tmp_path / "o3").exists()
    with pytest.raises(DataError, match="missing.jsonl: no such file"):
        clean([tmp_path / "missing.jsonl"], tmp_path / "o4", cfg())
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(DataError, match=r"notes\.docx: unknown input type"):
        clean([tmp_path / "notes.docx"], tmp_path / "o5", cfg())


def test_failed_run_leaves_previous_output_intact(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", long_docs(5))
    clean([tmp_path / "in.jsonl"], tmp_path / "out", cfg())
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="already exists"):  # a finished output is replaced only with force
        clean([tmp_path / "empty.jsonl"], tmp_path / "out", cfg())
    with pytest.raises(DataError, match="no documents in the input"):
        clean([tmp_path / "empty.jsonl"], tmp_path / "out", cfg(), force=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before  # no temp files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "in.jsonl", "out"]  # nor beside it


def test_folders_gzip_txt_modes_and_shards(tmp_path):
    docs = long_docs(6)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text("\n\n".join(docs[:2]) + "\n", encoding="utf-8")
    write_jsonl(tmp_path / "in" / "sub" / "b.jsonl.gz", docs[2:5], gz=True)
    (tmp_path / "in" / "c.txt").write_text(docs[5] + "\n")
    (tmp_path / "in" / "skip.csv").write_text("ignored")
    (tmp_path / "in" / ".hidden").mkdir()
    write_jsonl(tmp_path / "in" / ".hidden" / "x.jsonl", ["숨은 파일은 읽지 않는다 " * 5])
    with pytest.raises(DataError, match="inside the input folder"):  # it would read its own output back
        clean([tmp_path / "in"], tmp_path / "in" / "o", cfg())
    rep = clean([tmp_path / "in"], tmp_path / "o", cfg(shard_docs=4))
    assert [f["path"].rsplit("/", 1)[1] for f in rep["files"]] == ["a.txt", "c.txt", "b.jsonl.gz"]
    assert rep["outputs"] == ["clean_00000.jsonl", "clean_00001.jsonl"]
    got = [json.loads(line)["text"] for name in rep["outputs"] for line in open(tmp_path / "o" / name)]
    assert got == [normalize(d) for d in docs[:2] + docs[5:] + docs[2:5]]
    lines = tmp_path / "l.txt"
    lines.write_text("\n".join(docs[:3]))
    assert clean([lines], tmp_path / "o2", cfg(txt_mode="lines"))["docs_in"] == 3


# ---------------------------------------------------------------------------- command line

def test_command_line_clean_then_tokenize(base_spm, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", long_docs(50) + long_docs(50)[:10])
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "data.py"), *map(str, a)],
                                    capture_output=True, text=True, cwd=tmp_path)
    r = run("clean", "c.jsonl", "--out", "out", "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "60 documents in, 50 out" in r.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["docs_out"] == 50 and rep["dropped"] == {"exact_dup": 10}
    r = run("tokenize", "out/clean.jsonl", "--tokenizer", base_spm, "--out", "tok", "--val-fraction", "0.2",
            "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert meta["num_docs"] + meta["val_num_docs"] == 50 and meta["val_num_docs"] > 0
    r = run("clean", "nothing.jsonl", "--out", "o")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ["error: nothing.jsonl: no such file or folder"]

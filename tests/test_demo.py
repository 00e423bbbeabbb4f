"""The front door: `python redwhale.py demo --quick` runs every step and its report adds up.

This runs the real thing at its smallest settings (1-2 minutes on 2 cores): a tiny base
model is pretrained, the corpus cleaned, the tokenizer trained and merged, the model
expanded and trained through the four stages under torchrun, and KoBEST scored.
"""
import json
import subprocess
import sys

from conftest import ROOT


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "redwhale.py"), "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("Base model", "Corpus", "Tokenizer", "Expansion and training", "KoBEST", "Generations"):
        assert heading in md
    # the corpus report reconciles
    c = rep["clean"]
    assert c["docs_in"] == c["docs_out"] + sum(c["dropped"].values()) and c["docs_out"] > 0.9 * c["docs_in"]
    # the merged tokenizer cuts Korean token counts
    assert rep["tokenizer"]["added"] > 0 and rep["tokenizer"]["ratio"]["kobest_sample"]["ratio"] < 1.0
    # all four RedWhale stages ran, and training lowered the held-out Korean loss
    assert sorted({r["stage"] for r in rep["train"]["log"]}) == [1, 2, 3, 4]
    assert rep["loss_after_training"] < rep["loss_after_expansion"]
    # KoBEST numbers are real accuracies over the shipped sample, before and after
    for key in ("kobest_before", "kobest_after"):
        for task, m in rep[key]["results"].items():
            assert 0.0 <= m["acc"] <= 1.0 and 0.0 <= m["f1"] <= 1.0 and m["n"] == 20
        assert set(rep[key]["results"]) == {"boolq", "copa", "hellaswag", "sentineg", "wic"}
    assert set(rep["generations_after"]) == set(rep["generations_before"])
    # bits per character, Korean and English, for the base and after expansion and each stage
    bpc = rep["bits_per_char"]
    assert list(bpc) == ["base", "after expansion"] + [f"after stage {i}" for i in (1, 2, 3, 4)]
    assert all(0 < r[lang] < 20 for r in bpc.values() for lang in ("korean", "english"))
    assert bpc["after stage 4"]["korean"] < bpc["after expansion"]["korean"]
    assert "Korean bits/char" in md and (out / "tokens" / "val.jsonl").exists()
    assert any("eval_en_bpc" in r for r in rep["train"]["log"])
    # the held-out English was never in the base's pretraining text
    pretrained = {json.loads(line)["text"] for line in open(out / "base_corpus.jsonl", encoding="utf-8")}
    held_out = [json.loads(line)["text"] for line in open(out / "english_heldout.jsonl", encoding="utf-8")]
    assert len(held_out) >= 10 and not pretrained & set(held_out)
    # the exported model is an HF folder with its merged tokenizer
    final = out / "train" / "final"
    assert (final / "config.json").exists() and (final / "tokenizer.model").exists()


def test_cli_refuses_to_overwrite_and_errors_in_one_line(tmp_path):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("finished work")
    proc = subprocess.run([sys.executable, str(ROOT / "redwhale.py"), "demo", "--quick", "--out",
                           str(tmp_path / "exists")], capture_output=True, text=True)
    assert proc.returncode != 0 and "--force" in proc.stderr
    assert (tmp_path / "exists" / "keep.txt").read_text() == "finished work"
    proc = subprocess.run([sys.executable, str(ROOT / "redwhale.py"), "eval", "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(tmp_path / "nope") in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # a step whose module reports failure by its return code fails the CLI too
    proc = subprocess.run([sys.executable, str(ROOT / "redwhale.py"), "clean", str(tmp_path / "missing.jsonl"),
                           "--out", str(tmp_path / "clean")], capture_output=True, text=True)
    assert proc.returncode != 0 and "missing.jsonl" in proc.stderr and "Traceback" not in proc.stderr

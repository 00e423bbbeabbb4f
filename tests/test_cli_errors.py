"""Ordinary mistakes, across every command: one line naming the culprit, nothing touched.

Each row of BAD is a command line a user could type. For every one: the exit code is not 0,
no traceback is printed, the last line of stderr names the flag, file or key at fault, and
every file of the test's world (inputs, earlier outputs) is byte-identical afterwards, with
nothing new written. The rows run in-process through redwhale.py's own wrapper (cli.run),
which is what `python redwhale.py STEP ...` runs; a few also run as real subprocesses below.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ENV, ROOT, korean_docs, train_spm, write_shards

import redwhale
import tokenizer as T
from support import cli


@pytest.fixture(scope="module")
def world(tmp_path_factory, train_setup, base_spm):
    """Inputs and earlier outputs a user might point a command at by mistake."""
    w = tmp_path_factory.mktemp("world")
    shutil.copytree(train_setup / "init", w / "base")               # a tiny HF model with tokenizer.model
    shutil.copytree(train_setup / "data", w / "tokens")             # token shards
    (w / "corpus.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                            for t in korean_docs(300)), encoding="utf-8")
    (w / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    korean = train_spm(w / "korean", korean_docs(600), vocab_size=2500, character_coverage=0.99)
    T.merge(base_spm, korean, w / "merged")                         # written by the API: no marker
    (w / "notours").mkdir()
    (w / "notours" / "keep.txt").write_text("a user's own work")
    (w / "afile").write_text("not a folder")
    (w / "samples.jsonl").write_text('\n{"a user\'s": "rows"}\n')
    import data
    data.clean([w / "corpus.jsonl"], w / "cleaned", data.CleanConfig(workers=1, progress=False))
    (w / "rawlink").mkdir()                                              # a link inside an input folder
    (w / "rawlink" / "a.jsonl").symlink_to(w / "cleaned" / "clean.jsonl")
    (w / "foreignrun").mkdir()
    (w / "foreignrun" / "log.jsonl").write_text("another tool's training log")
    (w / "nomodel").mkdir()
    write_shards(w / "badids", [5] * 4000 + [2500] + [5] * 10, vocab_size=2000)     # one id past the model's 2000
    (w / "garbage.model").write_bytes(b"this is not a sentencepiece model\n" * 10)
    shutil.copytree(w / "base", w / "badtok")
    (w / "badtok" / "tokenizer.model").write_bytes(os.urandom(300))
    recipe = {"seq_len": 64, "micro_batch": 4, "stages": [{"name": "s", "train": ["embed"], "steps": 2}]}
    for name, change in {"lr_word": {"lr": "fast"}, "lr_neg": {"lr": -1}, "steps_neg": {"steps": -3},
                         "train_empty": {"train": []}}.items():
        r = json.loads(json.dumps(recipe))
        r["stages"][0].update(change)
        (w / f"{name}.json").write_text(json.dumps(r))
    return w


def tree(folder):
    """{relative path: sha256} of every file under folder."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


W = "{w}"   # rows name paths inside the world as {w}/...
TRAIN = ["train", "--init-from", f"{W}/base", "--data", f"{W}/tokens", "--seq-len", "64", "--steps-per-stage", "2",
         "--out", f"{W}/run"]
BAD = {
    # the output guard: an output is never an input, inside one, or holding one; --force only replaces ours
    "clean into the folder holding its input": (["clean", f"{W}/corpus.jsonl", "--out", W, "--force"],
                                                "holds the input"),
    "clean --workers 0": (["clean", f"{W}/corpus.jsonl", "--out", f"{W}/o", "--workers", "0"], "--workers"),
    "tokenize with a wrong --text-field": (["tokenize", f"{W}/corpus.jsonl", "--tokenizer", f"{W}/base", "--out",
                                            f"{W}/o", "--text-field", "body", "--workers", "1"], "'body'"),
    "clean through a symlink into its own output": (["clean", f"{W}/rawlink", "--out", f"{W}/cleaned", "--force"],
                                                    "holds the input"),
    "sweep --json onto a file that is not a sweep's": (["sweep", f"{W}/corpus.jsonl", "--base", f"{W}/base",
                                                        "--sizes", "3000", "--eval", f"{W}/corpus.jsonl", "--json",
                                                        f"{W}/afile"], "not an output of this step"),
    "eval --output onto a user's JSONL": (["eval", "--model", f"{W}/base", "--output", f"{W}/samples.jsonl"],
                                          "not an output of this step"),
    "--force across steps": (["tokenizer-train", f"{W}/corpus.jsonl", "--out", f"{W}/cleaned", "--force"],
                             "another step (clean)"),
    "merge into the base's folder": (["merge", "--base", f"{W}/base", "--korean", f"{W}/korean.model",
                                      "--out", f"{W}/base", "--force"], "is the input"),
    "merge --out= spelling onto a finished output": (["merge", "--base", f"{W}/base", "--korean",
                                                      f"{W}/korean.model", f"--out={W}/merged"], "pass --force"),
    "--force on a folder this project did not write": (["merge", "--base", f"{W}/base", "--korean",
                                                        f"{W}/korean.model", "--out", f"{W}/notours", "--force"],
                                                       "not written by this project"),
    "expand the base in place": (["expand", "--model", f"{W}/base", "--tokenizer", f"{W}/merged", "--out",
                                  f"{W}/base"], "is the input"),
    "expand into the base's folder": (["expand", "--model", f"{W}/base", "--tokenizer", f"{W}/merged", "--out",
                                       f"{W}/base/expanded"], "inside the input folder"),
    "expand with no merged tokenizer": (["expand", "--model", f"{W}/base", "--tokenizer", f"{W}/nothing", "--out",
                                         f"{W}/expanded"], "nothing: not found"),
    "expand a folder that is not a model": (["expand", "--model", f"{W}/merged", "--tokenizer", f"{W}/merged",
                                             "--out", f"{W}/expanded"], "no config.json"),
    "an output that holds an input": (["tokenizer-train", f"{W}/corpus.jsonl", "--out", W], "holds the input"),
    "--out is a file": (["tokenizer-train", f"{W}/corpus.jsonl", "--out", f"{W}/afile"], "is a file"),
    "train --out is the data": ([*TRAIN[:-2], "--out", f"{W}/tokens"], "is the input"),
    "train --force on another tool's run": ([*TRAIN[:-2], "--out", f"{W}/foreignrun", "--force"],
                                            "not written by this project"),
    "demo --force on another folder": (["demo", "--quick", "--out", f"{W}/notours", "--force"], "not written by"),
    # numeric flags and recipe fields, checked before anything runs
    "vocab size 0": (["tokenizer-train", f"{W}/corpus.jsonl", "--vocab-size", "0", "--out", f"{W}/o"],
                     "--vocab-size"),
    "--max-piece-chars -1": (["merge", "--base", f"{W}/base", "--korean", f"{W}/korean.model", "--out", f"{W}/o",
                              "--max-piece-chars", "-1"], "--max-piece-chars"),
    "--seq-len 0": ([*TRAIN, "--seq-len", "0"], "--seq-len"),
    "--seq-len past the model's positions": ([*TRAIN, "--seq-len", "4096"], "max_position_embeddings"),
    "--batch-size -2": ([*TRAIN, "--batch-size", "-2"], "--batch-size"),
    "recipe lr 'fast'": ([*TRAIN, "--recipe", f"{W}/lr_word.json"], "lr"),
    "recipe lr -1": ([*TRAIN, "--recipe", f"{W}/lr_neg.json"], "lr must be a number > 0"),
    "recipe steps -3": ([*TRAIN, "--recipe", f"{W}/steps_neg.json"], "steps must be an integer >= 0"),
    "recipe train []": ([*TRAIN, "--recipe", f"{W}/train_empty.json"], "'train'"),
    "eval --limit -1": (["eval", "--model", f"{W}/base", "--limit", "-1"], "--limit"),
    "eval --num-fewshot -1": (["eval", "--model", f"{W}/base", "--num-fewshot", "-1"], "--num-fewshot"),
    "generate --max-new-tokens -5": (["generate", "--model", f"{W}/base", "--max-new-tokens", "-5"],
                                     "--max-new-tokens"),
    "train --nproc 0": ([*TRAIN, "--nproc", "0"], "--nproc"),
    # missing and wrong inputs
    "empty corpus": (["tokenizer-train", f"{W}/empty.jsonl", "--out", f"{W}/o"], "empty.jsonl"),
    "no such --init-from": ([*TRAIN[:2], f"{W}/nope", *TRAIN[3:]], "nope"),
    "--init-from without config.json": ([*TRAIN[:2], f"{W}/nomodel", *TRAIN[3:]], "config.json"),
    "--resume of a missing path": ([*TRAIN, "--resume", f"{W}/nope/step-1"], "nope/step-1"),
    "a shard id past the model's vocabulary": ([*TRAIN[:4], f"{W}/badids", *TRAIN[5:]], "train_1.bin: token"),
    "a corrupt Korean model": (["merge", "--base", f"{W}/base", "--korean", f"{W}/garbage.model", "--out",
                                f"{W}/o"], "garbage.model"),
    "a corrupt tokenizer.model (eval)": (["eval", "--model", f"{W}/badtok"], "tokenizer.model"),
    "a corrupt tokenizer.model (generate)": (["generate", "--model", f"{W}/badtok"], "tokenizer.model"),
    "eval of a missing model": (["eval", "--model", f"{W}/nope"], "nope"),
    "export of a folder with no run": (["export", f"{W}/notours"], "checkpoints"),
    "clean --out without a value": (["clean", f"{W}/corpus.jsonl", "--out"], "--out"),
    "an unknown step": (["bogus"], "bogus"),
    "score --context 1": (["score", "--model", f"{W}/base", f"{W}/corpus.jsonl", "--context", "1"], "--context"),
    "score of a missing text": (["score", "--model", f"{W}/base", f"{W}/nope.txt"], "nope.txt"),
    "train --eval-data without NAME=": ([*TRAIN, "--eval-data", f"{W}/tokens"], "--eval-data"),
}
if torch.cuda.is_available():
    BAD.pop("--device cuda without CUDA", None)
else:
    BAD["--device cuda without CUDA"] = ([*TRAIN, "--device", "cuda"], "--device cuda")


@pytest.mark.parametrize("case", list(BAD))
def test_a_mistake_is_one_line_and_touches_nothing(case, world, capsys):
    argv, culprit = BAD[case]
    argv = [a.replace(W, str(world)) for a in argv]
    before = tree(world)
    with pytest.raises(SystemExit) as e:
        cli.run(redwhale.main, argv)
    out, err = capsys.readouterr()
    assert e.value.code not in (0, None), out + err
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert "error" in last and culprit.replace(W, str(world)) in last, err
    assert tree(world) == before                     # inputs byte-identical, and nothing new written


def test_the_real_command_line_prints_one_line(world):
    """The same wrapper as a user meets it: a subprocess, exit code 1 or 2, one error line."""
    for argv, culprit in [(["tokenizer-train", f"{world}/corpus.jsonl", "--out", str(world)], "holds the input"),
                          (["eval", "--model", f"{world}/badtok"], "tokenizer.model")]:
        p = subprocess.run([sys.executable, str(ROOT / "redwhale.py"), *argv], capture_output=True, text=True,
                           env=ENV)
        assert p.returncode == 1 and "Traceback" not in p.stderr
        assert p.stderr.strip().splitlines() == [p.stderr.strip().splitlines()[-1]]
        assert p.stderr.startswith("error: ") and culprit in p.stderr


def test_a_user_error_under_nproc_is_printed_once(world):
    """`train --nproc 2` checks the flags before torchrun starts: one line, not one per rank."""
    p = subprocess.run([sys.executable, str(ROOT / "redwhale.py"), "train", "--nproc", "2", "--init-from",
                        f"{world}/base", "--data", f"{world}/tokens", "--out", f"{world}/run2", "--seq-len", "4096"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.count("error:") == 1 and "max_position_embeddings" in p.stderr
    assert not (world / "run2").exists()


def test_export_help_is_help():
    p = subprocess.run([sys.executable, str(ROOT / "redwhale.py"), "export", "--help"], capture_output=True,
                       text=True, env=ENV)
    assert p.returncode == 0 and "RUN_DIR" in p.stdout and "--to" in p.stdout


@pytest.mark.parametrize("value, kw, ok", [
    (0, dict(lo=0), True), (0, dict(lo=0, lo_open=True), False), (1e-9, dict(lo=0, lo_open=True), True),
    (1, dict(hi=1), True), (1, dict(hi=1, hi_open=True), False), (0.999, dict(hi=1, hi_open=True), True),
    (-1, dict(lo=0), False), (2, dict(hi=1), False), (float("nan"), dict(), False), (True, dict(), False),
    (3, dict(kind=int), True), (3.0, dict(kind=int), True), (2.5, dict(kind=int), False),
])
def test_a_range_includes_its_closed_ends_and_excludes_its_open_ones(value, kw, ok):
    assert (cli.problem(value, **kw) is None) == ok


@pytest.mark.parametrize("step", sorted(__import__("redwhale").STEPS))
def test_every_step_calls_its_modules_main_with_its_leading_arguments(step, monkeypatch):
    import importlib

    import redwhale
    module, lead, _ = redwhale.STEPS[step]
    seen = []
    monkeypatch.setattr(importlib.import_module(module), "main", lambda argv=None: seen.append(argv))
    redwhale.main([step, "--some-flag", "x"])
    assert seen == [lead + ["--some-flag", "x"]]


# each step reaches its own module's parser: a flag its help shows (and its siblings' do not)
STEP_FLAGS = {"clean": "--txt-mode", "tokenize": "--shard-tokens", "tokenizer-train": "--vocab-size",
              "merge": "--korean", "ratio": "--tokenizer TOKENIZER --base BASE", "sweep": "--sizes",
              "expand": "--vocab-multiple", "train": "--steps-per-stage", "plan": "--gpu-mem-gb", "recipe": "--recipe",
              "export": "run_dir", "eval": "--num-fewshot", "score": "--context", "generate": "--top-p"}


@pytest.mark.parametrize("step", STEP_FLAGS)
def test_every_step_dispatches_to_its_own_command(step, capsys):
    import redwhale
    assert set(STEP_FLAGS) == set(redwhale.STEPS)
    with pytest.raises(SystemExit) as e:
        redwhale.main([step, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert STEP_FLAGS[step] in out
    # and not a sibling command of the same module (tokenizer.py's train / merge / ratio / ...)
    module = redwhale.STEPS[step][0]
    siblings = [o for o, (m, lead, _) in redwhale.STEPS.items()
                if m == module and lead and not lead[0].startswith("-") and o != step]
    assert not any(STEP_FLAGS[o] in out for o in siblings), siblings

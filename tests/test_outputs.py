"""The output guard (support/outputs.py) and the argument validator (support/cli.py), on their own.

These are the rules every command goes through, so each is pinned here once: what --force
may delete, that a folder is replaced whole or not at all, that leftovers of a killed run are
swept, that a file is written whole, and that a flag out of range is refused with its name.
"""
import argparse
import os
import subprocess
import sys

import pytest

from support import cli, outputs


def make(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_an_output_is_never_an_input_inside_one_or_holding_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(tmp_path / "raw", {"a.jsonl": "{}"})
    for out, why in [("raw", "is the input"), ("raw/sub", "inside the input folder"), (".", "current folder"),
                     (str(tmp_path), "current folder"), ("..", "current folder")]:
        with pytest.raises(ValueError, match=why):
            outputs.check_output_dir(out, ["raw"], force=True)
    with pytest.raises(ValueError, match="holds the input raw/a.jsonl"):
        outputs.check_not_input(tmp_path / "raw", ["raw/a.jsonl"])
    outputs.check_output_dir("clean", ["raw"])         # a sibling is fine
    assert (tmp_path / "raw" / "a.jsonl").read_text() == "{}"


def test_force_only_replaces_a_folder_this_project_wrote(tmp_path):
    make(tmp_path / "mine", {"old.txt": "old run"})
    make(tmp_path / "theirs", {"thesis.tex": "years of work"})
    with pytest.raises(ValueError, match="pass --force"):
        outputs.check_output_dir(tmp_path / "mine")
    with pytest.raises(ValueError, match="not written by this project"):
        outputs.check_output_dir(tmp_path / "theirs", force=True)
    outputs.mark(tmp_path / "mine", "test")
    outputs.check_output_dir(tmp_path / "mine", force=True)     # ours: --force may replace it
    outputs.check_output_dir(tmp_path / "empty")               # missing: fine
    (tmp_path / "empty").mkdir()
    outputs.check_output_dir(tmp_path / "empty")               # empty: fine
    assert (tmp_path / "theirs" / "thesis.tex").read_text() == "years of work"


def test_a_staged_folder_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with outputs.staged(out, step="test") as tmp:
        make(tmp, {"clean_00000.jsonl": "a", "clean_00001.jsonl": "b", "dropped.jsonl": "x"})
        assert not out.exists()                                # invisible until complete
    assert sorted(os.listdir(out)) == [outputs.MARKER, "clean_00000.jsonl", "clean_00001.jsonl", "dropped.jsonl"]
    # a second run with fewer files: nothing stale survives
    with outputs.staged(out, force=True, step="test") as tmp:
        make(tmp, {"clean_00000.jsonl": "c"})
    assert sorted(os.listdir(out)) == [outputs.MARKER, "clean_00000.jsonl"]
    # a run that fails half way leaves the previous output exactly as it was, and no temp folder
    with pytest.raises(OSError, match="No space left"):
        with outputs.staged(out, force=True, step="test") as tmp:
            make(tmp, {"clean_00000.jsonl": "half"})
            raise OSError(28, "No space left on device")
    assert (out / "clean_00000.jsonl").read_text() == "c"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_leftovers_of_a_killed_run_are_swept_and_reported(tmp_path, capsys):
    """A SIGKILLed run leaves its hidden .partial folder; the next run removes it and says so.
    A leftover of a process that is still alive, or one this project did not write, stays."""
    code = ("import outputs, os, sys\n"
            "with outputs.staged(sys.argv[1]) as tmp:\n"
            "    open(os.path.join(tmp, 'big.bin'), 'wb').write(b'x' * 1000)\n"
            "    os.kill(os.getpid(), 9)\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], cwd=os.path.dirname(outputs.__file__))
    assert p.returncode == -9
    left = [d for d in os.listdir(tmp_path) if d.startswith(".out.partial-")]
    assert len(left) == 1
    make(tmp_path / f".out.partial-{os.getpid()}0", {"x": "not ours"})     # no marker: not touched
    with outputs.staged(tmp_path / "out") as tmp:
        make(tmp, {"a": "a"})
    assert left[0] in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == [f".out.partial-{os.getpid()}0", "out"]


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    outputs.write_atomic(path, "old")
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        outputs.write_atomic(path, "new")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]
    outputs.write_atomic(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"


def test_file_outputs_replace_only_their_own_kind_unless_forced(tmp_path):
    (tmp_path / "notes.json").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        outputs.check_output_file(tmp_path / "notes.json", ours=lambda p: False)
    outputs.check_output_file(tmp_path / "notes.json", ours=lambda p: True)
    outputs.check_output_file(tmp_path / "notes.json", force=True)
    with pytest.raises(ValueError, match="inside the input folder"):
        outputs.check_output_file(tmp_path / "model" / "r.json", inputs=[tmp_path / "model"])


@pytest.mark.parametrize("kind,lo,hi,lo_open,good,bad", [
    (int, 0, None, False, ["0", "7"], ["-1", "1.5", "x", ""]),
    (int, 1, None, False, ["1"], ["0"]),
    (float, 0, 1, True, ["1", "0.5", "1e-9"], ["0", "1.01", "nan", "-0.1"]),
    (float, 0, None, False, ["0", "1e30"], ["-1e-9", "nan"]),
])
def test_number_accepts_its_range_and_names_the_flag_outside_it(kind, lo, hi, lo_open, good, bad, capsys):
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--n", type=cli.number(kind, lo=lo, hi=hi, lo_open=lo_open))
    for text in good:
        assert p.parse_args([f"--n={text}"]).n == kind(text)
    for text in bad:
        with pytest.raises(SystemExit):
            p.parse_args([f"--n={text}"])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("x: error: argument --n: must be") and repr(text) in last


def test_check_names_the_key_and_the_range():
    assert cli.check("stage 1 lr", 2e-4, float, lo=0, lo_open=True) == 2e-4
    for value in ("fast", -1, 0, True, None, float("nan")):
        with pytest.raises(ValueError, match=r"stage 1 lr must be a number > 0, got"):
            cli.check("stage 1 lr", value, float, lo=0, lo_open=True)
    with pytest.raises(ValueError, match=r"steps must be an integer >= 0, got 2.5"):
        cli.check("steps", 2.5, int, lo=0)


def test_force_replaces_only_the_same_steps_output_and_never_a_mount_point(tmp_path, monkeypatch):
    make(tmp_path / "run", {"log.jsonl": "{}"})
    outputs.mark(tmp_path / "run", "train")
    with pytest.raises(ValueError, match=r"another step \(train\), not of expand"):
        outputs.check_output_dir(tmp_path / "run", force=True, step="expand")
    outputs.check_output_dir(tmp_path / "run", force=True, step="train")
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(tmp_path / "run"))
    with pytest.raises(ValueError, match="is a mount point"):
        outputs.check_output_dir(tmp_path / "run", force=True, step="train")


def test_a_previous_output_caught_between_two_renames_is_put_back(tmp_path, capsys):
    """A kill after `out` was renamed to .out.old-HOST-PID and before the new one took its place."""
    old = tmp_path / f".out.old-{outputs._tag().rsplit('-', 1)[0]}-999999999"
    make(old, {"clean.jsonl": "the previous output"})
    outputs.mark(old, "clean")
    with pytest.raises(ValueError, match="pass --force"):   # it is back, and guarded as ever
        with outputs.staged(tmp_path / "out", step="clean"):
            pass
    assert (tmp_path / "out" / "clean.jsonl").read_text() == "the previous output"
    assert "restored" in capsys.readouterr().err and not old.exists()

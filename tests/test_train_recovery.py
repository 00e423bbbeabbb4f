"""A training run after things went wrong: damaged checkpoints, leftovers, reruns, exports.

A requeued job runs `--resume auto` whatever happened before. A damaged newest checkpoint is
named and skipped for the one before it (the losses then match an uninterrupted run); no
checkpoint at all starts a new run and says so; a half-written `step-N.tmp` of a killed run is
removed and reported; an existing run folder is continued, replaced (--force, ours only) or
refused; and an export never replaces a folder this project did not write.
"""
import os

import pytest
from conftest import read_log, rows, run

from support import outputs
from training import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
FLAGS = ("--steps-per-stage", 3, "--eval-every", 0)


def test_a_damaged_newest_checkpoint_is_named_and_skipped(train_setup, tmp_path, capsys):
    run(train_setup, tmp_path / "a", *FLAGS, "--ckpt-every", 2, "--keep-checkpoints", 2, "--max-steps", 4)
    ck = tmp_path / "a" / "checkpoints"
    assert checkpoint.list_checkpoints(ck) == ["step-00000003", "step-00000004"]    # stage 1 ends at step 3
    with open(ck / "step-00000004" / "model.pt", "r+b") as f:           # a disk that filled up mid-write
        f.truncate(f.seek(0, 2) // 2)
    capsys.readouterr()
    resumed = run(train_setup, tmp_path / "a", *FLAGS, "--resume", "auto", "--max-steps", 4)
    said = capsys.readouterr().out
    assert f"{ck / 'step-00000004'} is damaged (model.pt: " in said and "resuming from step-00000003" in said
    straight = run(train_setup, tmp_path / "b", *FLAGS, "--max-steps", 7)
    assert rows(resumed) == rows(straight)          # steps 1-3 from the log, 4-7 trained again: identical
    # the damaged one was moved aside, so pruning (keep 2) kept the good ones, not it
    assert checkpoint.list_checkpoints(ck) == ["step-00000006", "step-00000007"]
    assert (ck / "step-00000004.damaged").is_dir()


def test_every_checkpoint_damaged_is_one_error(train_setup, tmp_path):
    run(train_setup, tmp_path / "a", *FLAGS, "--max-steps", 2)
    (tmp_path / "a" / "checkpoints" / "step-00000002" / "optim.pt").write_bytes(b"not a torch archive")
    with pytest.raises(ValueError, match="every checkpoint in .* is damaged"):
        run(train_setup, tmp_path / "a", *FLAGS, "--resume", "auto")


def test_resume_auto_without_checkpoints_starts_fresh_and_says_so(train_setup, tmp_path, capsys):
    log = run(train_setup, tmp_path / "new", *FLAGS, "--resume", "auto", "--max-steps", 2)
    assert f"--resume auto found no checkpoint in {tmp_path / 'new' / 'checkpoints'}: starting a new run" \
        in capsys.readouterr().out
    assert [r["global_step"] for r in log] == [1, 2]


def test_a_half_written_checkpoint_is_removed_and_reported(train_setup, tmp_path, capsys):
    run(train_setup, tmp_path / "a", *FLAGS, "--max-steps", 2)
    tmp = tmp_path / "a" / "checkpoints" / "step-00000003.tmp"        # a kill during the next write
    tmp.mkdir()
    (tmp / "model.pt").write_bytes(b"half")
    # a kill between the two renames that replace a checkpoint of the same name leaves the old one hidden
    old = tmp_path / "a" / "checkpoints" / ".step-00000002.old-host-123"
    old.mkdir()
    (old / "model.pt").write_bytes(b"replaced")
    capsys.readouterr()
    log = run(train_setup, tmp_path / "a", *FLAGS, "--resume", "auto", "--max-steps", 1)
    out = capsys.readouterr().out
    assert f"removed {tmp}" in out and not tmp.exists()
    assert f"removed {old}" in out and not old.exists()
    assert [r["global_step"] for r in log] == [1, 2, 3]


def test_a_finished_run_is_refused_then_replaced_with_force(train_setup, tmp_path):
    run(train_setup, tmp_path / "a", *FLAGS, "--max-steps", 2)
    with pytest.raises(ValueError, match="already has checkpoints: pass --resume auto"):
        run(train_setup, tmp_path / "a", *FLAGS, "--max-steps", 1)
    log = run(train_setup, tmp_path / "a", *FLAGS, "--max-steps", 1, "--force")
    assert [r["global_step"] for r in log] == [1]
    assert checkpoint.list_checkpoints(tmp_path / "a" / "checkpoints") == ["step-00000001"]
    os.makedirs(tmp_path / "theirs")
    (tmp_path / "theirs" / "log.jsonl").write_text("someone else's log")
    with pytest.raises(ValueError, match="log.jsonl not written by this project"):
        run(train_setup, tmp_path / "theirs", *FLAGS, "--max-steps", 1, "--force")
    assert os.listdir(tmp_path / "theirs") == ["log.jsonl"]


def test_a_run_lives_beside_what_else_the_folder_holds(train_setup, tmp_path):
    """A SLURM log and the recipe in the run folder: a first launch with --resume auto runs
    beside them, and --force replaces only the run's own files (log, checkpoints, final)."""
    import shutil
    out = tmp_path / "job"
    out.mkdir()
    (out / "slurm-123.out").write_text("job log")
    shutil.copy(train_setup / "recipe.json", out / "my_recipe.json")
    log = run(train_setup, out, *FLAGS, "--resume", "auto", "--max-steps", 2, recipe=out / "my_recipe.json")
    assert [r["global_step"] for r in log] == [1, 2]
    log = run(train_setup, out, *FLAGS, "--max-steps", 1, "--force", recipe=out / "my_recipe.json")
    assert [r["global_step"] for r in log] == [1]
    assert (out / "slurm-123.out").read_text() == "job log" and (out / "my_recipe.json").exists()


def test_export_replaces_its_own_final_but_never_a_users_folder(train_setup, tmp_path):
    run(train_setup, tmp_path / "a", *FLAGS, "--max-steps", 2)
    final = checkpoint.export_run(str(tmp_path / "a"))
    assert outputs.ours(final) and os.path.exists(os.path.join(final, "model.safetensors"))
    checkpoint.export_run(str(tmp_path / "a"))                       # a re-export replaces it
    os.makedirs(tmp_path / "mine")
    (tmp_path / "mine" / "paper.md").write_text("draft")
    with pytest.raises(ValueError, match="pass --force"):
        checkpoint.export_run(str(tmp_path / "a"), to=str(tmp_path / "mine"))
    with pytest.raises(ValueError, match="not written by this project"):
        checkpoint.export_run(str(tmp_path / "a"), to=str(tmp_path / "mine"), force=True)
    assert os.listdir(tmp_path / "mine") == ["paper.md"]
    with pytest.raises(ValueError, match="--to .* holds the input"):     # the run itself is an input
        checkpoint.export_run(str(tmp_path / "a"), to=str(tmp_path / "a"), force=True)
    assert checkpoint.list_checkpoints(tmp_path / "a" / "checkpoints") == ["step-00000002"]
    assert len(read_log(tmp_path / "a")) == 2

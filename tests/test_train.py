"""train.py on CPU with a tiny Llama and token shards (conftest.train_setup).

One reference run of a four-stage recipe (embed+head with the old rows frozen, odd layers,
even layers with a warmup-stable-decay schedule, LoRA + embed + head) is shared by several
tests; the others start their own short runs. The whole file takes about a minute.

    python -m pytest -q tests/test_train.py
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ENV, OLD_ROWS, RECIPE, ROOT, read_log, run, sigterm_after, state

import train
from corpus.shards import TokenShards
from lora import add_lora
from model import Llama
from support import outputs
from support.safetensors_io import read_safetensors
from training import checkpoint, metrics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference(train_setup):
    """The uninterrupted run, keeping every stage-end checkpoint."""
    out = train_setup / "reference"
    log = run(train_setup, out, "--keep-checkpoints", "100")
    return out, log


def test_every_stage_lowers_the_eval_loss(train_setup, reference):
    out, log = reference
    data = TokenShards(str(train_setup / "data"), 64, 2000, seed=1234)
    model = Llama.from_pretrained(str(train_setup / "init"))
    before = metrics.held_out_loss(model, data, 4, 4)          # the same held-out windows the run scores
    ends = [r["eval_loss"] for r in log if r["step"] == 8]
    assert len(ends) == 4 and len(log) == 32
    losses = [before] + ends
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert [r["stage"] for r in log] == [s for s in (1, 2, 3, 4) for _ in range(8)]
    # the learning rate follows the schedule: warmup 2 steps, then cosine / warmup-stable-decay
    lr = [r["lr"] for r in log]
    assert lr[0] == pytest.approx(5e-3) and lr[1] == pytest.approx(1e-2) and lr[7] == pytest.approx(1e-3)
    assert lr[16 + 1:16 + 6] == [pytest.approx(1e-2)] * 5 and lr[16 + 6] < 1e-2 and lr[23] == pytest.approx(1e-3)


def test_frozen_parameters_are_bit_identical_and_trained_ones_move(train_setup, reference):
    out, _ = reference
    ck = sorted(os.listdir(out / "checkpoints"))
    assert ck == ["step-00000008", "step-00000016", "step-00000024", "step-00000032"]
    init = dict(read_safetensors(str(train_setup / "init" / "model.safetensors")))
    states = [init] + [state(out / "checkpoints" / c) for c in ck]
    trained = [
        lambda k: k in ("model.embed_tokens.weight", "lm_head.weight"),
        lambda k: k.startswith(("model.layers.1.", "model.layers.3.")),
        lambda k: k.startswith(("model.layers.0.", "model.layers.2.")),
        # LoRA: embed + head train, the adapters are merged into every projection at the end
        lambda k: k in ("model.embed_tokens.weight", "lm_head.weight") or k.endswith("_proj.weight"),
    ]
    for i, is_trained in enumerate(trained):
        a, b = states[i], states[i + 1]
        assert set(a) == set(b)          # no lora_A/B keys left after the LoRA stage
        for k in a:
            if is_trained(k):
                assert not torch.equal(a[k], b[k]), f"stage {i + 1}: {k} did not train"
            else:
                assert torch.equal(a[k], b[k]), f"stage {i + 1}: frozen {k} changed"
    # stage 1 froze the original rows of embed and head by a gradient mask: only new rows moved
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(states[0][k][:OLD_ROWS], states[1][k][:OLD_ROWS])
        assert (states[0][k][OLD_ROWS:] != states[1][k][OLD_ROWS:]).any(dim=1).all()


@pytest.fixture(scope="module")
def chain(train_setup):
    """The same run cut into 4-step pieces, each resumed with --resume auto: it resumes mid-stage,
    from a stage end into the LoRA stage, and mid-LoRA; the mid-LoRA checkpoint is exported."""
    out = train_setup / "chain"
    for i in range(8):
        log = run(train_setup, out, "--max-steps", 4, *(["--resume", "auto"] if i else []))
        assert len(log) == 4 * (i + 1)
        if len(log) == 28:               # stage 4 step 4: the newest checkpoint holds live adapters
            lora_state = state(out / "checkpoints" / "step-00000028")
            checkpoint.main([str(out), "--to", str(train_setup / "mid_lora")])   # the export command
            mid_lora = str(train_setup / "mid_lora")
    return out, log, lora_state, mid_lora


def test_interrupted_and_resumed_run_reproduces_the_losses_exactly(reference, chain):
    (ref_out, ref_log), (out, log, _, _) = reference, chain
    keys = ("stage", "step", "tokens", "loss", "lr", "grad_norm", "eval_loss")
    assert [[r.get(k) for k in keys] for r in log] == [[r.get(k) for k in keys] for r in ref_log]
    with open(out / "final" / "model.safetensors", "rb") as a, open(ref_out / "final" / "model.safetensors", "rb") as b:
        assert a.read() == b.read()


def test_export_merges_lora_and_loads_in_transformers_with_the_same_logits(train_setup, reference, chain):
    from transformers import LlamaForCausalLM
    (out, _), (_, _, sd, folder) = reference, chain
    ids = torch.randint(0, 2000, (2, 40), generator=torch.Generator().manual_seed(0))
    # the model with live (unmerged) adapters, as the checkpoint holds it, is the reference
    assert any("lora_A" in k for k in sd)
    lora_model = Llama.from_pretrained(str(train_setup / "init"))
    add_lora(lora_model, r=4, alpha=8, dropout=0.1)
    lora_model.load_state_dict(sd)
    lora_model.eval()
    with torch.no_grad():
        want = lora_model(ids)[0]
    # the HF files, and the marker that lets --force replace this folder (support/outputs.py)
    assert sorted(os.listdir(folder)) == [outputs.MARKER, "config.json", "model.safetensors", "tokenizer.model"]
    hf = LlamaForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        got = hf(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the end-of-run export (final/) loads too and matches our own model on it
    hf = LlamaForCausalLM.from_pretrained(str(out / "final")).eval()
    ours = Llama.from_pretrained(str(out / "final")).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids)[0], atol=1e-4, rtol=1e-4)


def test_two_process_torchrun_matches_one_process(train_setup, tmp_path):
    """Same global batch (2 x 4 x 64 tokens): 1 process accumulates 2 micro-batches, 2 gloo
    processes take one each. The loss curves agree to float tolerance, LoRA stage included: its
    dropout masks are seeded by the micro-batch's place in the global batch, not by the rank."""
    recipe = json.loads(json.dumps(RECIPE))
    recipe["stages"] = recipe["stages"][:2] + recipe["stages"][3:]
    for st in recipe["stages"]:
        st.update(steps=3, batch_tokens=512)
    recipe["stages"][-1]["lora"]["dropout"] = 0.1
    with open(tmp_path / "r.json", "w") as f:
        json.dump(recipe, f)
    one = run(train_setup, tmp_path / "one", recipe=tmp_path / "r.json")
    assert {r["stage"] for r in one} == {1, 2, 3}
    # as the README runs it: redwhale.py train --nproc 2 starts torchrun with two gloo processes
    cmd = [sys.executable, str(ROOT / "redwhale.py"), "train", "--nproc", "2",
           "--init-from", str(train_setup / "init"), "--data", str(train_setup / "data"),
           "--out", str(tmp_path / "two"), "--recipe", str(tmp_path / "r.json"), "--eval-every", "4",
           "--eval-batches", "4", "--ckpt-every", "0"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("G=1 x 2 ranks") == 3, p.stdout[-3000:]
    two = read_log(tmp_path / "two")
    assert [(r["stage"], r["step"], r["tokens"]) for r in two] == [(r["stage"], r["step"], r["tokens"]) for r in one]
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-4)
    np.testing.assert_allclose([r["grad_norm"] for r in two], [r["grad_norm"] for r in one], rtol=1e-3)
    assert os.path.exists(tmp_path / "two" / "final" / "model.safetensors")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_exits_128_plus_its_number_and_resume_continues_exactly(train_setup, tmp_path, sig,
                                                                                     code):
    """SIGTERM (a preemption) or Ctrl-C finishes the step, writes a checkpoint and exits 143 / 130,
    as a shell expects of a killed command (it used to exit 0, so `train && eval` went on)."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--init-from", str(train_setup / "init"),
           "--data", str(train_setup / "data"),
           "--out", str(tmp_path / "a"), "--recipe", str(train_setup / "recipe.json"), "--steps-per-stage", "1000",
           "--eval-every", "0", "--ckpt-every", "0"]
    got, text = sigterm_after(cmd, tmp_path / "a", 2, sig)
    assert got == code, text
    assert f"stopped by signal {sig.name}" in text and "Traceback" not in text
    k = len(read_log(tmp_path / "a"))
    assert 2 <= k < 1000
    assert os.listdir(tmp_path / "a" / "checkpoints") == [f"step-{k:08d}"]
    common = ["--steps-per-stage", 1000, "--eval-every", 0]
    resumed = run(train_setup, tmp_path / "a", *common, "--resume", "auto", "--max-steps", 3)
    straight = run(train_setup, tmp_path / "b", *common, "--max-steps", k + 3)
    assert len(resumed) == k + 3
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]


def test_sigterm_under_redwhale_train_nproc_is_one_line_and_exit_143(train_setup, tmp_path):
    """torchrun, run inside `redwhale.py train --nproc 2`, passes SIGTERM on to the ranks and waits
    for their checkpoint; the user used to get torch's SignalException traceback and exit code 1."""
    cmd = [sys.executable, str(ROOT / "redwhale.py"), "train", "--nproc", "2", "--init-from", str(train_setup / "init"),
           "--data", str(train_setup / "data"), "--out", str(tmp_path / "a"), "--recipe",
           str(train_setup / "recipe.json"), "--steps-per-stage", "1000", "--eval-every", "0", "--ckpt-every", "0"]
    code, text = sigterm_after(cmd, tmp_path / "a", 2)
    assert code == 143 and "Traceback" not in text and "SignalException" not in text, text[-3000:]
    assert text.count("stopped by signal SIGTERM") == 1
    assert os.listdir(tmp_path / "a" / "checkpoints") == [f"step-{len(read_log(tmp_path / 'a')):08d}"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(train_setup, tmp_path):
    recipe = {"seq_len": 64, "micro_batch": 4, "stages": [
        {"name": "boom", "train": ["all"], "steps": 20, "lr": 1e30, "warmup": 0, "batch_tokens": 256}]}
    with open(tmp_path / "r.json", "w") as f:
        json.dump(recipe, f)
    with pytest.raises(ValueError, match="non-finite loss .* stage 1 \\(boom\\) step 2.*step-00000001"):
        run(train_setup, tmp_path / "o", "--ckpt-every", 1, recipe=tmp_path / "r.json")
    assert os.listdir(tmp_path / "o" / "checkpoints") == ["step-00000001"]
    good = state(tmp_path / "o" / "checkpoints" / "step-00000001")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not os.path.exists(tmp_path / "o" / "final")


def test_bf16_autocast_path_runs_on_cpu(train_setup, tmp_path):
    """--dtype bf16 (the CUDA default): frozen weights stored in bf16, trained ones in fp32."""
    log = run(train_setup, tmp_path / "o", "--dtype", "bf16", "--steps-per-stage", 2, "--max-steps", 7,
              "--ckpt-every", 0)
    assert len(log) == 7 and all(np.isfinite(r["loss"]) for r in log)
    sd = state(tmp_path / "o" / "checkpoints" / "step-00000007")   # stage 4 (LoRA), step 1
    assert sd["model.layers.0.self_attn.q_proj.lora_A"].dtype == torch.float32
    assert sd["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert sd["lm_head.weight"].dtype == torch.float32


@pytest.mark.parametrize("case", ["missing_shard", "unknown_group", "vocab_too_big", "truncated_shard",
                                  "existing_run", "bad_batch", "changed_plan", "no_expand_report"])
def test_bad_input_is_a_clear_error(train_setup, tmp_path, case):
    data, recipe, extra = train_setup / "data", train_setup / "recipe.json", []
    if case in ("missing_shard", "vocab_too_big", "truncated_shard"):
        data = tmp_path / "data"
        shutil.copytree(train_setup / "data", data)
        meta = json.loads((data / "meta.json").read_text())
        if case == "missing_shard":
            os.remove(data / "train_1.bin")
            want = "train_1.bin not found"
        elif case == "vocab_too_big":
            meta["vocab_size"] = 2500
            want = "vocab_size 2500 exceeds the model's vocab_size 2000"
        else:
            with open(data / "train_0.bin", "r+b") as f:
                f.truncate(1000)
            want = "train_0.bin: 1000 bytes, meta.json says"
        (data / "meta.json").write_text(json.dumps(meta))
    elif case == "unknown_group":
        r = json.loads(json.dumps(RECIPE))
        r["stages"][1]["train"] = ["odd_layer"]
        recipe = tmp_path / "r.json"
        recipe.write_text(json.dumps(r))
        want = "r.json: stage 2 \\(odd\\): unknown parameter group 'odd_layer'"
    elif case == "existing_run":
        run(train_setup, tmp_path / "o", "--steps-per-stage", 1, "--max-steps", 1)
        want = "already has checkpoints: pass --resume auto"
    elif case == "changed_plan":         # resuming with other steps / batch would not be the same run
        run(train_setup, tmp_path / "o", "--steps-per-stage", 5, "--max-steps", 1)
        extra = ["--steps-per-stage", 6, "--resume", "auto"]
        want = "step-00000001: it was written with a different plan"
    elif case == "no_expand_report":
        extra = ["--freeze-old-rows", "auto"]
        want = "old_vocab_size 'auto' needs .*expand_report.json; give --freeze-old-rows N instead"
    else:
        extra = ["--batch-size", 3]
        want = "batch_tokens 256 is not a multiple of batch-size 3 x seq-len 64"
    with pytest.raises(ValueError, match=want):
        train.main(["--init-from", str(train_setup / "init"), "--data", str(data), "--out", str(tmp_path / "o"),
                    "--recipe", str(recipe), *map(str, extra)])


def test_gpu_check_script_dry_run_on_cpu(tmp_path):
    """bench/gpu_check.py is meant for one short run on a lent GPU: its plumbing (each check through
    train.py's command line, the JSON of results) is checked here with --dry-run --quick, leaving
    out the two compile checks (minutes of compiling on CPU; the suite compiles elsewhere)."""
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--quick", "--out-json",
                        str(out), "--only", "collective", "flash", "resume", "activation_checkpointing", "dcp_resume",
                        "padded_vocab", "eval_data", "fp16_base", "mfu", "memory", "fsdp_perf"],
                       capture_output=True, text=True, timeout=300,
                       env={**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")},
                            "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    checks = {r["name"]: r for r in json.loads(out.read_text())["checks"]}
    assert len(checks) == 11 and checks["flash"]["passed"] is None and checks["mfu"]["passed"] is None  # skipped
    assert all(r["passed"] for n, r in checks.items() if n not in ("flash", "mfu")), checks
    assert checks["resume"]["numbers"]["identical"] and checks["padded_vocab"]["numbers"]["final_rows"] == [1009]


def test_freeze_old_rows_auto_reads_expand_report(train_setup, tmp_path):
    """--freeze-old-rows auto: the count comes from the expanded model's expand_report.json."""
    init = tmp_path / "init"
    shutil.copytree(train_setup / "init", init)
    (init / "expand_report.json").write_text(json.dumps({"old_vocab_size": 1500}))
    train.main(["--init-from", str(init), "--data", str(train_setup / "data"), "--out", str(tmp_path / "o"),
                "--recipe", str(train_setup / "recipe.json"), "--steps-per-stage", "2", "--max-steps", "2",
                "--freeze-old-rows", "auto", "--eval-every", "0"])
    before = dict(read_safetensors(str(init / "model.safetensors")))
    after = state(tmp_path / "o" / "checkpoints" / "step-00000002")
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(before[k][:1500], after[k][:1500])
        assert not torch.equal(before[k][1500:], after[k][1500:])

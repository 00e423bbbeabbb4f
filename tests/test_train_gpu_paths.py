"""The GPU's code paths of train.py, walked on CPU: bf16, the attention backend, compile,
checkpoint I/O and resume decisions. torch 2.13 runs each of them on CPU (a CPU flash-attention
kernel, bf16 autocast, torch.compile, gloo under torchrun), so none of them is a branch that
only a GPU ever runs. Uses the tiny model and shards of conftest.train_setup.

    python -m pytest -q tests/test_train_gpu_paths.py
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ENV, OLD_ROWS, RECIPE, ROOT, read_log, rows, run, sigterm_after, state

import lora
import train
from model import Llama
from support import outputs
from support.safetensors_io import read_safetensors
from training import checkpoint, runtime

pytestmark = pytest.mark.usefixtures("one_thread")


def default_recipe_cmd(train_setup, out, *extra, procs=1):
    """The default four-stage recipe at tiny sizes: bf16, flash attention, 2 micro-steps a step."""
    head = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                               if procs > 1 else [])
    return head + [str(ROOT / "train.py"), "--init-from", str(train_setup / "init"),
                   "--data", str(train_setup / "data"),
                   "--out", str(out), "--dtype", "bf16", "--sdpa", "flash", "--grad-accum", "2",
                   "--batch-size", "2", "--seq-len", "64", "--eval-every", "10", "--eval-batches", "2",
                   "--ckpt-every", "0", *map(str, extra)]


def attention_kernels(fn):
    """Names of the aten attention kernels that ran inside fn() (forward and backward)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name}


# ---------------------------------------------------------------- attention backend

def test_an_attention_context_can_be_entered_at_every_micro_step():
    """sdpa_kernel(...) objects are single-use; runtime.attention builds a fresh one per call."""
    stale = runtime.sdpa_kernel([runtime.SDPBackend.FLASH_ATTENTION])
    with stale:
        pass
    with pytest.raises(AttributeError, match="args"):     # the bug train.py had on CUDA
        with stale:
            pass
    for _ in range(3):
        with runtime.attention("flash"):
            pass


@pytest.mark.parametrize("sdpa,kernel", [("flash", "aten::_scaled_dot_product_flash_attention_for_cpu"),
                                         ("math", "aten::_scaled_dot_product_attention_math")])
def test_sdpa_flag_selects_the_kernel_on_cpu_through_every_micro_step(train_setup, tmp_path, sdpa, kernel):
    """--sdpa takes effect on CPU too, in bf16, with gradient accumulation (2 micro-steps per step)."""
    def go():
        run(train_setup, tmp_path / "o", "--sdpa", sdpa, "--dtype", "bf16", "--grad-accum", 2, "--batch-size", 2,
            "--steps-per-stage", 2, "--max-steps", 2, "--eval-every", 0)
    ran = attention_kernels(go)
    assert kernel in ran and kernel + "_backward" in ran or sdpa == "math", ran
    other = ("aten::_scaled_dot_product_attention_math" if sdpa == "flash"
             else "aten::_scaled_dot_product_flash_attention_for_cpu")
    assert other not in ran, ran
    assert len(read_log(tmp_path / "o")) == 2


@pytest.mark.parametrize("sdpa", ["flash", "math"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_activation_checkpointing_recomputes_under_the_forwards_kernel(train_setup, tmp_path, sdpa, dtype):
    """Backward recomputes each layer outside the forward's contexts; torch restores autocast but
    not the sdpa_kernel choice. Without the kernel entered again, --sdpa math recomputes with
    another kernel and backward fails (CheckpointError: different metadata). With it, every kernel
    gives the losses of the run without checkpointing, through the LoRA stage."""
    def go(name, *extra):
        return run(train_setup, tmp_path / name, "--sdpa", sdpa, "--dtype", dtype, "--steps-per-stage", 2,
                   "--eval-every", 0, *extra)
    assert rows(go("ckpt", "--activation-checkpointing")) == rows(go("plain"))


def test_an_attention_backend_that_cannot_run_is_one_line_before_any_work(train_setup, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="^--sdpa efficient has no CPU kernel"):
        run(train_setup, tmp_path / "o", "--sdpa", "efficient")
    assert not os.path.exists(tmp_path / "o")          # nothing written
    # CUDA's flash kernel refuses fp32; CPU's takes anything, so the refusal is simulated here to
    # check that the probe turns it into one line before the model is loaded
    def refuse(*a, **k):
        raise RuntimeError("No available kernel. Aborting execution.\n(details)")
    monkeypatch.setattr(runtime.F, "scaled_dot_product_attention", refuse)
    with pytest.raises(ValueError, match="^--sdpa flash cannot run on cpu in fp32 with 4/2 heads of dim 16 "
                                         "\\(No available kernel. Aborting execution.\\); use --sdpa auto"):
        run(train_setup, tmp_path / "o", "--sdpa", "flash")
    assert not os.path.exists(tmp_path / "o")


def test_a_stage_that_cannot_fit_is_refused_before_anything_is_written(train_setup, tmp_path):
    """Every stage's plan against the memory per GPU (--gpu-mem-gb; on CUDA the device's total)
    before the first step: with room for the smallest stage but not the largest, the run is
    refused in one line naming the largest, instead of failing when that stage starts, hours in."""
    from recipe import resolve
    from training import options, plan
    argv = ["--init-from", str(train_setup / "init"), "--data", str(train_setup / "data"), "--out",
            str(tmp_path / "o"), "--recipe", str(train_setup / "recipe.json"), "--dtype", "fp32"]
    args, recipe = options.prepare(argv)
    cfg = train.LlamaConfig.from_pretrained(str(train_setup / "init"))
    rows = plan.stage_rows(cfg, recipe, resolve(recipe, args, 1), mixed=False, old_rows=OLD_ROWS)
    big = max(rows, key=lambda r: r["total"])
    gb = (min(r["total"] for r in rows) + big["total"]) / 2e9
    want = (f"stage {big['stage']} \\({big['name']}\\) needs about .* GB per GPU .*more than the .* GB available "
            "\\(--gpu-mem-gb overrides\\): try --activation-checkpointing, --fsdp")
    with pytest.raises(ValueError, match=want):
        train.main([*argv, "--gpu-mem-gb", f"{gb:.9f}"])
    assert not os.path.exists(tmp_path / "o")
    train.main([*argv, "--gpu-mem-gb", f"{big['total'] / 1e9 + 0.001:.9f}", "--steps-per-stage", "1"])   # fits


# ---------------------------------------------------------------- bf16: resume and the LoRA merge

def test_bf16_run_resumed_at_every_stage_boundary_and_mid_stage_is_bit_identical(train_setup, tmp_path):
    """Trained weights are fp32 masters inside a bf16 model: a resume loads them into fp32 again
    (it used to copy them into bf16 storage first: step-5 loss 6.549574 instead of 6.553803)."""
    extra = ["--dtype", "bf16", "--steps-per-stage", 3, "--eval-every", 3]
    straight = run(train_setup, tmp_path / "a", *extra)
    for i in range(6):          # 2 steps at a time: mid-stage, across boundaries, into and inside LoRA
        pieces = run(train_setup, tmp_path / "b", *extra, "--max-steps", 2, *(["--resume", "auto"] if i else []))
    assert len(straight) == 12 and rows(pieces) == rows(straight)
    a, b = (dict(read_safetensors(str(tmp_path / d / "final" / "model.safetensors"))) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_fp16_base_keeps_its_weights_bit_for_bit_under_bf16(train_setup, tmp_path):
    """SOLAR ships fp16. Under --dtype bf16 its frozen weights stay fp16 (rounding them to bf16
    would drop 3 mantissa bits before training starts) and the trained ones get fp32 masters from
    the fp16 values: every layer weight of a run that trains only embed + head, and the frozen old
    embedding rows, come out of final/ (fp16, the base's dtype) bit-identical."""
    base = Llama.from_pretrained(str(train_setup / "init")).to(torch.float16)
    base.save_pretrained(str(tmp_path / "init16"))
    shutil.copy(train_setup / "init" / "tokenizer.model", tmp_path / "init16")
    recipe = tmp_path / "embed.json"
    recipe.write_text(json.dumps({**RECIPE, "stages": RECIPE["stages"][:1]}))
    run(train_setup, tmp_path / "o", "--init-from", tmp_path / "init16", "--dtype", "bf16", recipe=recipe)
    before = dict(read_safetensors(str(tmp_path / "init16" / "model.safetensors")))
    after = dict(read_safetensors(str(tmp_path / "o" / "final" / "model.safetensors")))
    assert all(t.dtype == torch.float16 for t in after.values())
    layers = [k for k in before if k.startswith("model.layers.")]
    assert layers and all(torch.equal(before[k], after[k]) for k in layers)
    emb = "model.embed_tokens.weight"
    assert torch.equal(before[emb][:OLD_ROWS], after[emb][:OLD_ROWS])
    assert not torch.equal(before[emb][OLD_ROWS:], after[emb][OLD_ROWS:])      # the new rows trained


def test_lora_merge_keeps_small_updates_of_bf16_weights():
    """W (bf16) + dW with ||dW|| / ||W|| = 0.0024: merging into bf16 storage lost about half of the
    entries of dW; merging into fp32 loses none, and the export casts once."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 256, bias=False)
    lin.weight.data = lin.weight.data.to(torch.bfloat16)
    q = lora.LoRALinear.wrap(lin, r=8, alpha=8, dropout=0.0)
    w0 = q.weight.detach().float().clone()
    with torch.no_grad():
        q.lora_B.normal_()
        q.lora_B.mul_(0.0024 * w0.norm() / q.delta().norm())
    delta = q.delta()
    assert float(delta.norm() / w0.norm()) == pytest.approx(0.0024, rel=1e-3)
    lost_in_bf16 = float((((w0 + delta).to(torch.bfloat16).float() - w0) == 0).float().mean())
    assert lost_in_bf16 > 0.5                          # what the old merge did (60% here)
    q.merge()
    assert q.weight.dtype == torch.float32
    assert torch.equal(q.weight.detach(), w0 + delta)  # every update entry kept


def test_bf16_lora_stage_logs_the_held_out_loss_either_side_of_the_merge(train_setup, tmp_path):
    """--dtype bf16, frozen weights stored in bf16: the merge changes the held-out loss by < 0.01
    nats; final/ is written in the base config's torch_dtype (here float16, as SOLAR's)."""
    init = tmp_path / "init16"
    Llama.from_pretrained(str(train_setup / "init"), dtype=torch.float16).save_pretrained(str(init))
    shutil.copy(train_setup / "init" / "tokenizer.model", init)
    train.main(["--init-from", str(init), "--data", str(train_setup / "data"), "--out", str(tmp_path / "o"),
                "--recipe", str(train_setup / "recipe.json"), "--dtype", "bf16", "--steps-per-stage", "4",
                "--eval-every", "4", "--eval-batches", "4", "--ckpt-every", "0"])
    end = read_log(tmp_path / "o")[-1]
    assert end["stage_name"] == "lora" and end["step"] == 4
    assert abs(end["eval_loss_after_merge"] - end["eval_loss_before_merge"]) < 0.01
    assert end["eval_loss_before_merge"] == end["eval_loss"]
    cfg = json.loads((tmp_path / "o" / "final" / "config.json").read_text())
    assert cfg["torch_dtype"] == "float16"
    assert {t.dtype for _, t in read_safetensors(str(tmp_path / "o" / "final" / "model.safetensors"))} == \
        {torch.float16}


# ---------------------------------------------------------------- resume decisions

def test_resume_from_another_runs_checkpoint_never_writes_the_source(train_setup, tmp_path):
    run(train_setup, tmp_path / "a", "--steps-per-stage", 3, "--max-steps", 5, "--ckpt-every", 2,
        "--keep-checkpoints", 1)
    src = tmp_path / "a" / "checkpoints"
    before = {p: p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}
    assert sorted(os.listdir(src)) == ["step-00000005"]
    log = run(train_setup, tmp_path / "b", "--steps-per-stage", 3, "--resume", src / "step-00000005",
              "--keep-checkpoints", 1)
    assert {p: p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()} == before
    assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["step-00000012"]
    straight = run(train_setup, tmp_path / "c", "--steps-per-stage", 3)
    assert rows(log) == rows(straight)               # b's log starts with a's first five steps


@pytest.mark.parametrize("case", ["not_a_checkpoint", "out_has_other_checkpoints", "older_than_the_newest"])
def test_bad_resume_is_one_line(train_setup, tmp_path, case):
    run(train_setup, tmp_path / "a", "--steps-per-stage", 3, "--max-steps", 1)
    if case == "not_a_checkpoint":
        target, want = tmp_path / "a", "--resume .*: not a checkpoint folder \\(no state.json\\)"
    elif case == "older_than_the_newest":      # continuing step 1 in place would leave step 2 to be picked later
        run(train_setup, tmp_path / "a", "--steps-per-stage", 3, "--max-steps", 1, "--resume", "auto")
        with pytest.raises(ValueError, match="this run has newer checkpoints \\(step-00000002\\)"):
            run(train_setup, tmp_path / "a", "--steps-per-stage", 3, "--resume", tmp_path / "a" / "checkpoints" /
                "step-00000001")
        return
    else:
        run(train_setup, tmp_path / "b", "--steps-per-stage", 3, "--max-steps", 1)
        target, want = tmp_path / "a" / "checkpoints" / "step-00000001", "is from another run, but .* already has"
    with pytest.raises(ValueError, match=want):
        run(train_setup, tmp_path / "b", "--steps-per-stage", 3, "--resume", target)


def on_rank1(tmp_path, train_setup, code, *extra):
    """A two-rank torchrun of train.py (gloo) in which rank 1 first runs `code` (argv in scope)."""
    shim = tmp_path / "shim.py"
    shim.write_text(f"import os, sys\nsys.path.insert(0, {str(ROOT)!r})\nimport train\nargv = sys.argv[1:]\n"
                    f"if os.environ['RANK'] == '1':\n    {code}\n"
                    "from support import cli\ncli.run(train.main, argv)\n")       # as train.py runs it
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(shim),
           "--init-from", str(train_setup / "init"), "--data", str(train_setup / "data"), "--out", str(tmp_path / "o"),
           "--recipe", str(train_setup / "recipe.json"), "--steps-per-stage", "3", *map(str, extra)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=ENV)
    return p, time.time() - t0


ELSEWHERE = "argv[argv.index('--out') + 1] += '-elsewhere'"     # rank 1 on a node with its own disk


def test_rank_zero_decides_the_resume_and_a_rank_that_cannot_read_it_stops_the_job(train_setup, tmp_path):
    """Rank 1 sees another (empty) --out, as a node without the shared file system would: the job
    stops at once with one line naming the rank, instead of rank 1 starting at step 0 and hanging."""
    run(train_setup, tmp_path / "o", "--steps-per-stage", 3, "--max-steps", 2)
    p, _ = on_rank1(tmp_path, train_setup, ELSEWHERE, "--resume", "auto", "--dist-timeout", 1)
    assert p.returncode != 0
    assert "error: rank 1 on" in p.stderr and "cannot read checkpoint" in p.stderr, p.stderr[-3000:]
    assert "step-00000002" in p.stderr and "--out must be on storage every node sees" in p.stderr
    assert len(read_log(tmp_path / "o")) == 2          # nothing was trained or written


def test_a_fresh_run_stops_when_a_rank_cannot_see_out(train_setup, tmp_path):
    """A node-local --out on a fresh run used to train to the end, each node keeping what it
    wrote: now every rank looks for a file rank 0 wrote there before the first step."""
    p, _ = on_rank1(tmp_path, train_setup, ELSEWHERE)
    assert p.returncode != 0, p.stderr[-3000:]
    assert "error: rank 1 on" in p.stderr and "which rank 0 wrote into --out" in p.stderr, p.stderr[-3000:]
    assert "--out must be on storage every node sees" in p.stderr and not (tmp_path / "o" / "log.jsonl").exists()
    assert os.listdir(tmp_path / "o" / "checkpoints") == []          # the probe is gone


def test_rank_one_reads_no_token_id_and_holds_one_stage_at_a_time(train_setup, tmp_path):
    """Under --fsdp, rank 1 neither reads every token id (rank 0 checks them once; 8 ranks used to
    read the whole corpus 8 times) nor builds a stage's sharded model while the last one is alive."""
    spy = ("import weakref, corpus.shards as cs\n    from training import strategy\n"
           "    def read(*a): raise RuntimeError('rank 1 read every token id')\n    cs._check_ids = read\n"
           "    build, old = strategy.Shards.stage_model, []\n    def spy(self, *a):\n"
           "        if any(r() is not None for r in old): raise RuntimeError('the last stage is alive')\n"
           "        m = build(self, *a)\n        old.append(weakref.ref(m[0]))\n        return m\n"
           "    strategy.Shards.stage_model = spy")
    p, _ = on_rank1(tmp_path, train_setup, spy, "--fsdp", "--steps-per-stage", 1, "--no-save")
    assert p.returncode == 0, p.stderr[-3000:]


def test_an_error_on_one_rank_alone_reaches_the_terminal_and_stops_the_job(train_setup, tmp_path):
    """Only rank 1 runs out of memory (at its third step): its line, prefixed with its rank, is
    printed (only rank 0 used to print, so the job ended in silence), and rank 0, waiting in a
    collective with a 5-minute timeout, stops within seconds."""
    oom = ("step = train.Trainer.train_step\n    def oom(self, *a):\n"
           "        if self.steps_run == 2: raise RuntimeError('CUDA out of memory. Tried to allocate 20.00 GiB')\n"
           "        return step(self, *a)\n    train.Trainer.train_step = oom")
    p, took = on_rank1(tmp_path, train_setup, oom, "--dist-timeout", 5)
    assert p.returncode != 0 and took < 60, took
    assert p.stderr.count("error: rank 1: CUDA out of memory. Tried to allocate 20.00 GiB") == 1, p.stderr[-3000:]


# ---------------------------------------------------------------- clipping and checkpoint I/O

def test_grad_clip_zero_means_off(train_setup, tmp_path):
    """nanoGPT's convention: grad_clip 0 turns clipping off (it used to scale every gradient by 0)."""
    def with_clip(name, clip):
        r = json.loads(json.dumps(RECIPE))
        r["grad_clip"] = clip
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
        return run(train_setup, tmp_path / name, "--steps-per-stage", 2, "--max-steps", 3,
                   recipe=tmp_path / f"{name}.json")
    off, huge, tight = with_clip("off", 0), with_clip("huge", 1e9), with_clip("tight", 0.01)
    assert rows(off) == rows(huge)
    assert off[-1]["loss"] != tight[-1]["loss"]
    flag = run(train_setup, tmp_path / "flag", "--grad-clip", 0, "--steps-per-stage", 2, "--max-steps", 3)
    assert rows(flag) == rows(off)
    with pytest.raises(ValueError, match="off.json: grad_clip must be a number >= 0, got -0.5"):
        with_clip("off", -0.5)
    with pytest.raises(SystemExit):     # argparse: "argument --grad-clip: must be a number >= 0, got '-1'"
        run(train_setup, tmp_path / "neg", "--grad-clip", -1)
    assert not (tmp_path / "neg").exists()


def test_checkpoint_files_are_fsynced_before_the_rename_and_loaded_memory_mapped(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(outputs, "fsync", lambda p: events.append(("fsync", os.path.basename(p))))
    real_replace = os.replace
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: (events.append(("rename", os.path.basename(b))),
                                                                real_replace(a, b)))
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    checkpoint.save(str(ck), "step-00000001", {"w": torch.ones(3)}, {"state": {}}, {"step": 1}, keep=2)
    assert events == [("fsync", "model.pt"), ("fsync", "optim.pt"), ("fsync", "state.json"),
                      ("fsync", "step-00000001.tmp"), ("rename", "step-00000001"), ("fsync", "checkpoints")]
    t = checkpoint.load_tensors(str(ck / "step-00000001"), "model.pt")["w"]
    assert torch.equal(t, torch.ones(3))
    # memory-mapped, not read into a copy: the tensor's bytes lie in a mapping of the file itself
    path = str(ck / "step-00000001" / "model.pt")
    maps = [ln.split() for ln in open("/proc/self/maps") if ln.rstrip().endswith(path)]
    spans = [tuple(int(x, 16) for x in m[0].split("-")) for m in maps]
    assert any(lo <= t.data_ptr() < hi for lo, hi in spans), (hex(t.data_ptr()), spans)


# ---------------------------------------------------------------- compile

def test_compiled_blocks_train_two_stages_like_eager(train_setup, tmp_path):
    """--compile compiles each decoder block (rebuilt at the stage boundary); the losses of two
    short stages agree with eager to 1e-4 relative (fp32; inductor reorders float sums)."""
    r = json.loads(json.dumps(RECIPE))
    r["stages"] = r["stages"][:2]
    (tmp_path / "r.json").write_text(json.dumps(r))
    common = ["--steps-per-stage", 2, "--eval-every", 0, "--sdpa", "math"]
    eager = run(train_setup, tmp_path / "eager", *common, recipe=tmp_path / "r.json")
    comp = run(train_setup, tmp_path / "comp", *common, "--compile", recipe=tmp_path / "r.json")
    assert [r["stage"] for r in comp] == [1, 1, 2, 2]
    np.testing.assert_allclose([r["loss"] for r in comp], [r["loss"] for r in eager], rtol=1e-4)
    sd = state(tmp_path / "comp" / "checkpoints" / "step-00000004")
    assert not any("_orig_mod" in k for k in sd)      # compiled in place: HF keys stay as they are


def test_compile_runs_through_every_stage_eval_and_merge_without_giving_up(train_setup, tmp_path, monkeypatch,
                                                                          capsys):
    """Four stages (embed, odd, even, LoRA) with evals at every step and the LoRA stage's eval after the merge,
    every block compiled. Dynamo's backend is 'eager' here (what it compiles and when it
    recompiles does not depend on the backend; inductor's code generation would take minutes):
    the losses are the uncompiled run's, each stage compiles a few graphs shared by all layers
    (not one per layer), and none runs uncompiled. With the recompile limit at 1 the log says
    which step started running blocks uncompiled."""
    from torch._dynamo.utils import counters
    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_(self, backend="eager", **kw))
    common = ["--steps-per-stage", 2, "--eval-every", 1, "--sdpa", "math", "--no-save"]
    eager = run(train_setup, tmp_path / "eager", *common)
    counters.clear()
    comp = run(train_setup, tmp_path / "comp", *common, "--compile")
    assert [r["stage"] for r in comp] == [1, 1, 2, 2, 3, 3, 4, 4] and "eval_loss_after_merge" in comp[-1]
    for key in ("loss", "eval_loss"):
        np.testing.assert_allclose([r[key] for r in comp], [r[key] for r in eager], rtol=1e-6)
    assert counters["frames"]["ok"] == counters["frames"]["total"] > 0
    assert 4 <= counters["stats"]["unique_graphs"] <= 4 * 4     # 4 layers: one graph per layer would be more
    assert "uncompiled" not in capsys.readouterr().out
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    run(train_setup, tmp_path / "limit", *common, "--compile", "--steps-per-stage", 1)
    assert "warning: stage 1 step 1: torch.compile hit its recompile limit" in capsys.readouterr().out


# ---------------------------------------------------------------- MFU's denominator

def test_peak_flops_table_tells_board_variants_apart():
    """PCIe and NVL boards are slower than SXM: matching "H100" first would overstate their MFU's
    denominator by 30% and understate MFU. Unknown GPUs get no number rather than a guess."""
    assert runtime.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert runtime.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert runtime.peak_tflops("NVIDIA H100 NVL") == 835.0
    assert runtime.peak_tflops("NVIDIA H200") == 989.0
    assert runtime.peak_tflops("NVIDIA H200 NVL") == 835.0
    assert runtime.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert runtime.peak_tflops("Tesla T4") is None


# ---------------------------------------------------------------- the done-when run, 1 and 2 processes

@pytest.mark.parametrize("procs", [1, 2])
def test_default_recipe_bf16_flash_accum_sigterm_then_resume_is_bit_identical(train_setup, tmp_path, procs):
    """The default four stages, --dtype bf16 --sdpa flash --grad-accum 2, cut by SIGTERM (forwarded
    by torchrun with 2 processes) and continued with --resume auto, log the same numbers, bit for
    bit, as an uninterrupted run, and write the same final/ weights."""
    steps = 8
    p = subprocess.run(default_recipe_cmd(train_setup, tmp_path / "a", "--steps-per-stage", steps, procs=procs),
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    straight = read_log(tmp_path / "a")
    _, text = sigterm_after(default_recipe_cmd(train_setup, tmp_path / "b", "--steps-per-stage", steps, procs=procs),
                            tmp_path / "b", 11)
    assert "stopped by signal SIGTERM" in text and "--shutdown-timeout" in text, text[-3000:]
    k = len(read_log(tmp_path / "b"))
    assert 11 <= k < 4 * steps                        # cut inside stage 2 or later
    p = subprocess.run(default_recipe_cmd(train_setup, tmp_path / "b", "--steps-per-stage", steps, "--resume", "auto",
                                          procs=procs), capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = read_log(tmp_path / "b")
    assert len(resumed) == 4 * steps and rows(resumed) == rows(straight)
    assert (tmp_path / "a" / "final" / "model.safetensors").read_bytes() == \
        (tmp_path / "b" / "final" / "model.safetensors").read_bytes()

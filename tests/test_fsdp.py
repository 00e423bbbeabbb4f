"""train.py --fsdp (FSDP2, training/parallel.py) on CPU: 2 processes under torchrun with gloo, the default
four-stage recipe at tiny sizes, against the DDP path and against itself across interruptions
and world sizes.

    python -m pytest -q tests/test_fsdp.py
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ENV, ROOT, read_log, rows, sigterm_after

import train
from recipe import default_recipe
from training import checkpoint, plan

STEPS = 4          # per stage


def test_each_ranks_first_row_is_where_torch_chunk_puts_it():
    """FSDP2 shards dim 0 as torch.chunk does (ceil(rows / world) rows per rank, the last ones
    shorter or empty); the frozen-row masks find their rows by this offset."""
    from training import parallel
    for n_rows in range(1, 25):
        for world in range(1, 6):
            sizes = [len(c) for c in torch.arange(n_rows).chunk(world)] + [0] * world
            for rank in range(world):
                want = min(n_rows, sum(sizes[:rank]))
                assert parallel.shard_start(n_rows, world, rank) == want, (n_rows, world, rank)


def cmd(train_setup, out, *extra, procs=2):
    """The default recipe (embed+head with the old rows frozen, odd layers, even layers, LoRA r32 with
    dropout 0.1), 2 sequences x 64 tokens per micro-batch, 2 micro-batches a step."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
            str(ROOT / "train.py"), "--init-from", str(train_setup / "init"), "--data", str(train_setup / "data"),
            "--out", str(out), "--seq-len", "64", "--batch-size", "2", "--grad-accum", str(4 // procs),
            "--steps-per-stage", str(STEPS), "--freeze-old-rows", "1000", "--eval-every", "2",
            "--eval-batches", "2", "--ckpt-every", "0", *map(str, extra)]


def launch(*args, **kw):
    p = subprocess.run(cmd(*args, **kw), capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


@pytest.fixture(scope="module")
def runs(train_setup, tmp_path_factory):
    """The same recipe through DDP and through FSDP2, 2 ranks each, fp32."""
    d = tmp_path_factory.mktemp("fsdp")
    launch(train_setup, d / "ddp")
    launch(train_setup, d / "fsdp", "--fsdp")
    return d


def test_fsdp_trains_like_ddp_and_exports_the_same_model(runs):
    ddp, fsdp = read_log(runs / "ddp"), read_log(runs / "fsdp")
    assert [(r["stage"], r["step"]) for r in fsdp] == [(r["stage"], r["step"]) for r in ddp]
    assert len(fsdp) == 4 * STEPS
    np.testing.assert_allclose([r["loss"] for r in fsdp], [r["loss"] for r in ddp], rtol=1e-4)
    np.testing.assert_allclose([r["grad_norm"] for r in fsdp], [r["grad_norm"] for r in ddp], rtol=1e-3)
    end = fsdp[-1]                  # the LoRA merge, done on rank 0's gathered copy, lost nothing
    assert abs(end["eval_loss_after_merge"] - end["eval_loss_before_merge"]) < 1e-4
    from transformers import LlamaForCausalLM
    ids = torch.randint(0, 2000, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = LlamaForCausalLM.from_pretrained(str(runs / "ddp" / "final")).eval()(ids).logits
        b = LlamaForCausalLM.from_pretrained(str(runs / "fsdp" / "final")).eval()(ids).logits
    assert float((a - b).abs().max()) < 1e-3
    assert sorted(os.listdir(runs / "fsdp" / "final")) == sorted(os.listdir(runs / "ddp" / "final"))


def test_fsdp_reducing_only_after_the_last_micro_step_trains_the_same(train_setup, runs, tmp_path):
    """--fsdp-reduce last: no reduce-scatter between micro-steps (FSDP2 keeps the unsharded
    gradients), one after the last: the same numbers as reducing every micro-step."""
    launch(train_setup, tmp_path / "last", "--fsdp", "--fsdp-reduce", "last")
    np.testing.assert_allclose([r["loss"] for r in read_log(tmp_path / "last")],
                               [r["loss"] for r in read_log(runs / "fsdp")], rtol=1e-4)


def test_fsdp_keeps_the_old_rows_of_sharded_embeddings_frozen(train_setup, runs):
    """Rows < 1000 of embed and head are split across the two ranks' shards; none of them moves."""
    from support.safetensors_io import read_safetensors
    init = dict(read_safetensors(str(train_setup / "init" / "model.safetensors")))
    final = dict(read_safetensors(str(runs / "fsdp" / "final" / "model.safetensors")))
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(init[k][:1000], final[k][:1000])
        assert (init[k][1000:] != final[k][1000:]).any(dim=1).all()


def test_fsdp_sigterm_then_resume_with_async_checkpoints_is_exact(train_setup, runs, tmp_path):
    """SIGTERM (forwarded by torchrun) finishes the step, writes the DCP checkpoint (in the
    background, then completed), and --resume auto continues with bit-identical numbers."""
    out = tmp_path / "b"
    _, text = sigterm_after(cmd(train_setup, out, "--fsdp", "--async-ckpt", "--ckpt-every", 3), out, 6)
    assert "stopped by signal SIGTERM" in text, text[-3000:]
    k = len(read_log(out))
    assert 6 <= k < 4 * STEPS
    assert f"step-{k:08d}" in os.listdir(out / "checkpoints")
    launch(train_setup, out, "--fsdp", "--async-ckpt", "--ckpt-every", 3, "--resume", "auto")
    assert rows(read_log(out)) == rows(read_log(runs / "fsdp"))
    assert (out / "final" / "model.safetensors").read_bytes() == \
        (runs / "fsdp" / "final" / "model.safetensors").read_bytes()


def test_a_two_rank_fsdp_checkpoint_resumes_on_one_process(train_setup, runs, tmp_path):
    """DCP reshards on load: 2 ranks write, 1 rank (twice the accumulation, the same global batch)
    continues; the LoRA dropout masks follow the micro-batch, not the rank, so even stage 4 agrees.
    The mid-LoRA checkpoint also exports as an HF folder (redwhale.py export reads DCP)."""
    out = tmp_path / "o"
    launch(train_setup, out, "--fsdp", "--max-steps", 3 * STEPS + 2)
    assert sorted(os.listdir(out / "checkpoints"))[-1] == f"step-{3 * STEPS + 2:08d}"   # mid-LoRA
    checkpoint.main([str(out), "--to", str(tmp_path / "mid")])
    from transformers import LlamaForCausalLM
    LlamaForCausalLM.from_pretrained(str(tmp_path / "mid"))          # plain HF keys, adapters merged
    launch(train_setup, out, "--fsdp", "--resume", "auto", procs=1)
    got, want = read_log(out), read_log(runs / "fsdp")
    assert [(r["stage"], r["step"], r["tokens"]) for r in got] == [(r["stage"], r["step"], r["tokens"]) for r in want]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-4)


@pytest.fixture(scope="module")
def bf16(train_setup, tmp_path_factory):
    """The same recipe through DDP and through FSDP2 in bf16 (autocast, frozen weights 16-bit)."""
    d = tmp_path_factory.mktemp("bf16")
    launch(train_setup, d / "ddp", "--dtype", "bf16")
    launch(train_setup, d / "fsdp", "--fsdp", "--dtype", "bf16")
    return d


def test_fsdp_trains_like_ddp_in_bf16_too(bf16):
    """FSDP2 all-gathers each parameter in its storage dtype, so the embedding output, the residual
    stream and the norms see what DDP's do: the same losses in every stage (a bf16 all-gather
    policy drifted by up to 1.2e-4 from the first step)."""
    ddp, fsdp = read_log(bf16 / "ddp"), read_log(bf16 / "fsdp")
    assert len(fsdp) == len(ddp) == 4 * STEPS
    np.testing.assert_allclose([r["loss"] for r in fsdp], [r["loss"] for r in ddp], rtol=1e-6)


@pytest.mark.parametrize("first, then", [((), ("--fsdp",)), (("--fsdp",), ())])
def test_a_checkpoint_resumes_under_the_other_strategy(train_setup, bf16, tmp_path, first, then):
    """A run that learns at stage 2 that it needs FSDP2 goes on from its DDP checkpoint (rank 0
    reads it, the shards are broadcast), and an FSDP2 run cut inside the LoRA stage goes on under
    DDP on one process: the losses continue as the uninterrupted run's."""
    out, cut = tmp_path / "o", STEPS + 2 if not first else 3 * STEPS + 2
    launch(train_setup, out, "--dtype", "bf16", "--max-steps", cut, *first)
    launch(train_setup, out, "--dtype", "bf16", "--resume", "auto", *then, procs=2 if then else 1)
    got, want = read_log(out), read_log(bf16 / "ddp")
    assert [(r["stage"], r["step"]) for r in got] == [(r["stage"], r["step"]) for r in want]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-4)


def test_an_error_on_rank_zero_alone_stops_every_rank_with_one_line(train_setup, tmp_path):
    """Under --fsdp rank 0 alone reads the weights; a truncated checkpoint stops every rank within
    seconds (parallel.rank0 relays the error), not a traceback on rank 0 while the others wait at
    the broadcast. The line is printed once (by rank 0), not once per rank."""
    import shutil
    init = tmp_path / "init"
    shutil.copytree(train_setup / "init", init)
    with open(init / "model.safetensors", "r+b") as f:
        f.truncate(5000)
    c = cmd(train_setup, tmp_path / "o", "--fsdp", "--dist-timeout", 5)
    c[c.index("--init-from") + 1] = str(init)
    t0 = time.time()
    p = subprocess.run(c, capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode != 0 and time.time() - t0 < 60
    assert p.stderr.count("error: rank 0: ValueError: ") == 1 and "truncated" in p.stderr, p.stderr[-3000:]


@pytest.mark.parametrize("case", ["no_torchrun", "async_without_fsdp"])
def test_fsdp_misuse_is_one_line(train_setup, runs, tmp_path, case):
    base = ["--init-from", str(train_setup / "init"), "--data", str(train_setup / "data"), "--seq-len", "64",
            "--batch-size", "2", "--steps-per-stage", str(STEPS)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if case == "no_torchrun":
        extra, want = ["--out", str(tmp_path / "o"), "--fsdp"], "error: --fsdp needs a process group: launch with"
    else:
        extra, want = ["--out", str(tmp_path / "o"), "--async-ckpt"], "error: --async-ckpt needs --fsdp"
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), *base, *extra], capture_output=True, text=True,
                       timeout=120, env=env)
    assert p.returncode != 0 and want in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]


SHARD_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, {root!r})
import torch, torch.distributed as dist
from training import parallel, plan
from model import Llama, LlamaConfig
from recipe import default_recipe
dist.init_process_group("gloo")
cfg = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
torch.manual_seed(0)
state = Llama(cfg).state_dict() if dist.get_rank() == 0 else {{}}
out = []
for st in default_recipe().stages:
    s = state
    if st.lora and dist.get_rank() == 0:
        s = parallel.with_adapters(cfg, state, st.lora, lambda: torch.manual_seed(0))
    model, names = parallel.fsdp_model(cfg, st.lora, st.train, s, torch.device("cpu"), torch.bfloat16, "")
    params = [p for n, p in model.named_parameters() if n in names]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(torch.randint(0, 1000, (2, 16)), torch.randint(0, 1000, (2, 16)))
    loss.backward()
    opt.step()
    local = lambda t: t.to_local() if hasattr(t, "to_local") else t
    nbytes = lambda ts: sum(local(t).numel() * local(t).element_size() for t in ts)
    out.append({{"weights": nbytes(model.parameters()), "grads": nbytes(p.grad for p in params),
                 "optimizer": nbytes(v for s in opt.state.values() for k, v in s.items() if k != "step")}})
json.dump(out, open(os.path.join({d!r}, f"rank{{dist.get_rank()}}.json"), "w"))
"""


def test_fsdp_plan_matches_what_each_rank_holds(tmp_path):
    """plan --fsdp --world-size 2 against the bytes of the local shards of weights, gradients and
    AdamW state on each of 2 real ranks, stage by stage (bf16 storage for frozen weights)."""
    script = tmp_path / "shards.py"
    script.write_text(SHARD_SCRIPT.format(root=str(ROOT), d=str(tmp_path)))
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script)], capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    from model import LlamaConfig
    cfg = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    rows = plan.stage_rows(cfg, default_recipe(), [{"B": 2, "T": 16}] * 4, mixed=True, fsdp_world=2)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for row, g in zip(rows, got):
            assert row["weights_sharded"] == pytest.approx(g["weights"], rel=0.12), (row["name"], rank)
            assert row["grads_sharded"] == pytest.approx(g["grads"], rel=0.12), (row["name"], rank)
            assert row["optimizer"] == pytest.approx(g["optimizer"], rel=0.12), (row["name"], rank)


def test_plan_shows_solar_fits_eight_80gb_gpus_with_fsdp(tmp_path, capsys):
    from test_plan import SOLAR
    (tmp_path / "config.json").write_text(json.dumps(SOLAR))
    for extra in ([], ["--activation-checkpointing"]):
        plan.main(["--init-from", str(tmp_path), "--seq-len", "4096", "--fsdp", "--world-size", "8",
                    *extra])
        out = capsys.readouterr().out
        assert "FSDP2 (weights, grads, AdamW sharded 8 ways)" in out
        assert "do not fit" not in out and out.count(" yes") == 4
    rows = plan.stage_rows(train.LlamaConfig.from_hf(SOLAR), default_recipe(), [{"B": 1, "T": 4096}] * 4,
                           fsdp_world=8)
    ddp = plan.stage_rows(train.LlamaConfig.from_hf(SOLAR), default_recipe(), [{"B": 1, "T": 4096}] * 4)
    assert rows[1]["optimizer"] == ddp[1]["optimizer"] / 8 and rows[1]["total"] < 80e9 < ddp[1]["total"]

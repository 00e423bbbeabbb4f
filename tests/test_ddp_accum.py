"""Two gloo processes *with* gradient accumulation: the numbers and the communication.

What this pins (train.py's train_stage under DDP):
  * numbers: 2 ranks x 2 micro-steps give the same per-step loss, grad norm and final weights as
    1 process x 4 micro-steps over the same global batch, so the loss is divided by the token
    count of the whole global batch and multiplied by W (DDP averages over the ranks), and each
    sequence gets the same LoRA dropout mask wherever it runs;
  * communication: exactly one gradient all-reduce per optimizer step on every rank, i.e. the
    first G-1 micro-steps run under no_sync(). A DDP comm hook, registered on each stage's
    wrapper by a small torchrun driver, counts the all-reduce rounds (buckets with is_last()).

tests/test_train.py's two-process test has one micro-step per rank, so a train.py that
all-reduces on every micro-step (no no_sync) passes it; this one fails on that. Takes ~15 s.

    python -m pytest -q tests/test_ddp_accum.py
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import ENV, RECIPE, ROOT, read_log, run

from support.safetensors_io import read_safetensors

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                 reason="needs torch.distributed with the gloo backend")]

B, T = 2, 64                       # sequences per micro-batch, tokens per sequence
GLOBAL = 8                         # sequences per optimizer step: G=4 on one process, G=2 on each of two
STEPS = 2                          # optimizer steps per stage; two stages, so two DDP wrappers to hook

# Run by torchrun on each rank: wraps parallel.wrap_ddp so every DDP wrapper train.py builds
# (one per stage) gets a comm hook that counts, then does DDP's own all-reduce (the stock
# allreduce_hook: divide by the world size, sum over ranks), so the numbers are untouched.
DRIVER = """
import json, os, sys
sys.path.insert(0, {root!r})
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
import train
from training import parallel

counts = {{"wrappers": 0, "buckets": 0, "rounds": 0}}

def counting_allreduce(process_group, bucket):
    counts["buckets"] += 1
    counts["rounds"] += bucket.is_last()        # one round = every bucket of one backward reduced
    return default_hooks.allreduce_hook(process_group, bucket)

wrap_ddp = parallel.wrap_ddp

def wrap_and_count(*args, **kw):
    ddp = wrap_ddp(*args, **kw)
    ddp.register_comm_hook(None, counting_allreduce)
    counts["wrappers"] += 1
    return ddp

parallel.wrap_ddp = wrap_and_count
train.main(sys.argv[2:])
with open(os.path.join(sys.argv[1], "rank%s.json" % os.environ["RANK"]), "w") as f:
    json.dump(counts, f)
"""


def test_two_ranks_accumulating_match_one_process_with_one_allreduce_per_step(train_setup, tmp_path):
    recipe = json.loads(json.dumps(RECIPE))
    recipe["micro_batch"] = B
    # embed+head with the old rows frozen (grads zeroed after the all-reduce), then LoRA with
    # dropout: its masks follow each sequence's place in the global batch, so 2 ranks x 2
    # micro-steps must draw the same masks for the same sequences as 1 process x 4
    recipe["stages"] = [recipe["stages"][0], recipe["stages"][3]]
    recipe["stages"][1]["lora"]["dropout"] = 0.1
    for st in recipe["stages"]:
        st.update(steps=STEPS, batch_tokens=GLOBAL * T)
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    # --eval-every 0: an eval's window count scales with the world size, so its losses differ
    one = run(train_setup, tmp_path / "one", "--eval-every", 0, recipe=tmp_path / "r.json")
    assert len(one) == 2 * STEPS
    assert [r["tokens"] for r in one] == [GLOBAL * T * (i + 1) for i in range(2 * STEPS)]   # the global batch

    (tmp_path / "driver.py").write_text(DRIVER.format(root=str(ROOT)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(tmp_path / "driver.py"), str(tmp_path),
           "--init-from", str(train_setup / "init"), "--data", str(train_setup / "data"),
           "--out", str(tmp_path / "two"), "--recipe", str(tmp_path / "r.json"),
           "--eval-every", "0", "--ckpt-every", "0"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    # really accumulating: 2 micro-steps on each of 2 ranks (not 1, which would hide a missing no_sync)
    assert p.stdout.count(f"B={B} T={T} G=2 x 2 ranks") == 2, p.stdout[-3000:]

    # the communication: one all-reduce round per optimizer step on each rank, in both stages
    for rank in (0, 1):
        counts = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert counts["wrappers"] == 2, counts
        assert counts["rounds"] == 2 * STEPS, f"rank {rank}: {counts} for {2 * STEPS} optimizer steps"

    # the numbers: fp32 sums in another order, nothing more (seen: 1e-7 relative). A wrong loss
    # scale (W missing, a local token count) shows in the grad norm, off by x2; AdamW and clipping
    # are nearly blind to a constant gradient scale, so the weights alone would not show it
    two = read_log(tmp_path / "two")
    assert [(r["stage"], r["step"], r["tokens"]) for r in two] == [(r["stage"], r["step"], r["tokens"]) for r in one]
    np.testing.assert_allclose([r["grad_norm"] for r in two], [r["grad_norm"] for r in one], rtol=1e-4)
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-5)
    # the weights: AdamW's first steps are close to lr * sign(grad), so an entry whose gradient is
    # near zero turns fp32 noise into a visible difference (seen: 3e-4 on one entry, against
    # updates of 1.5e-2). Hence a bound per entry of a tenth of one lr=1e-2 step, and, tighter,
    # the whole update of each tensor within 2e-3 of the one-process update (seen: <= 4e-4)
    init = dict(read_safetensors(str(train_setup / "init" / "model.safetensors")))
    want = dict(read_safetensors(str(tmp_path / "one" / "final" / "model.safetensors")))
    got = dict(read_safetensors(str(tmp_path / "two" / "final" / "model.safetensors")))
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-3, msg=lambda m, k=k: f"{k}: {m}")
        moved = want[k] - init[k]
        if moved.any():
            assert float((got[k] - want[k]).norm() / moved.norm()) < 2e-3, k

"""train.py's optimizer step against the same steps written out by hand in plain torch.

The other training tests compare the trainer with itself (resumed vs uninterrupted, 1 vs 2
processes); this one recomputes three steps independently: the loss as F.cross_entropy summed
over the batch's targets / their count, the gradient of the frozen old embedding rows zeroed
*before* the norm is taken and clipped, torch's clip coefficient clip / (norm + 1e-6), and
AdamW (bias-corrected moments, decoupled weight decay on matrices only, never on norms) at
the warmup / cosine learning rate. The logged loss, grad_norm and lr and the final weights
must all agree.

    python -m pytest -q tests/test_train_step.py
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import OLD_ROWS, read_log

import train
from model import Llama
from shards import TokenShards

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, STEPS, LR, WD, CLIP, BETAS, EPS = 4, 32, 3, 3e-3, 0.5, 0.5, (0.9, 0.95), 1e-8
SEED, VAL_TOKENS = 7, 2048
ROWS = ("model.embed_tokens.weight", "lm_head.weight")


def lr_by_hand(step):
    """warmup 1 step to LR, then a cosine from LR to LR * 0.1 over the remaining steps."""
    if step < 1:
        return LR * (step + 1) / 1
    t = (step - 1) / (STEPS - 1 - 1)
    return 0.1 * LR + 0.5 * (LR - 0.1 * LR) * (1 + math.cos(math.pi * t))


def by_hand(setup):
    """Three steps of the recipe below, in plain torch: (losses, grad norms, final weights)."""
    model = Llama.from_pretrained(str(setup / "init"))
    data = TokenShards(str(setup / "data"), T, 2000, VAL_TOKENS, SEED)
    params = dict(model.named_parameters())
    kept = {k: params[k].detach()[:OLD_ROWS].clone() for k in ROWS}
    m = {k: torch.zeros_like(p) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}
    losses, norms = [], []
    for step in range(STEPS):
        x, y = data.batch(step * B, B)                               # (B, T) each, one micro-batch
        logits, _ = model(x)                                         # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        loss = loss / (y != -100).sum()
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        for k in ROWS:
            grads[k][:OLD_ROWS] = 0                                  # frozen rows: no gradient at all
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
        coef = min(1.0, CLIP / (float(norm) + 1e-6))
        lr = lr_by_hand(step)
        with torch.no_grad():
            for k, p in params.items():
                g = grads[k] * coef
                if p.dim() >= 2:                                     # decay matrices, not norms
                    p.mul_(1 - lr * WD)
                m[k] = BETAS[0] * m[k] + (1 - BETAS[0]) * g
                v[k] = BETAS[1] * v[k] + (1 - BETAS[1]) * g * g
                m_hat, v_hat = m[k] / (1 - BETAS[0] ** (step + 1)), v[k] / (1 - BETAS[1] ** (step + 1))
                p.sub_(lr * m_hat / (v_hat.sqrt() + EPS))
            for k in ROWS:
                params[k][:OLD_ROWS] = kept[k]                       # put back after decay moved them
        losses.append(float(loss.detach()))
        norms.append(float(norm))
    return losses, norms, {k: p.detach() for k, p in params.items()}


@pytest.fixture(scope="module")
def hand(train_setup):
    return by_hand(train_setup)


@pytest.fixture(scope="module")
def trained(train_setup, tmp_path_factory):
    d = tmp_path_factory.mktemp("step")
    recipe = {"seq_len": T, "micro_batch": B, "old_vocab_size": OLD_ROWS, "grad_clip": CLIP, "betas": list(BETAS),
              "stages": [{"name": "all", "train": ["all"], "steps": STEPS, "lr": LR, "warmup": 1,
                          "weight_decay": WD, "batch_tokens": B * T, "freeze_old_rows": True}]}
    (d / "recipe.json").write_text(json.dumps(recipe))
    train.main(["--init-from", str(train_setup / "init"), "--data", str(train_setup / "data"), "--out", str(d / "run"),
                "--recipe", str(d / "recipe.json"), "--eval-every", "0", "--ckpt-every", "0",
                "--seed", str(SEED), "--val-tokens", str(VAL_TOKENS), "--device", "cpu", "--dtype", "fp32"])
    return read_log(d / "run"), Llama.from_pretrained(str(d / "run" / "final"))


def test_logged_loss_grad_norm_and_lr_equal_the_hand_computation(trained, hand):
    log, _ = trained
    losses, norms, _ = hand
    assert [r["loss"] for r in log] == pytest.approx(losses, rel=1e-5)
    # the norm is taken after the frozen rows' gradient is zeroed (else it is larger) ...
    assert [r["grad_norm"] for r in log] == pytest.approx(norms, rel=1e-5)
    # ... and it is above CLIP on every step, so every step clips: the test pins the clipping too
    assert min(norms) > CLIP
    assert [r["lr"] for r in log] == pytest.approx([lr_by_hand(s) for s in range(STEPS)], rel=1e-9)
    assert [lr_by_hand(s) for s in range(STEPS)] == pytest.approx([LR, LR, 0.1 * LR])


def test_weights_after_three_steps_equal_adamw_written_out(train_setup, trained, hand):
    _, model = trained
    _, _, want = hand
    init = dict(Llama.from_pretrained(str(train_setup / "init")).named_parameters())
    got = dict(model.named_parameters())
    assert set(got) == set(want)
    for k, w in want.items():
        torch.testing.assert_close(got[k], w, atol=2e-6, rtol=1e-4, msg=lambda s, k=k: f"{k}: {s}")
        assert not torch.equal(got[k], init[k]), f"{k} did not train"
    for k in ROWS:                                                   # the old rows, bit for bit
        assert torch.equal(got[k][:OLD_ROWS], init[k][:OLD_ROWS])

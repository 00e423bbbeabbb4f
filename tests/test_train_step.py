"""train.py's optimizer steps against the same steps written out by hand in plain torch.

The other training tests compare the trainer with itself (resumed vs uninterrupted, 1 vs 2
processes); this one recomputes a two-stage run independently:
  * stage 1 trains everything (biases included) for 3 steps with the old embedding rows frozen: the loss is
    F.cross_entropy summed over the batch's targets / their count, the frozen rows' gradient is
    zeroed *before* the norm is taken and clipped (torch's coefficient clip / (norm + 1e-6)),
    AdamW uses bias-corrected moments (betas 0.8, 0.99) and decoupled weight decay on matrices
    only (never norms or biases), the learning rate warms up for 1 step and then follows a
    cosine to a fifth (min_lr_ratio 0.2);
  * stage 2 trains layer 1 alone for 2 steps with a fresh optimizer, on the windows that come
    after stage 1's in the run's sample order.
The logged loss, grad_norm and lr and the final weights must all agree.

    python -m pytest -q tests/test_train_step.py
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import OLD_ROWS, read_log

import train
from corpus.shards import TokenShards
from model import Llama, LlamaConfig
from training import metrics

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, WD, CLIP, BETAS, EPS, FLOOR = 4, 32, 0.5, 0.5, (0.8, 0.99), 1e-8, 0.2   # betas and floor not the defaults
SEED, VAL_TOKENS = 7, 2048
ROWS = ("model.embed_tokens.weight", "lm_head.weight")
# (groups, steps, peak lr, warmup steps)
STAGES = [(["all"], 3, 3e-3, 1), (["layers.1"], 2, 2e-3, 0)]


def lr_by_hand(stage, step):
    """Warmup to the peak, then a cosine from the peak to FLOOR x peak over the remaining steps."""
    _, steps, lr, warmup = STAGES[stage]
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup - 1)
    return FLOOR * lr + 0.5 * (lr - FLOOR * lr) * (1 + math.cos(math.pi * t))


def by_hand(setup, init):
    """The recipe below, in plain torch: (losses, grad norms, final weights)."""
    model = Llama.from_pretrained(str(init))
    data = TokenShards(str(setup / "data"), T, 2000, VAL_TOKENS, SEED)
    kept = {k: dict(model.named_parameters())[k].detach()[:OLD_ROWS].clone() for k in ROWS}
    losses, norms, window = [], [], 0                                  # window: the run's sample order
    for stage, (_, steps, _, _) in enumerate(STAGES):
        params = {k: p for k, p in model.named_parameters() if stage == 0 or k.startswith("model.layers.1.")}
        m = {k: torch.zeros_like(p) for k, p in params.items()}       # a fresh AdamW every stage
        v = {k: torch.zeros_like(p) for k, p in params.items()}
        for step in range(steps):
            x, y = data.batch(window, B)                               # (B, T) each, one micro-batch
            window += B
            logits, _ = model(x)                                       # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
            loss = loss / (y != -100).sum()
            grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
            if stage == 0:
                for k in ROWS:
                    grads[k][:OLD_ROWS] = 0                            # frozen rows: no gradient at all
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
            coef = min(1.0, CLIP / (float(norm) + 1e-6))
            lr = lr_by_hand(stage, step)
            with torch.no_grad():
                for k, p in params.items():
                    g = grads[k] * coef
                    if p.dim() >= 2:                                   # decay matrices, not norms
                        p.mul_(1 - lr * WD)
                    m[k] = BETAS[0] * m[k] + (1 - BETAS[0]) * g
                    v[k] = BETAS[1] * v[k] + (1 - BETAS[1]) * g * g
                    m_hat, v_hat = m[k] / (1 - BETAS[0] ** (step + 1)), v[k] / (1 - BETAS[1] ** (step + 1))
                    p.sub_(lr * m_hat / (v_hat.sqrt() + EPS))
                if stage == 0:
                    for k in ROWS:
                        params[k][:OLD_ROWS] = kept[k]                 # put back after decay moved them
            losses.append(float(loss.detach()))
            norms.append(float(norm))
    return losses, norms, {k: p.detach() for k, p in model.named_parameters()}


@pytest.fixture(scope="module")
def init(train_setup, tmp_path_factory):
    """train_setup's tiny Llama with biases on every projection (so decay on biases would show)."""
    import shutil
    d = tmp_path_factory.mktemp("init_bias")
    cfg = LlamaConfig(vocab_size=2000, hidden_size=64, intermediate_size=160, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.1, attention_bias=True, mlp_bias=True)
    torch.manual_seed(0)
    model = Llama(cfg)
    with torch.no_grad():                         # biases start at 0: give them values to decay
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(str(d))
    shutil.copy(train_setup / "init" / "tokenizer.model", d / "tokenizer.model")
    return d


@pytest.fixture(scope="module")
def hand(train_setup, init):
    return by_hand(train_setup, init)


@pytest.fixture(scope="module")
def trained(train_setup, init, tmp_path_factory):
    d = tmp_path_factory.mktemp("step")
    stages = [{"name": f"s{i}", "train": groups, "steps": steps, "lr": lr, "warmup": warmup, "weight_decay": WD,
               "min_lr_ratio": FLOOR, "batch_tokens": B * T, "freeze_old_rows": i == 0}
              for i, (groups, steps, lr, warmup) in enumerate(STAGES)]
    recipe = {"seq_len": T, "micro_batch": B, "old_vocab_size": OLD_ROWS, "grad_clip": CLIP, "betas": list(BETAS),
              "stages": stages}
    (d / "recipe.json").write_text(json.dumps(recipe))
    train.main(["--init-from", str(init), "--data", str(train_setup / "data"), "--out", str(d / "run"),
                "--recipe", str(d / "recipe.json"), "--eval-every", "0", "--ckpt-every", "0",
                "--seed", str(SEED), "--val-tokens", str(VAL_TOKENS), "--device", "cpu", "--dtype", "fp32"])
    return read_log(d / "run"), Llama.from_pretrained(str(d / "run" / "final"))


def test_logged_loss_grad_norm_and_lr_equal_the_hand_computation(trained, hand):
    log, _ = trained
    losses, norms, _ = hand
    assert [(r["stage"], r["step"]) for r in log] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    assert [r["loss"] for r in log] == pytest.approx(losses, rel=1e-5)
    # the norm is taken after the frozen rows' gradient is zeroed (else it is larger) ...
    assert [r["grad_norm"] for r in log] == pytest.approx(norms, rel=1e-5)
    # ... and it is above CLIP on every step, so every step clips: the test pins the clipping too
    assert min(norms) > CLIP
    want_lr = [lr_by_hand(s, i) for s, (_, steps, _, _) in enumerate(STAGES) for i in range(steps)]
    assert [r["lr"] for r in log] == pytest.approx(want_lr, rel=1e-9)
    assert want_lr == pytest.approx([3e-3, 3e-3, 6e-4, 2e-3, 4e-4])


def test_weights_after_both_stages_equal_adamw_written_out(init, trained, hand):
    _, model = trained
    _, _, want = hand
    start = dict(Llama.from_pretrained(str(init)).named_parameters())
    got = dict(model.named_parameters())
    assert set(got) == set(want) and any(k.endswith(".bias") for k in got)
    for k, w in want.items():
        if k.endswith("k_proj.bias"):
            # a key bias adds the same q.b to every score of a query, which softmax ignores: its
            # gradient is 0 but for float noise, which AdamW (~ lr x sign(grad)) turns into full
            # steps that differ with the order of the sums. Its decay is checked with the others.
            continue
        # AdamW's first steps are close to lr x sign(grad): an entry whose gradient is ~0 can turn
        # float noise into a step's difference, so each tensor's whole update is compared tightly
        # and single entries within half the smallest step (seen here: equal to 1e-7)
        moved = w - start[k]
        assert float((got[k] - w).detach().norm() / moved.norm()) < 1e-4, k
        torch.testing.assert_close(got[k], w, atol=2e-4, rtol=0, msg=lambda s, k=k: f"{k}: {s}")
        assert not torch.equal(got[k], start[k]), f"{k} did not train"
    for k in ROWS:                                                   # the old rows, bit for bit
        assert torch.equal(got[k][:OLD_ROWS], start[k][:OLD_ROWS])


@pytest.mark.parametrize("batches", [1, 3])
def test_eval_loss_is_the_mean_over_every_token_of_the_first_held_out_windows(train_setup, batches):
    model = Llama.from_pretrained(str(train_setup / "init"))
    data = TokenShards(str(train_setup / "data"), T, 2000, VAL_TOKENS, SEED)
    windows = [data._window(a, o) for a, o in data.val_windows[:batches * B]]   # each T + 1 tokens
    assert len(windows) == batches * B
    w = torch.stack(windows)
    with torch.no_grad():
        logits, _ = model(w[:, :-1])
        want = F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1)).item()
    assert metrics.held_out_loss(model, data, B, batches) == pytest.approx(want, rel=1e-6)
    # with more batches than held-out windows, every window once
    n = len(data.val_windows)
    w = torch.stack([data._window(a, o) for a, o in data.val_windows])
    with torch.no_grad():
        logits, _ = model(w[:, :-1])
        every = F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1)).item()
    assert metrics.held_out_loss(model, data, B, n) == pytest.approx(every, rel=1e-6)

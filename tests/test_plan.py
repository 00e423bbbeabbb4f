"""redwhale.py plan: trainable parameters and memory per GPU per stage, from a config alone.

The activation estimate is checked against what autograd really saves (saved-tensor hooks) on
a tiny model, in fp32 and under bf16 autocast, for every stage of the default recipe.

    python -m pytest -q tests/test_plan.py
"""
import contextlib
import json

import pytest
import torch

from lora import add_lora
from model import Llama, LlamaConfig
from recipe import default_recipe, select_params
from training import plan

SOLAR = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
         "intermediate_size": 14336, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 8,
         "vocab_size": 32000, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 4096,
         "tie_word_embeddings": False, "torch_dtype": "float16", "hidden_act": "silu"}
TINY = LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)



def measure_saved_bytes(model, ids, autocast=contextlib.nullcontext()):
    """What autograd really saves for backward in one forward (parameters excluded): the
    ground truth for activation_bytes. Tensors sharing a storage are counted once."""
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    def unpack(t):          # backward gets back the very tensor that was saved
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack), autocast:
        model(ids, ids)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)

def real_stage_model(st, mixed):
    """A real tiny model set up for a stage the way train.py's setup_stage does it."""
    torch.manual_seed(0)
    m = Llama(TINY)
    if st.lora:
        add_lora(m, st.lora["r"], st.lora["alpha"], st.lora["dropout"])
    names = select_params(m, st.train)
    for n, p in m.named_parameters():
        p.requires_grad_(n in names)
        if mixed:
            p.data = p.data.to(torch.float32 if n in names else torch.bfloat16)
    return m


@pytest.mark.parametrize("mixed", [False, True], ids=["fp32", "bf16-autocast"])
def test_memory_plan_matches_a_real_model(mixed):
    recipe = default_recipe()
    rows = plan.stage_rows(TINY, recipe, [{"B": 2, "T": 128}] * 4, mixed=mixed)
    ids = torch.randint(0, 1000, (2, 128), generator=torch.Generator().manual_seed(0))
    for st, row in zip(recipe.stages, rows):
        m = real_stage_model(st, mixed)
        params = list(m.parameters())
        trained = [p for p in params if p.requires_grad]
        assert row["params"] == sum(p.numel() for p in params)
        assert row["trainable"] == sum(p.numel() for p in trained)
        copies = plan.autocast_copies(m, mixed)
        assert row["weights"] == sum(p.numel() * p.element_size() for p in params) + copies
        assert row["grads"] == 4 * row["trainable"] and row["optimizer"] == 8 * row["trainable"]
        # activations: the estimate against the bytes autograd really keeps (CPU's dropout mask is a
        # float tensor, 4 bytes, where CUDA keeps a 1-byte bool one)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed)
        got = measure_saved_bytes(m, ids, autocast)
        est = plan.activation_bytes(TINY, 2 * 128, plan.layer_kinds(m), mixed, lora_r=32 if st.lora else 0,
                                    mask_bytes=4, backward_temps=False) + copies
        assert est == pytest.approx(got, rel=0.12), (st.name, est, got)


def test_layer_kinds_follow_the_lowest_trained_layer():
    kinds = [plan.layer_kinds(real_stage_model(st, False)) for st in default_recipe().stages]
    assert kinds == [["frozen"] * 4,                      # the embedding trains: backward through all
                     ["trained", "frozen", "trained"],    # odd layers 1, 3: nothing below layer 1 is kept
                     ["trained", "frozen", "trained", "frozen"],
                     ["lora"] * 4]


def test_plan_command_for_solar_on_one_80gb_gpu(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(SOLAR))
    plan.main(["--init-from", str(tmp_path), "--seq-len", "4096"])
    out = capsys.readouterr().out
    lines = {ln.split()[1]: ln.split() for ln in out.splitlines() if ln[:2] in ("1 ", "2 ", "3 ", "4 ")}
    assert list(lines) == ["embed", "odd_layers", "even_layers", "lora"]
    assert lines["embed"][2] == "262,144,000"                     # 2 x 32000 x 4096
    assert lines["embed"][-1] == "yes" and lines["odd_layers"][-1] == "NO"
    # the full layers with AdamW: fp32 weights + grads + 2 moments of 5.2B parameters cannot fit
    assert float(lines["odd_layers"][-2]) > 100
    assert 3.0 < float(lines["lora"][3].rstrip("%")) < 5.0        # the paper: about 4.6% with its larger vocab
    assert "do not fit" in out
    plan.main(["--init-from", str(tmp_path / "config.json"), "--seq-len", "4096",
                "--activation-checkpointing", "--gpu-mem-gb", "141"])
    out = capsys.readouterr().out
    assert "do not fit" not in out and out.count(" yes") == 4


def test_flops_per_token_is_6n_plus_12lct_when_everything_trains_and_less_for_a_stage():
    """Worked out from the shapes: a layer's matrices are q, o (C x HD), k, v (C x KV D) and the
    three MLP ones (C x I); the head is C x V. Training everything: 6 N + 12 L (H D) T, with N
    the layer matrices and the head (the embedding is a lookup). Training only layer 3 of 4: the
    forward is whole (2 N + 4 L H D T), the backward reaches layers 3.. and the head for
    activations and computes weight gradients for layer 3 alone."""
    C, H, KV, D, inter, L, V, T = 128, 4, 2, 32, 384, 4, 1000, 128
    layer = 2 * C * H * D + 2 * C * KV * D + 3 * C * inter
    head = C * V
    attn = 4 * T * H * D                                            # QK^T and AV, one layer, forward
    m = Llama(TINY)
    assert plan.flops_per_token(m, T) == 6 * (L * layer + head) + 3 * L * attn
    assert 3 * L * attn == 12 * L * (H * D) * T
    for n, p in m.named_parameters():
        p.requires_grad_(n.startswith("model.layers.3."))
    forward, backward = 2 * (L * layer + head) + L * attn, 2 * (1 * layer + head) + 2 * 1 * attn
    assert plan.flops_per_token(m, T) == forward + backward + 2 * layer

"""lora.py: the hand-written LoRA wrapper, its merge/unmerge, and what it does to a Llama.

    python -m pytest -q tests/test_lora.py
"""
import pytest
import torch
import torch.nn as nn

from lora import DEFAULT_TARGETS, LoRALinear, add_lora, has_lora, merge_lora
from model import Llama, LlamaConfig

CFG = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2)


def lora_llama(seed=0):
    torch.manual_seed(seed)
    m = Llama(CFG)
    add_lora(m, r=4, alpha=8, dropout=0.1)
    for mod in m.modules():           # B starts at 0 (a no-op update): give it values to test with
        if isinstance(mod, LoRALinear):
            nn.init.normal_(mod.lora_B, std=0.1)
    return m.eval()


def test_wrapping_keeps_hf_keys_and_starts_as_a_no_op():
    torch.manual_seed(0)
    m = Llama(CFG).eval()
    ids = torch.randint(0, 300, (2, 16))
    before = m(ids)[0]
    keys = set(m.state_dict())
    wrapped = add_lora(m, r=4, alpha=8, dropout=0.0)
    assert len(wrapped) == 2 * len(DEFAULT_TARGETS) and "lm_head" not in wrapped
    new = set(m.state_dict()) - keys
    assert keys <= set(m.state_dict())                        # base weights keep their HF keys
    assert new == {f"{w}.lora_{x}" for w in wrapped for x in "AB"}
    torch.testing.assert_close(m(ids)[0], before, atol=0, rtol=0)   # B = 0: exactly the same output


def test_merged_model_gives_the_same_logits_and_unmerge_restores_the_weights():
    m = lora_llama()
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = m(ids)[0]
        q = m.model.layers[0].self_attn.q_proj
        w0 = q.weight.clone()
        q.merge()
        assert not torch.equal(q.weight, w0)
        q.unmerge()
        torch.testing.assert_close(q.weight, w0, atol=1e-6, rtol=0)
        assert merge_lora(m) == 14 and not has_lora(m)
        assert all(type(mod) is nn.Linear for mod in m.modules() if isinstance(mod, nn.Linear))
        assert not any("lora" in k for k in m.state_dict())
        torch.testing.assert_close(m(ids)[0], want, atol=2e-5, rtol=1e-5)


def test_only_adapters_get_gradients_and_dropout_is_on_the_adapter_path_only():
    m = lora_llama().train()
    for n, p in m.named_parameters():
        p.requires_grad_("lora_" in n)
    ids = torch.randint(0, 300, (2, 16))
    m(ids, ids)[1].backward()
    for n, p in m.named_parameters():
        assert (p.grad is not None) == ("lora_" in n), n
    # eval: no dropout, deterministic; train: dropout changes the adapter output only
    q = m.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 64)
    q.eval()
    base = nn.functional.linear(x, q.weight, q.bias)
    assert torch.allclose(q(x), base + (x @ q.lora_A.T @ q.lora_B.T) * q.scale, atol=1e-5)
    q.train()
    torch.manual_seed(0)
    assert not torch.allclose(q(x), q.eval()(x))


@pytest.mark.parametrize("r, alpha, scale", [(4, 8, 2.0), (8, 32, 4.0), (32, 32, 1.0), (16, 8, 0.5)])
def test_update_is_scaled_by_alpha_over_r_written_out(r, alpha, scale):
    """y = x W^T + b + (alpha / r) x A^T B^T, the scale worked out by hand for each (r, alpha),
    not read back from the module; merge() folds the same (alpha / r) B A into W."""
    torch.manual_seed(0)
    lin = nn.Linear(12, 6)
    q = LoRALinear.wrap(lin, r=r, alpha=alpha, dropout=0.0).eval()
    with torch.no_grad():
        q.lora_A.copy_(torch.randn(r, 12))
        q.lora_B.copy_(torch.randn(6, r))
    x = torch.randn(5, 12)
    want = x @ lin.weight.T + lin.bias + scale * (x @ q.lora_A.T @ q.lora_B.T)
    torch.testing.assert_close(q(x), want, atol=1e-5, rtol=1e-5)
    w = lin.weight.detach().clone()
    q.merge()
    torch.testing.assert_close(q.weight, w + scale * q.lora_B @ q.lora_A, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(q(x), want, atol=1e-5, rtol=1e-5)


def test_bf16_base_weight_with_fp32_adapters_under_autocast():
    """The CUDA layout: frozen base weight in bf16, adapters train in fp32."""
    torch.manual_seed(0)
    lin = nn.Linear(32, 16, bias=False).to(torch.bfloat16)
    q = LoRALinear.wrap(lin, r=4, alpha=4, dropout=0.0)
    assert q.weight is lin.weight and q.lora_A.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = q(torch.randn(5, 32))
    assert y.dtype == torch.bfloat16 and y.shape == (5, 16)
    with pytest.raises(ValueError, match="no nn.Linear named"):
        add_lora(nn.Sequential(nn.Linear(2, 2)), targets=("q_proj",))


def test_attach_takes_a_recipe_stages_lora_settings_and_export_turns_dropout_off():
    from lora import attach_lora
    spec = {"r": 4, "alpha": 8, "dropout": 0.1, "targets": ["q_proj", "v_proj"]}
    m = Llama(CFG)
    assert attach_lora(m, spec) == [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    q = m.model.layers[0].self_attn.q_proj
    assert (q.r, q.alpha) == (4, 8) and isinstance(q.dropout, nn.Dropout) and q.dropout.p == 0.1
    assert type(m.model.layers[0].self_attn.k_proj) is nn.Linear               # not a target
    m = Llama(CFG)
    attach_lora(m, spec, dropout=0.0)                                               # how export loads it
    assert isinstance(m.model.layers[0].self_attn.q_proj.dropout, nn.Identity)

"""model.py against transformers' LlamaForCausalLM, the numerical reference.

Each reference model is a tiny random LlamaForCausalLM saved by transformers itself, with
initializer_range 0.2 so that a wrong RoPE, norm or head mapping visibly moves the logits
(DESIGN.md: at 0.02 a tiny random model is nearly blind).
"""
import json
import logging
import os
import struct

import pytest
import torch

from model import Llama, LlamaConfig
from support.safetensors_io import read_safetensors

transformers = pytest.importorskip("transformers", reason="transformers is the test-only reference")


def hf_model(tmp_path, name="ref", max_shard_size=None, **overrides):
    kw = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
              initializer_range=0.2, rms_norm_eps=1e-5)
    kw.update(overrides)
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).eval()
    folder = tmp_path / name
    ref.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    return ref, folder


def logits_diff(ref, ours, T=40):
    x = torch.randint(0, ref.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ref(x).logits - ours(x)[0]).abs().max().item()


CASES = {
    "mha": {},
    "gqa": {"num_key_value_heads": 2},
    "tied": {"tie_word_embeddings": True},
    "rope_theta": {"rope_theta": 500000.0},
    "head_dim": {"head_dim": 32},
    "bias": {"attention_bias": True, "mlp_bias": True},
    "linear_rope": {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    "llama3_rope": {"rope_theta": 500000.0, "num_key_value_heads": 2, "max_position_embeddings": 1024,
                    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
}


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(tmp_path, case):
    ref, folder = hf_model(tmp_path, **CASES[case])
    ours = Llama.from_pretrained(folder).eval()
    assert logits_diff(ref, ours) <= 1e-4


def test_sharded_checkpoint_loads(tmp_path):
    ref, folder = hf_model(tmp_path, max_shard_size="100KB", num_key_value_heads=2)
    assert (folder / "model.safetensors.index.json").exists()
    assert logits_diff(ref, Llama.from_pretrained(folder).eval()) <= 1e-4


def test_loss_matches_transformers(tmp_path):
    ref, folder = hf_model(tmp_path, num_key_value_heads=2)
    ours = Llama.from_pretrained(folder).eval()
    x = torch.randint(0, 300, (2, 33), generator=torch.Generator().manual_seed(2))
    labels = x.clone()
    labels[0, :5] = -100                                 # ignored positions must not count
    with torch.no_grad():
        ref_loss = ref(x, labels=labels).loss            # HF shifts labels inside
        _, loss = ours(x[:, :-1], targets=labels[:, 1:])  # we take already-shifted targets
        _, loss_sum = ours(x[:, :-1], targets=labels[:, 1:], reduction="sum")
    assert abs(ref_loss.item() - loss.item()) < 1e-5
    n_valid = (labels[:, 1:] != -100).sum().item()
    assert abs(loss_sum.item() / n_valid - loss.item()) < 1e-5


@pytest.mark.parametrize("tied", [False, True])
def test_save_then_transformers_loads_same_logits(tmp_path, caplog, tied):
    ref, folder = hf_model(tmp_path, num_key_value_heads=2, tie_word_embeddings=tied, rope_theta=20000.0)
    ours = Llama.from_pretrained(folder).eval()
    out = tmp_path / "ours"
    ours.save_pretrained(out, max_shard_size="150KB")
    assert (out / "model.safetensors.index.json").exists()
    with caplog.at_level(logging.WARNING):
        back, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert not info["mismatched_keys"]
    assert not [r for r in caplog.records if "weight" in r.getMessage().lower()]
    assert logits_diff(back.eval(), ours) <= 1e-5


def test_save_load_roundtrip_is_bit_identical(tmp_path):
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    for dtype in (torch.float32, torch.bfloat16):
        m = Llama(cfg).to(dtype)
        m.save_pretrained(tmp_path / "m")
        again = Llama.from_pretrained(tmp_path / "m", dtype=dtype)
        assert again.inv_freq.dtype == torch.float32     # RoPE table stays fp32 in a bf16 model
        a, b = m.state_dict(), again.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert json.loads((tmp_path / "m" / "config.json").read_text())["torch_dtype"] == str(dtype)[6:]


def test_save_keeps_other_files_and_leaves_no_temp(tmp_path):
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    out = tmp_path / "m"
    out.mkdir()
    (out / "tokenizer.model").write_bytes(b"tok")
    Llama(cfg).save_pretrained(out)
    Llama(cfg).save_pretrained(out)  # overwrite in place
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.model"]
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_padded_vocab_rows_never_predicted_and_dropped_on_save(tmp_path):
    ref, folder = hf_model(tmp_path, num_key_value_heads=2)
    padded = Llama.from_pretrained(folder, vocab_multiple=64).eval()
    assert padded.model.embed_tokens.weight.shape[0] == 320 and padded.config.vocab_size == 300
    assert logits_diff(ref, padded) <= 1e-4             # logits have exactly 300 columns
    padded.save_pretrained(tmp_path / "out")
    shapes = {k: tuple(v.shape) for k, v in read_safetensors(tmp_path / "out" / "model.safetensors")}
    assert shapes["model.embed_tokens.weight"] == (300, 64) and shapes["lm_head.weight"] == (300, 64)


def test_kv_cache_generation_equals_full_recompute(tmp_path):
    _, folder = hf_model(tmp_path, num_key_value_heads=2)
    m = Llama.from_pretrained(folder).eval()
    prompt = [1, 17, 42, 99, 7]
    fast = m.generate(prompt, max_new_tokens=20)
    ids = list(prompt)
    for _ in range(20):                                  # no cache: rerun the whole sequence
        with torch.no_grad():
            ids.append(int(m(torch.tensor([ids]))[0][0, -1].argmax()))
    assert fast == ids[len(prompt):]
    # sampling is reproducible with a seed, and stops at EOS
    s1 = m.generate(prompt, 20, temperature=1.0, top_p=0.9, seed=5)
    assert s1 == m.generate(prompt, 20, temperature=1.0, top_p=0.9, seed=5)
    stop = fast[3]
    assert m.generate(prompt, 20, eos_token_id=stop) == fast[:fast.index(stop) + 1]


def test_positions_and_a_mask_let_one_row_hold_two_sequences(tmp_path):
    """Two sequences side by side in one row, each with its own positions (0.., 0..) and a
    block-causal mask, give each the logits it gets alone: the eval_kobest packing, in the model."""
    _, folder = hf_model(tmp_path, num_key_value_heads=2)
    m = Llama.from_pretrained(folder, dtype=torch.float64).eval()
    a, b = torch.tensor([[1, 17, 42, 99, 7]]), torch.tensor([[1, 5, 250, 8]])
    ids = torch.cat([a, b], dim=1)                                     # (1, 9)
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    seq = torch.tensor([0] * 5 + [1] * 4)
    order = torch.arange(9)
    mask = ((order[:, None] >= order[None, :]) & (seq[:, None] == seq[None, :]))[None, None]  # (1, 1, 9, 9)
    with torch.no_grad():
        both, _ = m(ids, positions=positions, mask=mask)
        alone_a, _ = m(a)
        alone_b, _ = m(b)
        # (positions 5..8 for b would give the same logits: RoPE only sees relative positions)
        wrong, _ = m(ids, positions=positions)                         # no mask: b attends to a
    assert torch.allclose(both[:, :5], alone_a, atol=1e-10) and torch.allclose(both[:, 5:], alone_b, atol=1e-10)
    assert (wrong[:, 5:] - alone_b).abs().max() > 1e-3
    # explicit positions 0..T-1 and the causal mask are the defaults
    with torch.no_grad():
        causal = (order[:, None] >= order[None, :])[None, None]
        same, _ = m(ids, positions=order[None], mask=causal)
        plain, _ = m(ids)
    assert torch.allclose(same, plain, atol=1e-12)



def test_rmsnorm_is_its_weight_times_x_over_root_mean_square_computed_in_fp32():
    """HF's LlamaRMSNorm: w * x / sqrt(mean(x^2) + eps), the statistic in fp32 whatever x's dtype
    (the reference models' norm weights are all ones, so this is where the weight is checked)."""
    from model import LlamaRMSNorm
    torch.manual_seed(0)
    norm = LlamaRMSNorm(8, 1e-2)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    x = torch.randn(3, 8)
    want = norm.weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-2))
    torch.testing.assert_close(norm(x), want, atol=1e-6, rtol=1e-6)
    xb = x.bfloat16()
    wantb = norm.weight * (xb.float() / torch.sqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-2)).bfloat16()
    torch.testing.assert_close(norm(xb).float(), wantb.float(), atol=1e-2, rtol=1e-2)

@pytest.mark.parametrize("std", [0.02, 0.3])
def test_fresh_weights_are_normal_with_the_configs_initializer_range(std):
    """As HF's _init_weights: every Linear and Embedding N(0, initializer_range), biases 0, norms 1."""
    torch.manual_seed(0)
    m = Llama(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                          initializer_range=std))
    for n, p in m.named_parameters():
        if n.endswith("norm.weight"):
            assert torch.equal(p, torch.ones_like(p)), n
        elif n.endswith(".bias"):
            assert torch.equal(p, torch.zeros_like(p)), n
        else:       # 2,048+ samples each (seeded): the sample std within 5% of std is 3 sigma
            assert abs(p.std().item() / std - 1) < 0.05 and abs(p.mean().item()) < 0.1 * std, n

# ---- bad inputs: each error names the problem ----

def test_config_errors_name_the_field(tmp_path):
    base = transformers.LlamaConfig(vocab_size=10, hidden_size=8, num_attention_heads=2).to_dict()
    with pytest.raises(ValueError, match="model_type"):
        LlamaConfig.from_hf({**base, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="sliding_window"):
        LlamaConfig.from_hf({**base, "model_type": "mistral", "sliding_window": 4096,
                             "max_position_embeddings": 32768})
    with pytest.raises(ValueError, match="yarn"):
        LlamaConfig.from_hf({**base, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    with pytest.raises(ValueError, match="hidden_act"):
        LlamaConfig.from_hf({**base, "hidden_act": "gelu"})
    # 4.x layout (top-level rope_theta) and 5.x layout (rope_parameters) both read
    assert LlamaConfig.from_hf({**base, "rope_parameters": None, "rope_theta": 123.0}).rope_theta == 123.0
    assert LlamaConfig.from_hf({**base, "rope_parameters": {"rope_theta": 77.0, "rope_type": "default"}}
                               ).rope_theta == 77.0
    # a mistral config without sliding window is a Llama
    assert LlamaConfig.from_hf({**base, "model_type": "mistral", "sliding_window": None}).model_type == "mistral"


def test_checkpoint_errors_name_key_and_file(tmp_path):
    _, folder = hf_model(tmp_path, num_key_value_heads=2)
    st = folder / "model.safetensors"
    good = st.read_bytes()
    tensors = dict(read_safetensors(st))

    from support.safetensors_io import write_safetensors
    write_safetensors(st, {**tensors, "model.extra.weight": torch.zeros(2)})
    with pytest.raises(KeyError, match=r"model\.extra\.weight.*|.*model\.safetensors"):
        Llama.from_pretrained(folder)
    write_safetensors(st, {k: v for k, v in tensors.items() if k != "model.norm.weight"})
    with pytest.raises(KeyError, match="model.norm.weight"):
        Llama.from_pretrained(folder)
    write_safetensors(st, {**tensors, "model.norm.weight": torch.ones(65)})
    with pytest.raises(ValueError, match=r"model\.safetensors: model\.norm\.weight has shape \(65,\)"):
        Llama.from_pretrained(folder)
    st.write_bytes(good[: len(good) // 2])               # truncated download
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated"):
        Llama.from_pretrained(folder)
    junk = b"{not json at all!}"
    st.write_bytes(struct.pack("<Q", len(junk)) + junk)
    with pytest.raises(ValueError, match=r"model\.safetensors: the header is not valid JSON"):
        Llama.from_pretrained(folder)
    st.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="never unpickle"):
        Llama.from_pretrained(folder)


def test_shard_listed_in_index_but_missing(tmp_path):
    _, folder = hf_model(tmp_path, max_shard_size="100KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (folder / victim).unlink()
    with pytest.raises(FileNotFoundError, match=victim):
        Llama.from_pretrained(folder)


@pytest.mark.parametrize("top_p, allowed", [(0.49, {2}), (0.6, {2, 0}), (0.79, {2, 0}), (0.81, {2, 0, 1}),
                                            (1.0, {2, 0, 1})])
def test_sampling_keeps_the_smallest_set_of_likely_tokens_whose_mass_reaches_top_p(top_p, allowed):
    """Probabilities 0.3, 0.2, 0.5 for ids 0, 1, 2: sorted 0.5, 0.3, 0.2 with running mass
    0.5, 0.8, 1.0, so a top_p up to 0.5 keeps id 2 alone, up to 0.8 adds id 0, above 0.8 all three
    (each case a little off the boundary, where float rounding would decide)."""
    from model import next_token
    logits = torch.tensor([0.3, 0.2, 0.5]).log()
    gen = torch.Generator().manual_seed(0)
    seen = {next_token(logits, 1.0, top_p, gen) for _ in range(300)}
    assert seen == allowed
    assert next_token(logits, 0.0, top_p) == 2                      # temperature 0: greedy


@pytest.mark.parametrize("temperature, allowed", [(0.5, {2}), (1.0, {2, 0}), (2.0, {2, 0, 1})])
def test_temperature_divides_the_logits_before_the_nucleus_is_cut(temperature, allowed):
    """softmax(log p / t) is p^(1/t) renormalized: for 0.3, 0.2, 0.5 at t = 0.5 that is
    0.237, 0.105, 0.658 (id 2 alone reaches 0.55); at t = 2, 0.322, 0.263, 0.415 (ids 2 and 0
    make 0.737 < 0.75, so all three)."""
    from model import next_token
    logits = torch.tensor([0.3, 0.2, 0.5]).log()
    gen = torch.Generator().manual_seed(0)
    top_p = {0.5: 0.55, 1.0: 0.55, 2.0: 0.75}[temperature]
    assert {next_token(logits, temperature, top_p, gen) for _ in range(300)} == allowed

"""A config.json means the same to model.py as to transformers, both ways.

Reading: a key the file leaves out (or sets to null) takes transformers' meaning, not ours. For
every key, a tiny model whose config.json lacks it loads in transformers and in model.py with
the same effective settings and the same logits (a Llama-1 config without num_key_value_heads
used to become 8 KV heads here and a shape error).

Writing: what we save (save_pretrained after expand_vocab, checkpoint.export) is the base
config.json with only vocab_size and the dtype changed, so a Mistral base that said
"sliding_window": null is not reloaded with transformers' 4096-token window.
"""
import json

import pytest
import torch

from config import HF_DEFAULTS
from expand import expand_vocab
from model import Llama, LlamaConfig
from training import checkpoint

transformers = pytest.importorskip("transformers", reason="transformers is the test-only reference")
HF_CONFIG = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig}

# every key given, each away from transformers' default so that leaving it out shows
FULL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=16,
            num_key_value_heads=2, head_dim=8, hidden_act="silu", rms_norm_eps=1e-2, rope_theta=100.0,
            max_position_embeddings=256, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
            bos_token_id=5, eos_token_id=6, pad_token_id=7, initializer_range=0.2)
# (Mistral has no biases whatever the file says; its sliding_window is given as null)
MISSING = [("llama", k) for k in FULL] + [("mistral", k) for k in FULL] + [("mistral", "sliding_window")]


def full(kind):
    return {"model_type": kind, **FULL, **({"sliding_window": None} if kind == "mistral" else {})}


def hf_settings(c):
    """What a transformers config means, in our config's terms."""
    rope = getattr(c, "rope_parameters", None) or {"rope_theta": c.rope_theta}   # 5.x or 4.x
    return dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                num_key_value_heads=c.num_key_value_heads,
                head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
                rms_norm_eps=c.rms_norm_eps, rope_theta=rope["rope_theta"],
                max_position_embeddings=c.max_position_embeddings, tie_word_embeddings=c.tie_word_embeddings,
                # MistralForCausalLM builds no biases, whatever its config holds
                attention_bias=c.model_type == "llama" and c.attention_bias,
                mlp_bias=c.model_type == "llama" and c.mlp_bias,
                bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
                initializer_range=c.initializer_range,
                # we attend to every position: transformers must not slide a window within the model's length
                window_within_length=(getattr(c, "sliding_window", None) or 1 << 62) >= c.max_position_embeddings)


def our_settings(cfg):
    return {**{k: getattr(cfg, k) for k in FULL if k != "hidden_act"}, "window_within_length": True}


def save_base(folder, d):
    """Random weights for what transformers makes of config dict d, and d itself as config.json
    (transformers would write every key out; the point is the file as it was given)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(d))
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(folder))
    ref.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(d))


def load_both(folder):
    """(transformers' model, ours) from one folder; transformers must find exactly its keys."""
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return hf.eval(), Llama.from_pretrained(folder).eval()


def logits_diff(hf, ours, T=24):
    x = torch.randint(0, hf.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (hf(x).logits - ours(x)[0]).abs().max().item()


# ---- reading: a missing key means what it means in transformers ----

@pytest.mark.parametrize("kind", HF_CONFIG)
def test_defaults_are_transformers_defaults(kind):
    # an (almost) empty config.json: every setting is a default, on both sides
    given = {"model_type": kind, **({"sliding_window": None} if kind == "mistral" else {})}
    ours = LlamaConfig.from_hf(given)
    assert our_settings(ours) == hf_settings(HF_CONFIG[kind](**{k: v for k, v in given.items() if k != "model_type"}))
    assert set(HF_DEFAULTS[kind]) <= {*FULL, "sliding_window"}   # the table holds no key we do not compare


@pytest.mark.parametrize("kind,key", MISSING, ids=[f"{k}-{key}" for k, key in MISSING])
def test_a_missing_key_means_what_it_means_in_transformers(tmp_path, kind, key):
    d = full(kind)
    del d[key]
    save_base(tmp_path / "m", d)
    hf, ours = load_both(tmp_path / "m")
    assert our_settings(ours.config) == hf_settings(hf.config)
    assert logits_diff(hf, ours) <= 1e-4


def test_null_means_what_it_means_in_transformers(tmp_path):
    # a null token id is no token (it was the default id here); a null KV-head count is one per head
    d = {**full("llama"), "bos_token_id": None, "eos_token_id": None, "num_key_value_heads": None, "head_dim": None}
    save_base(tmp_path / "m", d)
    hf, ours = load_both(tmp_path / "m")
    assert our_settings(ours.config) == hf_settings(hf.config)
    assert ours.config.bos_token_id is None and ours.config.num_key_value_heads == 16
    assert logits_diff(hf, ours) <= 1e-4
    # null where transformers has no meaning for it is refused, naming the key (it was the default)
    for key in ("rms_norm_eps", "max_position_embeddings", "tie_word_embeddings"):
        with pytest.raises(ValueError, match=f"{key}=None: must not be null"):
            LlamaConfig.from_hf({**full("llama"), key: None})


def test_mistral_default_window_is_refused_where_it_would_slide():
    # no sliding_window and no max_position_embeddings: transformers slides 4096 over 131072
    d = {k: v for k, v in full("mistral").items() if k not in ("sliding_window", "max_position_embeddings")}
    with pytest.raises(ValueError, match=r"sliding_window=4096 \(not given: transformers' default for mistral\)"):
        LlamaConfig.from_hf(d)
    assert LlamaConfig.from_hf({**d, "max_position_embeddings": 4096}).max_position_embeddings == 4096
    # a Llama has no default window
    assert LlamaConfig.from_hf({k: v for k, v in d.items() if k != "mistral"} | {"model_type": "llama"})


# ---- writing: the export keeps what the base said ----

BASES = {
    # Llama-1 style, written by transformers 4.x: no num_key_value_heads / head_dim, keys we do not model
    "llama": {"_name_or_path": "base/llama", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
              "vocab_size": 300, "rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "rope_scaling": None,
              "initializer_range": 0.2, "pretraining_tp": 1, "use_cache": True, "torch_dtype": "float32",
              "transformers_version": "4.40.0", "bos_token_id": 1, "eos_token_id": 2},
    # transformers 5.x style: dtype, rope_parameters, and a sliding window explicitly switched off
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 64,
                "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 300, "max_position_embeddings": 32768, "sliding_window": None,
                "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}, "initializer_range": 0.2,
                "attention_dropout": 0.0, "dtype": "float32", "transformers_version": "5.0.0"},
    "tied": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 300, "tie_word_embeddings": True,
             "initializer_range": 0.2, "rope_theta": 500000.0, "max_position_embeddings": 512,
             "pad_token_id": 0, "eos_token_id": [2, 3], "torch_dtype": "float32"},
}


@pytest.mark.parametrize("name", BASES)
def test_export_keeps_every_base_key(tmp_path, name):
    base = BASES[name]
    save_base(tmp_path / "base", base)
    ours = Llama.from_pretrained(tmp_path / "base").eval()
    expand_vocab(ours, 320, init="mean")                              # the one thing training changes
    ours.save_pretrained(tmp_path / "saved")                          # expand.expand's way out
    checkpoint.export(ours, str(tmp_path / "base"), str(tmp_path / "exported"))   # train.py's way out
    for out in ("saved", "exported"):
        written = json.loads((tmp_path / out / "config.json").read_text())
        # every key as the base had it (architectures added where it had none: tools dispatch on it)
        assert written == {"architectures": ["LlamaForCausalLM"], **base, "vocab_size": 320}, out
        hf, again = load_both(tmp_path / out)
        assert our_settings(again.config) == our_settings(ours.config) == hf_settings(hf.config)
        assert getattr(hf.config, "sliding_window", None) is None     # no window where the base had none
        assert logits_diff(hf, ours) <= 1e-5


def test_dtype_is_written_under_the_base_name():
    for given, want in (({"dtype": "bfloat16"}, {"dtype": "float32"}),
                        ({"torch_dtype": "bfloat16"}, {"torch_dtype": "float32"}),
                        ({"dtype": "bfloat16", "torch_dtype": "bfloat16"},
                         {"dtype": "float32", "torch_dtype": "float32"}),
                        ({}, {"torch_dtype": "float32"})):
        d = LlamaConfig.from_hf({**full("llama"), **given}).to_hf("float32")
        assert {k: d[k] for k in ("dtype", "torch_dtype") if k in d} == want


def test_a_changed_setting_is_written_and_read_back():
    cfg = LlamaConfig.from_hf(BASES["mistral"])
    cfg.rope_theta, cfg.bos_token_id = 500.0, 9
    d = cfg.to_hf()
    back = transformers.MistralConfig.from_dict(d)
    assert hf_settings(back) == our_settings(cfg) and back.sliding_window is None
    # rope written 4.x style (5.x would prefer a stale rope_parameters); nothing else differs
    base = BASES["mistral"]
    assert {k for k in d.keys() | base.keys() if d.get(k, "absent") != base.get(k, "absent")} == {
        "rope_theta", "rope_scaling", "rope_parameters", "bos_token_id"}


def test_a_mistral_built_in_code_says_it_has_no_window():
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                      model_type="mistral")
    back = transformers.MistralConfig.from_dict(cfg.to_hf())
    assert back.sliding_window is None and hf_settings(back) == our_settings(cfg)

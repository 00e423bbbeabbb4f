"""The model's settings, and what a Hugging Face config.json means.

LlamaConfig holds the shapes and constants model.py builds from. A checkpoint's config.json
is read the way transformers reads it: a key it leaves out takes transformers' default
(HF_DEFAULTS, checked against transformers by tests/test_config_fidelity.py), and what we
cannot honour (another architecture, sliding-window attention, an unknown RoPE scaling) is
refused with the key named. Writing back (to_hf) returns the dict the config was read from
with only what changed, so transformers reads in our export exactly what it read in the base.

    cfg = LlamaConfig.from_pretrained("path/to/SOLAR-10.7B")     # a folder or its config.json
    cfg.to_hf("bfloat16")                                          # the config.json dict
"""
import copy
import json
import os
from dataclasses import asdict, dataclass, field, fields

from support import cli

# What transformers makes of a key that config.json leaves out (its LlamaConfig and MistralConfig;
# tests/test_config_fidelity.py checks this table and the logits against transformers). A
# checkpoint's missing key must mean here what it means to everyone else who loads that
# checkpoint: a Llama-1 config has no num_key_value_heads, and that means one KV head per head.
# None: num_key_value_heads = num_attention_heads, head_dim = hidden_size // num_attention_heads.
HF_DEFAULTS = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
                  rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=2048,
                  tie_word_embeddings=False, attention_bias=False, mlp_bias=False, bos_token_id=1,
                  eos_token_id=2, pad_token_id=None, initializer_range=0.02),
}
HF_DEFAULTS["mistral"] = {**HF_DEFAULTS["llama"], "intermediate_size": 14336, "num_key_value_heads": 8,
                          "max_position_embeddings": 131072, "sliding_window": 4096}
# the keys that may be null (transformers refuses null for the others): None is a value for the
# token ids and sliding_window ("no window"), and "work it out" for num_key_value_heads and head_dim
NULLABLE = ("num_key_value_heads", "head_dim", "bos_token_id", "eos_token_id", "pad_token_id", "sliding_window")


@dataclass
class LlamaConfig:
    # Defaults: SOLAR-10.7B (the RedWhale base), for configs built in code. A config.json's
    # missing keys take transformers' defaults instead (HF_DEFAULTS, in from_hf).
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 48
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 0                 # 0: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "linear" | "llama3", "factor": ..., ...}
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    torch_dtype: str = "float32"
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 2
    pad_token_id: int | None = None
    initializer_range: float = 0.02
    model_type: str = "llama"
    vocab_multiple: int = field(default=1, metadata={"hf": False})  # pad rows for GPU matmuls
    # the config.json dict this config was read from (None: built in code); to_hf writes it back
    source_config: dict | None = field(default=None, repr=False, compare=False, metadata={"hf": False})

    def __post_init__(self):
        # a config.json from the internet is input like any other: sizes are checked before they
        # size anything (Llama.from_pretrained then checks the whole model fits in memory)
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "max_position_embeddings", "vocab_multiple"):
            cli.check(k, getattr(self, k), int, lo=1, hi=1 << 31)
        cli.check("head_dim", self.head_dim, int, lo=0, hi=1 << 16)
        cli.check("rms_norm_eps", self.rms_norm_eps, float, lo=0, hi=1, lo_open=True)
        cli.check("rope_theta", self.rope_theta, float, lo=0, lo_open=True)
        if not self.head_dim and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads} (and no head_dim is given)")
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} is odd: rotary embeddings need pairs")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        self.rope_theta = float(self.rope_theta)

    def num_parameters(self):
        """Parameters of the model this config describes (embedding rows unpadded)."""
        H, I, L, D = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.head_dim
        attn = H * D * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
        per_layer = attn + 3 * H * I + 2 * H
        return self.vocab_size * H * (1 if self.tie_word_embeddings else 2) + L * per_layer + H

    @property
    def padded_vocab_size(self):
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def from_hf(cls, d, source="config.json"):
        """Build from a checkpoint's config.json dict; refuse what we cannot honour. A key the
        dict leaves out means what it means in transformers (HF_DEFAULTS); the dict itself is kept
        (source_config) for to_hf."""
        kind = d.get("model_type")
        v = {**HF_DEFAULTS.get(kind, {}), **d}              # the settings transformers would use

        def bad(key, why):
            given = "" if key in d else f" (not given: transformers' default for {kind})"
            return ValueError(f"{source}: {key}={v.get(key)!r}{given}: {why}")
        if kind not in HF_DEFAULTS:
            raise bad("model_type", "only llama and mistral (Llama architecture) are supported")
        for k in HF_DEFAULTS[kind]:
            if k in d and d[k] is None and k not in NULLABLE:
                raise bad(k, "must not be null (transformers refuses it too)")
        if v["hidden_act"] != "silu":
            raise bad("hidden_act", "only silu (SwiGLU) is supported")
        # transformers 5.x nests rope settings in rope_parameters; 4.x keeps them at top level
        rope = dict(d.get("rope_parameters") or {})
        theta = rope.pop("rope_theta", v["rope_theta"])
        scaling = d.get("rope_scaling") or (rope if rope else None)
        if scaling is not None:
            rope_type = scaling.get("rope_type", scaling.get("type", "default"))
            if rope_type not in ("default", "linear", "llama3"):
                raise ValueError(f"{source}: rope_scaling type {rope_type!r} is not supported "
                                 "(default, linear, llama3 are)")
            scaling = None if rope_type == "default" else {**scaling, "rope_type": rope_type}
        kw = {f.name: v[f.name] for f in fields(cls)        # every HF key but the three passed apart below
              if f.metadata.get("hf", True) and f.name not in ("rope_theta", "rope_scaling", "torch_dtype")}
        if kind == "mistral":      # MistralForCausalLM has no biases, whatever config.json says
            kw.update(attention_bias=False, mlp_bias=False)
        if kw["num_key_value_heads"] is None:
            kw["num_key_value_heads"] = kw["num_attention_heads"]
        kw["head_dim"] = kw["head_dim"] or 0                # 0: worked out in __post_init__
        dtype = d.get("dtype") or d.get("torch_dtype") or "float32"   # 5.x's name wins, as in transformers
        try:
            cfg = cls(**kw, rope_theta=theta, rope_scaling=scaling, torch_dtype=str(dtype),
                      source_config=copy.deepcopy(d))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from None
        # mistral's default window is 4096: a config that omits it slides one unless it is that short.
        # (transformers' Llama ignores the key, so a Llama config's is ignored here too.)
        window = v.get("sliding_window") if kind == "mistral" else None
        if window is not None and not (isinstance(window, int) and window >= cfg.max_position_embeddings):
            raise bad("sliding_window", f"a window shorter than max_position_embeddings={cfg.max_position_embeddings} "
                      "is sliding-window attention, which is not implemented (it matches full attention only "
                      "up to the window's length; Mistral v0.2 and later have sliding_window null)")
        return cfg

    @classmethod
    def from_pretrained(cls, path):
        path = os.path.join(path, "config.json") if os.path.isdir(path) else path
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except ValueError as e:        # not JSON, or not even UTF-8 text (a weights file given by mistake)
                raise ValueError(f"{path}: not a valid JSON config ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a config (a JSON object)")
        return cls.from_hf(d, source=path)

    def to_hf(self, dtype=None):
        """The config.json dict, with torch_dtype `dtype` (default: self.torch_dtype). A config
        read from a checkpoint writes that checkpoint's dict back and changes only what differs
        in this model (vocab_size after expansion, the dtype): keys we do not model
        (sliding_window: null, use_cache, ...) and keys the file left out stay as they were, so
        transformers reads in our export exactly what it read in the base."""
        dtype = dtype or self.torch_dtype
        arch = "MistralForCausalLM" if self.model_type == "mistral" else "LlamaForCausalLM"
        hf_keys = {f.name for f in fields(self) if f.metadata.get("hf", True)} - {"torch_dtype"}
        ours = {k: v for k, v in asdict(self).items() if k in hf_keys}
        if self.source_config is None:                      # built in code: say everything
            d = {"architectures": [arch], "hidden_act": "silu", **ours, "torch_dtype": dtype}
        else:
            d = copy.deepcopy(self.source_config)
            base = LlamaConfig.from_hf(d)
            changed = {k: v for k, v in ours.items() if getattr(base, k) != v}
            if changed.keys() & {"rope_theta", "rope_scaling"}:
                # written 4.x style (5.x reads it too); 5.x would prefer a stale rope_parameters
                d.pop("rope_parameters", None)
                changed.update(rope_theta=self.rope_theta, rope_scaling=self.rope_scaling)
            d.update(changed)
            d.setdefault("architectures", [arch])
            for k in [k for k in ("dtype", "torch_dtype") if k in d] or ["torch_dtype"]:
                d[k] = dtype                                # under the name(s) the base used
        window = d.get("sliding_window", HF_DEFAULTS["mistral"]["sliding_window"])
        if self.model_type == "mistral" and window is not None and window < self.max_position_embeddings:
            d["sliding_window"] = None      # we attend to every position: say so where transformers would not
        return d

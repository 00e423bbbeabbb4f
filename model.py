"""A Llama in one file that reads and writes Hugging Face checkpoints exactly.

Module names are the Hugging Face names, so the state-dict keys *are* the checkpoint keys
(`model.layers.3.self_attn.q_proj.weight`, ...) and RoPE uses HF's half-split layout: a
checkpoint loads strictly with no key mapping and no q/k permutation, and what we save
loads in `transformers` as it is. Covers Llama-1/2/3 and Mistral-style (no sliding window)
configs: GQA, head_dim, tied or untied embeddings, rope scaling default/linear/llama3. A key that
config.json leaves out means what it means in transformers (HF_DEFAULTS), and save_pretrained
writes back the config.json it was loaded from with only what changed (vocab_size, the dtype).

From Python (generate.py is the command line):

    model = Llama.from_pretrained("path/to/SOLAR-10.7B", dtype=torch.bfloat16)
    logits, loss = model(input_ids, targets)      # (B, T, V), scalar
    model.save_pretrained("out/", max_shard_size="5GB")
"""
import copy
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import cli
import outputs
from safetensors_io import read_safetensors, write_safetensors  # noqa: F401 (model.read_safetensors)

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
        known = {f.name for f in fields(cls) if f.metadata.get("hf", True)} - {"rope_theta", "rope_scaling",
                                                                               "torch_dtype"}
        kw = {k: v[k] for k in known}
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


# ---- rotary position embedding (HF half-split layout) ----

def rope_inv_freq(cfg, device=None):
    """(head_dim/2,) fp32 inverse frequencies, with linear or llama3 scaling applied."""
    D = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.int64, device=device).float() / D))
    s = cfg.rope_scaling
    if s is None:
        return inv
    if s["rope_type"] == "linear":
        return inv / s["factor"]
    # llama3: leave high frequencies alone, divide low ones by `factor`, blend in between
    factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old_len / lo, inv / factor, inv)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
    return torch.where(medium, blended, scaled)


def rope_tables(inv_freq, positions):
    """fp32 cos and sin for integer positions of any shape (T,) or (B, T) -> (..., D), in HF's
    half-split layout."""
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # (..., D/2)
    emb = torch.cat((freqs, freqs), dim=-1)                    # (..., D)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    # x: (B, H, T, D); cos, sin: (T, D) or (B, 1, T, D) fp32 -> computed in x's dtype as HF does
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


# ---- the network ----

class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # normalize in fp32 whatever the activation dtype, then scale (as HF does)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.n_head, self.n_kv, self.head_dim = H, KV, D
        self.q_proj = nn.Linear(cfg.hidden_size, H * D, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, KV * D, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, KV * D, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(H * D, cfg.hidden_size, bias=cfg.attention_bias)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, pos=0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)    # (B, KV, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            # generation: write this step's keys/values, attend over everything so far
            kc, vc = kv_cache
            kc[:, :, pos:pos + T], vc[:, :, pos:pos + T] = k, v
            k, v = kc[:, :, :pos + T], vc[:, :, :pos + T]
            assert pos == 0 or T == 1, "the cache is filled by one prompt, then one token a step"
        # No mask: causal when queries and keys start together; a single new token sees all keys.
        # A mask (B, 1, T, T), True where query t may see key s, replaces it (eval_kobest's tree).
        # enable_gqa lets SDPA share each KV head across H/KV query heads without copying.
        gqa = self.n_kv != self.n_head
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=(T > 1), enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class LlamaMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, pos=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """The trunk, only so that keys get HF's `model.` prefix."""
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.padded_vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


def next_token(logits, temperature=0.0, top_p=1.0, gen=None):
    """The next id from one position's logits (V,): greedy at temperature 0, else sampled from
    softmax(logits / temperature) cut to its nucleus, the smallest set of most likely tokens
    whose mass reaches top_p (always at least the first)."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = F.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p       # the mass before this token is short of top_p
    sorted_p = sorted_p * keep
    return int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)])


class Llama(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        # tied models have no lm_head parameter at all, exactly like their HF checkpoints
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(
            cfg.hidden_size, cfg.padded_vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.gradient_checkpointing = False
        if self.inv_freq.device.type != "meta":
            self.init_weights()

    def init_weights(self):
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, LlamaRMSNorm):
                nn.init.ones_(m.weight)

    def _apply(self, fn, recurse=True):
        # .to(bfloat16) would cast the RoPE table too: rebuild it in fp32 on the new device
        super()._apply(fn, recurse)
        self.inv_freq = rope_inv_freq(self.config, self.inv_freq.device)
        return self

    def output_weight(self):
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def hidden(self, input_ids, positions=None, mask=None, kv_caches=None, pos=0):
        """The final-normed hidden states (B, T, C). positions (B, T): each token's position
        (default pos..pos+T-1 in every row); mask (B, 1, T, T) bool, True where a query may see
        a key (default causal). The two let one row hold a prompt and several continuations."""
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(pos, pos + T, device=input_ids.device)         # (T,)
        with torch.autocast(input_ids.device.type, enabled=False):
            cos, sin = rope_tables(self.inv_freq, positions)   # (T, D) or (B, T, D), fp32
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]              # (B, 1, T, D): one table per row
        x = self.model.embed_tokens(input_ids)                 # (B, T, C)
        for i, layer in enumerate(self.model.layers):
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, None if kv_caches is None else kv_caches[i], pos)
        return self.model.norm(x)

    def head(self, x):
        """Logits (..., vocab_size) from hidden states (..., C)."""
        logits = F.linear(x, self.output_weight())             # (..., padded V)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., :self.config.vocab_size]      # padded rows are never predicted
            # (sliced only when padded: the slice's backward writes a zero-filled full-size gradient)
        return logits

    def forward(self, input_ids, targets=None, reduction="mean", kv_caches=None, pos=0, positions=None, mask=None):
        logits = self.head(self.hidden(input_ids, positions, mask, kv_caches, pos))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-100, reduction=reduction)
        return logits, loss

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens, temperature=0.0, top_p=1.0, eos_token_id=None, seed=None):
        """Greedy (temperature 0) or temperature/top-p sampling with a KV cache; returns new ids."""
        cfg, dev = self.config, self.inv_freq.device
        ids = torch.tensor([list(input_ids)], dtype=torch.long, device=dev)
        total = ids.size(1) + max_new_tokens
        dtype = self.model.embed_tokens.weight.dtype
        caches = [(torch.zeros(1, cfg.num_key_value_heads, total, cfg.head_dim, dtype=dtype, device=dev),
                   torch.zeros(1, cfg.num_key_value_heads, total, cfg.head_dim, dtype=dtype, device=dev))
                  for _ in range(cfg.num_hidden_layers)]
        gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
        eos = set([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id or [])
        out, pos = [], 0
        for _ in range(max_new_tokens):
            logits, _ = self(ids, kv_caches=caches, pos=pos)
            pos += ids.size(1)
            nxt = next_token(logits[0, -1].float(), temperature, top_p, gen)
            out.append(nxt)
            if nxt in eos:
                break
            ids = torch.tensor([[nxt]], device=dev)
        return out

    # ---- Hugging Face checkpoints ----

    @classmethod
    def from_pretrained(cls, folder, dtype=None, device="cpu", vocab_multiple=1):
        """Strictly load a HF folder (model.safetensors or a sharded index) holding one copy
        of the weights: modules are built on the meta device and each tensor is read from
        disk straight into its final buffer. dtype None means float32."""
        cfg = LlamaConfig.from_pretrained(folder)
        cfg.vocab_multiple = vocab_multiple
        dtype = dtype or torch.float32
        need, have = cfg.num_parameters() * dtype.itemsize, memory_bytes(device)
        if have and need > have:        # one line now, not an allocation failure deep in torch
            raise ValueError(f"{folder}/config.json: {cfg.num_parameters() / 1e9:.1f}B parameters (hidden_size="
                             f"{cfg.hidden_size}, num_hidden_layers={cfg.num_hidden_layers}, vocab_size="
                             f"{cfg.vocab_size}) need {need / 2**30:.1f} GiB in {dtype}, more than the "
                             f"{have / 2**30:.1f} GiB of {device}")
        with torch.device("meta"):
            model = cls(cfg)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        state, seen_in = {}, {}
        for path in _checkpoint_files(folder):
            for key, tensor in read_safetensors(path):
                if key == "lm_head.weight" and cfg.tie_word_embeddings:
                    continue  # some tied checkpoints also store the (identical) head; HF ignores it
                if key not in expected:
                    raise KeyError(f"{path}: unexpected key {key!r} (not a parameter of this Llama)")
                if key in seen_in:
                    raise KeyError(f"{path}: key {key!r} also in {seen_in[key]}")
                if not tensor.is_floating_point():
                    raise ValueError(f"{path}: {key}: dtype {tensor.dtype} is not a floating-point weight")
                want = expected[key]
                if key in ("model.embed_tokens.weight", "lm_head.weight") and want[0] != tensor.shape[0]:
                    if tensor.shape[0] != cfg.vocab_size or tuple(tensor.shape[1:]) != tuple(want[1:]):
                        raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}, config.json "
                                         f"says vocab_size {cfg.vocab_size}")
                    padded = torch.zeros(want, dtype=dtype)            # pad rows up to vocab_multiple
                    padded[:cfg.vocab_size] = tensor
                    tensor = padded
                elif tuple(tensor.shape) != tuple(want):
                    raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(want)}")
                state[key], seen_in[key] = tensor.to(device=device, dtype=dtype), path
        missing = [k for k in expected if k not in state]
        if missing:
            raise KeyError(f"{folder}: missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        model.load_state_dict(state, strict=True, assign=True)
        model.inv_freq = rope_inv_freq(cfg, torch.device(device))
        return model

    def save_pretrained(self, folder, max_shard_size="5GB"):
        """config.json + safetensors (sharded with an index above max_shard_size). Written into
        a temp folder that is renamed into place, so a crash never leaves a complete-looking
        half-written folder."""
        folder = os.path.abspath(os.fspath(folder))
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        tmp = str(outputs.fresh_sibling(folder))
        try:
            self._save_into(tmp, folder, max_shard_size)
            outputs.replace_dir(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _save_into(self, tmp, folder, max_shard_size):
        V = self.config.vocab_size
        tensors = {k: (v[:V] if k in ("model.embed_tokens.weight", "lm_head.weight") else v).detach()
                   for k, v in self.state_dict().items()}                  # drop padded rows
        limit = _parse_size(max_shard_size)
        shards, cur, cur_size = [], {}, 0
        for k, v in tensors.items():
            n = v.numel() * v.element_size()
            if cur and cur_size + n > limit:
                shards.append(cur)
                cur, cur_size = {}, 0
            cur[k], cur_size = v, cur_size + n
        shards.append(cur)
        if len(shards) == 1:
            write_safetensors(os.path.join(tmp, "model.safetensors"), shards[0])
        else:
            weight_map = {}
            for i, shard in enumerate(shards):
                name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                write_safetensors(os.path.join(tmp, name), shard)
                weight_map.update({k: name for k in shard})
            total = sum(v.numel() * v.element_size() for v in tensors.values())
            _write_json(os.path.join(tmp, "model.safetensors.index.json"),
                        {"metadata": {"total_size": total}, "weight_map": weight_map})
        dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
        _write_json(os.path.join(tmp, "config.json"), self.config.to_hf(dtype))
        if os.path.exists(folder):  # keep everything else the folder had (e.g. tokenizer files)
            for name in os.listdir(folder):
                if not name.endswith((".safetensors", ".index.json")) and name != "config.json":
                    src = os.path.join(folder, name)
                    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))


def check_model_folder(folder, flag="--model"):
    """One line, before anything loads, for a model folder that is not one."""
    if not os.path.isdir(folder):
        raise SystemExit(f"error: {flag} {folder}: no such folder")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise SystemExit(f"error: {flag} {folder}: no config.json (give a Hugging Face model folder)")


def memory_bytes(device):
    """Total memory of a device (RAM for the CPU), or None when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _checkpoint_files(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            try:
                wmap = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{index}: not an index (a JSON object with a 'weight_map')") from None
        names = sorted(set(wmap.values())) if isinstance(wmap, dict) else [None]
        for n in names:     # plain file names in this folder: never a path that leads out of it
            if not (isinstance(n, str) and n.endswith(".safetensors") and os.path.basename(n) == n
                    and n not in (".", "..")):
                raise ValueError(f"{index}: weight_map names {n!r}, not a .safetensors file in the folder")
        files = [os.path.join(folder, n) for n in names]
    else:
        files = [os.path.join(folder, "model.safetensors")]
    for p in files:
        if not os.path.exists(p):
            alt = " (found pytorch_model.bin: convert it to safetensors; we never unpickle)" \
                if os.path.exists(os.path.join(folder, "pytorch_model.bin")) else ""
            raise FileNotFoundError(f"{p}: checkpoint file not found{alt}")
    return files


def _parse_size(s):
    if isinstance(s, int):
        return s
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    s = s.strip().upper()
    for u, mult in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if s.endswith(u):
            return int(float(s[:-len(u)]) * mult)
    return int(s)


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")

"""A Llama in one file that reads and writes Hugging Face checkpoints exactly.

Module names are the Hugging Face names, so the state-dict keys *are* the checkpoint keys
(`model.layers.3.self_attn.q_proj.weight`, ...) and RoPE uses HF's half-split layout: a
checkpoint loads strictly with no key mapping and no q/k permutation, and what we save
loads in `transformers` as it is. Covers Llama-1/2/3 and Mistral-style (no sliding window)
configs: GQA, head_dim, tied or untied embeddings, rope scaling default/linear/llama3. What a
config.json means is config.py's business; save_pretrained writes back the config.json it was
loaded from with only what changed (vocab_size, the dtype).

From Python (tools/generate.py is the command line):

    model = Llama.from_pretrained("path/to/SOLAR-10.7B", dtype=torch.bfloat16)
    logits, loss = model(input_ids, targets)      # (B, T, V), scalar
    model.save_pretrained("out/", max_shard_size="5GB")
"""
import contextlib
import json
import math
import os
import shutil

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from config import LlamaConfig
from support import outputs
from support.cli import UserError
from support.safetensors_io import checkpoint_files, read_safetensors, save_sharded

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


def apply_rope(x, cos, sin):
    # x: (B, H, T, D); cos, sin: (T, D) or (B, 1, T, D) fp32 -> computed in x's dtype as HF does
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)          # HF's rotate_half
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


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
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                           enable_gqa=self.n_kv != self.n_head)
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
        self.gradient_checkpointing = False                  # recompute each layer in backward
        self.recompute_context = contextlib.nullcontext      # entered around each recompute (the attention kernel)
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

    def hidden(self, input_ids, *, positions=None, mask=None, kv_caches=None, pos=0):
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
                # backward recomputes the layer outside the forward's contexts: checkpoint restores
                # autocast but not an sdpa_kernel choice, so recompute_context enters it again
                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False, context_fn=self._checkpoint_contexts)
            else:
                x = layer(x, cos, sin, mask, None if kv_caches is None else kv_caches[i], pos)
        return self.model.norm(x)

    def _checkpoint_contexts(self):
        return contextlib.nullcontext(), self.recompute_context()   # (forward, recompute)

    def head(self, x):
        """Logits (..., vocab_size) from hidden states (..., C)."""
        logits = F.linear(x, self.output_weight())             # (..., padded V)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., :self.config.vocab_size]      # padded rows are never predicted
            # (sliced only when padded: the slice's backward writes a zero-filled full-size gradient)
        return logits

    def forward(self, input_ids, targets=None, reduction="mean", *, positions=None, mask=None, kv_caches=None, pos=0):
        logits = self.head(self.hidden(input_ids, positions=positions, mask=mask, kv_caches=kv_caches, pos=pos))
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
        kv = torch.zeros(2, cfg.num_hidden_layers, 1, cfg.num_key_value_heads, ids.size(1) + max_new_tokens,
                         cfg.head_dim, dtype=self.model.embed_tokens.weight.dtype, device=dev)
        caches = list(zip(*kv))         # per layer (keys, values), each (1, KV, prompt + new, D)
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
        for path in checkpoint_files(folder):
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
        """config.json + safetensors (sharded with an index above max_shard_size), padded rows
        dropped, plus every other file `folder` already holds (tokenizer files and the like), so
        the swap loses nothing. Written into a temp folder that is renamed into place, so a crash
        never leaves a complete-looking half-written folder."""
        V = self.config.vocab_size
        tensors = {k: (v[:V] if k in ("model.embed_tokens.weight", "lm_head.weight") else v).detach()
                   for k, v in self.state_dict().items()}                  # drop padded rows
        dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
        folder = os.path.abspath(os.fspath(folder))
        tmp = folder + ".tmp-save"          # a fixed name: a save killed half way is removed by the next one
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            save_sharded(tmp, tensors, max_shard_size)
            outputs.write_atomic(os.path.join(tmp, "config.json"),
                                 json.dumps(self.config.to_hf(dtype), indent=2, ensure_ascii=False) + "\n")
            for name in os.listdir(folder) if os.path.exists(folder) else []:
                if not name.endswith((".safetensors", ".index.json")) and name != "config.json":
                    src = os.path.join(folder, name)
                    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))
            outputs.replace_dir(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def check_model_folder(folder, flag="--model"):
    """One line, before anything loads, for a model folder that is not one."""
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {folder}: no such folder")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise UserError(f"{flag} {folder}: no config.json (give a Hugging Face model folder)")


def memory_bytes(device):
    """Total memory of a device (RAM for the CPU), or None when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


if __name__ == "__main__":
    raise SystemExit("error: model.py is the network, not a command: generate with "
                     "python redwhale.py generate --model FOLDER (or --smoke)")

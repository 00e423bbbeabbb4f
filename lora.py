"""LoRA written by hand: a wrapper around nn.Linear that adds a trainable low-rank update.

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A: (r, in), B: (out, r)

B starts at zero, so wrapping a model does not change its output; only A and B train while
W stays frozen (RedWhale's stage 4: rank 32, alpha 32, dropout 0.1 on every attention and MLP
projection). `merge()` folds the update into W (in fp32) for export, `unmerge()` takes it back out.
train.py uses it like this:

    wrapped = add_lora(model, r=32, alpha=32, dropout=0.1)   # names of the wrapped Linears
    ...train...
    merge_lora(model)   # plain nn.Linear again with W + (alpha/r) B A: HF keys, loads anywhere

State-dict keys of a wrapped projection: `...q_proj.base.weight` is avoided on purpose: the
wrapper *is* the Linear (it subclasses it), so the base weight keeps its HF key
`...q_proj.weight` and only `...q_proj.lora_A` / `...q_proj.lora_B` are added. A checkpoint
written mid-LoRA-stage therefore loads into a freshly wrapped model with strict=True.

    python -m pytest -q tests/test_lora.py
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# every attention and MLP projection of a Llama decoder layer
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Linear):
    def __init__(self, in_features, out_features, bias=True, r=8, alpha=8.0, dropout=0.0,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # adapters in fp32 even when the frozen base weight is bf16: they are what trains
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as PEFT does; B = 0 keeps y unchanged
        self.merged = False

    @classmethod
    def wrap(cls, linear, r, alpha, dropout):
        """A LoRALinear that shares (not copies) the weight and bias of `linear`."""
        dev = linear.weight.device
        with torch.device("meta"):
            m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    r=r, alpha=alpha, dropout=dropout)
        m.weight, m.bias = linear.weight, linear.bias
        # drawn from the CPU generator whatever the device: the same adapters on CPU and GPU, and
        # in train.py's DDP path (wrapped on the device) and FSDP path (wrapped on rank 0's CPU copy)
        a = torch.empty(r, linear.in_features, dtype=torch.float32)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        m.lora_A = nn.Parameter(a.to(dev))
        m.lora_B = nn.Parameter(torch.zeros(linear.out_features, r, device=dev, dtype=torch.float32))
        m.train(linear.training)
        return m

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        # (.., in) -> (.., r) -> (.., out); under autocast both matmuls run in bf16
        a = self.dropout(x) if torch.is_autocast_enabled(x.device.type) else self.dropout(x).to(self.lora_A.dtype)
        return y + (F.linear(F.linear(a, self.lora_A), self.lora_B) * self.scale).to(y.dtype)

    @torch.no_grad()
    def delta(self):
        return (self.lora_B @ self.lora_A) * self.scale        # (out, in) fp32

    @torch.no_grad()
    def merge(self):
        """W <- W + (alpha/r) B A, stored in fp32. Writing the sum back into a bf16 W would round
        away every update smaller than half a bf16 step of W (about half of them at a typical
        ||dW|| / ||W|| of 0.002): the weight is upcast instead, and cast once, at export."""
        if not self.merged:
            self.weight.data = self.weight.float() + self.delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.weight.data = self.weight.float() - self.delta()
            self.merged = False

    def extra_repr(self):
        return super().extra_repr() + f", r={self.r}, alpha={self.alpha}, merged={self.merged}"


def add_lora(model, r=32, alpha=32.0, dropout=0.1, targets=DEFAULT_TARGETS):
    """Replace every nn.Linear whose attribute name is in `targets` by a LoRALinear sharing its
    weight; returns the dotted names of the wrapped modules. lm_head is never a target."""
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and type(child) is nn.Linear:
                setattr(module, child_name, LoRALinear.wrap(child, r, alpha, dropout))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"LoRA: no nn.Linear named any of {list(targets)} in the model")
    return wrapped


def attach_lora(model, spec, dropout=None):
    """add_lora with a recipe stage's `lora` settings {"r", "alpha", "dropout", "targets"}: how
    training, FSDP, the memory plan and export all attach adapters (export passes dropout=0)."""
    return add_lora(model, spec["r"], spec["alpha"], spec["dropout"] if dropout is None else dropout,
                    tuple(spec["targets"]))


def has_lora(model_or_state):
    """Whether a model, or a state dict (its keys), holds LoRA adapters."""
    if isinstance(model_or_state, dict):
        return any("lora_A" in k for k in model_or_state)
    return any(isinstance(m, LoRALinear) for m in model_or_state.modules())


def merge_lora(model):
    """Fold every adapter into its base weight and put plain nn.Linear modules back, so the
    state dict has exactly the HF keys again. Returns how many modules were merged."""
    n = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                child.merge()
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None,
                                  device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                plain.train(child.training)
                setattr(module, child_name, plain)
                n += 1
    return n

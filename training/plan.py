"""The memory planner: for a model config and a recipe, what trains in each stage and the memory
per GPU, before anyone rents a node. Also the FLOPs per token that train.py's MFU uses, and the
flags that describe a run's shape (train.py takes the same ones).

    python redwhale.py plan --init-from upstage/SOLAR-10.7B-v1.0/config.json --seq-len 4096
    python redwhale.py plan --init-from DIR --recipe my.json --batch-size 2 --activation-checkpointing
    python redwhale.py plan --init-from SOLAR-10.7B/config.json --seq-len 4096 --fsdp --world-size 8
    python training/plan.py ...       # the same command

The model is built on the meta device (no memory, no weights needed: a config.json is
enough) with the exact parameters train.py would create, LoRA adapters included, and the
stage's parameter groups are selected by the same function train.py uses. Memory per GPU
under DDP (every rank holds a full replica; with --fsdp see fsdp_bytes):

    weights      trained params fp32 (4 B), frozen ones bf16 (2 B) with --dtype bf16, else 4 B;
                 under autocast + the bf16 copy of each trained matrix kept for backward
    grads        trained params, fp32 (DDP's buckets are views of them: gradient_as_bucket_view)
    optimizer    AdamW's two fp32 moments per trained param (8 B)
    activations  what autograd saves for backward in the layers the gradient flows through, per
                 micro-batch of B x T tokens, plus the logits (activation_bytes)
A fixed 1.5 GB is added for the CUDA context, cuBLAS/flash workspaces and allocator slack.
bench/gpu_check.py compares these numbers with torch.cuda.max_memory_allocated on a GPU.
"""
import argparse
import os
import sys

import torch

if __name__ == "__main__":          # python training/plan.py: the project root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import LlamaConfig
from lora import attach_lora
from model import Llama
from recipe import old_rows, recipe_from_flags, resolve, select_params
from support import cli
from support.cli import UserError
from training.runtime import weight_dtypes

OVERHEAD = 1.5e9


def rows_or_auto(text):
    """--freeze-old-rows: a row count >= 1, or 'auto' (expand_report.json in --init-from)."""
    return text if text == "auto" else cli.number(int, lo=1)(text)


def add_shape_flags(p):
    """What a run trains and how it is laid out in memory: train.py and the planner alike."""
    p.add_argument("--init-from", help="HF folder of the (expanded) model to start from (the planner: also a "
                                       "config.json)")
    p.add_argument("--recipe", help="JSON/TOML recipe (default: RedWhale's four stages)")
    p.add_argument("--steps-per-stage", type=cli.number(int, lo=1), default=None,
                   help="override every stage's length (smoke tests)")
    p.add_argument("--batch-size", type=cli.number(int, lo=1), default=None,
                   help="sequences per micro-batch per rank (recipe micro_batch)")
    p.add_argument("--seq-len", type=cli.number(int, lo=1), default=None, help="tokens per sequence (recipe seq_len)")
    p.add_argument("--grad-accum", type=cli.number(int, lo=1), default=None,
                   help="micro-batches per step (default: from batch_tokens; 1 with --steps-per-stage)")
    p.add_argument("--freeze-old-rows", type=rows_or_auto, default=None,
                   help="N or 'auto' (expand_report.json): train only embedding/head rows >= N in every stage")
    p.add_argument("--grad-clip", type=cli.number(float, lo=0), default=None,
                   help="clip the gradient norm (recipe grad_clip; 0: off)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"], help="bf16: autocast with frozen "
                   "weights in bf16 and trained ones in fp32 (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--fsdp", action="store_true",
                   help="shard weights, grads and AdamW state over the ranks (FSDP2; needs torchrun); default: DDP")
    p.add_argument("--fsdp-reduce", default="every", choices=["every", "last"],
                   help="with --fsdp and accumulation: reduce-scatter gradients after every micro-step (least "
                        "memory) or only the last (less traffic; full fp32 grads of the trained part in between)")
    p.add_argument("--vocab-multiple", type=cli.number(int, lo=1), default=None,
                   help="pad embedding rows (default 64 on CUDA, 1 on CPU)")
    p.add_argument("--gpu-mem-gb", type=cli.number(float, lo=0, lo_open=True), default=None,
                   help="memory per GPU to check every stage's plan against (train.py: before the first step; "
                        "default there: the CUDA device's total, no check on CPU; the planner: 80)")


def meta_model(cfg, lora=None):
    with torch.device("meta"):
        m = Llama(cfg)
    if lora:
        attach_lora(m, lora)
    return m


def empty_model(cfg, device="cpu", dtype=torch.float32):
    """A model whose weights are left uninitialized, for a checkpoint to fill every one of them
    strictly: nothing is read or initialized only to be overwritten."""
    return meta_model(cfg).to_empty(device=device).to(dtype)   # to_empty rebuilds the RoPE table


def lowest_trained_layer(model):
    """Index of the lowest layer the gradient must reach: -1 if the embedding trains, L if
    only the final norm / head train (no backward through the layers at all)."""
    L = len(model.model.layers)
    return min((int(n.split(".")[2]) if n.startswith("model.layers.") else -1 if "embed_tokens" in n else L
                for n, p in model.named_parameters() if p.requires_grad), default=L)


def flops_per_token(model, T):
    """Model FLOPs of one training token for this stage: forward 2N + attention, backward for
    the activations through the layers above the lowest trained one, weight gradients only where
    trained. Training everything gives the usual 6N + 12 L C T."""
    cfg = model.config
    L = cfg.num_hidden_layers
    mats = {n: p for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n}
    per_layer = sum(p.numel() for n, p in mats.items() if n.startswith("model.layers.0."))
    head = cfg.hidden_size * cfg.vocab_size
    attn = 4 * T * cfg.num_attention_heads * cfg.head_dim          # QK^T and AV, forward
    lowest = lowest_trained_layer(model)
    n_back = L - max(lowest, 0) if lowest < L else 0
    w_grad = sum(p.numel() for n, p in mats.items() if p.requires_grad)
    w_grad += head if (model.lm_head is None and model.model.embed_tokens.weight.requires_grad) else 0
    return 2 * (L * per_layer + head) + L * attn + 2 * (n_back * per_layer + head) + 2 * n_back * attn + 2 * w_grad


def layer_kinds(model):
    """For each layer the gradient flows through: 'trained' (a weight of it trains), 'lora' (its
    adapters train) or 'frozen' (only the activation gradient passes). Layers below the lowest
    trained one keep nothing for backward and are left out."""
    kinds = []
    for layer in model.model.layers[max(lowest_trained_layer(model), 0):]:
        trains = [n for n, p in layer.named_parameters() if p.requires_grad]
        kinds.append("frozen" if not trains else "lora" if all("lora_" in n for n in trains) else "trained")
    return kinds


def activation_bytes(cfg, tokens, kinds, mixed, checkpointing=False, lora_r=0, mask_bytes=1, backward_temps=True):
    """Bytes autograd keeps for backward in one micro-batch of `tokens` (B x T), counted op by op for model.py's
    layer (and checked against torch's saved-tensor hooks in tests/test_plan.py):
      every layer   two RMSNorm inputs in fp32 (+ their rsqrt), SDPA's q, k, v, output and fp32
                    logsumexp, SwiGLU's gate, up and silu(gate)
      trained       + the inputs of its Linears: two normed inputs, o_proj's and down_proj's input
      lora          + per adapter its dropout mask and dropped-out input, and the (r,) A output
    mask_bytes: 1 for CUDA's bool dropout mask (CPU keeps a float mask: 4 in fp32)."""
    a = 2 if mixed else 4                      # activation dtype under bf16 autocast
    C, F, H = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    Hd, KV = H * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    base = 2 * 4 * (C + 1) + a * (2 * Hd + 2 * KV) + 4 * H + a * 3 * F
    extra = {"frozen": 0, "trained": a * (2 * C + Hd + F), "lora": (a + mask_bytes) * (5 * C + Hd + F) + 7 * lora_r * a}
    per_token = [base + extra[k] for k in kinds]
    # final norm input + log_softmax output (fp32); backward also holds the fp32 and bf16 logits grads
    head = 4 * C + 4 * cfg.vocab_size + ((4 + a) * cfg.vocab_size if backward_temps else 0)
    # backward holds one layer's activation gradients in flight (about one layer's activations)
    in_flight = max(per_token, default=0) if backward_temps else 0
    if checkpointing and per_token:              # only layer inputs, plus one layer recomputed at a time
        return tokens * (4 * C * len(per_token) + max(per_token) + in_flight + head)
    return tokens * (sum(per_token) + in_flight + head)


def autocast_copies(model, mixed):
    """bf16 autocast casts each trained fp32 matrix to bf16 for the forward and keeps the copy
    for backward: 2 bytes per trained matmul weight (not the embedding, which is a lookup)."""
    return 2 * sum(p.numel() for n, p in model.named_parameters()
                   if mixed and p.requires_grad and p.dim() == 2 and "embed_tokens" not in n)


def stage_rows(cfg, recipe, plan_rows, mixed=True, checkpointing=False, old_rows=0, fsdp_world=0, reduce="every"):
    """One dict per stage: parameter counts and the memory estimate in bytes (per GPU). fsdp_world:
    FSDP2 over that many ranks instead of DDP (see fsdp_bytes)."""
    rows = []
    for i, (st, p) in enumerate(zip(recipe.stages, plan_rows)):
        m = meta_model(cfg, st.lora)
        names = select_params(m, st.train, f"stage {i + 1} ({st.name})")
        for n, prm in m.named_parameters():
            prm.requires_grad_(n in names)
        params = dict(m.named_parameters())
        n_all = sum(x.numel() for x in params.values())
        n_train = sum(params[n].numel() for n in names)
        r = {"stage": i + 1, "name": st.name, "params": n_all, "trainable": n_train,
             "weights": n_train * 4 + (n_all - n_train) * (2 if mixed else 4) + autocast_copies(m, mixed),
             "grads": n_train * 4, "optimizer": n_train * 8,
             "activations": activation_bytes(cfg, p["B"] * p["T"], layer_kinds(m), mixed, checkpointing,
                                             st.lora["r"] if st.lora else 0)}
        if st.freeze_old_rows:           # the kept copy of the original rows of embed / head
            r["optimizer"] += sum(old_rows * cfg.hidden_size * 4 for n in names
                                  if n in ("model.embed_tokens.weight", "lm_head.weight"))
        if fsdp_world:
            r.update(fsdp_bytes(m, r, mixed, fsdp_world, reduce))
        r["total"] = r["weights"] + r["grads"] + r["optimizer"] + r["activations"] + OVERHEAD
        rows.append(r)
    return rows


def fsdp_bytes(m, r, mixed, world, reduce="every"):
    """FSDP2 per rank: weights, grads and AdamW state are 1/world of DDP's (sharded on dim 0),
    plus what is unsharded for a while, in each parameter's storage dtype: the root's parameters
    (embeddings, norm, head: FSDP2 keeps the root gathered from forward to the end of backward)
    and two blocks (the one running and the one prefetched); autocast's bf16 copies of the
    trained matrices, as under DDP; the gradients of one block and of the root before their
    reduce-scatter in fp32 (all trained gradients with reduce 'last', held between micro-steps)."""
    def stored(ps):
        return sum(p.numel() * (4 if p.requires_grad or not mixed else 2) for p in ps)
    blocks = [stored(layer.parameters()) for layer in m.model.layers]
    root = [p for n, p in m.named_parameters() if not n.startswith("model.layers.")]
    train_block = max(sum(p.numel() for p in layer.parameters() if p.requires_grad) for layer in m.model.layers)
    train_root = sum(p.numel() for p in root if p.requires_grad)
    weights_sharded = (r["weights"] - autocast_copies(m, mixed)) / world
    grads_sharded = r["grads"] / world
    unsharded_grads = r["grads"] if reduce == "last" else 4 * (train_block + train_root)
    return {"weights_sharded": weights_sharded, "grads_sharded": grads_sharded,
            "weights": weights_sharded + stored(root) + 2 * max(blocks, default=0) + autocast_copies(m, mixed),
            "grads": grads_sharded + unsharded_grads, "optimizer": r["optimizer"] / world}


def run_rows(cfg, recipe, batches, args, world, mixed):
    """stage_rows for a run's flags: the planner's table and train.py's check alike."""
    old = old_rows(recipe, args.init_from) if any(s.freeze_old_rows for s in recipe.stages) else 0
    return stage_rows(cfg, recipe, batches, mixed, args.activation_checkpointing, old,
                      world if args.fsdp else 0, args.fsdp_reduce)


def print_plan(args, recipe):
    cfg = LlamaConfig.from_pretrained(args.init_from)
    cfg.vocab_multiple = args.vocab_multiple or 64
    mixed, fsdp = args.dtype != "fp32", args.fsdp
    plan_rows = resolve(recipe, args, args.world_size)
    rows = run_rows(cfg, recipe, plan_rows, args, args.world_size, mixed)
    p0 = plan_rows[0]
    gb = 1e9
    print(f"model {args.init_from}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, vocab {cfg.vocab_size} "
          f"(padded {cfg.padded_vocab_size}), {rows[0]['params'] / 1e9:.2f}B parameters")
    frozen = str(weight_dtypes(cfg, mixed)[1]).removeprefix("torch.")
    print(f"{f'bf16 autocast, frozen weights {frozen}, trained fp32' if mixed else 'fp32'}; micro-batch {p0['B']} x "
          f"seq {p0['T']}; activation checkpointing {'on' if args.activation_checkpointing else 'off'}; "
          f"{args.world_size} GPU(s) with "
          + (f"FSDP2 (weights, grads, AdamW sharded {args.world_size} ways)" if fsdp else "DDP (full replica each)")
          + f"; +{OVERHEAD / gb:.1f} GB CUDA overhead")
    print(f"{'stage':<16}{'trainable':>16}{'%':>7}{'weights':>9}{'grads':>8}{'optim':>8}{'activ':>8}{'total':>8}"
          f"  fits {args.gpu_mem_gb:g} GB?")
    fits = [r["total"] <= args.gpu_mem_gb * gb for r in rows]
    for r, ok in zip(rows, fits):
        print(f"{r['stage']} {r['name']:<14}{r['trainable']:>16,}{100 * r['trainable'] / r['params']:>6.2f}%"
              f"{r['weights'] / gb:>9.1f}{r['grads'] / gb:>8.1f}{r['optimizer'] / gb:>8.1f}"
              f"{r['activations'] / gb:>8.1f}{r['total'] / gb:>8.1f}  {'yes' if ok else 'NO'}")
    if not all(fits):
        print(f"stages marked NO do not fit: try {remedies(fsdp, args.activation_checkpointing)}")
    return rows


def remedies(fsdp, checkpointing):
    """What would make a stage fit, given how the run is laid out."""
    return ", ".join(["--activation-checkpointing"] * (not checkpointing) + [
        "more GPUs" if fsdp else "--fsdp (shards weights, grads and AdamW state over the GPUs)",
        "a smaller --batch-size (more --grad-accum)", "a GPU with more memory"])


def check_memory(cfg, recipe, batches, args, env):
    """Refuse before the first step a run one of whose stages would run out of memory later
    (SOLAR under DDP trains stage 1 for hours, then stage 2 needs 141 GB per GPU). Checked
    against --gpu-mem-gb, else the CUDA device's total; on CPU only when --gpu-mem-gb is given."""
    available = args.gpu_mem_gb * 1e9 if args.gpu_mem_gb else (
        torch.cuda.get_device_properties(env.device).total_memory if env.device.type == "cuda" else 0)
    rows = run_rows(cfg, recipe, batches, args, env.world, env.mixed) if available else []
    for r in rows:
        if r["total"] > available:
            raise UserError(f"stage {r['stage']} ({r['name']}) needs about {r['total'] / 1e9:.1f} GB per GPU "
                            f"(python redwhale.py plan shows its parts), more than the {available / 1e9:.1f} GB "
                            "available (--gpu-mem-gb overrides): try "
                            + remedies(args.fsdp, args.activation_checkpointing))


def main(argv=None):
    p = argparse.ArgumentParser(prog="redwhale.py plan", description="Trainable parameters and memory per GPU "
                                "per stage, from a config.json alone (no weights read).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shape_flags(p)
    p.add_argument("--world-size", type=cli.number(int, lo=1), default=1, help="number of GPUs")
    args = p.parse_args(argv)
    if not args.init_from:
        p.error("give --init-from HF_DIR or config.json")
    if not os.path.exists(args.init_from):
        raise UserError(f"--init-from {args.init_from}: no such folder or config.json")
    args.gpu_mem_gb = args.gpu_mem_gb or 80.0
    print_plan(args, recipe_from_flags(args))


if __name__ == "__main__":
    cli.run(main)

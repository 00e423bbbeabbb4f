"""The building blocks of training/strategy.py's two strategies: DDP (a full replica on every
rank, the simple path, while `python redwhale.py plan` says a stage fits one GPU) and FSDP2
(`--fsdp`: weights, gradients and AdamW state sharded, e.g. SOLAR-10.7B's stages 2-3 on 80 GB
cards, 141 GB per GPU under DDP).

FSDP2 (torch.distributed.fsdp.fully_shard) as torchtitan uses it: each decoder block is one
shard group, the root (embeddings, final norm, LM head) another; parameters are DTensors sharded
on dim 0. Each parameter is all-gathered in the dtype it is stored in (trained fp32, frozen
16-bit under --dtype bf16) and autocast casts it as it casts DDP's: the same numbers as DDP in
bf16 too. (A bf16 all-gather would halve the trained part's traffic, but the embedding and the
norm weights would then compute in bf16 where DDP's are fp32, and the losses drift.) FSDP2
fixes its reduce dtypes at lazy init, so each stage gets a fresh sharded model (fsdp_model),
filled from the full state rank 0 holds on its CPU. Checkpoints are DCP shards (dcp_save).

    torchrun --standalone --nproc_per_node=8 train.py --fsdp --init-from DIR --data DIR --out runs/x
"""
import inspect
import math
import socket

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.state_dict as dcp_sd
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from lora import attach_lora, has_lora, merge_lora
from model import rope_inv_freq
from recipe import select_params
from support.cli import UserError
from training import runtime
from training.plan import meta_model


def rank0(fn, distributed, share=False):
    """Run fn on rank 0 alone and return its result there (everywhere with share=True; None on the
    other ranks otherwise), the others waiting in the I/O group. An error on rank 0 stops every
    rank with rank 0's message, instead of leaving the others waiting at the next collective."""
    out, err = None, None
    if not distributed or dist.get_rank() == 0:
        try:
            out = fn()
        except UserError as e:
            err = str(e)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            err = f"error: rank 0: {type(e).__name__}: {e}"
    if distributed:
        box = [err, out if share else None]
        dist.broadcast_object_list(box, src=0, group=runtime.IO)
        err, out = box[0], (box[1] if share else out)
    if err:
        raise UserError(err)
    return out


def blind_ranks(problem, distributed):
    """Every rank's view of something rank 0 wrote: [(rank, host, problem)] of the ranks whose
    `problem` (this rank's; None: it sees it) is not None, gathered on every rank."""
    views = [(socket.gethostname(), problem)]
    if distributed:
        views = [None] * dist.get_world_size()
        dist.all_gather_object(views, (socket.gethostname(), problem))
    return [(r, host, why) for r, (host, why) in enumerate(views) if why]


# ---------------------------------------------------------------- DDP: a full replica per rank


def wrap_ddp(model, device, local_rank):
    """gradient_as_bucket_view: the all-reduce buckets *are* the .grad tensors (no second copy).
    The RoPE table is a buffer every rank builds itself: no broadcast at every forward."""
    quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
             else {"broadcast_buffers": False})
    return DDP(model, device_ids=[local_rank] if device.type == "cuda" else None, gradient_as_bucket_view=True, **quiet)


# ---------------------------------------------------------------- FSDP2: sharded


def cpu_model(cfg, state, lora=None):
    """A CPU Llama whose tensors *are* the state dict's (assign: no copy). With lora keys in the
    state, the adapters are added first (spec `lora` gives r / alpha / targets)."""
    model = meta_model(cfg, lora if has_lora(state) else None)
    model.load_state_dict(state, strict=True, assign=True)
    model.inv_freq = rope_inv_freq(cfg)            # the non-persistent RoPE table, on the CPU
    return model


def merged(cfg, state, lora):
    """Rank 0, at the end of a stage: the state with any LoRA adapters folded into fp32 weights."""
    if not has_lora(state):
        return state
    model = cpu_model(cfg, state, lora)
    merge_lora(model)
    return model.state_dict()


def with_adapters(cfg, state, lora, seed_fn):
    """Rank 0, at the start of a LoRA stage: the state plus fresh adapters, created and initialized
    exactly as the DDP path does (same seed, same order), so both paths train the same model."""
    model = cpu_model(cfg, state)
    seed_fn()
    attach_lora(model, lora)
    return model.state_dict()


def fsdp_model(cfg, lora, groups, state, device, frozen, where, compile_blocks=None):
    """A fresh sharded model for one stage: meta model (+ adapters) -> requires_grad and storage
    dtypes -> fully_shard per block, then the root -> weights from rank 0's `state` (None: left
    for a checkpoint to fill). Returns the model and the names of its trained parameters."""
    model = meta_model(cfg, lora)
    names = select_params(model, groups, where) if groups else set()
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        p.data = p.data.to(runtime.storage_dtype(n in names, frozen))
    if compile_blocks:
        compile_blocks(model)             # compile each block, then shard it (torchtitan's order)
    # the mesh on the training device (the default would follow the accelerator even with --device cpu)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)      # the root: embed_tokens, norm, lm_head
    model.to_empty(device=device)         # Llama._apply rebuilds the RoPE table on the device
    if state is not None:
        full = dcp_sd.StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        dcp_sd.set_model_state_dict(model, dict(state), options=full)   # a copy: it swaps in the shards
    return model, names


def full(t):
    """A plain tensor from a DTensor result (a grad norm), on every rank."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def shard_start(rows, world, rank):
    """Index of the first row of `rank`'s shard (rows when the shard is empty): FSDP2 shards dim 0
    in torch.chunk's way, ceil(rows / world) per rank."""
    return min(rows, rank * math.ceil(rows / world))


def first_rows(p, k):
    """The local view of the rows of p (a parameter or its gradient) whose full index is < k; a
    plain tensor is all its rows, from 0."""
    local, start = p, 0
    if isinstance(p, DTensor):
        local, start = p.to_local(), shard_start(p.shape[0], dist.get_world_size(), dist.get_rank())
    return local[:max(0, min(k - start, local.shape[0]))]


class FrozenRows:
    """The first k rows of some parameters (embed and head: the base vocabulary) never move:
    their gradients are zeroed before the norm is taken, and a copy of the rows is put back after
    every optimizer step (AdamW's weight decay would move them too). Plain or sharded parameters."""

    def __init__(self, params, k):
        self.params, self.k = params, k
        self.keep()

    def keep(self):
        """Copy the rows now (again after a checkpoint has filled the weights)."""
        self.kept = [first_rows(p.detach(), self.k).clone() for p in self.params]

    def zero_grads(self):
        for p in self.params:
            first_rows(p.grad, self.k).zero_()

    @torch.no_grad()
    def restore(self):
        for p, kept in zip(self.params, self.kept):
            first_rows(p, self.k).copy_(kept)


# ---------------------------------------------------------------- DCP checkpoints


def dcp_save(model, opt, folder, background_group=None):
    """Every rank writes its shard of the model and of AdamW's state (unless opt is None) into
    folder (DCP fsyncs its files). With a background_group: stage to CPU memory, return a Future,
    write in a background thread whose collectives use that group."""
    sd = {"model": dcp_sd.get_model_state_dict(model)}
    if opt:
        sd["optim"] = dcp_sd.get_optimizer_state_dict(model, opt)
    if background_group:
        return dcp.async_save(sd, checkpoint_id=folder, process_group=background_group)
    dcp.save(sd, checkpoint_id=folder, process_group=runtime.IO)
    return None


def dcp_load(model, opt, folder):
    """Load a DCP checkpoint into this (sharded, any world size) model and optimizer."""
    sd = {"model": dcp_sd.get_model_state_dict(model), "optim": dcp_sd.get_optimizer_state_dict(model, opt)}
    dcp.load(sd, checkpoint_id=folder, process_group=runtime.IO)
    dcp_sd.set_model_state_dict(model, sd["model"])
    dcp_sd.set_optimizer_state_dict(model, opt, sd["optim"])
    opt.zero_grad(set_to_none=True)       # get_optimizer_state_dict's zero-grad warm-up step left grads


def dcp_model_keys(folder):
    """The model's keys in a DCP checkpoint (its metadata file; no tensor is read)."""
    meta = dcp.FileSystemReader(folder).read_metadata()
    return [k[len("model."):] for k in meta.state_dict_metadata if k.startswith("model.")]


def dcp_load_model(model, folder):
    """Only the model part of a DCP checkpoint, into a plain (unsharded) model, in one process:
    the --export command (AdamW's moments, twice the weights, are never read)."""
    sd = {"model": model.state_dict()}
    dcp.load(sd, checkpoint_id=folder, no_dist=True)
    model.load_state_dict(sd["model"], strict=True)

"""The two ways train.py spreads a model over the ranks, behind one interface.

train.py asks its strategy to build each stage's model, whether this micro-step syncs its
gradients, to merge LoRA, to save and restore checkpoints, and for the model to export; it
never asks which one it holds. `Replicas`: a whole model per rank (DDP under torchrun, or one
process); rank 0 writes model.pt + optim.pt (keyed by parameter name). `Shards` (--fsdp):
FSDP2 shards, rebuilt at each stage boundary from the full state rank 0 holds on its CPU
(`handoff`); DCP checkpoints, written by every rank. Each resumes the other's checkpoints, at
any world size with the same global batch. Nothing here knows the Trainer, and both run on CPU
under torchrun with gloo (tests/test_fsdp.py, tests/test_ddp_accum.py).

    python -c "from training import strategy; help(strategy.Replicas)"
"""
import contextlib
import functools
import os
import time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint.state_dict as dcp_sd

from lora import attach_lora, has_lora, merge_lora
from model import Llama
from recipe import select_params
from support.cli import UserError
from training import checkpoint, parallel, runtime
from training.plan import empty_model


def make(env, sharded, reduce="every", async_ckpt=False):
    """The strategy for this run: Shards with --fsdp, else Replicas."""
    return Shards(env, reduce, async_ckpt) if sharded else Replicas(env)


class Replicas:
    """A full replica per rank: DDP under torchrun (gradients all-reduced on the last micro-step
    of an accumulation), or plain training in one process."""
    lockstep_eval = False     # every rank may run its own number of eval forwards

    def __init__(self, env):
        self.env = env
        self.model = None     # the whole model on this rank's device, kept across stages
        self.frozen = None    # the dtype frozen weights are stored in (runtime.weight_dtypes)
        self.wrapped = None   # what the forward calls: the stage's DDP wrapper, or the model

    def load_base(self, init_from, cfg, vocab_multiple, weights=True):
        """The model to train, on this device, read in the base's own dtype (each stage then stores
        it: runtime.storage_dtypes). weights=False: a checkpoint fills every weight
        (restore_weights), so none is read here."""
        dtype, self.frozen = runtime.weight_dtypes(cfg, self.env.mixed)
        if weights:
            self.model = Llama.from_pretrained(init_from, dtype=dtype, device=self.env.device,
                                               vocab_multiple=vocab_multiple)
        else:
            cfg.vocab_multiple = vocab_multiple
            self.model = empty_model(cfg, self.env.device, dtype)
        self.env.set_checkpointing(self.model)

    def stage_model(self, stage, where, seed_adapters):
        """Stage set-up on the full model: adapters (added once), storage dtypes, requires_grad,
        compiled blocks, then a fresh DDP wrapper: changing requires_grad under an existing one
        fails with 'Expected to have finished reduction'. Returns (model, wrapped, trained names)."""
        model = self.model
        self.wrapped = None             # the old wrapper goes before the new one is built
        if stage.lora and not has_lora(model):
            seed_adapters()
            attach_lora(model, stage.lora)
        names = select_params(model, stage.train, where)
        runtime.storage_dtypes(model, names, self.frozen)
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        if self.env.compile:
            runtime.compile_blocks(model)   # in place, before the DDP wrapper: compile, then wrap
        self.wrapped = (parallel.wrap_ddp(model, self.env.device, self.env.local_rank)
                        if self.env.distributed else model)
        return model, self.wrapped, names

    def sync(self, last):
        """Accumulate locally on all but the last micro-step (DDP's no_sync)."""
        if self.env.distributed and not last:
            return self.wrapped.no_sync()
        return contextlib.nullcontext()

    def merged(self, model, lora):
        """At a LoRA stage's end: the adapters folded into the weights, in place; the model to score."""
        merge_lora(model)
        return model

    def end_stage(self, model, lora):
        """Nothing to hand over: the next stage trains the same replica."""

    def save(self, model, opt, ckdir, name, state, keep):
        """Rank 0 writes model.pt + optim.pt (the other ranks never build the state dicts)."""
        def save():
            # AdamW's state keyed by parameter name, as DCP keys it: either strategy can load it
            optim = dcp_sd.get_optimizer_state_dict(model, opt) if opt else {}
            return checkpoint.save(ckdir, name, model.state_dict(), optim, state, keep)
        wrote = parallel.rank0(save, self.env.distributed)     # the others wait for it there
        if wrote:
            self.env.log(f"wrote {name}: {wrote[0] / 1e9:.2f} GB in {wrote[1]:.1f} s")

    def poll(self):
        """Nothing runs in the background."""
    finish = poll

    def restore_weights(self, ck, lora, stage_end):
        """The checkpoint's weights into the replica, in the dtypes they were saved in (with its
        adapters when it has them). An --fsdp checkpoint: read whole at a stage's end (adapters
        merged), else loaded with the optimizer (restore_optimizer)."""
        if checkpoint.load_state(ck).get("format") != "dcp":
            sd = checkpoint.load_tensors(ck, "model.pt")
        elif stage_end:
            sd = checkpoint.load_model(ck).state_dict()
        else:
            return
        if has_lora(sd):
            attach_lora(self.model, lora)
        checkpoint.load_exact(self.model, sd)

    def restore_optimizer(self, model, opt, ck):
        if checkpoint.load_state(ck).get("format") == "dcp":
            parallel.dcp_load(model, opt, ck)        # every rank reads the whole of each tensor
        else:
            dcp_sd.set_optimizer_state_dict(model, opt, checkpoint.load_tensors(ck, "optim.pt"))

    def final_model(self, model):
        """The model export writes (rank 0)."""
        return model

    def close(self):
        self.wrapped = None


class Shards:
    """FSDP2 (`--fsdp`): each rank holds 1/world of the weights, gradients and AdamW state."""
    lockstep_eval = True      # FSDP all-gathers inside each forward: every rank runs as many

    def __init__(self, env, reduce="every", async_ckpt=False):
        if not env.distributed:
            raise UserError("--fsdp needs a process group: launch with torchrun "
                            "(e.g. torchrun --standalone --nproc_per_node=1 train.py --fsdp ...)")
        self.env, self.reduce, self.async_ckpt = env, reduce, async_ckpt
        self.cfg = None           # the model's config (every sharded model is built from it)
        self.frozen = None        # the dtype frozen weights are stored in (runtime.weight_dtypes)
        self.model = None         # this stage's sharded model
        self.handoff = None       # rank 0's full CPU state between two stages ({} on the others)
        self.pending = None       # a checkpoint still being written: (future, ckdir, name, state, keep, t0)
        # a background write's collectives need a group no other thread uses (not even the I/O group)
        self.ckpt_pg = runtime.new_io_group() if async_ckpt else None

    def load_base(self, init_from, cfg, vocab_multiple, weights=True):
        """No rank holds a full model on its GPU: rank 0 reads the weights on the CPU (unless a
        checkpoint fills them), and each stage's set-up shards them."""
        self.cfg = cfg
        cfg.vocab_multiple = vocab_multiple
        dtype, self.frozen = runtime.weight_dtypes(cfg, self.env.mixed)

        def read():
            return Llama.from_pretrained(init_from, dtype=dtype, vocab_multiple=vocab_multiple).state_dict()
        if weights:
            self.handoff = parallel.rank0(read, True) or {}

    def stage_model(self, stage, where, seed_adapters):
        """A fresh sharded model for the stage, from rank 0's `handoff` (with fresh adapters added
        there for a LoRA stage, seeded as Replicas seeds them); None: a checkpoint fills it."""
        state, self.handoff = self.handoff, None
        if state is not None and stage.lora:
            add = functools.partial(parallel.with_adapters, self.cfg, state, stage.lora, seed_adapters)
            state = parallel.rank0(add, True) or {}
        compile_blocks = runtime.compile_blocks if self.env.compile else None
        model, names = parallel.fsdp_model(self.cfg, stage.lora, stage.train, state, self.env.device,
                                           self.frozen, where, compile_blocks)
        self.env.set_checkpointing(model)
        self.model = model
        return model, model, names

    def sync(self, last):
        """Reduce-scatter after every micro-step (--fsdp-reduce every: gradients stay sharded) or
        only after the last (FSDP2 holds the unsharded gradients in between)."""
        self.model.set_requires_gradient_sync(last or self.reduce == "every")
        return contextlib.nullcontext()

    def gathered(self, model, lora):
        """Rank 0's full state of the stage's model on its CPU, adapters merged there in fp32 (every
        rank takes part in the gather; the others get {})."""
        full = dcp_sd.get_model_state_dict(model, options=dcp_sd.StateDictOptions(full_state_dict=True,
                                                                                   cpu_offload=True))
        return parallel.rank0(functools.partial(parallel.merged, self.cfg, full, lora), True) or {}

    def merged(self, model, lora):
        """At a LoRA stage's end: merged on rank 0's gathered copy (the next stage starts from it);
        returns a sharded copy of it to score."""
        self.handoff = self.gathered(model, lora)
        copy, _ = parallel.fsdp_model(self.cfg, None, None, self.handoff, self.env.device, self.frozen, "")
        return copy

    def end_stage(self, model, lora):
        """Gather the stage's model for the next one (a LoRA stage already did, when it merged),
        and let go of it: the next stage's is built once it is freed."""
        if self.handoff is None:
            self.handoff = self.gathered(model, lora)
        self.model = None

    def save(self, model, opt, ckdir, name, state, keep):
        """Every rank writes its shards into step-N.tmp (in the background with --async-ckpt);
        rank 0 renames it once all are done."""
        self.finish()
        t0 = time.time()
        parallel.rank0(functools.partial(checkpoint.begin, ckdir, name), True)   # the empty .tmp first
        fut = parallel.dcp_save(model, opt, os.path.join(ckdir, name + ".tmp"), self.ckpt_pg)
        self.pending = (fut, ckdir, name, {**state, "format": "dcp"}, keep, t0)
        if not self.async_ckpt:
            self.finish()

    def poll(self):
        """--async-ckpt: as soon as every rank's background write is done, make it a checkpoint
        (so a crash later loses no more than --ckpt-every steps)."""
        if self.pending is None or self.pending[0] is None:
            return
        done = torch.tensor([1.0 if self.pending[0].done() else 0.0], device=self.env.device)
        dist.all_reduce(done, op=dist.ReduceOp.MIN)
        if done.item():
            self.finish()

    def finish(self):
        """Wait for the pending write on every rank, then rank 0 makes it a checkpoint."""
        if self.pending is None:
            return
        fut, ckdir, name, state, keep, t0 = self.pending
        self.pending = None
        if fut is not None:
            fut.result()
        dist.barrier(group=runtime.IO)     # the slowest rank's write may take long
        size = parallel.rank0(functools.partial(checkpoint.finish, ckdir, name, state, keep), True)
        self.env.log(f"wrote {name}: {(size or 0) / 1e9:.2f} GB in {time.time() - t0:.1f} s"
                     + (" (in the background)" if fut is not None else ""))

    def restore_weights(self, ck, lora, stage_end):
        """Mid-stage, the shards load with the optimizer (restore_optimizer). At a stage's end,
        rank 0 reads the whole checkpoint (any world size) and merges its adapters: the handoff."""
        if stage_end:
            def read():
                return checkpoint.load_model(ck).state_dict()
            self.handoff = parallel.rank0(read, True) or {}

    def restore_optimizer(self, model, opt, ck):
        """The shards of the weights and of AdamW's state: from DCP, or from rank 0's read of a
        replicated checkpoint, broadcast into the shards."""
        if checkpoint.load_state(ck).get("format") == "dcp":
            parallel.dcp_load(model, opt, ck)
            return
        def read():
            return checkpoint.load_tensors(ck, "model.pt"), checkpoint.load_tensors(ck, "optim.pt")
        msd, osd = parallel.rank0(read, True) or ({}, {})
        full = dcp_sd.StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        dcp_sd.set_model_state_dict(model, msd, options=full)
        dcp_sd.set_optimizer_state_dict(model, opt, osd, options=full)

    def final_model(self, model):
        """Rank 0's CPU model built from the gathered state (no GPU holds the whole model)."""
        return parallel.cpu_model(self.cfg, self.handoff)

    def close(self):
        self.model = None

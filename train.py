"""Multistage continual pretraining (RedWhale's recipe), one process or many under torchrun.

The default recipe never trains everything at once, to fit memory: (1) embeddings + LM head,
(2) odd layers (0-based indices 1, 3, 5, ...), (3) even layers (0, 2, 4, ...), (4) LoRA r=32
alpha=32 dropout=0.1 on every attention and MLP projection with embeddings + head trainable.
The LoRA is merged into the weights at the end of its stage. A recipe is JSON or TOML (all
keys in recipe.py's docstring; the data format in corpus/shards.py's):

    {"seq_len": 2048, "micro_batch": 1, "old_vocab_size": "auto",
     "stages": [{"name": "embed", "train": ["embed", "head"], "tokens": 2.5e9, "lr": 2e-4,
                 "warmup": 0.01, "schedule": "cosine", "batch_tokens": 1048576,
                 "freeze_old_rows": true}, ...]}

Each stage sets requires_grad, then builds fresh compiled blocks, a DDP wrapper and AdamW (fused;
no weight decay on norms and biases). Gradient accumulation syncs only on the last micro-step;
the loss is normalized by the target tokens of the whole global batch. How the model runs
(training/runtime.py) is a flag each, and every choice runs on CPU too: --dtype bf16 (autocast; trained
weights fp32, frozen ones stored bf16; the default on CUDA), --sdpa flash (the default, on both
devices), --compile (per decoder block; the default on CUDA), --activation-checkpointing.
Ranks hold a full replica each (DDP) or a shard (--fsdp, FSDP2: training/parallel.py). Checkpoints
(training/checkpoint.py) are atomic, fsynced, and chosen by rank 0 for every rank. Commands:

    python train.py --init-from EXPANDED_HF_DIR --data SHARD_DIR --out runs/x      # one process
    torchrun --standalone --nproc_per_node=8 train.py --init-from DIR --data DIR --out runs/x
    torchrun --standalone --nproc_per_node=8 train.py --fsdp ...   # sharded (FSDP2, training/parallel.py)
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST0:29500 train.py ...  # and --node_rank=1 on the second node; --out on
                                                  # shared storage (global rank 0 writes it)
    ... --resume auto                  # continue from the newest checkpoint in --out
    ... --max-steps 1000               # checkpoint and stop after 1000 steps of this invocation
    python train.py --plan --init-from DIR_OR_CONFIG_JSON [--recipe FILE] [--gpu-mem-gb 80]
    python train.py --export runs/x   # merge LoRA, write runs/x/final from the last checkpoint
    python train.py --print-recipe > my.json     # the default recipe as a file to edit
    python train.py ... --steps-per-stage 20 --batch-size 2 --seq-len 256   # smoke test

Outputs in --out: log.jsonl (one JSON object per step: stage, step, tokens, loss, eval_loss,
lr, grad_norm, tokens_per_s, mfu, peak_mem_gb; at the end of a LoRA stage also the held-out loss
right before and after the merge), checkpoints/step-NNNNNNNN/ (the last --keep-checkpoints),
final/ (an HF folder with the tokenizer that transformers loads, in the base's torch_dtype).
Exact resume, in fp32 and bf16: the learning rate, the data order and the RNG are pure functions
of (seed, stage, step, micro-batch), and a checkpoint holds model (in its training dtypes) + optimizer +
position, so a resumed run reproduces the losses of an uninterrupted one bit for bit. --resume
PATH --out NEW continues another run's checkpoint into NEW and never writes the source.
SIGTERM/SIGINT checkpoint and exit cleanly (at 10B scale give torchrun --shutdown-timeout 900:
training/checkpoint.py's docstring says why).
"""
import argparse
import contextlib
import datetime
import functools
import gc
import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict

import torch
import torch.distributed as dist

from config import LlamaConfig
from corpus.shards import TokenShards
from lora import attach_lora, has_lora, merge_lora
from model import Llama, check_model_folder
from recipe import load_recipe, lr_at, old_rows, resolve, select_params, step_seed
from support import cli, outputs
from training import checkpoint, parallel, plan, runtime

# ---------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, args, recipe):
        self.args, self.recipe = args, recipe
        self.ddp = "RANK" in os.environ      # under torchrun: a process group (DDP, or FSDP2 with --fsdp)
        self.fsdp = args.fsdp
        if self.fsdp and not self.ddp:
            raise SystemExit("error: --fsdp needs a process group: launch with torchrun "
                             "(e.g. torchrun --standalone --nproc_per_node=1 train.py --fsdp ...)")
        if args.async_ckpt and not self.fsdp:
            raise SystemExit("error: --async-ckpt needs --fsdp (sharded DCP checkpoints)")
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = runtime.pick_device(args.device, self.ddp, self.local_rank)
        cuda = self.device.type == "cuda"
        if self.ddp:
            # the timeout covers the others waiting while checkpoints are written (tens of GB at 10B)
            dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=args.dist_timeout))
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if not cuda:
                runtime.set_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        else:
            self.rank, self.world = 0, 1
        self.master = self.rank == 0
        self.dtype = runtime.compute_dtype(args.dtype, self.device)
        self.mixed = self.dtype == "bf16"   # frozen weights stored in bf16, trained ones in fp32
        self.compile = args.compile if args.compile is not None else cuda
        self.peak = args.peak_tflops or (runtime.peak_tflops(torch.cuda.get_device_name(self.device)) if cuda else None)
        self.plan = resolve(recipe, args, self.world)
        self.out = args.out
        self.ckdir = os.path.join(args.out, "checkpoints")   # a run only ever writes its own --out
        self.stop_signal = None
        self.pending = None      # an asynchronous checkpoint still being written (--async-ckpt)
        self.handoff = None      # FSDP: rank 0's full state between two stages
        # async checkpoints talk over a process group of their own, apart from training's collectives
        self.ckpt_pg = dist.new_group(backend="gloo") if args.async_ckpt else None

    def log(self, msg):
        if self.master:
            cli.write(msg)              # prints above a progress bar instead of through it

    @contextlib.contextmanager
    def compute(self):
        """Autocast and the attention backend, built fresh each time they are entered."""
        with runtime.autocast(self.device, self.dtype), runtime.attention(self.args.sdpa):
            yield

    # ---- model and stage set-up

    def build_model(self, init_from):
        vm = self.args.vocab_multiple or (64 if self.device.type == "cuda" else 1)
        self.vocab_multiple = vm
        model = Llama.from_pretrained(init_from, dtype=torch.bfloat16 if self.mixed else torch.float32,
                                      device=self.device, vocab_multiple=vm)
        model.gradient_checkpointing = self.args.activation_checkpointing
        return model

    def setup_stage(self, model, s, state=None):
        """requires_grad, dtypes, then fresh compiled blocks + DDP wrapper + optimizer: changing
        requires_grad under an existing DDP wrapper fails with 'Expected to have finished
        reduction', and the optimizer must only hold this stage's parameters. With --fsdp a fresh
        sharded model is built from rank 0's `state` (training/parallel.py; None: a checkpoint fills it)."""
        st = self.recipe.stages[s]
        where = f"{self.args.recipe or 'default recipe'}: stage {s + 1} ({st.name})"
        if self.fsdp:
            model, names = self.shard_stage_model(s, state, where)
        else:
            names = self.prepare_replica(model, s, where)
        params = [(n, p) for n, p in model.named_parameters() if n in names]
        self.set_frozen_rows(st, params, where)
        self.params = [p for _, p in params]
        self.opt = self.build_optimizer(st, params)
        self.fwd = parallel.wrap_ddp(model, self.device, self.local_rank) if self.ddp and not self.fsdp else model
        if self.device.type == "cuda":      # peak_mem_gb in the log is per stage
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        n_train = sum(p.numel() for p in self.params)
        n_all = sum(p.numel() for p in model.parameters())
        self.log(f"stage {s + 1}/{len(self.plan)} {st.name}: training {n_train:,} of {n_all:,} parameters "
                 f"({100 * n_train / n_all:.2f}%), {self.plan[s]['steps']} steps of {self.plan[s]['batch_tokens']:,} "
                 f"tokens (B={self.plan[s]['B']} T={self.plan[s]['T']} G={self.plan[s]['G']} x {self.world} ranks"
                 f"{', FSDP2' if self.fsdp else ''})")
        return model

    def seed_adapters(self, s):
        """Seed the RNG that initializes stage s's LoRA adapters: the same adapters on every rank,
        and after a resume."""
        torch.manual_seed(step_seed(self.args.seed, s, -1, 0))

    def shard_stage_model(self, s, state, where):
        """--fsdp: stage s's sharded model, built from rank 0's full `state` (with fresh adapters
        added there for a LoRA stage), and the names of the parameters it trains."""
        st = self.recipe.stages[s]
        if state is not None and st.lora:
            seed = functools.partial(self.seed_adapters, s)
            state = parallel.rank0(functools.partial(parallel.with_adapters, self.cfg, state, st.lora, seed),
                                   True) or {}
        model, names = parallel.fsdp_model(self.cfg, st.lora, st.train, state, self.device, self.mixed, where,
                                           runtime.compile_blocks if self.compile else None)
        model.gradient_checkpointing = self.args.activation_checkpointing
        return model, names

    def prepare_replica(self, model, s, where):
        """DDP or one process: stage s's adapters (added once), storage dtypes, requires_grad and
        compiled blocks on the full model; returns the names of the parameters it trains."""
        st = self.recipe.stages[s]
        if st.lora and not has_lora(model):
            self.seed_adapters(s)
            attach_lora(model, st.lora)
        names = select_params(model, st.train, where)
        runtime.storage_dtypes(model, names, self.mixed)
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        if self.compile:
            runtime.compile_blocks(model)   # in place, before the DDP wrapper: compile, then wrap
        return names

    def set_frozen_rows(self, st, params, where):
        """freeze_old_rows: note the embed / head rows of the base vocabulary, and keep a copy of them."""
        self.frozen_rows = []
        if st.freeze_old_rows:
            k = old_rows(self.recipe, self.args.init_from)
            if not k:
                raise SystemExit(f"error: {where}: freeze_old_rows needs old_vocab_size (--freeze-old-rows N)")
            self.frozen_rows = [(p, k) for n, p in params if n in ("model.embed_tokens.weight", "lm_head.weight")]
        self.keep_rows()

    def build_optimizer(self, st, params):
        """AdamW over this stage's parameters only, with no weight decay on norms and biases."""
        decay = [p for n, p in params if p.dim() >= 2]
        no_decay = [p for n, p in params if p.dim() < 2]   # norms and biases
        groups = [{"params": decay, "weight_decay": st.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=st.lr, betas=tuple(self.recipe.betas),
                                 eps=1e-8, fused=self.device.type in ("cuda", "cpu"))   # one kernel, not a loop

    def keep_rows(self):
        """A copy of the frozen old rows of embed / head (weight decay would move them too), put back
        after every step; taken again when a checkpoint has filled the weights."""
        self.kept_rows = [parallel.first_rows(p.detach(), k).clone() for p, k in self.frozen_rows]

    def stage_end_state(self, model, s):
        """FSDP: gather the stage's sharded model to rank 0's CPU and merge its LoRA adapters there
        (fp32). The next stage's sharded model, the eval after the merge and the export start from it."""
        full = parallel.gather_state(model)
        return parallel.rank0(functools.partial(parallel.merged, self.cfg, full, self.recipe.stages[s].lora),
                              True) or {}

    # ---- checkpoints (training/checkpoint.py: rank 0 writes, atomically and durably)

    def save_checkpoint(self, model, s, step, tokens, loss):
        name = f"step-{self.global_step(s, step):08d}"
        state = {"stage": s, "step": step, "tokens": tokens, "loss": loss, "seed": self.args.seed,
                 "init_from": os.path.abspath(self.args.init_from), "vocab_multiple": self.vocab_multiple,
                 "plan": self.plan, "recipe": asdict(self.recipe), "world_size": self.world}
        if self.fsdp:       # every rank writes its shards into step-N.tmp; rank 0 renames it when all are done
            self.finish_checkpoint()
            t0 = time.time()
            # the empty .tmp, before any rank writes
            parallel.rank0(functools.partial(checkpoint.begin, self.ckdir, name), True)
            fut = parallel.dcp_save(model, self.opt, os.path.join(self.ckdir, name + ".tmp"), self.ckpt_pg,
                                    self.args.async_ckpt)
            self.pending = (fut, name, {**state, "format": "dcp"}, t0)
            if not self.args.async_ckpt:
                self.finish_checkpoint()
            return name

        def save():         # on rank 0 alone: the other ranks never build the state dicts
            return checkpoint.save(self.ckdir, name, model.state_dict(), self.opt.state_dict(), state,
                                   self.args.keep_checkpoints)
        wrote = parallel.rank0(save, self.ddp)
        if wrote:
            self.log(f"wrote {name}: {wrote[0] / 1e9:.2f} GB in {wrote[1]:.1f} s")
        if self.ddp:
            dist.barrier()
        return name

    def poll_checkpoint(self):
        """--async-ckpt: as soon as every rank's background write is done, make it a checkpoint
        (so a crash later loses no more than --ckpt-every steps)."""
        if self.pending is None or self.pending[0] is None:
            return
        done = torch.tensor([1.0 if self.pending[0].done() else 0.0], device=self.device)
        dist.all_reduce(done, op=dist.ReduceOp.MIN)
        if done.item():
            self.finish_checkpoint()

    def finish_checkpoint(self):
        """Wait for the pending DCP write on every rank, then rank 0 makes it a checkpoint."""
        if self.pending is None:
            return
        fut, name, state, t0 = self.pending
        self.pending = None
        if fut is not None:
            fut.result()
        dist.barrier()
        size = parallel.rank0(functools.partial(checkpoint.finish, self.ckdir, name, state,
                                                self.args.keep_checkpoints), True)
        self.log(f"wrote {name}: {(size or 0) / 1e9:.2f} GB in {time.time() - t0:.1f} s"
                 + (" (in the background)" if fut is not None else ""))

    def global_step(self, s, step):
        return sum(p["steps"] for p in self.plan[:s]) + step

    def grad_norm(self):
        """Clip to recipe.grad_clip (0: off, nanoGPT's convention) and return the norm before clipping."""
        if self.recipe.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        return float(parallel.full(norm))      # FSDP: a DTensor, reduced over the shards

    # ---- the loop

    def train_stage(self, model, data, s, start, tokens, logf, bar):
        """Steps start.. of stage s, each: the learning rate, one optimizer step, the log line, the
        evals, a checkpoint when due. Returns (tokens so far, whether a signal or --max-steps stopped it)."""
        st, p = self.recipe.stages[s], self.plan[s]
        S = p["B"] * p["G"] * self.world                     # sequences per optimizer step
        # the sample order runs on across stages and depends only on the global batch, not on W
        offset = sum(q["steps"] * (q["batch_tokens"] // q["T"]) for q in self.plan[:s])
        flops_tok = plan.flops_per_token(model, p["T"])
        last_ck = None
        for step in range(start, p["steps"]):
            t0 = time.time()
            lr = lr_at(st, p, step)
            for g in self.opt.param_groups:
                g["lr"] = lr
            loss, gn, stop = self.train_step(model, data, s, step, offset + step * S)
            tokens += p["batch_tokens"]
            self.poll_checkpoint()
            dt = time.time() - t0
            rec = {"stage": s + 1, "stage_name": st.name, "step": step + 1,
                   "global_step": self.global_step(s, step + 1), "tokens": tokens, "loss": loss, "lr": lr,
                   "grad_norm": gn, "tokens_per_s": p["batch_tokens"] / dt}
            self.add_mfu_and_memory(rec, flops_tok)
            done = step + 1 == p["steps"]
            self.eval_held_out(model, data, s, step, done, rec)
            if done and st.lora:
                self.merge_stage_lora(model, data, s, rec)
            if self.master:
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                bar.update(1)
                bar.set_postfix(stage=s + 1, loss=f"{loss:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}", lr=f"{lr:.2e}")
            self.steps_run += 1
            interrupted = stop or (self.args.max_steps and self.steps_run >= self.args.max_steps)
            if self.args.no_save:
                pass
            elif done or interrupted or (self.args.ckpt_every and (step + 1) % self.args.ckpt_every == 0):
                last_ck = self.save_checkpoint(model, s, step + 1, tokens, loss)
            if interrupted and not (done and s + 1 == len(self.plan)):
                why = f"signal {self.stop_signal}" if self.stop_signal else f"--max-steps {self.args.max_steps}"
                self.log(f"stopped by {why} at stage {s + 1} step {step + 1}; wrote {last_ck}; "
                         "continue with --resume auto" + (f" (note: {checkpoint.SIGTERM_ADVICE})"
                                                          if self.stop_signal else ""))
                return tokens, True
        return tokens, False

    def train_step(self, model, data, s, step, first):
        """One optimizer step of stage s on the global batch that starts at sample `first`: G
        micro-steps (gradients synced on the last), the clip, the update. Returns (mean loss per
        target token, grad norm before clipping, whether any rank got a stop signal)."""
        B, G, W = self.plan[s]["B"], self.plan[s]["G"], self.world
        micro = [data.batch(first + m * B * W + self.rank * B, B) for m in range(G)]
        # normalize by the number of target tokens of the whole global batch
        n_tok = torch.tensor(float(sum(int((y != -100).sum()) for _, y in micro)), device=self.device)
        if self.ddp:
            dist.all_reduce(n_tok)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        for m, (x, y) in enumerate(micro):      # x, y: (B, T)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            # LoRA dropout masks: seeded by the micro-batch's place in the global batch, so they
            # follow the sequences whatever the number of ranks (a resume on other world sizes)
            torch.manual_seed(step_seed(self.args.seed, s, step, m * W + self.rank))
            sync = contextlib.nullcontext()
            if self.fsdp:      # reduce-scatter after every micro-step (sharded grads) or only the last
                parallel.set_gradient_sync(model, m == G - 1 or self.args.fsdp_reduce == "every")
            elif self.ddp and m < G - 1:
                sync = self.fwd.no_sync()
            with sync:
                with self.compute():
                    _, loss = self.fwd(x, y, reduction="sum")
                # DDP averages gradients over W ranks: scale by W so the result is sum / n_tok
                (loss * (W / n_tok)).backward()
            loss_sum += loss.detach().float()
        # one all-reduce for the loss and the stop flag: every rank stops after the same step
        stop = torch.tensor([loss_sum.item(), 1.0 if self.stop_signal else 0.0], device=self.device,
                            dtype=torch.float64)
        if self.ddp:
            dist.all_reduce(stop)
        loss_val = float(stop[0]) / float(n_tok)
        for prm, k in self.frozen_rows:
            parallel.first_rows(prm.grad, k).zero_()
        gn = self.grad_norm()
        self.check_finite(loss_val, gn, s, step)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for (prm, k), kept in zip(self.frozen_rows, self.kept_rows):
                parallel.first_rows(prm, k).copy_(kept)
        return loss_val, gn, bool(stop[1])

    def check_finite(self, loss, gn, s, step):
        """Stop before a non-finite loss or gradient reaches the weights, naming the last good checkpoint."""
        if math.isfinite(loss) and math.isfinite(gn):
            return
        if self.fsdp:
            self.finish_checkpoint()        # a background write in flight is still a good one
        kept = checkpoint.list_checkpoints(self.ckdir)
        raise SystemExit(f"error: non-finite loss {loss} / grad norm {gn} at stage {s + 1} "
                         f"({self.recipe.stages[s].name}) step {step + 1}: stopped without updating the weights; "
                         f"last good checkpoint: {kept[-1] if kept else 'none'}")

    def add_mfu_and_memory(self, rec, flops_tok):
        """A step's log record gets its MFU (when the peak TFLOPS are known) and peak memory."""
        if self.peak:
            rec["mfu"] = flops_tok * rec["tokens_per_s"] / (self.peak * 1e12 * self.world)
        if self.device.type == "cuda":
            rec["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        else:
            rec["peak_mem_gb"] = runtime.cpu_peak_bytes() / 1e9

    def eval_held_out(self, model, data, s, step, done, rec):
        """Every --eval-every steps and at the stage's end: the held-out losses into the step's record."""
        B, every = self.plan[s]["B"], self.args.eval_every
        due = done or (every and (step + 1) % every == 0)
        if every and due:
            rec["eval_loss"] = self.evaluate(model, data, B)
            rec["eval_bpc"] = bits_per_char(rec["eval_loss"], data)
        if self.eval_sets and due:
            for name, held_out in self.eval_sets:       # e.g. Korean and English kept apart
                rec[f"eval_{name}_loss"] = loss = self.evaluate(model, held_out, B)
                rec[f"eval_{name}_bpc"] = bits_per_char(loss, held_out)

    def merge_stage_lora(self, model, data, s, rec):
        """At a LoRA stage's end, fold the adapters into fp32 weights (lora.py): the next stage and the
        checkpoint see plain HF weights. The held-out loss either side of the merge shows nothing was lost."""
        B = self.plan[s]["B"]
        before = rec["eval_loss"] if "eval_loss" in rec else self.evaluate(model, data, B)
        rec["eval_loss_before_merge"] = before
        if self.fsdp:        # merged on rank 0's gathered copy; scored by a sharded copy of that
            self.handoff = self.stage_end_state(model, s)
            merged, _ = parallel.fsdp_model(self.cfg, None, None, self.handoff, self.device, self.mixed, "")
            rec["eval_loss_after_merge"] = self.evaluate(merged, data, B)
            del merged
        else:
            merge_lora(model)
            rec["eval_loss_after_merge"] = self.evaluate(model, data, B)
        if rec["eval_loss_after_merge"] is not None:
            self.log(f"merged LoRA: held-out loss {rec['eval_loss_before_merge']:.4f} before, "
                     f"{rec['eval_loss_after_merge']:.4f} after")

    def evaluate(self, model, data, B):
        return evaluate(model, data, B, self.args.eval_batches, self.compute, self.rank, self.world,
                        lockstep=self.fsdp)

    def run(self):
        # SIGTERM (a scheduler's preemption, torchrun forwarding it) or Ctrl-C: finish the step,
        # write a checkpoint, exit cleanly. The handlers are put back afterwards.
        old = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._run()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            self.close()

    def on_signal(self, num, frame):
        """The handler: only note the signal; the step in progress finishes, then train_stage stops."""
        self.stop_signal = signal.Signals(num).name

    def close(self):
        """Tear down in an order that cannot deadlock: DDP's reducer goes first. Were it to hold the
        last reference to the process group, its destructor would join gloo's worker threads while
        holding the GIL, and a worker freeing a Python tensor waits for the GIL: a hang at exit."""
        self.fwd = self.opt = self.params = None
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()

    def _run(self):
        """Set up (or resume), train the stages, export final/."""
        args = self.args
        ck, state = self.resume_point()
        cfg = self.base_config()
        model = self.load_base(cfg, state)
        data = TokenShards(args.data, self.plan[0]["T"], cfg.vocab_size, args.val_tokens, args.seed)
        self.eval_sets = [(name, TokenShards(folder, self.plan[0]["T"], cfg.vocab_size, 0).evaluate_all())
                          for name, folder in eval_specs(args.eval_data)]
        if any(p["T"] != self.plan[0]["T"] for p in self.plan):
            raise SystemExit("error: all stages must use the same seq-len")
        model, s, start, tokens = self.restore(model, ck, state)
        if self.master:             # the first thing written, after every check above passed
            self.prepare_out(ck, state)
        stopped = self.run_stages(model, data, ck, s, start, tokens)
        if not stopped and not args.no_save:
            self.export_final(model)
        if self.ddp:
            dist.barrier()

    def resume_point(self):
        """(checkpoint folder, its state) to resume from, or (None, None). A checkpoint must fit this
        run (--fsdp or not, the same plan); it gives --init-from (unless given) and --vocab-multiple."""
        args = self.args
        # rank 0's view decides for every rank (a run --force replaces resumes nothing of it)
        ck = checkpoint.choose_resume(args.resume, self.ckdir, self.ddp, args.replace_out)
        state = checkpoint.load_state(ck) if ck else None
        if state and state.get("format", "torch") != ("dcp" if self.fsdp else "torch"):
            raise SystemExit(f"error: {ck} was written {'with' if state.get('format') == 'dcp' else 'without'} "
                             f"--fsdp; resume it {'with' if state.get('format') == 'dcp' else 'without'} --fsdp")
        if state:
            args.init_from = args.init_from or state["init_from"]
            if [_key(q) for q in state["plan"]] != [_key(q) for q in self.plan]:
                raise SystemExit(f"error: {ck}: it was written with a different plan (recipe/flags): "
                                 f"{state['plan']} vs now {self.plan}; resume with the same recipe and flags")
            args.vocab_multiple = state["vocab_multiple"]
        return ck, state

    def base_config(self):
        """The --init-from model's config, after the checks that need no weights."""
        args = self.args
        if not args.init_from:
            raise SystemExit("error: give --init-from HF_DIR (or --resume auto with existing checkpoints)")
        check_model_folder(args.init_from, "--init-from")
        cfg = LlamaConfig.from_pretrained(args.init_from)
        check_seq_len(self.plan[0]["T"], cfg, args.init_from)
        # an attention backend that cannot run here is one line, not a crash after loading 20 GB
        runtime.check_attention(args.sdpa, self.device, self.dtype, cfg)
        return cfg

    def load_base(self, cfg, state):
        """The model to train on this device; None with --fsdp, where no GPU holds a full model:
        rank 0 reads the weights on the CPU (unless a checkpoint fills them), stage set-up shards them."""
        if not self.fsdp:
            return self.build_model(self.args.init_from)
        self.vocab_multiple = cfg.vocab_multiple = self.args.vocab_multiple or (64 if self.device.type == "cuda" else 1)
        self.cfg = cfg

        def read_weights():         # on rank 0 alone
            return Llama.from_pretrained(self.args.init_from, dtype=torch.bfloat16 if self.mixed else None,
                                         vocab_multiple=self.vocab_multiple).state_dict()
        if not state:
            self.handoff = parallel.rank0(read_weights, True) or {}
        return None

    def restore(self, model, ck, state):
        """Fill the model (--fsdp: a fresh sharded one, and its optimizer) from checkpoint ck. Returns
        (model, stage, step, tokens) to go on from; (model, 0, 0, 0) on a fresh run."""
        if not state:
            return model, 0, 0, 0
        s, start, tokens = state["stage"], state["step"], state["tokens"]
        if self.fsdp:     # the stage's sharded model and optimizer, filled from the shards (any world size)
            model = self.setup_stage(None, s)
            parallel.dcp_load(model, self.opt, ck)
            self.keep_rows()
            if start == self.plan[s]["steps"]:
                self.handoff = self.stage_end_state(model, s)
        else:
            sd = checkpoint.load_tensors(ck, "model.pt")
            if any("lora_A" in k for k in sd):
                attach_lora(model, self.recipe.stages[s].lora)
            checkpoint.load_exact(model, sd)
            del sd
        if start == self.plan[s]["steps"]:     # written at a stage's end: go on with the next one
            s, start = s + 1, 0
        self.log(f"resumed from {ck}: stage {s + 1} step {start}, {tokens:,} tokens so far")
        return model, s, start, tokens

    def prepare_out(self, ck, state):
        """Rank 0: --out made ready (an earlier run's files removed with --force), then log.jsonl."""
        if self.args.replace_out:            # --force: an earlier run of this project (prepare checked)
            for n in RUN_FILES:
                path = os.path.join(self.out, n)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        os.makedirs(self.ckdir, exist_ok=True)
        if not outputs.ours(self.out):
            outputs.mark(self.out, "train")
        self.start_log(ck, state)

    def run_stages(self, model, data, ck, s, start, tokens):
        """Stage s from step `start`, then every later stage; returns whether a signal or --max-steps
        stopped the run."""
        logf = open(os.path.join(self.out, "log.jsonl"), "a", encoding="utf-8") if self.master else None
        total = sum(p["steps"] for p in self.plan)
        bar = cli.progress(total=total, initial=self.global_step(s, start), disable=not self.master, desc="train",
                           unit="steps")
        self.steps_run, stopped = 0, False
        for i in range(s, len(self.plan)):
            mid = i == s and start > 0                     # resuming inside this stage
            if self.fsdp and not mid:
                model, self.handoff = self.setup_stage(None, i, self.handoff), None
            elif not self.fsdp:
                self.setup_stage(model, i)
                if mid:                                    # the optimizer's moments too
                    self.opt.load_state_dict(checkpoint.load_tensors(ck, "optim.pt"))
            tokens, stopped = self.train_stage(model, data, i, start if i == s else 0, tokens, logf, bar)
            if stopped:
                break
            if self.fsdp and self.handoff is None:         # (a LoRA stage already gathered and merged)
                self.handoff = self.stage_end_state(model, i)
        if self.fsdp:
            self.finish_checkpoint()
        bar.close()
        if self.master:
            logf.close()
        return stopped

    def export_final(self, model):
        """Rank 0 writes final/, an HF folder, from the trained model (--fsdp: from its gathered state)."""
        def export():       # on rank 0 alone: with --fsdp only rank 0 holds the full state
            final = parallel.cpu_model(self.cfg, self.handoff) if self.fsdp else model
            return checkpoint.export(final, self.args.init_from, os.path.join(self.out, "final"),
                                     self.args.export_dtype)
        path = parallel.rank0(export, self.ddp)
        self.log(f"exported {path}")

    def start_log(self, ck, state):
        """log.jsonl of this run: fresh, or (resuming) the lines up to the checkpoint's step, taken
        from this run's log or, for --resume of another run's checkpoint, from that run's log."""
        path = os.path.join(self.out, "log.jsonl")
        if not state:
            if os.path.exists(path):
                os.remove(path)
            return
        src = path if os.path.exists(path) else os.path.join(os.path.dirname(os.path.dirname(ck)), "log.jsonl")
        last = self.global_step(state["stage"], state["step"])
        keep = []
        if os.path.exists(src):       # drop lines of steps after the checkpoint: they will be run again
            with open(src, encoding="utf-8") as f:
                keep = [ln for ln in f if ln.strip() and json.loads(ln)["global_step"] <= last]
        outputs.write_atomic(path, "".join(keep))


@torch.no_grad()
def evaluate(model, data, B, batches, ctx=contextlib.nullcontext, rank=0, world=1, lockstep=False):
    """Mean loss per token over the first batches * B * world held-out windows (all ranks).
    ctx() is entered around each forward (train.py: autocast + the attention backend).
    lockstep: every rank runs the same number of forwards (FSDP all-gathers inside each one),
    a rank past the end scoring a window it then does not count."""
    if not data.val_windows or batches <= 0:
        return None
    model.eval()
    dev = next(model.parameters()).device
    n = min(len(data.val_windows), batches * B * world)
    tot = torch.zeros(2, dtype=torch.float64, device=dev)
    rounds = math.ceil(n / (B * world)) if lockstep else None
    starts = [rank * B + j * B * world for j in range(rounds)] if lockstep else range(rank * B, n, B * world)
    for i in starts:
        ws = data.val_windows[i:min(i + B, n)] if i < n else data.val_windows[:1]
        w = torch.stack([data._window(a, o, "val shard") for a, o in ws])
        x, y = w[:, :-1].to(dev), w[:, 1:].to(dev)
        with ctx():
            _, loss = model(x, y, reduction="sum")
        if i < n:
            tot[0] += loss.double()
            tot[1] += y.numel()
    if world > 1:
        dist.all_reduce(tot)
    model.train()
    return float(tot[0] / tot[1]) if tot[1] else None


def eval_specs(specs):
    """["ko=tokens/", "en=en_tokens/"] -> [("ko", "tokens/"), ...], names checked."""
    out = []
    for spec in specs:
        name, _, folder = spec.partition("=")
        if not (name.isidentifier() and folder):
            raise SystemExit(f"error: --eval-data {spec!r}: give NAME=DIR, NAME a plain word (ko, en, ...)")
        if not os.path.isfile(os.path.join(folder, "meta.json")):
            raise SystemExit(f"error: --eval-data {spec}: {folder} has no meta.json (a data.py tokenize folder)")
        out.append((name, folder))
    return out


def bits_per_char(loss, shards):
    """Mean loss per token (nats) -> bits per character of the evaluated text (None if unknown)."""
    tpc = shards.tokens_per_char()
    return None if loss is None or tpc is None else loss * tpc / math.log(2)


def _key(q):
    # what must match for a resume: the world size may change, the global batch may not
    return q["name"], q["steps"], q["T"], q["batch_tokens"], q["warmup"]


def parser():
    p = argparse.ArgumentParser(description="Multistage continual pretraining (RedWhale).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init-from", help="HF folder of the (expanded) model to start from; for --plan also a config.json")
    p.add_argument("--data", help="folder of data.py token shards (meta.json + id files)")
    p.add_argument("--out", help="run folder: log.jsonl, checkpoints/, final/")
    p.add_argument("--recipe", help="JSON/TOML recipe (default: RedWhale's four stages)")
    p.add_argument("--resume", help="'auto' = newest checkpoint in --out, or a checkpoint folder")
    p.add_argument("--steps-per-stage", type=cli.number(int, lo=1), default=None,
                   help="override every stage's length (smoke tests)")
    p.add_argument("--batch-size", type=cli.number(int, lo=1), default=None,
                   help="sequences per micro-batch per rank (recipe micro_batch)")
    p.add_argument("--seq-len", type=cli.number(int, lo=1), default=None, help="tokens per sequence (recipe seq_len)")
    p.add_argument("--grad-accum", type=cli.number(int, lo=1), default=None,
                   help="micro-batches per step (default: from batch_tokens; 1 with --steps-per-stage)")
    p.add_argument("--freeze-old-rows", default=None,
                   help="N or 'auto' (expand_report.json): train only embedding/head rows >= N in every stage")
    p.add_argument("--seed", type=cli.number(int, lo=0), default=1234)
    p.add_argument("--device", default=None, choices=["cuda", "cpu"],
                   help="default: cuda when available (each torchrun rank takes cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="bf16: autocast with frozen weights in bf16 and trained ones in fp32 (auto: bf16 on CUDA, "
                        "fp32 on CPU)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each decoder block (default: on for CUDA, off on CPU)")
    p.add_argument("--sdpa", default="flash", choices=["flash", "math", "efficient", "auto"],
                   help="attention backend, on CPU and CUDA alike (efficient: CUDA only; auto: torch chooses)")
    p.add_argument("--grad-clip", type=cli.number(float, lo=0), default=None,
                   help="clip the gradient norm (recipe grad_clip; 0: off)")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--fsdp", action="store_true",
                   help="shard weights, grads and AdamW state over the ranks (FSDP2; needs torchrun); default: DDP")
    p.add_argument("--fsdp-reduce", default="every", choices=["every", "last"],
                   help="with --fsdp and accumulation: reduce-scatter gradients after every micro-step (least "
                        "memory) or only the last (less traffic; full fp32 grads of the trained part in between)")
    p.add_argument("--async-ckpt", action="store_true",
                   help="with --fsdp: write checkpoints in the background while training goes on")
    p.add_argument("--vocab-multiple", type=cli.number(int, lo=1), default=None,
                   help="pad embedding rows (default 64 on CUDA, 1 on CPU)")
    p.add_argument("--eval-every", type=cli.number(int, lo=0), default=200,
                   help="eval loss every N steps and at stage ends (0: off)")
    p.add_argument("--eval-data", nargs="+", default=[], metavar="NAME=DIR",
                   help="more held-out sets, each a token-shard folder made with the model's tokenizer (e.g. "
                        "ko=tokens/ en=en_tokens/): its val split, or all of it; logged as eval_NAME_loss and "
                        "eval_NAME_bpc (bits per character) at every eval and at each stage's end")
    p.add_argument("--eval-batches", type=cli.number(int, lo=0), default=20, help="micro-batches per rank in one eval")
    p.add_argument("--val-tokens", type=cli.number(int, lo=0), default=None,
                   help="without val_shards: hold out this many tokens of the last shard (default 10%%, max 1M)")
    p.add_argument("--ckpt-every", type=cli.number(int, lo=0), default=500,
                   help="checkpoint every N steps and at stage ends (0: only at stage ends)")
    p.add_argument("--keep-checkpoints", type=cli.number(int, lo=1), default=2, help="keep the newest K checkpoints")
    p.add_argument("--dist-timeout", type=cli.number(int, lo=1), default=60,
                   help="minutes a collective may wait (checkpoint writes)")
    p.add_argument("--no-save", action="store_true", help="no checkpoints, no export (benchmarks, smoke tests)")
    p.add_argument("--max-steps", type=cli.number(int, lo=0), default=0,
                   help="checkpoint and stop after N steps in this run")
    p.add_argument("--peak-tflops", type=cli.number(float, lo=0, lo_open=True), default=None,
                   help="per-GPU bf16 dense peak for MFU (default: from the GPU's name, runtime.PEAK_TFLOPS)")
    p.add_argument("--export-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of final/ (auto: the init model's torch_dtype)")
    p.add_argument("--export", metavar="RUN_DIR", help="only export RUN_DIR's newest checkpoint to RUN_DIR/final")
    p.add_argument("--export-to", help="with --export: write here instead")
    p.add_argument("--print-recipe", action="store_true", help="print the recipe (default or --recipe) as JSON")
    p.add_argument("--plan", action="store_true", help="print trainable parameters and memory per GPU per stage")
    p.add_argument("--gpu-mem-gb", type=cli.number(float, lo=0, lo_open=True), default=80.0,
                   help="with --plan: GPU memory to check against")
    p.add_argument("--world-size", type=cli.number(int, lo=1), default=1, help="with --plan: number of GPUs")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out that holds an earlier run (only a folder this project wrote)")
    return p


def prepare(argv=None, world=None):
    """Parse the flags and check everything that can be checked before any process group, model
    or output exists: ranges, the recipe, the input folders, --out. Returns (args, recipe).
    redwhale.py train --nproc N calls it before torchrun, so a mistake is one line, not N."""
    p = parser()
    args = p.parse_args(argv)
    recipe = load_recipe(args.recipe)
    if args.grad_clip is not None:
        recipe.grad_clip = args.grad_clip
    if args.freeze_old_rows is not None:
        if args.freeze_old_rows != "auto":
            args.freeze_old_rows = cli.check("--freeze-old-rows", _int(args.freeze_old_rows), int, lo=1)
        recipe.old_vocab_size = args.freeze_old_rows
        for st in recipe.stages:
            st.freeze_old_rows = True
    if args.print_recipe or args.export:
        return args, recipe
    if args.plan:
        if not args.init_from:
            p.error("--plan needs --init-from HF_DIR or config.json")
        if not os.path.exists(args.init_from):
            raise SystemExit(f"error: --init-from {args.init_from}: no such folder or config.json")
        return args, recipe
    if not (args.data and args.out):
        p.error("training needs --data and --out (and --init-from unless resuming)")
    if args.device:
        runtime.check_device(args.device)
    if args.init_from:
        check_model_folder(args.init_from, "--init-from")
        cfg = LlamaConfig.from_pretrained(args.init_from)
        check_seq_len(args.seq_len or recipe.seq_len, cfg, args.init_from)
    if not os.path.isfile(os.path.join(args.data, "meta.json")):
        raise SystemExit(f"error: --data {args.data}: no meta.json (give a folder written by data.py tokenize)")
    eval_specs(args.eval_data)
    if args.resume not in (None, "auto") and not os.path.isdir(args.resume):
        raise SystemExit(f"error: --resume {args.resume}: no such checkpoint folder")
    args.replace_out = check_out(args)
    resolve(recipe, args, world or int(os.environ.get("WORLD_SIZE", 1)))    # batch arithmetic errors, now
    return args, recipe


def _int(text):
    try:
        return int(text)
    except ValueError:
        return text


def check_seq_len(T, cfg, where):
    if T > cfg.max_position_embeddings:
        raise SystemExit(f"error: seq-len {T} (--seq-len, or the recipe's seq_len) exceeds {where}'s "
                         f"max_position_embeddings {cfg.max_position_embeddings}: the model was never trained on "
                         "longer windows")


RUN_FILES = ("log.jsonl", "checkpoints", "final")       # what a run writes into --out (and its marker)


def check_out(args):
    """--out is this run's folder: never an input or inside one. A run writes only RUN_FILES there,
    beside whatever else the folder holds (a SLURM log, the recipe). An earlier run in it is
    continued (--resume), replaced (--force, only if this project wrote it: returns True, and
    only RUN_FILES are removed) or refused."""
    out = args.out
    outputs.check_not_input(out, [args.init_from, args.data])
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(f"error: --out {out} is a file, not a folder")
    present = [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))]
    if not present:
        return False
    has_ck = bool(checkpoint.list_checkpoints(os.path.join(out, "checkpoints")))
    if args.resume and (has_ck or outputs.ours(out)):
        return False
    if not args.force:
        if has_ck:
            raise SystemExit(f"error: --out {out} already has checkpoints: pass --resume auto to continue that run, "
                             "--force to replace it, or use a new --out")
        raise SystemExit(f"error: --out {out} holds an earlier run ({', '.join(present)}); pass --force to replace "
                         "it, or use a new --out")
    if not outputs.ours(out):
        raise SystemExit(f"error: --out {out} holds {', '.join(present)} not written by this project (no "
                         f"{outputs.MARKER}); --force only replaces this project's runs: move them away yourself")
    for n in present:     # what --force removes must not hold the recipe or the checkpoint to resume from
        outputs.check_not_input(os.path.join(out, n), [args.recipe, args.resume if args.resume != "auto" else None],
                                flag="--force would remove")
    return True


def main(argv=None):
    args, recipe = prepare(argv)
    if args.print_recipe:
        print(json.dumps(asdict(recipe), indent=1))
        return
    if args.export:
        print(f"exported {checkpoint.export_run(args.export, args.export_to, args.export_dtype, args.force)}")
        return
    if args.plan:
        plan.print_plan(args, recipe)
        return
    Trainer(args, recipe).run()


if __name__ == "__main__":
    cli.run(main)

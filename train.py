"""Multistage continual pretraining (RedWhale part 4), one process or many under torchrun.

The default recipe never trains everything at once, to fit memory: (1) embeddings + LM head,
(2) odd layers (0-based 1, 3, 5, ...), (3) even layers (0, 2, 4, ...), (4) LoRA r=32 alpha=32
dropout=0.1 on every attention and MLP projection with embeddings + head trainable, merged into
the weights at the stage's end. recipe.py holds the recipe (`python redwhale.py recipe`).

Read it in the order a stage runs: setup_stage (what trains, AdamW over it, the frozen old rows),
train_stage (the schedule, one train_step per optimizer step, evals, the LoRA merge,
checkpoints), then the next stage. How the model is spread over the ranks (DDP, or FSDP2 with
--fsdp) is training/strategy.py's; how it runs (bf16 autocast, attention kernel, compile) is
training/runtime.py's; the flags are training/options.py's. Every choice runs on CPU too.

    python train.py --init-from EXPANDED_HF_DIR --data SHARD_DIR --out runs/x      # one process
    torchrun --standalone --nproc_per_node=8 train.py --init-from DIR --data DIR --out runs/x [--fsdp]
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST0:29500 train.py ...  # and --node_rank=1 on the second node; --out on
                                                  # shared storage (global rank 0 writes it)
    ... --resume auto       # continue from the newest checkpoint in --out (--max-steps N: stop after N)
    python train.py ... --steps-per-stage 20 --batch-size 2 --seq-len 256   # smoke test
    python redwhale.py plan --init-from DIR_OR_CONFIG_JSON   # memory per GPU per stage, before renting
    python redwhale.py export runs/x      # merge LoRA, write runs/x/final from the last checkpoint

Outputs in --out: log.jsonl (a JSON object per step: stage, step, tokens, loss, eval_loss, lr,
grad_norm, tokens_per_s, mfu, peak_mem_gb; at a LoRA stage's end the held-out loss either side
of the merge), checkpoints/step-NNNNNNNN/ (the last --keep-checkpoints), final/ (an HF folder
with the tokenizer, in the base's torch_dtype). Exact resume: the learning rate, data order and
RNG are pure functions of (seed, stage, step, micro-batch), and a checkpoint holds the model in
its training dtypes + AdamW + the position, so on CPU a resumed run reproduces the losses of an
uninterrupted one bit for bit (on CUDA to rounding: flash attention's backward is not
deterministic). SIGTERM/SIGINT checkpoint and exit (at 10B scale that takes minutes: see
training/checkpoint.py's SIGTERM_ADVICE for torchrun and SLURM).
"""
import functools
import gc
import json
import math
import os
import signal
import time
from dataclasses import asdict

import torch
import torch.distributed as dist

from config import LlamaConfig
from corpus.shards import TokenShards
from model import check_model_folder
from recipe import lr_at, old_rows, resolve, step_seed
from support import cli
from support.cli import UserError
from training import checkpoint, metrics, options, parallel, plan, run_folder, runtime, strategy


class Trainer:
    def __init__(self, args, recipe):
        self.args, self.recipe = args, recipe
        self.env = runtime.start(args)              # device, rank, world, precision, kernels
        # the one place the strategy is chosen: nothing below asks which one it is
        self.strategy = strategy.make(self.env, args.fsdp, args.fsdp_reduce, args.async_ckpt)
        self.batches = resolve(recipe, args, self.env.world)   # per stage: B, T, G, steps, warmup, batch_tokens
        self.ckdir = os.path.join(args.out, "checkpoints")     # a run only ever writes its own --out
        cuda = self.env.device.type == "cuda"
        self.peak_tflops = args.peak_tflops or (runtime.peak_tflops(torch.cuda.get_device_name()) if cuda else None)
        self.vocab_multiple = args.vocab_multiple or (64 if cuda else 1)   # a checkpoint's value wins
        self.model = None          # this stage's model (parameters with their HF names)
        self.forward = None        # what a training forward calls: the model, or its DDP wrapper
        self.opt = None            # AdamW over this stage's trained parameters only
        self.params = []           # those parameters
        self.frozen = parallel.FrozenRows([], 0)   # freeze_old_rows: embed/head rows of the base vocabulary
        self.eval_sets = []        # (name, TokenShards) of --eval-data
        self.stop_signal = None    # SIGTERM / SIGINT noted by the handler; the step finishes first
        self.steps_run = 0         # optimizer steps of this invocation (--max-steps)
        self.logf = self.bar = None

    # ---- a stage: what trains, its optimizer, the frozen rows

    def setup_stage(self, s):
        """The stage's model from the strategy, then AdamW over what trains and the frozen rows."""
        st, b = self.recipe.stages[s], self.batches[s]
        where = f"{self.args.recipe or 'default recipe'}: stage {s + 1} ({st.name})"
        # the old stage's optimizer, wrapper and (sharded) model go before the new ones are built
        # (FSDP2's hooks make reference cycles: collect them now, not at some later allocation)
        self.opt = self.forward = self.model = None
        self.params, self.frozen = [], parallel.FrozenRows([], 0)
        gc.collect()
        # the RNG that initializes a LoRA stage's adapters: the same on every rank and after a resume
        seed_adapters = functools.partial(torch.manual_seed, step_seed(self.args.seed, s, -1, 0))
        self.model, self.forward, names = self.strategy.stage_model(st, where, seed_adapters)
        params = [(n, p) for n, p in self.model.named_parameters() if n in names]
        self.params = [p for _, p in params]
        self.frozen = self.frozen_rows(st, params, where)
        self.opt = self.build_optimizer(st, params)
        if self.env.device.type == "cuda":      # peak_mem_gb in the log is per stage
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.env.device)
        n_train, n_all = sum(p.numel() for p in self.params), sum(p.numel() for p in self.model.parameters())
        self.env.log(f"stage {s + 1}/{len(self.batches)} {st.name}: training {n_train:,} of {n_all:,} parameters "
                     f"({100 * n_train / n_all:.2f}%), {b['steps']} steps of {b['batch_tokens']:,} tokens "
                     f"(B={b['B']} T={b['T']} G={b['G']} x {self.env.world} ranks, {type(self.strategy).__name__})")

    def build_optimizer(self, st, params):
        """AdamW over this stage's parameters only, with no weight decay on norms and biases."""
        decay = [p for n, p in params if p.dim() >= 2]
        no_decay = [p for n, p in params if p.dim() < 2]   # norms and biases
        groups = [{"params": decay, "weight_decay": st.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=st.lr, betas=tuple(self.recipe.betas),
                                 eps=1e-8, fused=self.env.device.type in ("cuda", "cpu"))   # one kernel, not a loop

    def frozen_rows(self, st, params, where):
        """freeze_old_rows (EEVE): the embed and head rows of the base vocabulary never move."""
        if not st.freeze_old_rows:
            return parallel.FrozenRows([], 0)
        k = old_rows(self.recipe, self.args.init_from)
        if not k:
            raise UserError(f"{where}: freeze_old_rows needs old_vocab_size (--freeze-old-rows N)")
        return parallel.FrozenRows([p for n, p in params if n in ("model.embed_tokens.weight", "lm_head.weight")], k)

    # ---- training a stage

    def train_stage(self, data, s, start, tokens):
        """Steps start.. of stage s, each: the learning rate, one optimizer step, the log line, the
        evals, a checkpoint when due. Returns (tokens so far, whether a signal or --max-steps stopped it)."""
        st, b = self.recipe.stages[s], self.batches[s]
        S = b["B"] * b["G"] * self.env.world                  # sequences per optimizer step
        # the sample order runs on across stages and depends only on the global batch, not on W
        offset = sum(q["steps"] * (q["batch_tokens"] // q["T"]) for q in self.batches[:s])
        flops_tok = plan.flops_per_token(self.model, b["T"])
        last_ck = None
        for step in range(start, b["steps"]):
            t0 = time.time()
            lr = lr_at(st, b, step)
            for g in self.opt.param_groups:
                g["lr"] = lr
            loss, gn, stop = self.train_step(data, s, step, offset + step * S)
            tokens += b["batch_tokens"]
            self.strategy.poll()
            rec = {"stage": s + 1, "stage_name": st.name, "step": step + 1,
                   "global_step": self.global_step(s, step + 1), "tokens": tokens, "loss": loss, "lr": lr,
                   "grad_norm": gn, "tokens_per_s": b["batch_tokens"] / (time.time() - t0)}
            if self.peak_tflops:          # model FLOPs utilization, when the GPU's peak is known
                rec["mfu"] = flops_tok * rec["tokens_per_s"] / (self.peak_tflops * 1e12 * self.env.world)
            rec["peak_mem_gb"] = runtime.peak_memory_bytes(self.env.device) / 1e9
            done = step + 1 == b["steps"]
            self.eval_held_out(data, s, step, done, rec)
            if done and st.lora:
                self.merge_stage_lora(data, s, rec)
            self.write_log(rec, s)
            self.env.note_uncompiled(f"stage {s + 1} step {step + 1}")
            self.steps_run += 1
            interrupted = stop or (self.args.max_steps and self.steps_run >= self.args.max_steps)
            if not self.args.no_save and (done or interrupted or (self.args.ckpt_every and
                                                                  (step + 1) % self.args.ckpt_every == 0)):
                last_ck = self.save_checkpoint(s, step + 1, tokens, loss)
            if interrupted and not (done and s + 1 == len(self.batches)):
                why = f"signal {self.stop_signal.name}" if self.stop_signal else f"--max-steps {self.args.max_steps}"
                self.env.log(f"stopped by {why} at stage {s + 1} step {step + 1}; wrote {last_ck}; "
                             "continue with --resume auto" + (f" (note: {checkpoint.SIGTERM_ADVICE})"
                                                              if self.stop_signal else ""))
                return tokens, True
        return tokens, False

    def train_step(self, data, s, step, first):
        """One optimizer step of stage s on the global batch that starts at sample `first`: G
        micro-steps (gradients synced on the last), the clip, the update. Returns (mean loss per
        target token, grad norm before clipping, whether any rank got a stop signal)."""
        B, G, W, rank = self.batches[s]["B"], self.batches[s]["G"], self.env.world, self.env.rank
        micro = [data.batch(first + m * B * W + rank * B, B) for m in range(G)]
        # normalize by the number of target tokens of the whole global batch
        n_tok = torch.tensor(float(sum(int((y != -100).sum()) for _, y in micro)), device=self.env.device)
        if self.env.distributed:
            dist.all_reduce(n_tok)
        loss_sum = torch.zeros((), device=self.env.device, dtype=torch.float32)
        for m, (x, y) in enumerate(micro):      # x, y: (B, T)
            x, y = x.to(self.env.device, non_blocking=True), y.to(self.env.device, non_blocking=True)
            # LoRA dropout masks: seeded by the micro-batch's place in the global batch, so they
            # follow the sequences whatever the number of ranks (a resume on other world sizes)
            torch.manual_seed(step_seed(self.args.seed, s, step, m * W + rank))
            with self.strategy.sync(last=m == G - 1):
                with self.env.compute():
                    _, loss = self.forward(x, y, reduction="sum")
                # gradients are averaged over W ranks: scale by W so the result is sum / n_tok
                (loss * (W / n_tok)).backward()
            loss_sum += loss.detach().float()
        # one all-reduce for the loss and the stop flag: every rank stops after the same step
        stop = torch.tensor([loss_sum.item(), 1.0 if self.stop_signal else 0.0], device=self.env.device,
                            dtype=torch.float64)
        if self.env.distributed:
            dist.all_reduce(stop)
        loss_val = float(stop[0]) / float(n_tok)
        self.frozen.zero_grads()                # before the norm: frozen rows take no part in clipping
        gn = self.grad_norm()
        self.check_finite(loss_val, gn, s, step)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.frozen.restore()                   # weight decay moved them too
        return loss_val, gn, bool(stop[1])

    def grad_norm(self):
        """Clip to recipe.grad_clip (0: off, nanoGPT's convention) and return the norm before clipping."""
        if self.recipe.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        return float(parallel.full(norm))      # sharded: a DTensor, reduced over the shards

    def check_finite(self, loss, gn, s, step):
        """Stop before a non-finite loss or gradient reaches the weights, naming the last good checkpoint."""
        if math.isfinite(loss) and math.isfinite(gn):
            return
        self.strategy.finish()        # a background write in flight is still a good one
        kept = checkpoint.list_checkpoints(self.ckdir)
        raise UserError(f"non-finite loss {loss} / grad norm {gn} at stage {s + 1} "
                        f"({self.recipe.stages[s].name}) step {step + 1}: stopped without updating the weights; "
                        f"last good checkpoint: {kept[-1] if kept else 'none'}")

    def write_log(self, rec, s):
        if self.env.master:
            self.logf.write(json.dumps(rec) + "\n")
            self.logf.flush()
            self.bar.update(1)
            self.bar.set_postfix(stage=s + 1, loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}",
                                 lr=f"{rec['lr']:.2e}")

    # ---- evaluation and the LoRA merge

    def eval_held_out(self, data, s, step, done, rec):
        """Every --eval-every steps and at the stage's end: the held-out losses into the step's record."""
        every = self.args.eval_every
        due = done or (every and (step + 1) % every == 0)
        if every and due:
            rec["eval_loss"] = self.held_out_loss(self.model, data, s)
            rec["eval_bpc"] = metrics.bits_per_char(rec["eval_loss"], data)
        if self.eval_sets and due:
            for name, held_out in self.eval_sets:       # e.g. Korean and English kept apart
                rec[f"eval_{name}_loss"] = loss = self.held_out_loss(self.model, held_out, s)
                rec[f"eval_{name}_bpc"] = metrics.bits_per_char(loss, held_out)

    def merge_stage_lora(self, data, s, rec):
        """At a LoRA stage's end, fold the adapters into fp32 weights (lora.py): the next stage and the
        checkpoint see plain HF weights. The held-out loss either side of the merge shows nothing was lost."""
        before = rec["eval_loss"] if "eval_loss" in rec else self.held_out_loss(self.model, data, s)
        merged = self.strategy.merged(self.model, self.recipe.stages[s].lora)
        rec["eval_loss_before_merge"], rec["eval_loss_after_merge"] = before, self.held_out_loss(merged, data, s)
        del merged
        if rec["eval_loss_after_merge"] is not None:
            self.env.log(f"merged LoRA: held-out loss {rec['eval_loss_before_merge']:.4f} before, "
                         f"{rec['eval_loss_after_merge']:.4f} after")

    def held_out_loss(self, model, data, s):
        return metrics.held_out_loss(model, data, self.batches[s]["B"], self.args.eval_batches, self.env.compute,
                                     (self.env.rank, self.env.world), lockstep=self.strategy.lockstep_eval)

    # ---- checkpoints

    def global_step(self, s, step):
        return sum(q["steps"] for q in self.batches[:s]) + step

    def save_checkpoint(self, s, step, tokens, loss):
        name = f"step-{self.global_step(s, step):08d}"
        state = {"stage": s, "step": step, "tokens": tokens, "loss": loss, "seed": self.args.seed,
                 "init_from": os.path.abspath(self.args.init_from), "vocab_multiple": self.vocab_multiple,
                 "plan": self.batches, "recipe": asdict(self.recipe), "world_size": self.env.world}
        # a stage's end resumes with the next stage's fresh AdamW: its state (twice the size of the
        # trained weights, tens of GB at 10B) is not written
        opt = None if step == self.batches[s]["steps"] else self.opt
        self.strategy.save(self.model, opt, self.ckdir, name, state, self.args.keep_checkpoints)
        return name

    def resume_point(self):
        """(checkpoint folder, its state) to resume from, or (None, None). A checkpoint must fit this
        run (the same batches; either strategy may have written it); it gives --init-from (unless
        given) and --vocab-multiple."""
        # rank 0's view decides for every rank (a run --force replaces resumes nothing of it)
        ck = checkpoint.choose_resume(self.args.resume, self.ckdir, self.env.distributed, self.args.replace_out)
        if not ck:
            return None, None
        state = checkpoint.load_state(ck)
        checkpoint.check_fits(ck, state, self.batches)
        self.args.init_from = self.args.init_from or state["init_from"]
        self.vocab_multiple = state["vocab_multiple"]
        return ck, state

    def restore(self, ck, state):
        """Fill the weights from checkpoint ck (the optimizer comes when its stage is set up).
        Returns (stage, step, tokens) to go on from; (0, 0, 0) on a fresh run."""
        if not state:
            return 0, 0, 0
        s, start, tokens = state["stage"], state["step"], state["tokens"]
        stage_end = start == self.batches[s]["steps"]
        self.strategy.restore_weights(ck, self.recipe.stages[s].lora, stage_end)
        if stage_end:                           # written at a stage's end: go on with the next one
            s, start = s + 1, 0
        self.env.log(f"resumed from {ck}: stage {s + 1} step {start}, {tokens:,} tokens so far")
        return s, start, tokens

    # ---- the run

    def run(self):
        """SIGTERM (a scheduler's preemption, torchrun forwarding it) or Ctrl-C: finish the step,
        write a checkpoint, and return 128 + the signal's number (143, 130), the exit code a shell
        expects, so `train && eval` stops. The handlers are put back afterwards."""
        old = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._run()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            self.close()
        return 128 + self.stop_signal if self.stop_signal else 0

    def on_signal(self, num, frame):
        """The handler: only note the signal; the step in progress finishes, then train_stage stops."""
        self.stop_signal = signal.Signals(num)

    def _run(self):
        """Set up (or resume), train the stages, export final/."""
        args = self.args
        ck, state = self.resume_point()
        cfg = self.base_config()
        self.strategy.load_base(args.init_from, cfg, self.vocab_multiple, weights=not state)
        T = self.batches[0]["T"]
        # rank 0 alone checks every token id (a pass over all the shards); the others only open them
        shards = functools.partial(TokenShards, args.data, T, cfg.vocab_size, args.val_tokens, args.seed)
        data = parallel.rank0(shards, self.env.distributed) or shards(check_ids=False)
        self.eval_sets = options.eval_sets(args.eval_data, T, cfg.vocab_size)
        s, start, tokens = self.restore(ck, state)
        last = self.global_step(state["stage"], state["step"]) if state else None
        # the first thing written, after every check above passed
        run_folder.prepare_out(args.out, args.replace_out, ck, last, self.env.distributed)
        stopped = self.run_stages(data, ck, s, start, tokens)
        if not stopped and not args.no_save:
            self.export_final()
        if self.env.distributed:
            dist.barrier()

    def base_config(self):
        """The --init-from model's config, after the checks that need no weights."""
        args = self.args
        if not args.init_from:
            raise UserError("give --init-from HF_DIR (or --resume auto with existing checkpoints)")
        check_model_folder(args.init_from, "--init-from")
        cfg = LlamaConfig.from_pretrained(args.init_from)
        options.check_seq_len(self.batches[0]["T"], cfg, args.init_from)
        # an attention backend that cannot run here is one line, not a crash after loading 20 GB
        runtime.check_attention(args.sdpa, self.env.device, self.env.dtype, cfg)
        # nor a stage that cannot fit, found hours in: every stage's plan against the GPU's memory
        cfg.vocab_multiple = self.vocab_multiple
        plan.check_memory(cfg, self.recipe, self.batches, args, self.env)
        return cfg

    def run_stages(self, data, ck, s, start, tokens):
        """Stage s from step `start`, then every later stage; returns whether a signal or --max-steps
        stopped the run."""
        if self.env.master:
            self.logf = open(os.path.join(self.args.out, "log.jsonl"), "a", encoding="utf-8")
        self.bar = cli.progress(total=sum(q["steps"] for q in self.batches), initial=self.global_step(s, start),
                                disable=not self.env.master, desc="train", unit="steps")
        stopped = False
        for i in range(s, len(self.batches)):
            self.setup_stage(i)
            if i == s and start > 0:                      # resuming inside this stage: its optimizer too
                self.strategy.restore_optimizer(self.model, self.opt, ck)
                self.frozen.keep()
            tokens, stopped = self.train_stage(data, i, start if i == s else 0, tokens)
            if stopped:
                break
            self.strategy.end_stage(self.model, self.recipe.stages[i].lora)
        self.strategy.finish()
        self.bar.close()
        if self.logf:
            self.logf.close()
        return stopped

    def export_final(self):
        """Rank 0 writes final/, an HF folder, from the trained model."""
        def export():       # on rank 0 alone: with sharding only rank 0 holds the full state
            return checkpoint.export(self.strategy.final_model(self.model), self.args.init_from,
                                     os.path.join(self.args.out, "final"), self.args.export_dtype)
        self.env.log(f"exported {parallel.rank0(export, self.env.distributed)}")

    def close(self):
        """Tear down in an order that cannot deadlock: DDP's reducer goes first. Were it to hold the
        last reference to the process group, its destructor would join gloo's worker threads while
        holding the GIL, and a worker freeing a Python tensor waits for the GIL: a hang at exit."""
        self.forward = self.opt = self.params = None
        self.strategy.close()
        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv=None):
    args, recipe = options.prepare(argv)
    return Trainer(args, recipe).run()


if __name__ == "__main__":
    cli.run(main)

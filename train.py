"""Multistage continual pretraining (RedWhale's recipe), one process or many under torchrun.

The default recipe never trains everything at once, to fit memory: (1) embeddings + LM head,
(2) odd layers (0-based indices 1, 3, 5, ...), (3) even layers (0, 2, 4, ...), (4) LoRA r=32
alpha=32 dropout=0.1 on every attention and MLP projection with embeddings + head trainable.
The LoRA is merged into the weights at the end of its stage. A recipe is JSON or TOML (all
keys in recipe.py's docstring; the data format in shards.py's):

    {"seq_len": 2048, "micro_batch": 1, "old_vocab_size": "auto",
     "stages": [{"name": "embed", "train": ["embed", "head"], "tokens": 2.5e9, "lr": 2e-4,
                 "warmup": 0.01, "schedule": "cosine", "batch_tokens": 1048576,
                 "freeze_old_rows": true}, ...]}

Each stage sets requires_grad, then builds a fresh torch.compile wrapper, DDP wrapper and AdamW
(fused on CUDA; no weight decay on norms and biases). Gradient accumulation syncs only on the
last micro-step; the loss is normalized by the target tokens of the whole global batch. On
CUDA: bf16 autocast with frozen weights stored in bf16 and trained ones in fp32, flash SDPA,
compile on by default; on CPU fp32, compile off. Commands:

    python train.py --init-from EXPANDED_HF_DIR --data SHARD_DIR --out runs/x      # one process
    torchrun --standalone --nproc_per_node=8 train.py --init-from DIR --data DIR --out runs/x
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
lr, grad_norm, tokens_per_s, mfu, peak_mem_gb), checkpoints/step-NNNNNNNN/ (the last
--keep-checkpoints), final/ (an HF folder with the tokenizer that transformers loads).
Exact resume: the learning rate, the data order and the RNG are pure functions of (seed,
stage, step, rank), and a checkpoint holds model + optimizer + position, so a resumed run
reproduces the losses of an uninterrupted one. SIGTERM/SIGINT checkpoint and exit cleanly.
"""
import argparse
import contextlib
import datetime
import inspect
import json
import math
import os
import resource
import shutil
import signal
import time
from dataclasses import asdict

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import plan
from lora import add_lora, has_lora, merge_lora
from model import Llama
from recipe import load_recipe, lr_at, old_rows, resolve, select_params, step_seed
from shards import TokenShards

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")


# ---------------------------------------------------------------- the trainer

class Trainer:
    def __init__(self, args, recipe):
        self.args, self.recipe = args, recipe
        self.ddp = "RANK" in os.environ
        if self.ddp:
            cuda = torch.cuda.is_available() and args.device != "cpu"
            # rank 0 alone writes checkpoints (tens of GB for a 10B model) while the others wait
            dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=args.dist_timeout))
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
            self.device = torch.device(f"cuda:{self.local_rank}" if cuda else "cpu")
            if cuda:
                torch.cuda.set_device(self.device)
            else:   # share the cores between the local ranks instead of oversubscribing them
                local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        else:
            self.rank, self.world, self.local_rank = 0, 1, 0
            self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.master = self.rank == 0
        cuda = self.device.type == "cuda"
        dtype = args.dtype if args.dtype != "auto" else ("bf16" if cuda else "fp32")
        self.mixed = dtype == "bf16"     # bf16 autocast; frozen weights stored in bf16, trained in fp32
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.mixed
                         else contextlib.nullcontext())
        self.compile = args.compile if args.compile is not None else cuda
        self.plan = resolve(recipe, args, self.world)
        self.out = args.out
        self.ckdir = os.path.join(args.out, "checkpoints")
        self.stop_signal = None

    def log(self, msg):
        if self.master:
            from tqdm import tqdm
            tqdm.write(msg)             # prints above the progress bar instead of through it

    # ---- model and stage set-up

    def build_model(self, init_from):
        vm = self.args.vocab_multiple or (64 if self.device.type == "cuda" else 1)
        self.vocab_multiple = vm
        model = Llama.from_pretrained(init_from, dtype=torch.bfloat16 if self.mixed else torch.float32,
                                      device=self.device, vocab_multiple=vm)
        model.gradient_checkpointing = self.args.activation_checkpointing
        return model

    def setup_stage(self, model, s):
        """requires_grad, dtypes, then a fresh compile + DDP wrapper + optimizer: changing
        requires_grad under an existing DDP wrapper fails with 'Expected to have finished
        reduction', and the optimizer must only hold this stage's parameters."""
        st = self.recipe.stages[s]
        if st.lora and not has_lora(model):
            torch.manual_seed(step_seed(self.args.seed, s, -1, 0))   # same adapters on every rank, on resume
            add_lora(model, st.lora["r"], st.lora["alpha"], st.lora["dropout"], tuple(st.lora["targets"]))
        where = f"{self.args.recipe or 'default recipe'}: stage {s + 1} ({st.name})"
        names = select_params(model, st.train, where)
        params = []
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
            want = torch.float32 if (n in names or not self.mixed) else torch.bfloat16
            if p.dtype != want:
                p.data = p.data.to(want)
            if n in names:
                params.append((n, p))
        self.frozen_rows = []
        if st.freeze_old_rows:
            k = old_rows(self.recipe, self.args.init_from)
            if not k:
                raise SystemExit(f"error: {where}: freeze_old_rows needs old_vocab_size (--freeze-old-rows N)")
            for n in ("model.embed_tokens.weight", "lm_head.weight"):
                p = dict(model.named_parameters()).get(n)
                if p is not None and p.requires_grad:  # keep a copy: weight decay would move them too
                    self.frozen_rows.append((p, k, p.data[:k].clone()))
        self.params = [p for _, p in params]
        decay = [p for n, p in params if p.dim() >= 2]
        no_decay = [p for n, p in params if p.dim() < 2]   # norms and biases
        groups = [{"params": decay, "weight_decay": st.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=st.lr, betas=tuple(self.recipe.betas),
                                     eps=1e-8, fused=self.device.type in ("cuda", "cpu"))   # one kernel, not a loop
        fwd = torch.compile(model) if self.compile else model     # compile first, then wrap (DESIGN.md)
        if self.ddp:
            # gradient_as_bucket_view: the all-reduce buckets *are* the .grad tensors (no second copy)
            # the RoPE table is a buffer that every rank builds itself: no sync at every forward
            quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                     else {"broadcast_buffers": False})
            fwd = DDP(fwd, device_ids=[self.local_rank] if self.device.type == "cuda" else None,
                      gradient_as_bucket_view=True, **quiet)
        self.fwd = fwd
        if self.device.type == "cuda":      # peak_mem_gb in the log is per stage
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        n_train = sum(p.numel() for p in self.params)
        n_all = sum(p.numel() for p in model.parameters())
        self.log(f"stage {s + 1}/{len(self.plan)} {st.name}: training {n_train:,} of {n_all:,} parameters "
                 f"({100 * n_train / n_all:.2f}%), {self.plan[s]['steps']} steps of {self.plan[s]['batch_tokens']:,} "
                 f"tokens (B={self.plan[s]['B']} T={self.plan[s]['T']} G={self.plan[s]['G']} x {self.world} ranks)")
        return model

    # ---- checkpoints (rank 0 writes into a temp folder, then renames it: all or nothing)

    def checkpoints(self):
        if not os.path.isdir(self.ckdir):
            return []
        return sorted(d for d in os.listdir(self.ckdir)
                      if d.startswith("step-") and not d.endswith(".tmp")
                      and os.path.exists(os.path.join(self.ckdir, d, "state.json")))

    def save_checkpoint(self, model, s, step, tokens, loss):
        name = f"step-{self.global_step(s, step):08d}"
        if self.master:
            final = os.path.join(self.ckdir, name)
            tmp = final + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            torch.save(model.state_dict(), os.path.join(tmp, "model.pt"))
            torch.save(self.opt.state_dict(), os.path.join(tmp, "optim.pt"))
            state = {"stage": s, "step": step, "tokens": tokens, "loss": loss, "seed": self.args.seed,
                     "init_from": os.path.abspath(self.args.init_from), "vocab_multiple": self.vocab_multiple,
                     "plan": self.plan, "recipe": asdict(self.recipe), "world_size": self.world}
            with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
                json.dump(state, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in self.checkpoints()[:-self.args.keep_checkpoints]:
                shutil.rmtree(os.path.join(self.ckdir, old), ignore_errors=True)
        if self.ddp:
            dist.barrier()
        return name

    def global_step(self, s, step):
        return sum(p["steps"] for p in self.plan[:s]) + step

    # ---- the loop

    def train_stage(self, model, data, s, start, tokens, logf, bar):
        st, p = self.recipe.stages[s], self.plan[s]
        B, T, G, W = p["B"], p["T"], p["G"], self.world
        S = B * G * W                                        # sequences per optimizer step
        # the sample order runs on across stages and depends only on the global batch, not on W
        offset = sum(q["steps"] * (q["batch_tokens"] // q["T"]) for q in self.plan[:s])
        sdpa = contextlib.nullcontext()
        if self.device.type == "cuda" and self.args.sdpa == "flash":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            sdpa = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
        flops_tok = plan.flops_per_token(model, T) if self.device.type == "cuda" else 0
        last_loss, last_ck = None, None
        for step in range(start, p["steps"]):
            t0 = time.time()
            lr = lr_at(st, p, step)
            for g in self.opt.param_groups:
                g["lr"] = lr
            torch.manual_seed(step_seed(self.args.seed, s, step, self.rank))   # LoRA dropout masks
            first = offset + step * S
            micro = [data.batch(first + m * B * W + self.rank * B, B) for m in range(G)]
            # normalize by the number of target tokens of the whole global batch
            n_tok = torch.tensor(float(sum(int((y != -100).sum()) for _, y in micro)), device=self.device)
            if self.ddp:
                dist.all_reduce(n_tok)
            loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
            for m, (x, y) in enumerate(micro):
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                last = m == G - 1
                sync = self.fwd.no_sync() if (self.ddp and not last) else contextlib.nullcontext()
                with sync, sdpa:
                    with self.autocast:
                        _, loss = self.fwd(x, y, reduction="sum")
                    # DDP averages gradients over W ranks: scale by W so the result is sum / n_tok
                    (loss * (W / n_tok)).backward()
                loss_sum += loss.detach().float()
            stop = torch.tensor([loss_sum.item(), 1.0 if self.stop_signal else 0.0], device=self.device,
                                dtype=torch.float64)
            if self.ddp:
                dist.all_reduce(stop)
            loss_val = float(stop[0]) / float(n_tok)
            for prm, k, _ in self.frozen_rows:
                prm.grad[:k].zero_()
            gn = float(torch.nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip))
            if not (math.isfinite(loss_val) and math.isfinite(gn)):
                kept = self.checkpoints()
                raise SystemExit(f"error: non-finite loss {loss_val} / grad norm {gn} at stage {s + 1} "
                                 f"({st.name}) step {step + 1}: stopped without updating the weights; last good "
                                 f"checkpoint: {kept[-1] if kept else 'none'}")
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            for prm, k, saved in self.frozen_rows:
                prm.data[:k] = saved
            tokens += p["batch_tokens"]
            dt = time.time() - t0
            rec = {"stage": s + 1, "stage_name": st.name, "step": step + 1,
                   "global_step": self.global_step(s, step + 1), "tokens": tokens, "loss": loss_val, "lr": lr,
                   "grad_norm": gn, "tokens_per_s": p["batch_tokens"] / dt}
            if self.device.type == "cuda":
                rec["mfu"] = flops_tok * rec["tokens_per_s"] / (self.args.peak_tflops * 1e12 * W)
                rec["peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
            else:
                rec["peak_mem_gb"] = cpu_peak_bytes() / 1e9
            done = step + 1 == p["steps"]
            if self.args.eval_every and ((step + 1) % self.args.eval_every == 0 or done):
                rec["eval_loss"] = evaluate(model, data, B, self.args.eval_batches, self.autocast,
                                            self.rank, self.world)
            if self.master:
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                bar.update(1)
                bar.set_postfix(stage=s + 1, loss=f"{loss_val:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}", lr=f"{lr:.2e}")
            last_loss = loss_val
            self.steps_run += 1
            interrupted = bool(stop[1]) or (self.args.max_steps and self.steps_run >= self.args.max_steps)
            if done and st.lora:
                merge_lora(model)        # the next stage (and the checkpoint) see plain HF weights
            if self.args.no_save:
                pass
            elif done or interrupted or (self.args.ckpt_every and (step + 1) % self.args.ckpt_every == 0):
                last_ck = self.save_checkpoint(model, s, step + 1, tokens, last_loss)
            if interrupted and not (done and s + 1 == len(self.plan)):
                why = f"signal {self.stop_signal}" if self.stop_signal else f"--max-steps {self.args.max_steps}"
                self.log(f"stopped by {why} at stage {s + 1} step {step + 1}; wrote {last_ck}; "
                         "continue with --resume auto")
                return tokens, True
        return tokens, False

    def run(self):
        # SIGTERM (a scheduler's preemption, torchrun forwarding it) or Ctrl-C: finish the step,
        # write a checkpoint, exit cleanly. The handlers are put back afterwards.
        old = {sig: signal.signal(sig, lambda num, frame: setattr(self, "stop_signal", signal.Signals(num).name))
               for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._run()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _run(self):
        args = self.args
        os.makedirs(self.ckdir, exist_ok=True)
        s, start, tokens = 0, 0, 0
        ck = self.checkpoints()[-1] if args.resume == "auto" and self.checkpoints() else None
        if args.resume not in (None, "auto"):
            ck = os.path.basename(args.resume.rstrip("/"))
            self.ckdir = os.path.dirname(os.path.abspath(args.resume.rstrip("/")))
        state = None
        if ck:
            with open(os.path.join(self.ckdir, ck, "state.json"), encoding="utf-8") as f:
                state = json.load(f)
            args.init_from = args.init_from or state["init_from"]
            if [_key(q) for q in state["plan"]] != [_key(q) for q in self.plan]:
                raise SystemExit(f"error: {ck}: it was written with a different plan (recipe/flags): "
                                 f"{state['plan']} vs now {self.plan}; resume with the same recipe and flags")
            args.vocab_multiple = state["vocab_multiple"]
        if not args.init_from:
            raise SystemExit("error: give --init-from HF_DIR (or --resume auto with existing checkpoints)")
        if not state and self.checkpoints():
            raise SystemExit(f"error: {self.ckdir} already has checkpoints: pass --resume auto, or use a new --out")
        model = self.build_model(args.init_from)
        data = TokenShards(args.data, self.plan[0]["T"], model.config.vocab_size, args.val_tokens, args.seed)
        if any(p["T"] != self.plan[0]["T"] for p in self.plan):
            raise SystemExit("error: all stages must use the same seq-len")
        if state:
            sd = torch.load(os.path.join(self.ckdir, ck, "model.pt"), map_location="cpu", weights_only=True, mmap=True)
            s, start, tokens = state["stage"], state["step"], state["tokens"]
            if any("lora_A" in k for k in sd):
                torch.manual_seed(0)
                st = self.recipe.stages[s]
                add_lora(model, st.lora["r"], st.lora["alpha"], st.lora["dropout"], tuple(st.lora["targets"]))
            model.load_state_dict(sd, strict=True)
            del sd
            if start == self.plan[s]["steps"]:
                s, start = s + 1, 0
            self.log(f"resumed from {ck}: stage {s + 1} step {start}, {tokens:,} tokens so far")
        logpath = os.path.join(self.out, "log.jsonl")
        if self.master and state and os.path.exists(logpath):
            # drop log lines of steps after the checkpoint: they will be run again
            keep = [ln for ln in open(logpath, encoding="utf-8")
                    if ln.strip() and json.loads(ln)["global_step"] <= self.global_step(state["stage"], state["step"])]
            with open(logpath + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(keep)
            os.replace(logpath + ".tmp", logpath)
        elif self.master and not state and os.path.exists(logpath):
            os.remove(logpath)
        logf = open(logpath, "a", encoding="utf-8") if self.master else None
        from tqdm import tqdm
        total = sum(p["steps"] for p in self.plan)
        bar = tqdm(total=total, initial=self.global_step(s, start), disable=not self.master, dynamic_ncols=True)
        self.steps_run, stopped = 0, False
        for i in range(s, len(self.plan)):
            first = i == s
            if first and state and start > 0:
                self.setup_stage(model, i)
                self.opt.load_state_dict(torch.load(os.path.join(self.ckdir, ck, "optim.pt"), map_location="cpu",
                                                    weights_only=True))
            else:
                self.setup_stage(model, i)
            tokens, stopped = self.train_stage(model, data, i, start if first else 0, tokens, logf, bar)
            if stopped:
                break
        bar.close()
        if self.master:
            logf.close()
        if not stopped and self.master and not args.no_save:
            path = export(model, args.init_from, os.path.join(self.out, "final"), args.export_dtype)
            self.log(f"exported {path}")
        if self.ddp:
            dist.barrier()
            dist.destroy_process_group()


def cpu_peak_bytes():
    """Peak RSS of this process: /proc's VmHWM (ru_maxrss would start at a forking parent's RSS)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@torch.no_grad()
def evaluate(model, data, B, batches, autocast=contextlib.nullcontext(), rank=0, world=1):
    """Mean loss per token over the first batches * B * world held-out windows (all ranks)."""
    if not data.val_windows:
        return None
    model.eval()
    dev = next(model.parameters()).device
    n = min(len(data.val_windows), batches * B * world)
    tot = torch.zeros(2, dtype=torch.float64, device=dev)
    for i in range(rank * B, n, B * world):
        w = torch.stack([data._window(a, o, "val shard") for a, o in data.val_windows[i:min(i + B, n)]])
        x, y = w[:, :-1].to(dev), w[:, 1:].to(dev)
        with autocast:
            _, loss = model(x, y, reduction="sum")
        tot[0] += loss.double()
        tot[1] += y.numel()
    if world > 1:
        dist.all_reduce(tot)
    model.train()
    return float(tot[0] / tot[1]) if tot[1] else None


def _key(q):
    # what must match for a resume: the world size may change, the global batch may not
    return q["name"], q["steps"], q["T"], q["batch_tokens"], q["warmup"]


def export(model, init_from, folder, dtype="auto"):
    """Merge LoRA, write an HF folder (padded rows dropped) with the tokenizer files, atomically."""
    merge_lora(model)
    want = {"auto": getattr(torch, model.config.torch_dtype, torch.float32), "float32": torch.float32,
            "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model.to(want)
    folder = os.path.abspath(folder)
    tmp = folder + ".tmp-export"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(init_from, name)):
            shutil.copy2(os.path.join(init_from, name), os.path.join(tmp, name))
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def export_run(run_dir, to=None, dtype="auto"):
    """The export command: the newest checkpoint of a run -> an HF folder."""
    ckdir = os.path.join(run_dir, "checkpoints")
    names = sorted(d for d in os.listdir(ckdir) if d.startswith("step-") and not d.endswith(".tmp")) \
        if os.path.isdir(ckdir) else []
    if not names:
        raise SystemExit(f"error: no checkpoints in {ckdir}")
    with open(os.path.join(ckdir, names[-1], "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    model = Llama.from_pretrained(state["init_from"], vocab_multiple=state["vocab_multiple"])
    sd = torch.load(os.path.join(ckdir, names[-1], "model.pt"), map_location="cpu", weights_only=True, mmap=True)
    if any("lora_A" in k for k in sd):
        lo = state["recipe"]["stages"][state["stage"]]["lora"]
        add_lora(model, lo["r"], lo["alpha"], 0.0, tuple(lo["targets"]))
    model.load_state_dict(sd, strict=True)
    return export(model.eval(), state["init_from"], to or os.path.join(run_dir, "final"), dtype)


def main(argv=None):
    p = argparse.ArgumentParser(description="Multistage continual pretraining (RedWhale).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init-from", help="HF folder of the (expanded) model to start from; for --plan also a config.json")
    p.add_argument("--data", help="folder of data.py token shards (meta.json + id files)")
    p.add_argument("--out", help="run folder: log.jsonl, checkpoints/, final/")
    p.add_argument("--recipe", help="JSON/TOML recipe (default: RedWhale's four stages)")
    p.add_argument("--resume", help="'auto' = newest checkpoint in --out, or a checkpoint folder")
    p.add_argument("--steps-per-stage", type=int, default=0, help="override every stage's length (smoke tests)")
    p.add_argument("--batch-size", type=int, default=0, help="sequences per micro-batch per rank (recipe micro_batch)")
    p.add_argument("--seq-len", type=int, default=0, help="tokens per sequence (recipe seq_len)")
    p.add_argument("--grad-accum", type=int, default=0,
                   help="micro-batches per step (default: from batch_tokens; 1 with --steps-per-stage)")
    p.add_argument("--freeze-old-rows", default=None,
                   help="N or 'auto' (expand_report.json): train only embedding/head rows >= N in every stage")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="bf16: autocast with frozen weights in bf16 and trained ones in fp32 (auto: bf16 on CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on for CUDA, off on CPU)")
    p.add_argument("--sdpa", default="flash", choices=["flash", "auto"], help="attention backend on CUDA")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute each layer in backward")
    p.add_argument("--vocab-multiple", type=int, default=0, help="pad embedding rows (default 64 on CUDA, 1 on CPU)")
    p.add_argument("--eval-every", type=int, default=200, help="eval loss every N steps and at stage ends (0: off)")
    p.add_argument("--eval-batches", type=int, default=20, help="micro-batches per rank in one eval")
    p.add_argument("--val-tokens", type=int, default=None,
                   help="without val_shards: hold out this many tokens of the last shard (default 10%%, max 1M)")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps (and at stage ends)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="keep the newest K checkpoints")
    p.add_argument("--dist-timeout", type=int, default=60, help="minutes a collective may wait (checkpoint writes)")
    p.add_argument("--no-save", action="store_true", help="no checkpoints, no export (benchmarks, smoke tests)")
    p.add_argument("--max-steps", type=int, default=0, help="checkpoint and stop after N steps in this run")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU bf16 peak for MFU (H100/H200: 989)")
    p.add_argument("--export-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of final/ (auto: the init model's torch_dtype)")
    p.add_argument("--export", metavar="RUN_DIR", help="only export RUN_DIR's newest checkpoint to RUN_DIR/final")
    p.add_argument("--export-to", help="with --export: write here instead")
    p.add_argument("--print-recipe", action="store_true", help="print the recipe (default or --recipe) as JSON")
    p.add_argument("--plan", action="store_true", help="print trainable parameters and memory per GPU per stage")
    p.add_argument("--gpu-mem-gb", type=float, default=80.0, help="with --plan: GPU memory to check against")
    p.add_argument("--world-size", type=int, default=1, help="with --plan: number of GPUs")
    args = p.parse_args(argv)
    recipe = load_recipe(args.recipe)
    if args.freeze_old_rows is not None:
        recipe.old_vocab_size = args.freeze_old_rows if args.freeze_old_rows == "auto" else int(args.freeze_old_rows)
        for st in recipe.stages:
            st.freeze_old_rows = True
    if args.print_recipe:
        print(json.dumps(asdict(recipe), indent=1))
        return
    if args.export:
        print(f"exported {export_run(args.export, args.export_to, args.export_dtype)}")
        return
    if args.plan:
        if not args.init_from:
            p.error("--plan needs --init-from HF_DIR or config.json")
        plan.print_plan(args, recipe)
        return
    if not (args.data and args.out):
        p.error("training needs --data and --out (and --init-from unless resuming)")
    Trainer(args, recipe).run()


if __name__ == "__main__":
    main()

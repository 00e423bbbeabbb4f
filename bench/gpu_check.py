"""The one command to run on a GPU node: what train.py does there that the CPU tests cannot show.

    python bench/gpu_check.py --quick     # one 80 GB GPU: every check on small models, no MFU run (meant
                                          # to take under 8 minutes; not yet run on a GPU)
    python bench/gpu_check.py             # adds the ~1.1B MFU run, full-size memory and FSDP shapes
    python bench/gpu_check.py --dry-run --quick   # CPU, gloo, tiny models: the script's own plumbing
    python bench/gpu_check.py --dry-run   # the same with 2 gloo ranks for every --fsdp/torchrun run, and MFU
    ... --only resume dcp_resume          # some checks; --keep keeps the work folder (bases, runs)

Each check is timed, one failing never stops the others, and each prints one line (PASS / FAIL /
SKIP) as it ends and again at the end. --out-json ($OUT/gpu_check.json, else ./gpu_check.json;
rewritten after every check): {"device", "torch", ..., "wall_s", "checks": [{"name", "passed"
(true / false / null: skipped), "seconds", "numbers", "error" or "skipped", "line"}]}; exit code 1
if one failed. Every run is train.py's command line, in this process (train.main(argv), world 1)
for one rank, else `torchrun --standalone --nproc_per_node=R train.py` (R: every visible GPU;
on CPU 2, or 1 with --quick), as

    train.py --init-from BASE/init --data BASE/data --out RUN --batch-size 2 --seq-len 256 --sdpa flash
             --dtype bf16 --no-compile --eval-every 0 --ckpt-every 0 --val-tokens 0  + the check's flags

on one shared random base, 4 layers, hidden 512, 4/2 heads of 128, vocab 8192 (--dry-run: hidden 64,
vocab 512, seq 64), unless the check says otherwise. "Equal losses": bit-identical on CPU, within
TOL relative on CUDA (flash's backward may add run-to-run noise); the largest difference is reported.

  collective   NCCL (gloo on CPU): a process group of world 1 and an all_reduce.
  flash        SDPA bf16, GQA 32/8, causal, under sdpa_kernel([FLASH_ATTENTION]) alone vs math (CUDA only).
  resume       --steps-per-stage 3 --grad-accum 2, straight vs cut into 6 pieces by --max-steps 2 +
               --resume auto (mid-stage and at every stage boundary): equal losses.
  activation_checkpointing   --steps-per-stage 2 --no-save, with vs without --activation-checkpointing
               (each layer recomputed under the flash kernel): equal losses.
  dcp_resume   --fsdp over R ranks (DCP checkpoints over NCCL; gloo on CPU) --steps-per-stage 3, straight
               vs cut by --max-steps 5 twice (mid odd_layers, mid LoRA) + --resume auto: equal losses.
  padded_vocab a base with vocab 49072 (CPU: 1009), not a multiple of 64, 2 layers: --steps-per-stage 2
               --vocab-multiple 64 --freeze-old-rows 32000 (CPU: 512): finite losses, checkpoint rows
               padded to a multiple of 64, final/ with exactly the unpadded rows, old rows bit-identical.
  eval_data    --steps-per-stage 2 --no-save --eval-every 1 --val-tokens 5(T+1) --eval-batches 2
               --eval-data ko=DIR en=DIR: eval_loss, eval_ko_loss, eval_en_loss and the LoRA merge's finite.
  fp16_base    a float16 base (torch_dtype float16, 2 layers), a recipe of one stage training embed +
               head (3 steps, lr 1e-3), --dtype bf16, without and with --fsdp: every weight the recipe
               never trains is bit-identical in final/model.safetensors, which is float16.
  compile_fsdp torchrun --fsdp --compile over R ranks, the default recipe (CPU: its stage 4 alone),
               2 steps a stage, --eval-every 1 --eval-data ko=DIR, TORCH_LOGS=recompiles: finite losses
               and evals; recompiles counted, and whether the run's stderr says dynamo hit its
               recompile limit (recompile_limit / cache_size_limit): reported, not a failure.
  compile_lora the same without --fsdp (DDP), the default recipe's stage 4 (LoRA) alone.
  mfu          (not with --quick) a ~1.1B Llama (hidden 2048, 16 layers, 32/8 heads, FFN 8192, vocab 32000),
               2 x 8 x 2048 tokens a step, one stage training all, --compile, 15 steps: the median MFU
               after 5 against the GPU's dense bf16 peak (runtime.PEAK_TFLOPS or --peak-tflops).
  memory       the default recipe, 3 steps a stage, eager, micro-batch 2, on the 1.1B model at seq 2048
               (--quick: hidden 1024, 8 layers, vocab 32000, seq 1024): max_memory_allocated per stage
               against `redwhale.py plan` without its fixed overhead.
  fsdp_perf    the same with --fsdp over R ranks on SOLAR-10.7B's layer shapes (hidden 4096, FFN 14336,
               32/8 heads, vocab 32000), 4 layers (--quick: 2, seq 1024): tokens/s, MFU and rank 0's peak
               memory per stage against `plan --fsdp`.
"""
import argparse
import contextlib
import gc
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from train_bench import make_inputs  # noqa: E402  (bench/ is on sys.path as the script's folder)

import train  # noqa: E402
from model import LlamaConfig  # noqa: E402
from recipe import default_recipe  # noqa: E402
from support.safetensors_io import checkpoint_files, read_safetensors  # noqa: E402
from training import checkpoint, plan, runtime  # noqa: E402

TOL = 1e-3          # relative loss difference that counts as rounding on CUDA
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
             "MASTER_ADDR", "MASTER_PORT")


class Tee(io.TextIOBase):
    """stderr as it is, keeping its last line (what argparse said before exiting)."""
    last = ""

    def write(self, text):
        self.last = text.strip() or self.last
        return sys.__stderr__.write(text)


class Skip(Exception):
    """A check that cannot run here; its message says why."""


def say(msg):
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_dist_env():
    """What torchrun would set for a world of one, on a fresh port each time (a closed store's
    port may linger): train.main then takes its DDP or FSDP path (NCCL on CUDA, gloo on CPU)."""
    for k in [k for k in os.environ if k.startswith("TORCHELASTIC_")]:
        del os.environ[k]               # under torchrun: no agent store at our own port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(s.getsockname()[1]))


def llama(V, C, F, L, H, KV, T=2048):
    return LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                       num_attention_heads=H, num_key_value_heads=KV, max_position_embeddings=T)


def base(c, name, cfg, dtype=torch.bfloat16):
    """A random base model (BASE/init) and random token shards (BASE/data), built once per name."""
    d = os.path.join(c.d, name)
    if not os.path.isdir(d):
        shutil.rmtree(d + ".tmp", ignore_errors=True)
        make_inputs(d + ".tmp", cfg, 256 * (cfg.max_position_embeddings + 1), device=c.dev, dtype=dtype)
        os.rename(d + ".tmp", d)        # a base that failed half way is never used
    return d


def eval_folder(c, name, vocab):
    """NAME=DIR for --eval-data: a token-shard folder of its own with no val split (scored whole)."""
    d = os.path.join(c.d, "eval_" + name)
    if not os.path.isdir(d):
        os.makedirs(d)
        n = 8 * (c.T + 1)
        np.random.default_rng(list(name.encode())).integers(3, vocab, n).astype(np.uint16).tofile(f"{d}/e.bin")
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"dtype": "uint16", "vocab_size": vocab, "num_tokens": n,
                       "shards": [{"file": "e.bin", "num_tokens": n}]}, f)
    return f"{name}={d}"


def stages_recipe(c, names, steps):
    """The default recipe's stages of these names, `steps` steps each."""
    keep = [{k: v for k, v in vars(st).items() if v is not None and k != "batch_tokens"}
            for st in default_recipe().stages if st.name in names]
    return {"seq_len": c.T, "stages": [{**st, "tokens": 0, "steps": steps} for st in keep]}


def train_run(c, name, d, extra, recipe=None, ranks=1, capture=False, env=None):
    """train.py on base d into WORK/runs/name: in this process for one rank (unless capture), else
    under torchrun. Returns (the log.jsonl records, torchrun's stderr or "")."""
    out = os.path.join(c.d, "runs", name)
    argv = ["--init-from", os.path.join(d, "init"), "--data", os.path.join(d, "data"), "--out", out,
            "--batch-size", str(c.B), "--seq-len", str(c.T), "--sdpa", "flash", "--dtype", "bf16", "--no-compile",
            "--eval-every", "0", "--ckpt-every", "0", "--val-tokens", "0", *map(str, extra)]
    if recipe:
        os.makedirs(os.path.join(c.d, "runs"), exist_ok=True)
        with open(os.path.join(c.d, "runs", f"{name}.recipe.json"), "w") as f:
            json.dump(recipe, f)
        argv += ["--recipe", f.name]
    err = ""
    if ranks == 1 and not capture:
        ensure_dist_env()
        tee = Tee()
        try:
            with contextlib.redirect_stderr(tee):
                train.main(argv)
        except SystemExit as e:     # argparse's exit (a flag train.py no longer takes): its message
            raise RuntimeError(f"train.py exited {e.code}: {tee.last}") from None
    else:
        env = {**{k: v for k, v in os.environ.items() if k not in DIST_VARS and not k.startswith("TORCHELASTIC_")},
               **(env or {})}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               os.path.join(ROOT, "train.py"), *argv]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) as p:
            try:
                err = p.communicate(timeout=c.run_timeout)[1]
            except subprocess.TimeoutExpired:     # a hung collective: end torchrun and its workers
                os.killpg(p.pid, signal.SIGKILL)
                raise RuntimeError(f"torchrun train.py still running after {c.run_timeout}s: killed") from None
        if p.returncode:     # the ranks' own lines (error: ..., or a traceback's last), not torchrun's
            why = list(dict.fromkeys(ln for ln in err.splitlines() if "rror" in ln and not ln.startswith(" ")
                                     and "elastic" not in ln and "ChildFailedError" not in ln))
            why = why[:4] or err.strip().splitlines()[-3:]
            raise RuntimeError(f"torchrun train.py exited {p.returncode}: " + " | ".join(why)[:2000])
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f], err


def compare(c, a, b):
    """(passed, numbers, text) for two runs' losses: equal (bit-identical on CPU, TOL on CUDA)."""
    a, b = [r["loss"] for r in a], [r["loss"] for r in b]
    if len(a) != len(b):
        return False, {"losses_a": a, "losses_b": b}, f"{len(b)} steps logged against {len(a)}"
    rel, same = max(abs(x - y) / abs(x) for x, y in zip(a, b)), a == b
    ok = all(map(math.isfinite, a + b)) and (same if c.dev.type == "cpu" else rel <= TOL)
    text = f"{len(a)} losses " + ("bit-identical" if same else f"differ by up to {rel:.2e} relative")
    return ok, {"identical": same, "max_rel_diff": rel, "losses_a": a, "losses_b": b}, text


def finite(log):
    return bool(log) and all(math.isfinite(r["loss"]) for r in log)


def weights(folder):
    return {k: t for path in checkpoint_files(folder) for k, t in read_safetensors(path)}


# ---- the checks: each returns (passed, numbers, one line), or raises Skip

def check_collective(c):
    backend = "nccl" if c.cuda else "gloo"
    ensure_dist_env()
    dist.init_process_group(backend)
    t = torch.full((4,), 2.0, device=c.dev)
    dist.all_reduce(t)
    dist.destroy_process_group()
    return bool((t == 2.0).all()), {"backend": backend}, f"{backend} all_reduce over one rank: {t.tolist()}"


def check_flash(c):
    if not c.cuda:
        raise Skip("no CUDA (the CPU flash kernel runs in every check here and in the test suite)")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = torch.Generator(device=c.dev).manual_seed(0)
    q = torch.randn(2, 32, 2048, 128, device=c.dev, dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 8, 2048, 128, device=c.dev, dtype=torch.bfloat16, generator=g) for _ in range(2))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    err = float((y.float() - ref).abs().max())
    return err < 2e-2, {"max_abs_err": err}, f"bf16 GQA 32/8 causal, max |flash - math| = {err:.2e}"


def check_resume(c):
    d, extra = base(c, "small", c.small), ["--steps-per-stage", 3, "--grad-accum", 2]
    straight, _ = train_run(c, "resume_a", d, extra)
    for i in range(6):      # two steps a piece of three-step stages: mid-stage and across every boundary
        pieces, _ = train_run(c, "resume_b", d, extra + ["--max-steps", 2] + (["--resume", "auto"] if i else []))
    ok, nums, text = compare(c, straight, pieces)
    return ok, nums, f"straight vs cut into 6 pieces: {text}"


def check_checkpointing(c):
    d, extra = base(c, "small", c.small), ["--steps-per-stage", 2, "--no-save"]
    plain, _ = train_run(c, "ac_off", d, extra)
    recomputed, _ = train_run(c, "ac_on", d, extra + ["--activation-checkpointing"])
    ok, nums, text = compare(c, plain, recomputed)
    return ok, nums, f"with vs without --activation-checkpointing: {text}"


def check_dcp(c):
    d, extra = base(c, "small", c.small), ["--fsdp", "--steps-per-stage", 3]
    straight, _ = train_run(c, "dcp_a", d, extra, ranks=c.ranks)
    for i in range(3):      # steps 1-5 (cut mid odd_layers), 6-10 (cut mid LoRA), 11-12
        pieces, _ = train_run(c, "dcp_b", d, extra + ["--max-steps", 5] + (["--resume", "auto"] if i else []),
                              ranks=c.ranks)
    ok, nums, text = compare(c, straight, pieces)
    return ok, {**nums, "ranks": c.ranks}, f"--fsdp over {c.ranks} {c.backend} rank(s), straight vs cut twice: {text}"


def check_padded(c):
    cfg, old = (llama(49072, 512, 1408, 2, 4, 2), 32000) if c.cuda else (llama(1009, 64, 256, 2, 4, 2, 128), 512)
    d = base(c, "padded", cfg)
    log, _ = train_run(c, "padded", d, ["--steps-per-stage", 2, "--vocab-multiple", 64, "--freeze-old-rows", old])
    out = os.path.join(c.d, "runs", "padded")
    ck = os.path.join(out, "checkpoints", checkpoint.list_checkpoints(os.path.join(out, "checkpoints"))[-1])
    n = {"vocab": cfg.vocab_size, "want_checkpoint_rows": -(-cfg.vocab_size // 64) * 64,
         "checkpoint_rows": checkpoint.load_tensors(ck, "model.pt")["model.embed_tokens.weight"].shape[0]}
    w0, w1 = weights(os.path.join(d, "init")), weights(os.path.join(out, "final"))
    heads = ("model.embed_tokens.weight", "lm_head.weight")
    with open(os.path.join(out, "final", "config.json")) as f:
        n.update(final_rows=sorted({w1[k].shape[0] for k in heads}), final_config_vocab=json.load(f)["vocab_size"],
                 old_rows_identical=all(torch.equal(w0[k][:old], w1[k][:old]) for k in heads),
                 new_rows_trained=all(not torch.equal(w0[k][old:], w1[k][old:]) for k in heads))
    ok = (finite(log) and n["checkpoint_rows"] == n["want_checkpoint_rows"] and n["old_rows_identical"]
          and n["final_rows"] == [cfg.vocab_size] == [n["final_config_vocab"]] and n["new_rows_trained"])
    return ok, n, (f"vocab {cfg.vocab_size}: checkpoint rows {n['checkpoint_rows']} (want {n['want_checkpoint_rows']}),"
                   f" final/ rows {n['final_rows']}, config {n['final_config_vocab']}; old rows "
                   + ("kept" if n["old_rows_identical"] else "CHANGED") + ", new rows "
                   + ("trained" if n["new_rows_trained"] else "NOT trained"))


def check_eval(c):
    log, _ = train_run(c, "eval", base(c, "small", c.small), [
        "--steps-per-stage", 2, "--eval-every", 1, "--val-tokens", 5 * (c.T + 1), "--eval-batches", 2, "--no-save",
        "--eval-data", *(eval_folder(c, n, c.small.vocab_size) for n in ("ko", "en"))])
    keys = ["eval_loss", "eval_ko_loss", "eval_en_loss"]
    every = all(r.get(k) is not None and math.isfinite(r[k]) for r in log for k in keys)
    merge = [r[k] for r in log for k in ("eval_loss_before_merge", "eval_loss_after_merge") if k in r]
    ok = every and finite(log) and len(merge) == 2 and all(v is not None and math.isfinite(v) for v in merge)
    return ok, {"last": {k: log[-1].get(k) for k in keys}, "merge": merge}, \
        f"{len(log)} steps, finite {', '.join(keys)} at every one: {every}; LoRA merge before/after {merge}"


def check_fp16(c):
    cfg = llama(c.small.vocab_size, c.small.hidden_size, c.small.intermediate_size, 2, *c.heads, 2 * c.T)
    d = base(c, "fp16", cfg, dtype=torch.float16)
    recipe = {"seq_len": c.T, "stages": [{"name": "embed", "train": ["embed", "head"], "steps": 3, "lr": 1e-3,
                                          "warmup": 0}]}
    w0, res, parts = weights(os.path.join(d, "init")), {}, []
    frozen = [k for k in w0 if not k.startswith(("model.embed_tokens", "lm_head"))]
    for name, extra, ranks in (("ddp", [], 1), ("fsdp", ["--fsdp"], c.ranks)):
        try:                # the other strategy still runs
            log, _ = train_run(c, f"fp16_{name}", d, extra, recipe=recipe, ranks=ranks)
            final = os.path.join(c.d, "runs", f"fp16_{name}", "final")
            w1 = weights(final)
            with open(os.path.join(final, "config.json")) as f:
                dtype = json.load(f).get("torch_dtype")
            diff = [k for k in frozen if w1[k].dtype != w0[k].dtype or not torch.equal(w0[k], w1[k])]
            trained = not torch.equal(w0["lm_head.weight"], w1["lm_head.weight"])
            res[name] = {"untrained": len(frozen), "differ": diff[:5], "n_differ": len(diff), "torch_dtype": dtype,
                         "head_trained": trained, "ok": finite(log) and not diff and dtype == "float16" and trained}
            parts.append(f"{name}: {len(frozen) - len(diff)}/{len(frozen)} untrained tensors bit-identical "
                         f"(final/ {dtype})")
        except Exception as e:
            res[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:1000]}
            parts.append(f"{name}: {res[name]['error'][:200]}")
    return all(r["ok"] for r in res.values()), res, "; ".join(parts)


def compiled_run(c, name, stages, extra):
    """--compile over R ranks under torchrun with evals: finite losses and evals, and the recompiles."""
    log, err = train_run(c, name, base(c, "small", c.small), [
        "--compile", "--eval-every", 1, "--val-tokens", 5 * (c.T + 1), "--eval-batches", 2, "--no-save",
        "--eval-data", eval_folder(c, "ko", c.small.vocab_size), *extra],
        recipe=stages_recipe(c, stages, 2), ranks=c.ranks, capture=True, env={"TORCH_LOGS": "recompiles"})
    hits = [ln.strip() for ln in err.splitlines() if "recompile_limit" in ln or "cache_size_limit" in ln]
    n_re = sum("Recompiling function" in ln for ln in err.splitlines())
    evals = [r[k] for r in log for k in ("eval_loss", "eval_ko_loss", "eval_loss_after_merge") if k in r]
    ok = finite(log) and len(evals) >= 2 * len(log) and all(v is not None and math.isfinite(v) for v in evals)
    nums = {"stages": stages, "ranks": c.ranks, "losses": [r["loss"] for r in log], "evals": len(evals),
            "recompiles": n_re, "recompile_limit_hit": bool(hits), "limit_lines": hits[:5],
            "recompile_log": [ln.split("[__recompiles]")[-1] for ln in err.splitlines() if "__recompiles" in ln][:40]}
    return ok, nums, (f"{'+'.join(stages)}, {len(log)} steps over {c.ranks} rank(s): losses and {len(evals)} evals "
                      f"finite: {ok}; {n_re} recompiles; " + (f"recompile limit HIT: {hits[0][:150]}" if hits else
                                                               "recompile limit not hit"))


def check_compile_fsdp(c):
    stages = [s.name for s in default_recipe().stages] if c.cuda else ["lora"]     # CPU compiles slowly
    return compiled_run(c, "compile_fsdp", stages, ["--fsdp"])


def check_compile_lora(c):
    return compiled_run(c, "compile_lora", ["lora"], [])


def check_mfu(c):
    if c.quick:
        raise Skip("--quick")
    cfg = llama(32000, 2048, 8192, 16, 32, 8) if c.cuda else c.small
    T, B = c.seq_len, c.batch_size
    recipe = {"seq_len": T, "micro_batch": B, "stages": [
        {"name": "all", "train": ["all"], "steps": c.mfu_steps, "lr": 1e-4, "warmup": 0, "batch_tokens": 2 * B * T}]}
    extra = ["--grad-accum", 2, "--batch-size", B, "--seq-len", T, "--no-save"] + (["--compile"] if c.cuda else [])
    log, _ = train_run(c, "mfu", base(c, "big", cfg), extra + (["--peak-tflops", c.peak] if c.peak else []), recipe)
    warm = log[min(5, len(log) - 1):]
    n = {"params": sum(x.numel() for x in plan.meta_model(cfg).parameters()), "losses": [r["loss"] for r in log],
         "tokens_per_s": float(np.median([r["tokens_per_s"] for r in warm])), "peak_mem_gb": log[-1]["peak_mem_gb"],
         "first_step_s": 2 * B * T / log[0]["tokens_per_s"],
         "mfu": float(np.median([r["mfu"] for r in warm])) if "mfu" in warm[-1] else None}
    mfu = f"MFU {100 * n['mfu']:.1f}% (goal >= 45%)" if n["mfu"] is not None else "MFU unknown (no peak)"
    return finite(log), n, (f"{n['params']:,} parameters, 2 x {B}x{T} a step: {mfu}, {n['tokens_per_s']:,.0f} tok/s, "
                            f"first step {n['first_step_s']:.1f}s, peak {n['peak_mem_gb']:.1f} GB")


def per_stage(c, name, base_name, cfg, T, extra=(), ranks=1):
    """The default recipe, 3 steps a stage, eager: per stage rank 0's peak memory against the plan
    (without its fixed overhead), tokens/s and MFU."""
    log, _ = train_run(c, name, base(c, base_name, cfg), ["--steps-per-stage", 3, "--batch-size", c.mem_batch_size,
                                                          "--seq-len", T, "--no-save", *extra], ranks=ranks)
    rows = plan.stage_rows(cfg, default_recipe(), [{"B": c.mem_batch_size, "T": T}] * 4, mixed=True,
                           fsdp_world=ranks if "--fsdp" in extra else 0)
    n, parts = {"B": c.mem_batch_size, "T": T, "ranks": ranks, "layers": cfg.num_hidden_layers, "stages": []}, []
    for row in rows:
        st = [r for r in log if r["stage"] == row["stage"]]
        got, est = max(r["peak_mem_gb"] for r in st), (row["total"] - plan.OVERHEAD) / 1e9
        mfu = float(np.median([r["mfu"] for r in st[1:] or st])) if "mfu" in st[-1] else None
        n["stages"].append({"stage": row["name"], "measured_gb": got, "plan_gb": est, "mfu": mfu,
                            "tokens_per_s": float(np.median([r["tokens_per_s"] for r in st[1:] or st]))})
        parts.append(f"{row['name']} {got:.2f}/{est:.2f}" + (f" MFU {100 * mfu:.0f}%" if mfu is not None else ""))
    return finite(log), n, (f"hidden {cfg.hidden_size} x {cfg.num_hidden_layers} layers, {c.mem_batch_size}x{T}, "
                            f"{ranks} rank(s); GB measured/plan" + ("" if c.cuda else " (CPU: RSS, not comparable)")
                            + ": " + ", ".join(parts))


def check_memory(c):
    if not c.cuda:
        return per_stage(c, "memory", "small", c.small, c.T)
    if c.quick:
        return per_stage(c, "memory", "mid", llama(32000, 1024, 2816, 8, 8, 2), 1024)
    return per_stage(c, "memory", "big", llama(32000, 2048, 8192, 16, 32, 8), c.seq_len)


def check_fsdp_perf(c):
    L = 2 if c.quick or not c.cuda else 4
    cfg = llama(32000, 4096, 14336, L, 32, 8) if c.cuda else llama(512, 64, 256, L, 4, 2, 128)
    T = (1024 if c.quick else c.seq_len) if c.cuda else c.T
    return per_stage(c, "fsdp_perf", f"solar{L}", cfg, T, ["--fsdp"] + (["--peak-tflops", c.peak] if c.peak else []),
                     c.ranks)


CHECKS = {"collective": check_collective, "flash": check_flash, "resume": check_resume,
          "activation_checkpointing": check_checkpointing, "dcp_resume": check_dcp, "padded_vocab": check_padded,
          "eval_data": check_eval, "fp16_base": check_fp16, "compile_fsdp": check_compile_fsdp,
          "compile_lora": check_compile_lora, "mfu": check_mfu, "memory": check_memory, "fsdp_perf": check_fsdp_perf}


def run_check(c, name):
    """One check, timed; whatever it raises is its failure, and the next check still runs."""
    say(f"{name} ...")
    t0, rec = time.time(), {"name": name}
    try:
        ok, nums, text = CHECKS[name](c)
        rec.update(passed=bool(ok), numbers=nums, **({} if ok else {"error": text}))
    except Skip as e:
        text = str(e)
        rec.update(passed=None, skipped=text)
    except KeyboardInterrupt:
        raise
    except BaseException as e:                # a failed run (SystemExit from argparse included)
        text = f"{type(e).__name__}: {e}"
        rec.update(passed=False, error=text[-3000:], traceback=traceback.format_exc()[-3000:])
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
    if c.cuda:
        torch.cuda.empty_cache()
    rec["seconds"] = round(time.time() - t0, 1)
    rec["line"] = (f"{'SKIP' if rec['passed'] is None else 'PASS' if rec['passed'] else 'FAIL'}  {name:<25}"
                   f"{rec['seconds']:6.1f}s  {' '.join(text.split())[:400]}")
    say(rec["line"])
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny models, gloo: test the script itself")
    p.add_argument("--quick", action="store_true", help="small models, no MFU run: one GPU in minutes")
    p.add_argument("--only", nargs="+", choices=list(CHECKS), help="run only these checks")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per micro-batch in the MFU run")
    p.add_argument("--seq-len", type=int, default=2048, help="sequence of the MFU, memory and fsdp_perf runs")
    p.add_argument("--mfu-steps", type=int, default=15, help="steps of the MFU run (the first 5 are warmup)")
    p.add_argument("--mem-batch-size", type=int, default=2, help="micro-batch of the memory and fsdp_perf runs")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of this GPU (default: by name)")
    p.add_argument("--run-timeout", type=int, default=900, help="seconds before a torchrun run counts as hung")
    p.add_argument("--keep", action="store_true", help="keep the work folder (bases, runs) and say where")
    p.add_argument("--out-json", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"))
    c = p.parse_args()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("run this script as one process: it starts torchrun over every GPU itself")
    c.cuda = torch.cuda.is_available() and not c.dry_run
    if not c.cuda and not c.dry_run:
        raise SystemExit("no CUDA device: run with --dry-run to check the script on CPU")
    c.dev = torch.device("cuda", 0) if c.cuda else torch.device("cpu")
    if c.cuda:
        torch.cuda.set_device(c.dev)
    c.ranks, c.backend = (torch.cuda.device_count(), "NCCL") if c.cuda else (1 if c.quick else 2, "gloo")
    c.T, c.B, c.heads = (256 if c.cuda else 64), 2, (4, 2)      # head_dim 128 on CUDA, as real Llamas
    c.small = llama(8192, 512, 1408, 4, *c.heads) if c.cuda else llama(512, 64, 256, 4, *c.heads, 128)
    if c.dry_run:
        c.seq_len, c.batch_size, c.mfu_steps, c.mem_batch_size = 64, 2, 6, 2
    name = torch.cuda.get_device_name(c.dev) if c.cuda else "cpu"
    c.peak = c.peak_tflops or runtime.peak_tflops(name)
    res = {"device": name, "gpus": torch.cuda.device_count() if c.cuda else 0, "torch": torch.__version__,
           "cuda": torch.version.cuda, "peak_tflops": c.peak, "dry_run": c.dry_run, "quick": c.quick, "checks": []}
    say(f"{name}, torch {torch.__version__}" + (f", CUDA {torch.version.cuda}, {c.ranks} GPU(s)" if c.cuda else "")
        + ("" if c.peak or not c.cuda else "; bf16 peak unknown: no MFU (give --peak-tflops)"))
    t0, c.d = time.time(), tempfile.mkdtemp(prefix="gpu_check_")
    try:
        for name in c.only or CHECKS:
            res["checks"].append(run_check(c, name))
            res["wall_s"] = round(time.time() - t0, 1)
            with open(c.out_json, "w") as f:       # after every check: a crash later keeps the rest
                json.dump(res, f, indent=1)
    finally:
        if c.keep:
            say(f"work folder kept: {c.d}")
        else:
            shutil.rmtree(c.d, ignore_errors=True)
    print("\n".join(r["line"] for r in res["checks"]))
    failed = [r["name"] for r in res["checks"] if r["passed"] is False]
    say(f"{len(res['checks']) - len(failed)} of {len(res['checks'])} checks passed or skipped in {res['wall_s']:.0f}s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "") + f"; results in {c.out_json}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

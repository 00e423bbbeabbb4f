"""One short check of train.py on one GPU: bf16, torch.compile, flash SDPA, NCCL, resume, MFU, memory.

    python bench/gpu_check.py                      # one GPU, about 5 minutes, writes gpu_check.json
    torchrun --standalone --nproc_per_node=1 bench/gpu_check.py     # the same through torchrun
    python bench/gpu_check.py --dry-run            # CPU, tiny config: the script's own plumbing (gloo)

What it does, each step printed as it passes (each rank on its own cuda:LOCAL_RANK):
  1. NCCL: a process group of world size 1 (torchrun's, or one it makes itself) and an all_reduce.
  2. flash SDPA: scaled_dot_product_attention in bf16 with GQA under
     sdpa_kernel([FLASH_ATTENTION]) only, against the math backend.
  3. Resume: the default four-stage recipe at a small size with --dtype bf16 --sdpa flash
     --grad-accum 2 (flash entered at every micro-step), run straight and cut into pieces by
     --max-steps + --resume auto; the logged losses are compared (bit-identical on CPU; CUDA's
     flash backward may add run-to-run noise, so the largest relative difference is reported).
  4. MFU: train.py's own loop (a one-stage recipe training everything), a ~1.1B Llama
     (hidden 2048, 16 layers, 32/8 heads, FFN 8192, vocab 32000) at sequence 2048, bf16 autocast,
     torch.compile per block, flash SDPA, 2 micro-steps per step, DDP over NCCL; MFU is read from
     log.jsonl against the GPU's dense bf16 peak (runtime.PEAK_TFLOPS; --peak-tflops for others).
  5. Memory: the default four-stage recipe, 3 steps per stage, eager; the peak memory of each stage
     (torch.cuda.max_memory_allocated, reset at every stage start) against --plan's estimate.
  6. FSDP2: `torchrun --nproc_per_node=<all visible GPUs> train.py --fsdp`, the default recipe, 3
     steps a stage, SOLAR-10.7B's layer shapes (hidden 4096, FFN 14336, 32/8 heads, vocab 32000)
     with 4 layers, bf16 + flash; tokens/s, MFU and max_memory_allocated per rank against
     `--plan --fsdp`. Skipped when this script itself runs under torchrun with more than one process.
The numbers go to --out-json (default gpu_check.json, or $OUT/gpu_check.json when $OUT is set).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

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
from training import plan, runtime  # noqa: E402


def say(msg):
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_dist_env():
    """Outside torchrun, set the variables it would set, for a world of one: train.py then
    takes its DDP path (NCCL on CUDA, gloo on CPU) exactly as under torchrun."""
    if "RANK" not in os.environ or os.environ.get("GPU_CHECK_OWN_ENV"):
        # a fresh port for every process group this process makes (a closed store's port may linger)
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), GPU_CHECK_OWN_ENV="1")


def local_device(cuda):
    """This rank's device: cuda:LOCAL_RANK (never plain "cuda", which is GPU 0 for every rank)."""
    if not cuda:
        return torch.device("cpu")
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(dev)
    return dev


def check_collective(dev):
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    t = torch.full((4,), 2.0, device=dev)
    dist.all_reduce(t)
    ok = bool((t == 2.0 * dist.get_world_size()).all())
    dist.destroy_process_group()
    if not ok:
        raise SystemExit(f"{backend} all_reduce gave {t.tolist()}")
    say(f"{backend}: all_reduce over {os.environ['WORLD_SIZE']} rank(s) ok")
    return {"backend": backend, "all_reduce_ok": ok}


def check_flash(dev):
    """Not fatal: when flash cannot take model.py's call, the MFU run says so and uses --sdpa auto."""
    if dev.type != "cuda":
        say("flash SDPA: skipped (no CUDA; the CPU kernel is checked by the test suite)")
        return {"flash": "skipped"}
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(2, 32, 2048, 128, device=dev, dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 8, 2048, 128, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(2))
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    except RuntimeError as e:
        say(f"FAILED: flash SDPA refuses bf16 GQA causal attention: {str(e)[:300]}")
        return {"flash": f"failed: {str(e)[:300]}"}
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    err = float((y.float() - ref).abs().max())
    ok = err < 2e-2
    say(f"flash SDPA (bf16, GQA 32/8, causal): max |flash - math| = {err:.2e} {'ok' if ok else 'FAILED'}")
    return {"flash": "ok" if ok else "wrong", "flash_max_abs_err": err}


def write_inputs(d, cfg, n_tokens, dev):
    # bf16 on disk, as real checkpoints; built on the GPU when there is one
    make_inputs(d, cfg, n_tokens, device=dev, dtype=torch.bfloat16)


def run_train(d, name, recipe, extra, out=None, save=False):
    path = os.path.join(d, f"{name}.json")
    if recipe is not None:
        with open(path, "w") as f:
            json.dump(recipe, f)
    out = out or os.path.join(d, name)
    ensure_dist_env()
    t0 = time.time()
    train.main(["--init-from", os.path.join(d, "init"), "--data", os.path.join(d, "data"), "--out", out,
                "--eval-every", "0", "--ckpt-every", "0", "--val-tokens", "0",
                *([] if recipe is None else ["--recipe", path]), *([] if save else ["--no-save"]), *extra])
    with open(os.path.join(out, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    return log, time.time() - t0


def check_resume(d, dev):
    """The default recipe, bf16 + flash + 2 micro-steps, straight vs cut into pieces and resumed,
    on a small model of its own (4 layers, hidden 256) in d."""
    T, steps = 128, 3
    cfg = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=T)
    write_inputs(d, cfg, 4 * steps * 2 * 2 * (T + 1) + 4 * (T + 1), dev)
    extra = ["--steps-per-stage", str(steps), "--batch-size", "2", "--seq-len", str(T), "--grad-accum", "2",
             "--dtype", "bf16", "--sdpa", "flash", "--no-compile", "--export-dtype", "bfloat16"]
    straight, _ = run_train(d, "resume_a", None, extra, save=True)
    out = os.path.join(d, "resume_b")
    pieces = []
    for i in range(2 * steps):       # two steps a piece of three-step stages: mid-stage, across every boundary
        pieces, _ = run_train(d, "resume_b", None, extra + ["--max-steps", "2"] + (["--resume", "auto"] if i else []),
                              out=out, save=True)
    a, b = [r["loss"] for r in straight], [r["loss"] for r in pieces]
    if len(a) != len(b) or len(a) != 4 * steps:
        raise SystemExit(f"resume check: {len(b)} steps logged after resuming, {len(a)} straight")
    rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    identical = a == b
    say(f"bf16 + flash + grad-accum 2, default recipe cut into {2 * steps} pieces: losses "
        f"{'bit-identical' if identical else f'differ by up to {rel:.2e} relative'} to the straight run")
    if rel > 1e-2:
        raise SystemExit(f"resume check: resumed losses differ by {rel:.2e} relative: {a} vs {b}")
    return {"resume_identical": identical, "resume_max_rel_diff": rel, "resume_losses": b, "straight_losses": a}


def check_fsdp(d, dev, peak, T, B):
    """train.py --fsdp on every visible GPU (2 gloo processes on the dry run), in its own torchrun."""
    if os.environ.get("WORLD_SIZE", "1") != "1" and not os.environ.get("GPU_CHECK_OWN_ENV"):
        say("FSDP2: skipped (run this script without torchrun to check FSDP over all GPUs)")
        return {"fsdp": "skipped"}
    cuda = dev.type == "cuda"
    n = torch.cuda.device_count() if cuda else 2
    L = 4 if cuda else 2
    cfg = (LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=L,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=T) if cuda else
           LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=L,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=T))
    write_inputs(d, cfg, (4 * 3 * n * B + 4) * (T + 1), dev)
    out = os.path.join(d, "run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           os.path.join(ROOT, "train.py"), "--fsdp", "--init-from", os.path.join(d, "init"),
           "--data", os.path.join(d, "data"), "--out", out, "--steps-per-stage", "3", "--batch-size", str(B),
           "--seq-len", str(T), "--eval-every", "0", "--ckpt-every", "0", "--val-tokens", "0", "--no-save",
           "--sdpa", "flash"] + (["--dtype", "bf16", "--no-compile"] if cuda else []) \
        + (["--peak-tflops", str(peak)] if peak else [])
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "GPU_CHECK_OWN_ENV")}
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"FSDP2 run failed:\n{p.stderr[-4000:]}")
    with open(os.path.join(out, "log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    rows = plan.stage_rows(cfg, default_recipe(), [{"B": B, "T": T}] * 4, mixed=cuda, fsdp_world=n)
    res = {"fsdp_ranks": n, "fsdp_layers": L, "fsdp_wall_s": time.time() - t0, "fsdp_stages": []}
    say(f"FSDP2 over {n} rank(s), {L} layers of {'SOLAR' if cuda else 'a tiny model'}'s shapes, micro-batch {B} x {T}: "
        "per stage tokens/s, MFU, peak memory of rank 0 vs --plan --fsdp (without the overhead)")
    for row in rows:
        st = [r for r in log if r["stage"] == row["stage"]]
        got = max(r["peak_mem_gb"] for r in st)
        est = (row["total"] - plan.OVERHEAD) / 1e9
        tps = float(np.median([r["tokens_per_s"] for r in st[1:]]))
        mfu = float(np.median([r["mfu"] for r in st[1:]])) if "mfu" in st[-1] else None
        res["fsdp_stages"].append({"stage": row["name"], "tokens_per_s": tps, "mfu": mfu, "measured_gb": got,
                                   "plan_gb": est, "losses": [r["loss"] for r in st]})
        say(f"  {row['name']:<12} {tps:10,.0f} tok/s   MFU {'-' if mfu is None else f'{100 * mfu:.1f}%':>6}   "
            f"measured {got:7.2f} GB   plan {est:7.2f} GB" + ("" if cuda else "   (CPU: RSS, not comparable)"))
        if not all(np.isfinite(r["loss"]) for r in st):
            raise SystemExit(f"non-finite loss in the FSDP2 run, stage {row['name']}")
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny config, gloo: test the script itself")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per micro-batch in the MFU run")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--mfu-steps", type=int, default=15, help="steps of the MFU run (the first 5 are warmup)")
    p.add_argument("--mem-batch-size", type=int, default=2, help="micro-batch of the per-stage memory run")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-fsdp", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of this GPU (default: by name)")
    p.add_argument("--out-json", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"))
    args = p.parse_args()
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("no CUDA device: run with --dry-run to check the script on CPU")
    if args.dry_run:
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        args.seq_len, args.batch_size, args.mfu_steps, args.mem_batch_size = 64, 2, 6, 2
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=args.seq_len)
    dev = local_device(cuda)
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak = args.peak_tflops or runtime.peak_tflops(name)
    res = {"device": name, "torch": torch.__version__, "peak_tflops": peak, "dry_run": args.dry_run}
    say(f"{name} ({dev}), torch {torch.__version__}"
        + (f", CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}" if cuda else "")
        + ("" if peak or not cuda else "; its bf16 peak is unknown: MFU not reported (give --peak-tflops)"))
    ensure_dist_env()
    res.update(check_collective(dev))
    res.update(check_flash(dev))
    T = args.seq_len
    steps = args.mfu_steps
    B = args.batch_size
    # enough tokens that no window repeats
    n_tokens = (2 * steps * B + 3 * 4 * args.mem_batch_size + 4) * (T + 1)
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "resume"))
        res.update(check_resume(os.path.join(d, "resume"), dev))
        write_inputs(d, cfg, n_tokens, dev)
        n_params = sum(x.numel() for x in plan.meta_model(cfg).parameters())     # no second copy in memory
        say(f"model: {n_params / 1e9:.2f}B parameters; MFU run: {steps} steps of 2 x {B} x {T} tokens, "
            f"{'bf16 + compile + flash SDPA' if cuda else 'fp32 eager (dry run)'}, DDP over "
            f"{'NCCL' if cuda else 'gloo'}")
        recipe = {"seq_len": T, "micro_batch": B, "stages": [
            {"name": "all", "train": ["all"], "steps": steps, "lr": 1e-4, "warmup": 0, "batch_tokens": 2 * B * T}]}
        sdpa = "flash" if res["flash"] in ("ok", "skipped") else "auto"
        extra = ["--grad-accum", "2", "--sdpa", sdpa] + (["--peak-tflops", str(peak)] if peak else []) \
            + (["--compile", "--dtype", "bf16"] if cuda else [])
        log, wall = run_train(d, "mfu", recipe, extra)
        warm = log[min(5, len(log) - 1):]
        tps = float(np.median([r["tokens_per_s"] for r in warm]))
        res.update(mfu_tokens_per_s=tps, mfu_wall_s=wall, mfu_first_step_s=2 * B * T / log[0]["tokens_per_s"],
                   mfu_losses=[r["loss"] for r in log])
        if cuda:
            res["mfu"] = float(np.median([r["mfu"] for r in warm])) if peak else None
            head = f"MFU {100 * res['mfu']:.1f}% (goal >= 45%)" if peak else "MFU unknown (no peak)"
            say(f"{head}, {tps:,.0f} tokens/s, first (compile) step {res['mfu_first_step_s']:.1f}s, "
                f"peak {log[-1]['peak_mem_gb']:.1f} GB")
        else:
            say(f"dry run: {tps:,.0f} tokens/s on CPU, loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f}")
        if not all(np.isfinite(r["loss"]) for r in log):
            raise SystemExit("non-finite loss in the MFU run")
        if not args.skip_memory:
            # the default recipe at its real shapes, 3 steps per stage, eager, measured per stage
            Bm = args.mem_batch_size
            mem_extra = ["--steps-per-stage", "3", "--batch-size", str(Bm), "--seq-len", str(T), "--no-compile"]
            mem_extra += ["--dtype", "bf16"] if cuda else []
            log, _ = run_train(d, "memory", {"seq_len": T, "stages": [
                {**{k: v for k, v in vars(st).items() if v is not None}, "tokens": 0, "steps": 3}
                for st in default_recipe().stages]}, mem_extra)
            rows = plan.stage_rows(LlamaConfig.from_pretrained(os.path.join(d, "init")), default_recipe(),
                                   [{"B": Bm, "T": T}] * 4, mixed=cuda)
            res["memory"] = []
            say(f"per-stage peak memory at micro-batch {Bm} x {T} (max_memory_allocated vs --plan without "
                f"the {plan.OVERHEAD / 1e9:.1f} GB overhead)")
            for row in rows:
                got = max(r["peak_mem_gb"] for r in log if r["stage"] == row["stage"])
                est = (row["total"] - plan.OVERHEAD) / 1e9
                res["memory"].append({"stage": row["name"], "measured_gb": got, "plan_gb": est})
                say(f"  {row['name']:<12} measured {got:7.2f} GB   plan {est:7.2f} GB   ratio {est / got:.2f}"
                    + ("" if cuda else "   (CPU: peak RSS of the process, not comparable)"))
        if not args.skip_fsdp:
            os.makedirs(os.path.join(d, "fsdp"))
            res.update(check_fsdp(os.path.join(d, "fsdp"), dev, peak, T, args.mem_batch_size))
    with open(args.out_json, "w") as f:
        json.dump(res, f, indent=1)
    say(f"all checks passed; numbers in {args.out_json}")


if __name__ == "__main__":
    main()

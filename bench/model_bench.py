"""Benchmark model.py against transformers' LlamaForCausalLM, side by side in one run.

    python bench/model_bench.py                    # speed (fwd+bwd tokens/s) and loading memory
    python bench/model_bench.py --skip-load --threads 1

1. Speed: the same config, weights, inputs and thread count; forward + backward of the
   loss, alternating the two implementations each repetition so machine noise hits both.
   Prints tokens/s of each and the ratio (ours / transformers).
2. Loading memory: saves a checkpoint of a few hundred MB, then loads it in a fresh child
   process with Llama.from_pretrained (and with transformers for reference) and prints the
   peak resident memory the load added, as a multiple of the checkpoint's size on disk.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from model import Llama, LlamaConfig  # noqa: E402


def speed(args):
    import transformers
    torch.set_num_threads(args.threads)
    cfg = LlamaConfig(vocab_size=8000, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                      num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=4,
                      max_position_embeddings=2048)
    torch.manual_seed(0)
    ours = Llama(cfg).train()
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg.to_hf())).train()
    ref.load_state_dict(ours.state_dict())
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1))

    def step_ours():
        _, loss = ours(x[:, :-1], targets=x[:, 1:])
        loss.backward()

    def step_ref():
        ref(x[:, :-1], labels=x[:, :-1].clone()).loss.backward()  # HF shifts inside

    times = {"model.py": [], "transformers": []}
    for fn in (step_ours, step_ref):
        fn()  # warm-up
    pair = (("model.py", step_ours), ("transformers", step_ref))
    for rep in range(args.reps):
        for name, fn in (pair if rep % 2 == 0 else pair[::-1]):  # alternate who goes first
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq
    rate = {k: tokens / sorted(v)[len(v) // 2] for k, v in times.items()}  # median step
    n = sum(p.numel() for p in ours.parameters()) / 1e6
    print(f"speed: {n:.1f}M params, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
          f"median of {args.reps} fwd+bwd steps")
    for k, v in rate.items():
        print(f"  {k:13s} {v:9.0f} tokens/s")
    print(f"  ratio model.py / transformers: {rate['model.py'] / rate['transformers']:.2f}x")


CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
import torch
def status(field):  # VmHWM is the peak RSS of this process image (ru_maxrss would inherit the parent's)
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
before = status('VmRSS')
t0 = time.perf_counter()
if {which!r} == 'model.py':
    from model import Llama
    m = Llama.from_pretrained({folder!r})
else:
    import transformers
    m = transformers.AutoModelForCausalLM.from_pretrained({folder!r}, dtype=torch.float32)
peak = status('VmHWM')
print(peak - before, time.perf_counter() - t0)
"""


def load_memory(args):
    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                      num_attention_heads=16, num_key_value_heads=4)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with tempfile.TemporaryDirectory() as d:
        folder = os.path.join(d, "ckpt")
        Llama(cfg).save_pretrained(folder, max_shard_size=args.shard_size)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"loading: checkpoint of {size / 1e6:.0f} MB (fp32, shards of at most {args.shard_size})")
        for which in ("model.py", "transformers"):
            code = CHILD.format(root=root, which=which, folder=folder)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode:
                print(f"  {which}: failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            added, secs = out.stdout.split()
            print(f"  {which:13s} peak RSS added {int(added) / 1e6:6.0f} MB = {int(added) / size:.2f}x "
                  f"checkpoint size, {float(secs):.2f} s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--shard-size", default="5GB", help="max shard size of the loading test checkpoint")
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args()
    if not args.skip_speed:
        speed(args)
    if not args.skip_load:
        load_memory(args)

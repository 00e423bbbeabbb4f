"""Compile time of train.py's per-block torch.compile against compiling the whole model, by depth.

    python bench/compile_bench.py                 # CPU, about 5 minutes; caches off
    python bench/compile_bench.py --layers 2,8 --device cuda

Whole-model compile traces the unrolled stack of layers, so its compile time grows with depth;
per-block compile (runtime.compile_blocks, as torchtitan does) compiles one decoder block whose
graph every layer reuses. Each measurement is a fresh child process (inductor's on-disk caches
off, TORCHINDUCTOR_FORCE_DISABLE_CACHES=1) that times its first training step (forward +
backward, where the compile happens) and the median of the next three, on a tiny Llama of the
given depth with every parameter trained.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time, statistics
sys.path.insert(0, {root!r})
import torch
from training import runtime
from model import Llama, LlamaConfig
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=2000, hidden_size=128, intermediate_size=352, num_hidden_layers={layers},
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
model = Llama(cfg).to({device!r})
if {mode!r} == "blocks":
    runtime.compile_blocks(model)
    fwd = model
else:
    fwd = torch.compile(model)
x = torch.randint(0, 2000, (2, 128), device={device!r})
times = []
for i in range(4):
    t0 = time.time()
    _, loss = fwd(x, x)
    loss.backward()
    if {device!r} == "cuda":
        torch.cuda.synchronize()
    times.append(time.time() - t0)
print(json.dumps({{"first_s": times[0], "step_s": statistics.median(times[1:])}}))
"""


def measure(mode, layers, device):
    code = CHILD.format(root=ROOT, layers=layers, mode=mode, device=device)
    env = {**os.environ, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", default="2,8", help="comma-separated depths")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print("layers  first step (compile): whole model / per block = ratio   steady step: whole / per block")
    for L in [int(x) for x in args.layers.split(",")]:
        whole, block = measure("whole", L, args.device), measure("blocks", L, args.device)
        print(f"{L:>6}  {whole['first_s']:.1f} s / {block['first_s']:.1f} s = "
              f"{whole['first_s'] / block['first_s']:.2f}   "
              f"{whole['step_s'] * 1e3:.0f} / {block['step_s'] * 1e3:.0f} ms",
              flush=True)


if __name__ == "__main__":
    main()

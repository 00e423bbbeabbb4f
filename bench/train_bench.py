"""Training-step speed of train.py against transformers, and peak memory per stage, on CPU.

    python bench/train_bench.py                 # about 3-4 minutes
    python bench/train_bench.py --hidden 256 --layers 4 --rounds 2   # quicker

Speed: the same Llama config, weights, batch (B x T tokens), fp32, AdamW (same lr, betas,
weight decay groups) and every parameter trained, one torch thread, each step timed in this
process's CPU seconds (--clock cpu: on a shared machine wall time mostly measures the other
jobs; with one thread CPU time is the work done). "ours" is train.py's own loop (a one-stage
recipe training "all"), tokens/s read from its log.jsonl, so data loading, loss normalization,
grad clipping and logging are included; "hf" is a plain LlamaForCausalLM step (forward with
labels, backward, clip, AdamW step). The two run in alternating rounds in the same process and
the ratio is the median of the per-round ratios (and best round against best round), so load
from other processes hits both.

Memory: each stage of the default recipe runs alone in a child process (3 steps); its peak RSS
(the child's /proc VmHWM) is printed beside --plan's estimate for the same stage in fp32 (weights + grads +
AdamW + activations) and beside the RSS of a child that only imports and loads the model.
Needs transformers (requirements-test.txt); nothing else.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402
from recipe import default_recipe  # noqa: E402
from training import plan  # noqa: E402

CLOCK = time.process_time


def make_inputs(d, cfg, n_tokens, device="cpu", dtype=torch.float32):
    """A random init model in d/init and n_tokens random ids as a one-shard data folder d/data."""
    torch.manual_seed(0)
    with torch.device(device):
        model = Llama(cfg)
    model.to(dtype).save_pretrained(os.path.join(d, "init"))
    del model
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    ids = np.random.default_rng(0).integers(3, cfg.vocab_size, n_tokens).astype(np.uint16)
    ids.tofile(os.path.join(d, "data", "t.bin"))
    with open(os.path.join(d, "data", "meta.json"), "w") as f:
        json.dump({"dtype": "uint16", "vocab_size": cfg.vocab_size, "eos_id": 2, "bos_id": 1,
                   "num_tokens": n_tokens, "shards": [{"file": "t.bin", "num_tokens": n_tokens}]}, f)


def ours(d, args, tag):
    recipe = {"seq_len": args.seq_len, "micro_batch": args.batch_size, "stages": [
        {"name": "all", "train": ["all"], "steps": args.steps, "lr": 1e-4, "warmup": 0,
         "batch_tokens": args.batch_size * args.seq_len}]}
    with open(os.path.join(d, "r.json"), "w") as f:
        json.dump(recipe, f)
    out = os.path.join(d, f"run_{tag}")
    train.main(["--init-from", os.path.join(d, "init"), "--data", os.path.join(d, "data"), "--out", out,
                "--recipe", os.path.join(d, "r.json"), "--eval-every", "0", "--ckpt-every", "0",
                "--val-tokens", "0", "--export-dtype", "float32"])
    with open(os.path.join(out, "log.jsonl")) as f:
        tps = [json.loads(line)["tokens_per_s"] for line in f]
    return statistics.median(tps[1:])          # the first step pays one-time allocations


class HF:
    """A plain transformers training step: model, AdamW, the same batches as train.py reads."""

    def __init__(self, d, args):
        from transformers import LlamaForCausalLM
        self.model = LlamaForCausalLM.from_pretrained(os.path.join(d, "init"), attn_implementation="sdpa").train()
        ps = list(self.model.parameters())
        self.opt = torch.optim.AdamW([{"params": [p for p in ps if p.dim() >= 2], "weight_decay": 0.1},
                                      {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}],
                                     lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
        self.data = np.fromfile(os.path.join(d, "data", "t.bin"), dtype=np.uint16)
        self.args = args

    def __call__(self):
        B, T = self.args.batch_size, self.args.seq_len
        tps = []
        for step in range(self.args.steps):
            t0 = CLOCK()
            x = torch.from_numpy(self.data[step * B * T:(step + 1) * B * T].astype(np.int64)).view(B, T)
            loss = self.model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            loss.item()
            tps.append(B * T / (CLOCK() - t0))
        return statistics.median(tps[1:])


def peak_rss_child(argv):
    """Peak RSS of a fresh Python running argv. Read from the child's own /proc VmHWM: a
    forked child's ru_maxrss starts at the parent's RSS, which would hide small numbers."""
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0])\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nfinally:\n"
            "    print('VmHWM', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
            " file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"child failed: {' '.join(argv)}\n{p.stderr[-2000:]}")
    return int(p.stderr.rsplit("VmHWM", 1)[1].split()[0]) * 1024      # kB


def memory(d, args, cfg):
    with open(os.path.join(d, "load_only.py"), "w") as f:
        f.write(f"import sys; sys.path.insert(0, {ROOT!r}); import train; from model import Llama\n"
                f"Llama.from_pretrained({os.path.join(d, 'init')!r})\n")
    base = peak_rss_child([os.path.join(d, "load_only.py")])
    recipe = default_recipe()
    rows = plan.stage_rows(cfg, recipe, [{"B": args.batch_size, "T": args.seq_len}] * 4, mixed=False)
    out = []
    for st, row in zip(recipe.stages, rows):
        one = {"seq_len": args.seq_len, "micro_batch": args.batch_size, "stages": [
            {"name": st.name, "train": st.train, "steps": 3, "lr": 1e-4, "batch_tokens": args.batch_size * args.seq_len,
             **({"lora": st.lora} if st.lora else {})}]}
        with open(os.path.join(d, f"m_{st.name}.json"), "w") as f:
            json.dump(one, f)
        rss = peak_rss_child([os.path.join(ROOT, "train.py"), "--init-from", os.path.join(d, "init"),
                              "--data", os.path.join(d, "data"), "--out", os.path.join(d, f"m_{st.name}"),
                              "--recipe", os.path.join(d, f"m_{st.name}.json"), "--eval-every", "0",
                              "--val-tokens", "0", "--no-save"])   # checkpoint serialization is not training
        est = row["total"] - plan.OVERHEAD
        out.append((st.name, rss, est))
    return base, out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=4, help="steps per round (the first is discarded)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both sides (1: robust on a shared machine; 0: torch's choice)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--clock", default="cpu", choices=["cpu", "wall"],
                   help="cpu: time steps in this process's CPU seconds (other processes' load does not count)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        # train.py times its steps with time.time(); point it (and the transformers loop) at CPU time
        global CLOCK
        train.time = types.SimpleNamespace(time=time.process_time)
    else:
        CLOCK = time.time
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75),
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=args.seq_len)
    n_params = sum(p.numel() for p in Llama(cfg).parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; config hidden {args.hidden}, "
          f"{args.layers} layers, vocab {args.vocab} ({n_params / 1e6:.1f}M params); batch {args.batch_size} x "
          f"{args.seq_len} tokens, fp32, AdamW, all parameters trained")
    with tempfile.TemporaryDirectory() as d:
        make_inputs(d, cfg, (args.steps + 2) * args.batch_size * args.seq_len + 1)
        ratios, A, B = [], [], []
        for r in range(0 if args.skip_speed else args.rounds):
            a, b = ours(d, args, r), HF(d, args)()   # both start fresh each round: same allocator warmth
            ratios.append(a / b)
            A.append(a)
            B.append(b)
            print(f"round {r + 1}: train.py {a:,.0f} tok/s, transformers {b:,.0f} tok/s, ratio {a / b:.2f}x")
        if ratios:
            print(f"train.py / transformers tokens/s: median of rounds {statistics.median(ratios):.2f}x, "
                  f"best against best {max(A) / max(B):.2f}x ({max(A):,.0f} vs {max(B):,.0f}) (goal >= 1.0x)")
        if not args.skip_memory:
            base, rows = memory(d, args, cfg)
            print(f"peak RSS of a child that only loads the model: {base / 1e6:,.0f} MB")
            print(f"{'stage':<14}{'peak RSS MB':>12}{'above load':>12}{'--plan fp32 MB':>16}")
            for name, rss, est in rows:
                print(f"{name:<14}{rss / 1e6:>12,.0f}{(rss - base) / 1e6:>12,.0f}{est / 1e6:>16,.0f}")


if __name__ == "__main__":
    main()

"""Training-step speed of train.py against transformers, and peak memory per stage, on CPU.

    python bench/train_bench.py                 # about 2-3 minutes on 2 cores
    python bench/train_bench.py --hidden 256 --layers 4 --rounds 2   # quicker

Speed: the same Llama config, weights, batch (B x T tokens), fp32, AdamW (same lr, betas,
weight decay groups) and every parameter trained. "ours" is train.py's own loop (a one-stage
recipe training "all"), tokens/s read from its log.jsonl, so data loading, loss normalization,
grad clipping and logging are included; "hf" is a plain LlamaForCausalLM step (forward with
labels, backward, clip, AdamW step). The two run in alternating rounds in the same process and
the ratio is the median of the per-round ratios, so load from other processes hits both.

Memory: each stage of the default recipe runs alone in a child process (3 steps); its peak RSS
(os.wait4) is printed beside --plan's estimate for the same stage in fp32 (weights + grads +
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

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import plan  # noqa: E402
import train  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402
from recipe import default_recipe  # noqa: E402


def make_inputs(d, cfg, n_tokens):
    torch.manual_seed(0)
    Llama(cfg).save_pretrained(os.path.join(d, "init"))
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


def hf(d, args):
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(os.path.join(d, "init"), attn_implementation="sdpa").train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    data = np.fromfile(os.path.join(d, "data", "t.bin"), dtype=np.uint16)
    B, T = args.batch_size, args.seq_len
    tps = []
    for step in range(args.steps):
        t0 = time.time()
        x = torch.from_numpy(data[step * B * T:(step + 1) * B * T].astype(np.int64)).view(B, T)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
        tps.append(B * T / (time.time() - t0))
    return statistics.median(tps[1:])


def peak_rss_child(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    if status:
        raise SystemExit(f"child failed: {' '.join(cmd)}\n{p.stderr.read().decode()[-2000:]}")
    return ru.ru_maxrss * 1024                  # Linux reports KiB


def memory(d, args, cfg):
    base = peak_rss_child([sys.executable, "-c", f"import sys; sys.path.insert(0, {ROOT!r}); import train; "
                           f"from model import Llama; Llama.from_pretrained({os.path.join(d, 'init')!r})"])
    recipe = default_recipe()
    rows = plan.stage_rows(cfg, recipe, [{"B": args.batch_size, "T": args.seq_len}] * 4, mixed=False)
    out = []
    for st, row in zip(recipe.stages, rows):
        one = {"seq_len": args.seq_len, "micro_batch": args.batch_size, "stages": [
            {"name": st.name, "train": st.train, "steps": 3, "lr": 1e-4, "batch_tokens": args.batch_size * args.seq_len,
             **({"lora": st.lora} if st.lora else {})}]}
        with open(os.path.join(d, f"m_{st.name}.json"), "w") as f:
            json.dump(one, f)
        rss = peak_rss_child([sys.executable, os.path.join(ROOT, "train.py"), "--init-from", os.path.join(d, "init"),
                              "--data", os.path.join(d, "data"), "--out", os.path.join(d, f"m_{st.name}"),
                              "--recipe", os.path.join(d, f"m_{st.name}.json"), "--eval-every", "0",
                              "--val-tokens", "0"])
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
    p.add_argument("--steps", type=int, default=6, help="steps per round (the first is discarded)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true")
    args = p.parse_args()
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75),
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=args.seq_len)
    n_params = sum(p.numel() for p in Llama(cfg).parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; config hidden {args.hidden}, "
          f"{args.layers} layers, vocab {args.vocab} ({n_params / 1e6:.1f}M params); batch {args.batch_size} x "
          f"{args.seq_len} tokens, fp32, AdamW, all parameters trained")
    with tempfile.TemporaryDirectory() as d:
        make_inputs(d, cfg, (args.steps + 2) * args.batch_size * args.seq_len + 1)
        ratios = []
        for r in range(args.rounds):
            a = ours(d, args, r)
            b = hf(d, args)
            ratios.append(a / b)
            print(f"round {r + 1}: train.py {a:,.0f} tok/s, transformers {b:,.0f} tok/s, ratio {a / b:.2f}x")
        print(f"train.py / transformers tokens/s: median {statistics.median(ratios):.2f}x (goal >= 1.0x)")
        if not args.skip_memory:
            base, rows = memory(d, args, cfg)
            print(f"peak RSS of a child that only loads the model: {base / 1e6:,.0f} MB")
            print(f"{'stage':<14}{'peak RSS MB':>12}{'above load':>12}{'--plan fp32 MB':>16}")
            for name, rss, est in rows:
                print(f"{name:<14}{rss / 1e6:>12,.0f}{(rss - base) / 1e6:>12,.0f}{est / 1e6:>16,.0f}")


if __name__ == "__main__":
    main()

"""How long the new rows of a SOLAR-sized expansion take: expand.new_rows' plain mean over
each piece's base rows, against F.embedding_bag (one fused kernel) side by side.

    python bench/expand_bench.py                      # 32000 x 4096 base rows, 20000 new pieces
    python bench/expand_bench.py --new 40000 --reps 5

Prints seconds for each and the largest difference between their rows.
"""
import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from expand import new_rows  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", type=int, default=32000, help="base vocabulary rows")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--new", type=int, default=20000, help="new pieces")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    rng = random.Random(0)
    old = torch.randn(a.old, a.hidden, generator=torch.Generator().manual_seed(0))
    # a Korean piece decomposes into 1-6 base ids mostly; one the base spells in byte-fallback
    # pieces takes 3 per syllable, up to 24 for --max-piece-chars 8: a tenth of them here
    groups = [[rng.randrange(a.old) for _ in range(rng.randint(1, 6) if rng.random() < 0.9 else rng.randint(7, 24))]
              for _ in range(a.new)]
    ids = torch.tensor([j for g in groups for j in g])
    offsets = torch.tensor([0] + [len(g) for g in groups[:-1]]).cumsum(0)
    plain, bag = [], []
    for _ in range(a.reps):                       # alternate, so that load falls on both alike
        t = time.perf_counter()
        rows = new_rows(old, "subword", len(groups), groups, 0.02, None)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = F.embedding_bag(ids, old, offsets, mode="mean")
        bag.append(time.perf_counter() - t)
    print(f"{a.new} new rows from {a.old} x {a.hidden}, {torch.get_num_threads()} threads, best of {a.reps}")
    print(f"plain mean (expand.new_rows): {min(plain):.3f} s")
    print(f"F.embedding_bag:              {min(bag):.3f} s   ratio {min(plain) / min(bag):.1f}x")
    diff = (rows - ref).abs()
    long = torch.tensor([len(g) >= 18 for g in groups])
    ulp = torch.finfo(torch.float32).eps * ref.abs().amax(1, keepdim=True)      # one fp32 step at the row's scale
    print(f"largest difference between the two: {diff.max().item():.2e} = {(diff / ulp).max().item():.1f} fp32 "
          f"steps at the row's scale; rows that differ: "
          f"{int((diff.amax(1) > 0).sum())} of {a.new}, of which {int(((diff.amax(1) > 0) & long).sum())} "
          f"have 18 or more ids ({int(long.sum())} such rows)")


if __name__ == "__main__":
    main()

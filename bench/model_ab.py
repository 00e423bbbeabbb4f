"""This checkout's model.py against another checkout's (e.g. before a refactor): the same
weights, the same batch, forward + backward alternating, in one process.

    git worktree add /tmp/before COMMIT
    python bench/model_ab.py --other /tmp/before            # prints both losses and the speed ratio

Both losses must be equal; the ratio is this tree's tokens/s over the other's (median of --reps).
"""
import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--other", required=True, help="another checkout of this project")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    a = p.parse_args()
    # this tree's modules first; the other's model.py imports its own helpers from its folder
    sys.path[:0] = [str(ROOT), str(Path(a.other).resolve())]
    import model as ours
    spec = importlib.util.spec_from_file_location("other_model", Path(a.other) / "model.py")
    theirs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theirs)
    kw = dict(vocab_size=8000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
              num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512)
    torch.manual_seed(0)
    m_ours = ours.Llama(ours.LlamaConfig(**kw))
    m_theirs = theirs.Llama(theirs.LlamaConfig(**kw))
    m_theirs.load_state_dict(m_ours.state_dict())
    x = torch.randint(0, kw["vocab_size"], (a.batch, a.seq + 1), generator=torch.Generator().manual_seed(1))
    times = {"this tree": [], "other": []}
    losses = {}
    for r in range(a.reps):
        pair = [("this tree", m_ours), ("other", m_theirs)]
        for name, m in (pair if r % 2 else pair[::-1]):        # alternate who goes first
            t0 = time.perf_counter()
            _, loss = m(x[:, :-1], x[:, 1:])
            loss.backward()
            times[name].append(time.perf_counter() - t0)
            losses[name] = loss.item()
            m.zero_grad(set_to_none=True)
    med = {k: statistics.median(v[2:]) for k, v in times.items()}   # the first two warm up
    tok = a.batch * a.seq
    print(f"{torch.get_num_threads()} threads, batch {a.batch} x {a.seq}, median of {a.reps - 2} fwd+bwd")
    for k in times:
        print(f"  {k:10s} loss {losses[k]:.6f}  {tok / med[k]:.0f} tokens/s")
    print(f"  speed ratio this tree / other: {med['other'] / med['this tree']:.3f}x; "
          f"losses equal: {losses['this tree'] == losses['other']}")


if __name__ == "__main__":
    main()

"""What train.py measures besides the training loss: the held-out loss (mean nats per token over
fixed held-out windows, the same on any number of ranks) and bits per character, which compares
models whose tokenizers differ.

    python -c "from training import metrics; help(metrics.held_out_loss)"
"""
import contextlib
import math

import torch
import torch.distributed as dist


@torch.no_grad()
def held_out_loss(model, data, B, batches, ctx=contextlib.nullcontext, ranks=(0, 1), lockstep=False):
    """Mean loss per token over the first batches * B * world held-out windows (all ranks).
    ctx() is entered around each forward (train.py: autocast + the attention backend). ranks:
    (rank, world). lockstep: every rank runs the same number of forwards (a sharded model
    all-gathers inside each one), a rank past the end scoring a window it then does not count."""
    rank, world = ranks
    if not data.val_windows or batches <= 0:
        return None
    model.eval()
    dev = next(model.parameters()).device
    n = min(len(data.val_windows), batches * B * world)
    tot = torch.zeros(2, dtype=torch.float64, device=dev)
    stop = math.ceil(n / (B * world)) * B * world if lockstep else n     # lockstep: the same count on every rank
    for i in range(rank * B, stop, B * world):
        ws = data.val_windows[i:min(i + B, n)] if i < n else data.val_windows[:1]
        w = torch.stack([data._window(a, o) for a, o in ws])
        x, y = w[:, :-1].to(dev), w[:, 1:].to(dev)
        with ctx():
            _, loss = model(x, y, reduction="sum")
        if i < n:
            tot[0] += loss.double()
            tot[1] += y.numel()
    if world > 1:
        dist.all_reduce(tot)
    model.train()
    return float(tot[0] / tot[1]) if tot[1] else None


def bits_per_char(loss, shards):
    """Mean loss per token (nats) -> bits per character of the evaluated text (None if unknown)."""
    tpc = shards.tokens_per_char()
    return None if loss is None or tpc is None else loss * tpc / math.log(2)

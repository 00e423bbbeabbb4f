"""A training run's folder (--out): what a run may write there, the checks before it starts,
and its log.jsonl on a fresh start or a resume.

A run writes only RUN_FILES into --out, beside whatever else the folder holds (a SLURM log, the
recipe). --out is never an input or inside one. An earlier run in it is continued (--resume),
replaced (--force, and only a run this project wrote) or refused.

    python -c "from training import run_folder; print(run_folder.RUN_FILES)"
"""
import functools
import json
import os
import shutil
import socket
import uuid

from support import outputs
from support.cli import UserError
from training import checkpoint, parallel

RUN_FILES = ("log.jsonl", "checkpoints", "final")       # what a run writes into --out


def check_out(args):
    """Check --out against the inputs and an earlier run; returns whether --force replaces one."""
    out = args.out
    outputs.check_not_input(out, [args.init_from, args.data])
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    present = [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))]
    if not present:
        return False
    has_ck = bool(checkpoint.list_checkpoints(os.path.join(out, "checkpoints")))
    if args.resume and (has_ck or outputs.ours(out)):
        return False
    if not args.force:
        if has_ck:
            raise UserError(f"--out {out} already has checkpoints: pass --resume auto to continue that run, "
                            "--force to replace it, or use a new --out")
        raise UserError(f"--out {out} holds an earlier run ({', '.join(present)}); pass --force to replace "
                        "it, or use a new --out")
    if not outputs.ours(out):
        raise UserError(f"--out {out} holds {', '.join(present)} not written by this project (no "
                        f"{outputs.MARKER}); --force only replaces this project's runs: move them away yourself")
    for n in present:     # what --force removes must not hold the recipe or the checkpoint to resume from
        outputs.check_not_input(os.path.join(out, n), [args.recipe, args.resume if args.resume != "auto" else None],
                                flag="--force would remove")
    return True


def prepare_out(out, replace, ck, last_step, distributed):
    """Once every check passed, rank 0 prepares --out (the others wait), then every rank checks
    it sees what rank 0 wrote there (check_shared)."""
    parallel.rank0(functools.partial(_prepare, out, replace, ck, last_step), distributed)
    check_shared(out, distributed)


def _prepare(out, replace, ck, last_step):
    """An earlier run's files removed (--force), the folder marked as this project's, then log.jsonl (see start_log)."""
    if replace:
        for n in RUN_FILES:
            path = os.path.join(out, n)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    if not outputs.ours(out):
        outputs.mark(out, "train")
    start_log(out, ck, last_step)


def start_log(out, ck, last_step):
    """log.jsonl of this run: fresh (last_step None), or, resuming, the lines up to the
    checkpoint's global step, taken from this run's log or, for --resume of another run's
    checkpoint, from that run's log. Lines after it are dropped: those steps run again."""
    path = os.path.join(out, "log.jsonl")
    if last_step is None:
        if os.path.exists(path):
            os.remove(path)
        return
    src = path if os.path.exists(path) else os.path.join(os.path.dirname(os.path.dirname(ck)), "log.jsonl")
    keep = []
    if os.path.exists(src):
        with open(src, encoding="utf-8") as f:
            keep = [ln for ln in f if ln.strip() and json.loads(ln)["global_step"] <= last_step]
    outputs.write_atomic(path, "".join(keep))


def check_shared(out, distributed):
    """Every rank must see the --out rank 0 writes: with a node-local --out each node would write
    its own DCP shards into its own disk, and no node could resume them. Rank 0 writes a file
    there, every rank looks for it, one line names the first rank that cannot see it."""
    if not distributed:
        return
    def write():
        name = f".shared-{uuid.uuid4().hex}"
        outputs.write_atomic(os.path.join(out, "checkpoints", name), socket.gethostname())
        return name
    probe = os.path.join(out, "checkpoints", parallel.rank0(write, True, share=True))  # in this rank's --out
    blind = parallel.blind_ranks(None if os.path.exists(probe) else "missing", True)
    parallel.rank0(functools.partial(os.remove, probe), True)
    if blind:
        r, host, _ = blind[0]
        raise UserError(f"rank {r} on {host} cannot see {probe}, which rank 0 wrote into --out {out} "
                        f"({len(blind)} rank(s) affected): --out must be on storage every node sees")

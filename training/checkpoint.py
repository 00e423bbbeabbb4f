"""Training checkpoints (written atomically and durably, chosen once, readable by every rank) and
the export of one as a Hugging Face folder.

A checkpoint is a folder `RUN/checkpoints/step-NNNNNNNN/` holding

    model.pt     the state dict (trained tensors fp32, frozen ones in their storage dtype)
    optim.pt     AdamW's state, keyed by parameter name (empty at a stage's end: the next stage starts its own)
    state.json   stage, step, tokens, seed, the resolved plan and recipe, init_from, world size,
                 format ("torch"; "dcp" for --fsdp, where every rank writes its shards through
                 torch.distributed.checkpoint instead of model.pt / optim.pt: training/parallel.py)

It is written into `step-N.tmp/` and renamed into place once durable (finish): a crash at any
moment leaves the previous checkpoints and a `.tmp` folder that is never picked (sweep_partial
removes it). Resuming, rank 0 alone chooses the checkpoint and every rank checks it can read it
(choose_resume), so a node that cannot see --out stops the job with one line instead of starting
at step 0 and hanging at the first collective.

The export (`python redwhale.py export RUN`, and train.py at the end of a run) writes a checkpoint
or a live model as a Hugging Face folder (export).

    python -c "from training import checkpoint; print(checkpoint.list_checkpoints('runs/x/checkpoints'))"
"""
import argparse
import functools
import json
import os
import re
import shutil
import time

import torch

from config import LlamaConfig
from lora import attach_lora, has_lora, merge_lora
from support import cli, outputs
from support.cli import UserError
from support.tokenizer_io import HF_TOKENIZER_FILES
from training import parallel
from training.plan import empty_model

SIGTERM_ADVICE = ("a checkpoint of a 10B-parameter model takes minutes to write: torchrun allows 30 s "
                  "before SIGKILL unless given --shutdown-timeout 900 (torch >= 2.12; redwhale.py "
                  "train --nproc sets it), and SLURM's KillWait is 30 s: ask for an early signal "
                  "(#SBATCH --signal=TERM@900) and start torchrun with srun, which that signal reaches")


def list_checkpoints(ckdir):
    """Complete checkpoints in ckdir, oldest first (a `.tmp` folder or one without state.json is not one)."""
    if not os.path.isdir(ckdir):
        return []
    return sorted(d for d in os.listdir(ckdir)
                  if re.fullmatch(r"step-\d+", d)       # not step-N.tmp (half written) or step-N.damaged
                  and os.path.exists(os.path.join(ckdir, d, "state.json")))


def begin(ckdir, name):
    """A fresh, empty ckdir/name.tmp for the checkpoint's files."""
    tmp = os.path.join(ckdir, name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def finish(ckdir, name, state, keep):
    """Write state.json into ckdir/name.tmp, fsync every file and the folder, rename it into
    place, then keep only the newest `keep` checkpoints. Returns the bytes in the checkpoint."""
    tmp, final = os.path.join(ckdir, name + ".tmp"), os.path.join(ckdir, name)
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
    size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
    outputs.replace_dir(tmp, final, durable=True)          # on disk before and after the rename
    for old in list_checkpoints(ckdir)[:-keep]:
        shutil.rmtree(os.path.join(ckdir, old), ignore_errors=True)
    return size


def save(ckdir, name, model_state, optim_state, state, keep):
    """One process writes the whole checkpoint (the DDP path). Returns (bytes, seconds)."""
    t0 = time.time()
    tmp = begin(ckdir, name)
    torch.save(model_state, os.path.join(tmp, "model.pt"))
    torch.save(optim_state, os.path.join(tmp, "optim.pt"))
    return finish(ckdir, name, {**state, "format": "torch"}, keep), time.time() - t0


def check_fits(ck, state, batches):
    """A checkpoint resumes only a run of the same batches per stage, under either strategy and
    at any world size: the global batch may not change."""

    def key(q):
        return q["name"], q["steps"], q["T"], q["batch_tokens"], q["warmup"]
    if [key(q) for q in state["plan"]] != [key(q) for q in batches]:
        raise UserError(f"{ck}: it was written with a different plan (recipe/flags): "
                        f"{state['plan']} vs now {batches}; resume with the same recipe and flags")


def load_state(path):
    with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
        return json.load(f)


def load_tensors(path, name):
    """model.pt or optim.pt of a checkpoint, on the CPU, memory-mapped: a rank pages in what it
    copies instead of holding a second whole copy of the optimizer state."""
    return torch.load(os.path.join(path, name), map_location="cpu", weights_only=True, mmap=True)


def _pick(resume, ckdir, replace=False):
    """Rank 0's choice: ('auto', name), ('path', absolute path) or None for a fresh run."""
    if replace:                 # --force: the earlier run in --out is replaced, nothing resumed
        return None
    sweep_partial(ckdir)
    have = list_checkpoints(ckdir)
    if resume is None:
        if have:
            raise UserError(f"{ckdir} already has checkpoints: pass --resume auto, or use a new --out")
        return None
    if resume == "auto":
        # a damaged one is moved aside, so that pruning never keeps it in place of a good one
        name = newest_whole(ckdir, move_damaged=True)
        if name is None:
            print(f"note: --resume auto found no checkpoint in {ckdir}: starting a new run", flush=True)
            return None
        return ("auto", name)
    path = os.path.abspath(resume.rstrip("/"))
    if not os.path.isfile(os.path.join(path, "state.json")):
        raise UserError(f"--resume {resume}: not a checkpoint folder (no state.json); give a "
                         "RUN/checkpoints/step-N folder or 'auto'")
    why = damaged(path)
    if why:
        raise UserError(f"--resume {resume}: the checkpoint is damaged ({why})")
    if have and os.path.dirname(path) != os.path.abspath(ckdir):
        raise UserError(f"--resume {resume} is from another run, but {ckdir} already has checkpoints "
                         f"({have[-1]}): use a new --out, or --resume auto to continue this one")
    if have and os.path.basename(path) != have[-1]:
        # newer checkpoints of the old future would be picked by the next --resume auto
        raise UserError(f"--resume {resume}: this run has newer checkpoints ({have[-1]}); continuing "
                         f"from an older one here would mix two futures. Resume it into a new --out (the source is "
                         "only read), or move the newer checkpoints away first")
    return ("path", path)


def newest_whole(ckdir, move_damaged=False, use="resuming from"):
    """The newest checkpoint in ckdir that loads (None when there is none at all), saying which
    newer ones are damaged and, with move_damaged, moving each to step-N.damaged."""
    have = list_checkpoints(ckdir)
    for name in reversed(have):
        path = os.path.join(ckdir, name)
        why = damaged(path)
        if not why:
            if name != have[-1]:
                print(f"warning: {use} {name}, the newest readable checkpoint", flush=True)
            return name
        if move_damaged:
            os.replace(path, path + ".damaged")
        moved = f"; moved it to {path}.damaged" if move_damaged else ""
        print(f"warning: checkpoint {path} is damaged ({why}){moved}; trying the one before", flush=True)
    if have:
        raise UserError(f"every checkpoint in {ckdir} is damaged (see the warnings)")
    return None


def damaged(path):
    """Why a checkpoint cannot be loaded (None: it can): state.json must parse and name its
    position, and model.pt/optim.pt must open as torch archives (memory-mapped: their index is
    read, not their tensors; a flipped bit inside a tensor is not detected) or, for DCP, the
    .metadata must load."""
    try:
        state = load_state(path)
        if not isinstance(state, dict):
            return "state.json is not a JSON object"
        for k in ("stage", "step", "tokens", "plan"):
            if k not in state:
                return f"state.json has no {k!r}"
        if state.get("format") == "dcp":
            parallel.dcp_model_keys(path)          # reads the .metadata
            return None
        for fname in ("model.pt", "optim.pt"):
            try:
                load_tensors(path, fname)
            except Exception as e:                 # a truncated zip, random bytes, a pickle: all mean damaged
                return f"{fname}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    except (OSError, ValueError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def sweep_partial(ckdir):
    """Remove what a killed run left (never a checkpoint); say so: `step-N.tmp` folders, and a
    `.step-N.old-*` (a checkpoint being replaced by a new one of the same name when it died)."""
    if not os.path.isdir(ckdir):
        return
    for d in sorted(os.listdir(ckdir)):
        if (d.startswith("step-") and d.endswith(".tmp")) or (d.startswith(".step-") and ".old-" in d):
            shutil.rmtree(os.path.join(ckdir, d), ignore_errors=True)
            print(f"note: removed {os.path.join(ckdir, d)}, a checkpoint an interrupted run did not finish", flush=True)


def choose_resume(resume, ckdir, distributed, replace=False):
    """The checkpoint folder every rank resumes from (None: a fresh run). Rank 0 decides; an
    error on rank 0 (or any rank that cannot read the choice) stops every rank with one line."""
    picked = parallel.rank0(functools.partial(_pick, resume, ckdir, replace), distributed, share=True)
    if picked is None:
        return None
    # a name is looked up in this rank's own --out (the same folder when --out is shared storage)
    path = os.path.join(ckdir, picked[1]) if picked[0] == "auto" else picked[1]
    bad = parallel.blind_ranks(damaged(path), distributed)  # what rank 0 checked, from where each rank stands
    if bad:
        r, host, why = bad[0]
        raise UserError(f"rank {r} on {host} cannot read checkpoint {path} that rank 0 chose to resume "
                         f"from ({why}); {len(bad)} rank(s) affected. --out must be on storage every node sees")
    return path


# ---------------------------------------------------------------- loading one, exporting one

def load_exact(model, sd):
    """Load a training checkpoint into the dtypes it was saved in (fp32 master weights stay fp32,
    bf16-stored frozen weights stay bf16): a resumed run then holds exactly the bits the
    uninterrupted one did; setup_stage then casts for the stage as it always does."""
    params = dict(model.named_parameters())
    for k, t in sd.items():
        if k in params and params[k].dtype != t.dtype:
            params[k].data = params[k].data.to(t.dtype)
    model.load_state_dict(sd, strict=True)


def export(model, init_from, folder, dtype="auto", force=True, inputs=(), flag="--out"):
    """Merge LoRA (in fp32), cast once to the export dtype (auto: the base config's torch_dtype,
    e.g. float16 for SOLAR) and write an HF folder (padded rows dropped) with the tokenizer files,
    atomically. An existing folder is replaced only with `force` and only if this project wrote
    it (support/outputs.py); a run's own final/ is, so training and a re-export replace it."""
    merge_lora(model)
    model.to(getattr(torch, model.config.torch_dtype if dtype == "auto" else dtype, torch.float32))
    with outputs.staged(folder, [init_from, *inputs], force, step="export", flag=flag) as tmp:
        model.save_pretrained(tmp)
        for name in (*HF_TOKENIZER_FILES, "generation_config.json"):     # from the init folder, beside the weights
            if os.path.exists(os.path.join(init_from, name)):
                shutil.copy2(os.path.join(init_from, name), os.path.join(tmp, name))
    return os.path.abspath(folder)


def load_model(path):
    """The model of one training checkpoint, on the CPU, its LoRA adapters (if any) merged."""
    state = load_state(path)
    cfg = LlamaConfig.from_pretrained(state["init_from"])
    cfg.vocab_multiple = state["vocab_multiple"]
    model = empty_model(cfg)          # every weight comes from the checkpoint, not the base's files
    dcp = state.get("format") == "dcp"
    sd = None if dcp else load_tensors(path, "model.pt")
    if has_lora(dict.fromkeys(parallel.dcp_model_keys(path)) if dcp else sd):
        attach_lora(model, state["recipe"]["stages"][state["stage"]]["lora"], dropout=0.0)
    if dcp:
        parallel.dcp_load_model(model, path)
    else:
        load_exact(model, sd)
    merge_lora(model)
    return model


def export_run(run_dir, to=None, dtype="auto", force=False):
    """The export command: the newest checkpoint of a run -> an HF folder."""
    ckdir = os.path.join(run_dir, "checkpoints")
    name = newest_whole(ckdir, use="exporting")   # as --resume auto picks it (export only reads the run)
    if name is None:
        raise UserError(f"no checkpoints in {ckdir}")
    path = os.path.join(ckdir, name)
    # the run's own folder (its checkpoints, its log) is an input: --to may not be it or hold it
    return export(load_model(path).eval(), load_state(path)["init_from"], to or os.path.join(run_dir, "final"), dtype,
                  force or not to, inputs=[ckdir, os.path.join(run_dir, "log.jsonl")], flag="--to" if to else "--out")


def main(argv=None):
    """`python redwhale.py export RUN_DIR [--to DIR]`."""
    p = argparse.ArgumentParser(prog="redwhale.py export", description="Merge LoRA into the newest checkpoint "
                                "of a run and write it as a Hugging Face folder (RUN_DIR/final unless --to).")
    p.add_argument("run_dir", help="a train.py --out folder with checkpoints/")
    p.add_argument("--to", help="write the folder here instead of RUN_DIR/final")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the weights (auto: the init model's torch_dtype)")
    cli.add_force(p)
    a = p.parse_args(argv)
    print(f"exported {export_run(a.run_dir, a.to, a.dtype, a.force)}")

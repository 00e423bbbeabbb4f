"""train.py's command line: the flags, and every check that can run before a process group, a
model or an output exists (ranges, the recipe, the input folders, --out). `redwhale.py train
--nproc N` runs the same checks before torchrun starts, so a mistake is one line, not N. The
flags of a run's shape are training/plan.py's (add_shape_flags), shared with the memory planner.

    python train.py --help
"""
import argparse
import os

from config import LlamaConfig
from corpus.shards import TokenShards
from model import check_model_folder
from recipe import recipe_from_flags, resolve
from support import cli
from support.cli import UserError
from training import run_folder, runtime
from training.plan import add_shape_flags


def add_run_flags(p):
    """The flags of a training run beyond its shape: data, output, resume, devices, evals, saving."""
    p.add_argument("--data", help="folder of data.py token shards (meta.json + id files)")
    p.add_argument("--out", help="run folder: log.jsonl, checkpoints/, final/")
    p.add_argument("--resume", help="'auto' = newest checkpoint in --out, or a checkpoint folder")
    p.add_argument("--seed", type=cli.number(int, lo=0), default=1234)
    p.add_argument("--device", default=None, choices=["cuda", "cpu"],
                   help="default: cuda when available (each torchrun rank takes cuda:LOCAL_RANK)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile each decoder block (default: on for CUDA, off on CPU)")
    p.add_argument("--sdpa", default="flash", choices=["flash", "math", "efficient", "auto"],
                   help="attention backend, on CPU and CUDA alike (efficient: CUDA only; auto: torch chooses)")
    p.add_argument("--async-ckpt", action="store_true",
                   help="with --fsdp: write checkpoints in the background while training goes on")
    p.add_argument("--eval-every", type=cli.number(int, lo=0), default=200,
                   help="eval loss every N steps and at stage ends (0: off)")
    p.add_argument("--eval-data", nargs="+", default=[], metavar="NAME=DIR",
                   help="more held-out sets, each a token-shard folder made with the model's tokenizer (e.g. "
                        "ko=tokens/ en=en_tokens/): its val split, or all of it; logged as eval_NAME_loss and "
                        "eval_NAME_bpc (bits per character) at every eval and at each stage's end")
    p.add_argument("--eval-batches", type=cli.number(int, lo=0), default=20, help="micro-batches per rank in one eval")
    p.add_argument("--val-tokens", type=cli.number(int, lo=0), default=None,
                   help="without val_shards: hold out this many tokens of the last shard (default 10%%, max 1M)")
    p.add_argument("--ckpt-every", type=cli.number(int, lo=0), default=500,
                   help="checkpoint every N steps and at stage ends (0: only at stage ends)")
    p.add_argument("--keep-checkpoints", type=cli.number(int, lo=1), default=2, help="keep the newest K checkpoints")
    p.add_argument("--dist-timeout", type=cli.number(int, lo=1), default=10,
                   help="minutes a training collective may wait for a rank before the job stops")
    p.add_argument("--io-timeout", type=cli.number(int, lo=1), default=60, help="minutes the ranks may wait "
                   "for reads and writes (rank 0 loading the base, checkpoints, the export)")
    p.add_argument("--no-save", action="store_true", help="no checkpoints, no export (benchmarks, smoke tests)")
    p.add_argument("--max-steps", type=cli.number(int, lo=0), default=0,
                   help="checkpoint and stop after N steps in this run")
    p.add_argument("--peak-tflops", type=cli.number(float, lo=0, lo_open=True), default=None,
                   help="per-GPU bf16 dense peak for MFU (default: from the GPU's name, runtime.PEAK_TFLOPS)")
    p.add_argument("--export-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of final/ (auto: the init model's torch_dtype)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out that holds an earlier run (only a folder this project wrote)")


def parser():
    p = argparse.ArgumentParser(prog="train.py", description="Multistage continual pretraining (RedWhale). The "
                                "memory plan, the export of a run and the default recipe are commands of their "
                                "own: python redwhale.py plan | export | recipe.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shape_flags(p)
    add_run_flags(p)
    return p


def prepare(argv=None, world=None):
    """Parse the flags and check everything checkable before anything starts. Returns (args, recipe)."""
    p = parser()
    args = p.parse_args(argv)
    recipe = recipe_from_flags(args)
    if not (args.data and args.out):
        p.error("training needs --data and --out (and --init-from unless resuming)")
    if args.async_ckpt and not args.fsdp:
        raise UserError("--async-ckpt needs --fsdp (sharded DCP checkpoints)")
    if args.device:
        runtime.check_device(args.device)
    if args.init_from:
        check_model_folder(args.init_from, "--init-from")
        check_seq_len(args.seq_len or recipe.seq_len, LlamaConfig.from_pretrained(args.init_from), args.init_from)
    if not os.path.isfile(os.path.join(args.data, "meta.json")):
        raise UserError(f"--data {args.data}: no meta.json (give a folder written by data.py tokenize)")
    eval_specs(args.eval_data)
    if args.resume not in (None, "auto") and not os.path.isdir(args.resume):
        raise UserError(f"--resume {args.resume}: no such checkpoint folder")
    args.replace_out = run_folder.check_out(args)
    resolve(recipe, args, world or int(os.environ.get("WORLD_SIZE", 1)))    # batch arithmetic errors, now
    return args, recipe


def check_seq_len(T, cfg, where):
    if T > cfg.max_position_embeddings:
        raise UserError(f"seq-len {T} (--seq-len, or the recipe's seq_len) exceeds {where}'s max_position_embeddings "
                        f"{cfg.max_position_embeddings}: the model was never trained on longer windows")


def eval_specs(specs):
    """["ko=tokens/", "en=en_tokens/"] -> [("ko", "tokens/"), ...], names checked."""
    out = []
    for spec in specs:
        name, _, folder = spec.partition("=")
        if not (name.isidentifier() and folder):
            raise UserError(f"--eval-data {spec!r}: give NAME=DIR, NAME a plain word (ko, en, ...)")
        if not os.path.isfile(os.path.join(folder, "meta.json")):
            raise UserError(f"--eval-data {spec}: {folder} has no meta.json (a data.py tokenize folder)")
        out.append((name, folder))
    return out


def eval_sets(specs, T, vocab_size):
    """The --eval-data held-out sets, each scored in full (its val split, or all of it)."""
    return [(name, TokenShards(folder, T, vocab_size, 0).evaluate_all()) for name, folder in eval_specs(specs)]

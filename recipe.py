"""The training recipe as data: stages, what each trains, for how long, at which learning rate.

A recipe is a JSON (or TOML) file: Recipe's keys at the top level, a list of Stage's under
"stages" (the dataclasses below give each key's default and meaning); train.py's flags
override the common knobs.

Parameter groups: embed, head (= embed when tied), norm (the final RMSNorm), layers, odd_layers
(0-based indices 1, 3, 5, ...), even_layers (0, 2, 4, ...), layers.N, lora (the adapters), all
(everything but adapters). A layer group trains the whole decoder layer, its norms included.

    python recipe.py > my.json          # the default recipe as a file to edit (python redwhale.py recipe)
"""
import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from lora import DEFAULT_TARGETS
from support import cli
from support.cli import UserError

# every number a recipe may hold: (kind, low, high, low excluded); a value outside is one line
STAGE_RANGES = {"tokens": (float, 0, None, False), "steps": (int, 0, None, False), "lr": (float, 0, None, True),
                "min_lr_ratio": (float, 0, 1, False), "warmup": (float, 0, None, False),
                "decay_frac": (float, 0, 1, False), "batch_tokens": (int, 1, None, False),
                "weight_decay": (float, 0, None, False)}
TOP_RANGES = {"seq_len": (int, 1, None, False), "micro_batch": (int, 1, None, False),
              "grad_clip": (float, 0, None, False)}
LORA_RANGES = {"r": (int, 1, None, False), "alpha": (float, 0, None, True), "dropout": (float, 0, 1, False)}

GROUPS = ("embed", "head", "norm", "layers", "odd_layers", "even_layers", "lora", "all")  # + layers.N
LORA_DEFAULTS = {"r": 32, "alpha": 32.0, "dropout": 0.1, "targets": list(DEFAULT_TARGETS)}


@dataclass
class Stage:
    name: str
    train: list                       # parameter groups that get gradients
    tokens: float = 0                 # budget in tokens ...
    steps: int = 0                    # ... or in optimizer steps (steps wins)
    lr: float = 1e-4                  # peak learning rate
    min_lr_ratio: float = 0.1         # the schedule ends at lr * min_lr_ratio
    warmup: float = 0.01              # < 1: fraction of the stage's steps; >= 1: steps
    schedule: str = "cosine"          # cosine | wsd (warmup-stable-decay)
    decay_frac: float = 0.2           # wsd: the final fraction of steps that decays linearly
    batch_tokens: int | None = None   # global tokens per optimizer step, accumulation making up the rest
    #                                   (None: one micro-batch per rank, B x T x ranks)
    weight_decay: float = 0.1         # never on norms and biases
    freeze_old_rows: bool = False     # train only the new embedding/head rows (EEVE)
    lora: dict | None = None          # {"r", "alpha", "dropout", "targets"}; implied by "lora" in train


@dataclass
class Recipe:
    stages: list
    seq_len: int = 2048
    micro_batch: int = 1              # sequences per micro-batch per rank
    grad_clip: float = 1.0            # 0: off
    betas: list = field(default_factory=lambda: [0.9, 0.95])   # AdamW's (beta1, beta2), a fresh list each
    old_vocab_size: int | str = 0     # rows that freeze_old_rows keeps; "auto": the --init-from folder's
    #                                   expand_report.json {"old_vocab_size": N}


def default_recipe():
    """RedWhale's four stages. Budgets, learning rates and batch sizes are not published:
    these are our choices (about 10B tokens in all, as in the paper; 2^20 tokens a step)."""
    return Recipe(stages=[
        Stage("embed", ["embed", "head"], tokens=2.5e9, lr=2e-4, batch_tokens=1 << 20),
        Stage("odd_layers", ["odd_layers"], tokens=2.5e9, lr=5e-5, batch_tokens=1 << 20),
        Stage("even_layers", ["even_layers"], tokens=2.5e9, lr=5e-5, batch_tokens=1 << 20),
        Stage("lora", ["lora", "embed", "head"], tokens=2.5e9, lr=1e-4, lora=dict(LORA_DEFAULTS), batch_tokens=1 << 20),
    ])


def load_recipe(path):
    """Read a JSON/TOML recipe; every error names the file and the stage or key."""
    if path is None:
        return default_recipe()
    d = _read_recipe_file(path)
    top = {f.name for f in fields(Recipe)}
    if not isinstance(d, dict) or not isinstance(d.get("stages"), list) or not d["stages"]:
        raise UserError(f"{path}: needs a non-empty list 'stages'")
    for k in d:
        if k not in top:
            raise UserError(f"{path}: unknown key {k!r} (known: {sorted(top)})")
    stages = [_load_stage(path, i, s) for i, s in enumerate(d["stages"])]
    _check_numbers(path, d, TOP_RANGES)
    betas = d.get("betas", [0.9, 0.95])
    if not (isinstance(betas, list) and len(betas) == 2 and all(cli.problem(b, float, 0, 1) is None and b < 1
                                                                  for b in betas)):
        raise UserError(f"{path}: betas must be two numbers in [0, 1), got {betas!r}")
    if d.get("old_vocab_size") != "auto":
        _check_numbers(path, d, {"old_vocab_size": (int, 0, None, False)})
    return Recipe(**{**d, "stages": stages})


def recipe_from_flags(args):
    """The --recipe file (or the default), with the flags that override it applied (--grad-clip,
    --freeze-old-rows): how train.py and the planner both read a recipe."""
    recipe = load_recipe(args.recipe)
    if args.grad_clip is not None:
        recipe.grad_clip = args.grad_clip
    if args.freeze_old_rows is not None:
        recipe.old_vocab_size = args.freeze_old_rows
        for st in recipe.stages:
            st.freeze_old_rows = True
    return recipe


def _read_recipe_file(path):
    """The parsed JSON or TOML of a recipe file, or one line saying why not."""
    try:
        with open(path, "rb") as f:
            if path.endswith(".toml"):
                import tomllib
                return tomllib.load(f)
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"recipe {path} not found") from None
    except ValueError as e:
        raise UserError(f"recipe {path} is not valid JSON/TOML: {e}") from None


def _load_stage(path, i, s):
    """Stage i (0-based) of recipe `path`, from its dict `s`: every key checked, the defaults filled in."""
    where = f"{path}: stage {i + 1}"
    known = {f.name for f in fields(Stage)}
    if not isinstance(s, dict) or not s.get("train") or not isinstance(s["train"], (list, str)):
        raise UserError(f"{where}: needs a non-empty 'train' list of parameter groups")
    for k in s:
        if k not in known:
            raise UserError(f"{where}: unknown key {k!r} (known: {sorted(known)})")
    s = {"name": f"stage{i + 1}", **s}
    if isinstance(s["train"], str):
        s["train"] = [s["train"]]
    for g in s["train"]:
        if not isinstance(g, str) or (g not in GROUPS and not (g.startswith("layers.") and g[7:].isdigit())):
            raise UserError(f"{where} ({s['name']}): unknown parameter group {g!r} "
                             f"(known: {', '.join(GROUPS)}, layers.N)")
    if s.get("schedule", "cosine") not in ("cosine", "wsd"):
        raise UserError(f"{where}: schedule {s['schedule']!r} is not cosine or wsd")
    if s.get("lora") is not None and not isinstance(s["lora"], dict):
        raise UserError(f"{where}: lora must be an object like {json.dumps(LORA_DEFAULTS)}")
    if "lora" in s["train"]:
        extra = set(s.get("lora") or {}) - set(LORA_DEFAULTS)
        if extra:
            raise UserError(f"{where}: unknown lora keys {sorted(extra)}")
        s["lora"] = {**LORA_DEFAULTS, **(s.get("lora") or {})}
    _check_numbers(where, s, STAGE_RANGES)
    if "lora" in s["train"]:
        _check_numbers(f"{where}: lora", s["lora"], LORA_RANGES)
        targets = s["lora"]["targets"]
        if not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
            raise UserError(f"{where}: lora targets must be a list of module names, e.g. "
                             f"{LORA_DEFAULTS['targets'][:2]}, got {targets!r}")
    if not (s.get("tokens") or s.get("steps")):
        raise UserError(f"{where}: give 'tokens' or 'steps' (> 0)")
    return Stage(**s)


def _check_numbers(where, d, ranges):
    """One line naming the recipe, the stage and the key for a value outside its range."""
    for k, (kind, lo, hi, lo_open) in ranges.items():
        why = d.get(k) is not None and cli.problem(d[k], kind, lo, hi, lo_open)
        if why:
            raise UserError(f"{where}: {k} {why}, got {d[k]!r}")


def resolve(recipe, args, world):
    """Per stage: micro-batch B, sequence T, accumulation G, steps, warmup, after the flags."""
    B = args.batch_size or recipe.micro_batch
    T = args.seq_len or recipe.seq_len
    plan = []
    for i, st in enumerate(recipe.stages):
        if args.grad_accum:
            G = args.grad_accum
        elif args.steps_per_stage or not st.batch_tokens:
            G = 1                       # a smoke test, or no batch_tokens: the command line describes the batch
        else:
            G, rem = divmod(int(st.batch_tokens), B * T * world)
            if rem or G < 1:
                raise UserError(f"stage {i + 1} ({st.name}): batch_tokens {int(st.batch_tokens)} is not "
                                 f"a multiple of batch-size {B} x seq-len {T} x {world} ranks; "
                                 "change the recipe or pass --grad-accum")
        batch_tokens = B * T * G * world
        steps = args.steps_per_stage or st.steps or math.ceil(st.tokens / batch_tokens)
        warmup = int(round(st.warmup * steps)) if st.warmup < 1 else int(st.warmup)
        plan.append({"name": st.name, "B": B, "T": T, "G": G, "steps": int(steps), "warmup": warmup,
                     "batch_tokens": batch_tokens})
    return plan


def lr_at(st, p, step):
    """Learning rate of optimizer step `step` (0-based) of a stage: a pure function."""
    n, w, lo = p["steps"], p["warmup"], st.lr * st.min_lr_ratio
    if step < w:
        return st.lr * (step + 1) / w
    if st.schedule == "wsd":
        d = max(1, int(round(st.decay_frac * n)))
        return st.lr if step < n - d else lo + (st.lr - lo) * (n - step - 1) / d
    t = (step - w) / max(1, n - w - 1)
    return lo + 0.5 * (st.lr - lo) * (1 + math.cos(math.pi * min(1.0, t)))


def step_seed(seed, stage, step, index):
    """A seed for (stage, step, index): train.py's index is the micro-batch's place in the global batch."""
    return int(np.random.SeedSequence([seed, stage, step + 1, index]).generate_state(1)[0])


# ---------------------------------------------------------------- parameter groups

def select_params(model, groups, where="recipe"):
    """Names of the parameters that train for these groups (LoRA adapters only via 'lora')."""
    names = [n for n, _ in model.named_parameters()]
    L = len(model.model.layers)
    lora = {n for n in names if "lora_A" in n or "lora_B" in n}
    base = [n for n in names if n not in lora]
    layer = {n: int(n.split(".")[2]) for n in base if n.startswith("model.layers.")}   # name -> layer index
    named = {"lora": lora, "all": base, "embed": ["model.embed_tokens.weight"], "norm": ["model.norm.weight"],
             "head": ["model.embed_tokens.weight" if model.lm_head is None else "lm_head.weight"],
             "layers": list(layer), "odd_layers": [n for n, i in layer.items() if i % 2 == 1],
             "even_layers": [n for n, i in layer.items() if i % 2 == 0]}
    out = set()
    for g in groups:
        if g in named:
            pick = named[g]
        elif g.startswith("layers.") and g[7:].isdigit():
            if int(g[7:]) >= L:
                raise UserError(f"{where}: group {g!r}, but the model has {L} layers")
            pick = [n for n, i in layer.items() if i == int(g[7:])]
        else:
            raise UserError(f"{where}: unknown parameter group {g!r}")
        if not pick:
            raise UserError(f"{where}: group {g!r} selects no parameters (the model has {L} layers)")
        out.update(pick)
    return out


def old_rows(recipe, init_from):
    n = recipe.old_vocab_size
    if n == "auto":
        path = os.path.join(init_from, "expand_report.json")
        if not os.path.exists(path):
            raise UserError(f"old_vocab_size 'auto' needs {path}; give --freeze-old-rows N instead")
        with open(path, encoding="utf-8") as f:
            n = json.load(f).get("old_vocab_size")
        if not isinstance(n, int):
            raise UserError(f"{path}: no integer 'old_vocab_size'")
    return int(n or 0)


def main(argv=None):
    """`python redwhale.py recipe [--recipe FILE]`: the recipe as JSON, a file to edit."""
    p = argparse.ArgumentParser(prog="redwhale.py recipe", description="Print the recipe (default: RedWhale's "
                                "four stages) as JSON, every key filled in: a file to edit and pass to --recipe.")
    p.add_argument("--recipe", help="a JSON/TOML recipe to check and print in full")
    print(json.dumps(asdict(load_recipe(p.parse_args(argv).recipe)), indent=1))


if __name__ == "__main__":
    cli.run(main)

"""Grow a base Llama to the merged tokenizer's vocabulary (RedWhale part 3).

The merged tokenizer keeps the base's pieces, id for id, and appends Korean ones. The model
gets one new embedding row and one new LM-head row per new piece; the old rows stay bit for
bit. How the new rows start matters (the paper's ablation): a new piece's "decomposition" is
the list of base ids the *base* tokenizer splits that piece's text into, and a row built from
those rows starts where the model already "reads" that text.

    python expand.py --model BASE_HF_DIR --tokenizer out/merged --init subword --out out/expanded
    python redwhale.py expand --model BASE_HF_DIR --tokenizer out/merged --out out/expanded

From Python:

    decs = decompositions("out/merged", n_base=32000)   # {new id: [base ids]}
    expand_vocab(model, 52000, init="subword", decompositions=decs)
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn as nn
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from config import LlamaConfig
from model import Llama, check_model_folder
from support import cli, outputs
from support.tokenizer_io import Tokenizer, load_proto
from tokenizer import MERGED_FILES, SPACE

# init method -> (rule for the new embedding rows, rule for the new LM-head rows)
INIT_RULES = {
    "random": ("random", "random"),               # normal(0, initializer_range)
    "mean": ("mean", "mean"),                     # the mean of all old rows
    "subword-embed": ("subword", "mean"),         # embedding from the pieces, head from all rows
    "subword": ("subword", "subword"),            # the mean of the piece's base rows (the paper's best)
    "subword-first-head": ("subword", "first"),   # head: the first meaningful base row (EEVE)
}
INIT_METHODS = tuple(INIT_RULES)


# ---- which base ids make a new piece ----

def decompose(piece, base):
    """The base tokenizer's ids for a piece's text ("▁" = a space), as the base would split it
    inside running text: no dummy prefix added. `base` may be a Tokenizer(base, raw=True) to
    reuse across calls."""
    tok = base if isinstance(base, Tokenizer) else Tokenizer(base, raw=True)
    return tok.encode(piece.replace(SPACE, " "))


def decompositions(merged, n_base):
    """{new id: base ids} for every piece of the merged tokenizer past the first n_base (its base)."""
    proto = load_proto(merged)
    base = sp_pb2.ModelProto()
    base.CopyFrom(proto)
    del base.pieces[n_base:]  # the merge left the base pieces untouched: this *is* the base tokenizer
    tok = Tokenizer(base, raw=True)
    return {i: decompose(proto.pieces[i].piece, tok) for i in range(n_base, len(proto.pieces))}


# ---- the new rows ----

def new_rows(old, rule, n, groups, std, gen, skip_first=()):
    """(n, C) fp32 rows for the new pieces from the old rows (old V, C), by `rule`; groups[k]
    is the k-th new piece's list of base ids (the subword rules only)."""
    if rule == "random":
        return torch.randn(n, old.size(1), generator=gen) * std
    if rule == "mean":
        return old.mean(0, keepdim=True).expand(n, -1)
    if rule == "subword":                       # the mean of each piece's base rows
        return torch.stack([old[g].mean(0) for g in groups]) if n else old[:0]
    if rule == "first":                         # the first base id not skipped (else the first)
        return old[[next((j for j in g if j not in skip_first), g[0]) for g in groups]]
    raise ValueError(f"unknown rule {rule!r}")


@torch.no_grad()
def expand_vocab(model, new_vocab_size, init="subword", decompositions=None, vocab_multiple=1, seed=0,
                 skip_first=()):
    """Grow embed_tokens and lm_head from config.vocab_size to new_vocab_size rows; old rows are
    kept bit for bit and the new ones initialized by `init` (INIT_RULES). decompositions maps
    each new id to its base ids. For subword-first-head, ids in skip_first are passed over: a
    Llama/Mistral base begins every "▁word" decomposition with the bare "▁" piece, and taking
    it would give all such pieces one and the same head row. A tied model stays tied and takes
    the embedding rule. Rows past new_vocab_size (padding up to vocab_multiple) are zero, never
    predicted, and dropped by save_pretrained."""
    cfg = model.config
    old_v = cfg.vocab_size
    if init not in INIT_RULES:
        raise ValueError(f"init {init!r}: choose one of {', '.join(INIT_METHODS)}")
    if new_vocab_size < old_v:
        raise ValueError(f"new_vocab_size {new_vocab_size} is smaller than vocab_size {old_v}")
    n = new_vocab_size - old_v
    groups = None
    if init.startswith("subword"):  # every new id needs base ids, all inside the old vocabulary
        groups = [(decompositions or {}).get(i) for i in range(old_v, new_vocab_size)]
        missing = [old_v + k for k, g in enumerate(groups) if not g]
        if missing:
            raise ValueError(f"init {init!r} needs the base ids of every new piece; none for ids {missing[:5]}")
        bad = [old_v + k for k, g in enumerate(groups) if not all(0 <= j < old_v for j in g)]
        if bad:
            raise ValueError(f"decompositions of ids {bad[:5]} use ids outside the old vocabulary 0..{old_v - 1}")
    gen = torch.Generator().manual_seed(seed)
    rows = (new_vocab_size + vocab_multiple - 1) // vocab_multiple * vocab_multiple

    def grow(old, rule):
        new = new_rows(old[:old_v].float(), rule, n, groups, cfg.initializer_range, gen, skip_first)
        w = old.new_zeros(rows, old.size(1))                                   # (rows, C)
        w[:old_v] = old[:old_v]
        w[old_v:new_vocab_size] = new.to(device=w.device, dtype=w.dtype)
        return nn.Parameter(w, requires_grad=old.requires_grad)

    embed_rule, head_rule = INIT_RULES[init]
    emb = model.model.embed_tokens
    emb.weight, emb.num_embeddings = grow(emb.weight, embed_rule), rows
    if model.lm_head is not None:
        model.lm_head.weight, model.lm_head.out_features = grow(model.lm_head.weight, head_rule), rows
    # mutate the shared config in place so every holder of it sees the new size
    cfg.vocab_size, cfg.vocab_multiple = new_vocab_size, vocab_multiple
    return model


# ---- the step: an HF folder in, an HF folder out ----

def check_merged(tokenizer_dir, proto, model_dir, n_base):
    """The merged tokenizer adds pieces to the model's own tokenizer, id for id."""
    if len(proto.pieces) <= n_base:
        raise ValueError(f"{tokenizer_dir}: {len(proto.pieces)} pieces, not more than the model's "
                         f"vocab_size {n_base}: nothing to add")
    own = Path(model_dir) / "tokenizer.model"
    if own.exists():
        base_pieces = [p.piece for p in load_proto(own).pieces]
        if len(base_pieces) != n_base or [p.piece for p in proto.pieces[:n_base]] != base_pieces:
            raise ValueError(f"{tokenizer_dir}: its first {n_base} pieces are not {own}'s pieces; "
                             f"merge into that tokenizer.model")


def expand(model_dir, tokenizer_dir, init="subword", out_dir=None, vocab_multiple=1, dtype="auto", seed=0):
    """Load an HF Llama folder, grow it to the merged tokenizer's vocabulary with `init`, and save
    model + merged tokenizer to out_dir as an HF folder. dtype "auto" keeps the checkpoint's."""
    if dtype == "auto":
        dtype = LlamaConfig.from_pretrained(model_dir).torch_dtype
    dtype = getattr(torch, dtype.removeprefix("torch.")) if isinstance(dtype, str) else dtype
    llama = Llama.from_pretrained(model_dir, dtype=dtype)
    n_base = llama.config.vocab_size
    proto = load_proto(tokenizer_dir)
    check_merged(tokenizer_dir, proto, model_dir, n_base)
    bare_space = {i for i in range(n_base) if proto.pieces[i].piece == SPACE}   # not a meaningful first sub-token
    expand_vocab(llama, len(proto.pieces), init=init, decompositions=decompositions(proto, n_base),
                 vocab_multiple=vocab_multiple, seed=seed, skip_first=bare_space)
    llama.save_pretrained(out_dir)
    for name in MERGED_FILES + ("merge_report.json",):
        if (Path(tokenizer_dir) / name).exists():
            outputs.write_atomic(Path(out_dir) / name, (Path(tokenizer_dir) / name).read_bytes())
    (Path(out_dir) / "tokenizer.json").unlink(missing_ok=True)   # the base's fast tokenizer knows no Korean pieces
    report = {"model": str(model_dir), "tokenizer": str(tokenizer_dir), "init": init, "old_vocab_size": n_base,
              "new_vocab_size": len(proto.pieces), "added": len(proto.pieces) - n_base,
              "vocab_multiple": vocab_multiple, "dtype": str(dtype).removeprefix("torch."), "seed": seed}
    # train.py --freeze-old-rows auto reads old_vocab_size from here
    outputs.write_atomic(Path(out_dir) / "expand_report.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return llama


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="base HF model folder (config.json + safetensors)")
    p.add_argument("--tokenizer", required=True, help="merged tokenizer folder from `merge`")
    p.add_argument("--init", default="subword", choices=INIT_METHODS,
                   help="how to initialize the new embedding and LM-head rows")
    p.add_argument("--out", required=True, help="output HF folder (model + merged tokenizer)")
    cli.add_force(p)
    p.add_argument("--vocab-multiple", type=cli.number(int, lo=1), default=1,
                   help="pad rows to a multiple (64 for GPUs)")
    p.add_argument("--seed", type=int, default=0, help="seed for the `random` init")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (auto: the checkpoint's torch_dtype; new rows are computed in fp32)")
    a = p.parse_args(argv)
    check_model_folder(a.model)
    if not Path(a.tokenizer).exists():
        raise ValueError(f"--tokenizer {a.tokenizer}: not found (give the merged tokenizer folder from `merge`)")
    with outputs.staged(a.out, [a.model, a.tokenizer], a.force, step="expand") as tmp:
        expand(a.model, a.tokenizer, a.init, tmp, vocab_multiple=a.vocab_multiple, dtype=a.dtype, seed=a.seed)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    cli.run(main)

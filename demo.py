"""The end-to-end demo: adapt a small English Llama to Korean on a laptop, every step real.

    python redwhale.py demo                       # about 10 minutes on 2 CPU cores
    python redwhale.py demo --quick --out runs/q  # the smallest settings (the test's), 1-2 minutes
    python redwhale.py demo --base MY_HF_MODEL --corpus my_corpus.jsonl --out runs/real

Steps (each writes into the run folder, default runs/demo):
  base/       a small "English" base model: a Llama-style BPE tokenizer and a tiny Llama
              pretrained briefly on Python's own documentation plus a little Korean, as SOLAR
              saw mostly English (skipped with --base)
  clean/      data.py on the Korean corpus (default: assets/korean_corpus.jsonl.gz)
  korean/ merged/   tokenizer.py: Korean BPE, filtered and merged into the base tokenizer
  expanded/   the base model grown to the merged vocabulary (subword initialization)
  tokens/     the cleaned corpus as token shards, with a held-out split
  train/      train.py's four RedWhale stages (torchrun with 2 processes when there are 2 cores)
  report.md, report.json, loss.png   the numbers of every step, KoBEST and generations before/after
"""
import itertools
import json
import os
import shutil
import time
from pathlib import Path

import torch

from support import cli, outputs

ROOT = Path(__file__).resolve().parent
DEFAULT_CORPUS = ROOT / "assets" / "korean_corpus.jsonl.gz"
PROMPTS = ["대한민국의 수도는", "오늘 날씨가 좋아서"]

# (quick, full) settings; every one is also a flag of `redwhale.py demo`
SIZES = {
    "base_vocab": (1000, 2000), "base_steps": (120, 600), "hidden": (96, 192), "layers": (4, 4),
    "korean_vocab": (3000, 8000), "stage_steps": (16, 150), "seq_len": (128, 256), "batch_size": (8, 8),
    "max_docs": (4000, 0), "eval_limit": (20, 40),
}


def log(msg):
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def english_docs():
    """Python's own documentation (pydoc_data ships with every CPython), our "English web":
    (the topics the base pretrains on, every 5th topic held out to measure English after)."""
    from pydoc_data.topics import topics
    docs = list(dict.fromkeys(" ".join(topics[k].split()) for k in sorted(topics)))  # "if" and "else" are one text
    return [t for i, t in enumerate(docs) if i % 5], docs[::5]


def read_texts(paths, limit=0):
    """The first `limit` texts (0: all) of text or JSONL files, via tokenizer.read_texts."""
    import tokenizer as tok
    return list(itertools.islice(tok.read_texts(paths), limit or None))


def write_jsonl(path, texts):
    Path(path).write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")


def run_train(args, init_from, data, out, recipe, steps, extra=()):
    """train.py as a user runs it: torchrun with 2 gloo processes when there are 2 cores."""
    import train
    from training import launch
    nproc = args.nproc or (2 if (os.cpu_count() or 1) >= 2 else 1)
    argv = ["--init-from", init_from, "--data", data, "--out", out, "--recipe", recipe, "--steps-per-stage", steps,
            "--batch-size", args.batch_size // nproc, "--seq-len", args.seq_len, "--eval-every", max(steps // 2, 1),
            "--ckpt-every", 10 ** 9, "--device", "cpu", *extra]
    argv = [str(a) for a in argv]
    log(("torchrun " if nproc > 1 else "") + "train.py " + " ".join(argv))
    if nproc > 1:
        launch.torchrun(argv, nproc, threads=max((os.cpu_count() or 1) // nproc, 1))
    else:
        train.main(argv)
    return [json.loads(line) for line in open(Path(out) / "log.jsonl", encoding="utf-8")]


def held_out_loss(model_dir, tokens_dir, seq_len, max_windows=800):
    """Mean next-token loss over the held-out shards, measured as train.py measures eval loss."""
    from corpus.shards import TokenShards
    from model import Llama
    from training import metrics
    model = Llama.from_pretrained(model_dir)
    data = TokenShards(str(tokens_dir), seq_len, model.config.vocab_size)
    with torch.no_grad():
        return metrics.held_out_loss(model, data, B=16, batches=max_windows // 16)


def bits_per_char_table(run, base):
    """Korean and English bits per character (tools/score.py, exactly on the same characters) of the
    base model with its own tokenizer, right after expansion, and after each stage (its
    checkpoint, with the merged tokenizer)."""
    from model import Llama
    from support.tokenizer_io import Tokenizer
    from tools import score
    from training import checkpoint
    texts = {lang: [t for docs in score.read_documents([path]).values() for t in docs]
             for lang, path in (("korean", run / "tokens" / "val.jsonl"), ("english", run / "english_heldout.jsonl"))}
    ckdir = run / "train" / "checkpoints"
    merged = Tokenizer.load(run / "merged")
    models = [("base", base, None, Tokenizer.load(base)), ("after expansion", run / "expanded", None, merged)]
    models += [(f"after stage {i + 1}", None, ckdir / name, merged)          # a checkpoint at each stage's end
               for i, name in enumerate(checkpoint.list_checkpoints(ckdir))]
    rows = {}
    for name, folder, ck, tok in models:
        model = (Llama.from_pretrained(folder) if folder else checkpoint.load_model(ck)).eval()
        rows[name] = {lang: score.score(model, tok, docs)["bits_per_char"] for lang, docs in texts.items()}
        log(f"bits/char {name}: Korean {rows[name]['korean']:.3f}, English {rows[name]['english']:.3f}")
    return rows


def make_base(args, run, rep):
    """The English held-out text, then the base model: --base, or a stand-in for SOLAR/Llama-2 built
    here (a tokenizer and a tiny Llama trained on mostly-English text). rep["base"]["model"] is
    where every later step finds it."""
    import data
    import tokenizer as tok
    from config import LlamaConfig
    from model import Llama
    english, held_out = english_docs()
    write_jsonl(run / "english_heldout.jsonl", held_out)   # never in the base's pretraining
    if args.base:
        rep["base"] = {"model": str(Path(args.base)), "given": True}
        return
    init = run / "base_init"
    texts = english + read_texts(args.corpus[:1], limit=300)    # SOLAR saw a little Korean
    log(f"base tokenizer: BPE {args.base_vocab} pieces on {len(texts)} mostly-English documents")
    tok.train_korean(texts, init, vocab_size=args.base_vocab, character_coverage=0.995)
    os.replace(init / "korean.model", init / "tokenizer.model")  # same recipe, any language
    write_jsonl(run / "base_corpus.jsonl", texts)
    data.tokenize([run / "base_corpus.jsonl"], init / "tokenizer.model", run / "base_tokens",
                  val_docs=20, progress=False)
    cfg = LlamaConfig(vocab_size=args.base_vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Llama(cfg)
    model.save_pretrained(init)              # beside the tokenizer files, which it keeps
    recipe = run / "base_recipe.json"
    recipe.write_text(json.dumps({"stages": [
        {"name": "pretrain", "train": ["all"], "steps": args.base_steps, "lr": 3e-3, "warmup": 0.05,
         "weight_decay": 0.0}]}))
    log(f"base model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"{args.base_steps} steps of pretraining")
    rows = run_train(args, init, run / "base_tokens", run / "base_train", recipe, args.base_steps)
    shutil.copytree(run / "base_train" / "final", run / "base", dirs_exist_ok=True)   # with its tokenizer.model
    outputs.mark(init, "demo")
    rep["base"] = {"model": str(run / "base"), "given": False, "loss_first": rows[0]["loss"],
                   "loss_last": rows[-1]["loss"], "log": rows}


def clean_corpus(args, run, rep):
    """data.py clean on the Korean corpus (its first --max-docs documents with --quick)."""
    import data
    log("clean: data.py on " + ", ".join(map(str, args.corpus)))
    corpus = args.corpus
    if args.max_docs:  # the quick demo takes the first documents only
        write_jsonl(run / "corpus_subset.jsonl", read_texts(corpus, limit=args.max_docs))
        corpus = [run / "corpus_subset.jsonl"]
    rep["clean"] = data.clean(corpus, run / "clean", data.CleanConfig(min_chars=args.min_chars))


def make_tokenizer(args, run, rep):
    """A Korean BPE trained on the cleaned corpus, merged into the base tokenizer."""
    import eval_kobest
    import tokenizer as tok
    clean_texts = read_texts([run / "clean" / "clean.jsonl"])
    log(f"tokenizer: Korean BPE {args.korean_vocab} on {len(clean_texts)} documents, merged into the base")
    tok.train_korean(clean_texts, run / "korean", vocab_size=args.korean_vocab)
    eval_texts = {"kobest_sample": tok.read_texts(
        [eval_kobest.DEFAULT_DATA / t / "test.jsonl" for t in eval_kobest.TASKS], text_field="*")}
    rep["tokenizer"] = tok.merge(Path(rep["base"]["model"]) / "tokenizer.model", run / "korean" / "korean.model",
                                 run / "merged", eval_texts=eval_texts)


def expand_and_tokenize(args, run, rep):
    """The base grown to the merged vocabulary; the Korean and English held-out text as token shards."""
    import data
    import expand
    log(f"expand: {rep['tokenizer']['base_size']} -> {rep['tokenizer']['final_size']} rows, init {args.init}")
    expand.expand(Path(rep["base"]["model"]), run / "merged", init=args.init, out_dir=run / "expanded")
    for name, step in (("korean", "tokenizer-train"), ("merged", "merge"), ("expanded", "expand")):
        outputs.mark(run / name, step)      # written through the API: say which step made them
    data.tokenize([run / "clean" / "clean.jsonl"], run / "merged", run / "tokens", val_docs=args.val_docs,
                  progress=False, val_text=True)                  # tokens/val.jsonl: the Korean held-out text
    data.tokenize([run / "english_heldout.jsonl"], run / "merged", run / "en_tokens", progress=False)
    rep["loss_after_expansion"] = held_out_loss(run / "expanded", run / "tokens", args.seq_len)


def train_and_score(args, run, rep):
    """train.py's four stages, then bits per character at each stage and the held-out loss after."""
    recipe = ROOT / "recipes" / "demo.json"
    rows = run_train(args, run / "expanded", run / "tokens", run / "train", recipe, args.stage_steps,
                     ["--eval-data", f"en={run / 'en_tokens'}", "--keep-checkpoints", "10"])
    rep["train"] = {"log": rows}
    rep["bits_per_char"] = bits_per_char_table(run, Path(rep["base"]["model"]))
    rep["loss_after_training"] = held_out_loss(run / "train" / "final", run / "tokens", args.seq_len)


def evaluate(args, run, rep):
    """The KoBEST sample (the first --eval-limit rows of each task) and a greedy continuation of each
    prompt, of the base, then of the trained model."""
    import eval_kobest
    from model import Llama
    from support.tokenizer_io import Tokenizer
    log("KoBEST sample and generations, before and after")
    for when, folder in (("before", rep["base"]["model"]), ("after", run / "train" / "final")):
        model, tok = Llama.from_pretrained(folder).eval(), Tokenizer.load(folder)
        rep[f"kobest_{when}"] = eval_kobest.evaluate(model, tok, eval_kobest.Settings(limit=args.eval_limit))
        rep[f"generations_{when}"] = {p: tok.decode(tok.encode(p) + model.generate(
            tok.encode(p, bos=True), 24, eos_token_id=tok.eos_id)) for p in PROMPTS}


def add_args(p):
    p.add_argument("--out", default="runs/demo", help="run folder (report.md, report.json, every step's output)")
    p.add_argument("--quick", action="store_true", help="the smallest settings (what the test runs)")
    p.add_argument("--base", help="a real HF base model folder with tokenizer.model (default: build a tiny one)")
    p.add_argument("--corpus", nargs="+", default=None, help="Korean corpus files (default: the embedded one)")
    p.add_argument("--init", default="subword", help="initialization of the new rows (see python expand.py --help)")
    p.add_argument("--nproc", type=cli.number(int, lo=0), default=0,
                   help="training processes (default: 2 when there are 2 cores)")
    p.add_argument("--val-docs", type=cli.number(int, lo=1), default=300, help="held-out documents for the eval loss")
    p.add_argument("--min-chars", type=cli.number(int, lo=0), default=10,
                   help="clean: drop shorter documents (KoBEST's COPA/SentiNeg sentences are short)")
    p.add_argument("--force", action="store_true", help="replace an earlier demo's run folder")
    for k, (quick, full) in SIZES.items():
        p.add_argument("--" + k.replace("_", "-"), type=cli.number(int, lo=0 if k == "max_docs" else 1), default=None,
                       help=f"(default {full}; --quick: {quick})")


def main(args):
    """Every step in turn, each one timed, into the run folder and its report."""
    from tools import report
    for k in SIZES:
        if getattr(args, k) is None:
            setattr(args, k, SIZES[k][0 if args.quick else 1])
    args.corpus = args.corpus or [str(DEFAULT_CORPUS)]
    run = Path(args.out)
    # the corpus and base are inputs; an earlier demo (it holds outputs.MARKER) may be replaced
    outputs.check_output_dir(run, [*args.corpus, args.base], args.force)
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    outputs.mark(run, "demo")
    rep, t0 = {"settings": vars(args).copy(), "timing_s": {}}, time.time()
    for step, fn in (("base", make_base), ("clean", clean_corpus), ("tokenizer", make_tokenizer),
                     ("expand", expand_and_tokenize), ("train", train_and_score), ("evaluate", evaluate)):
        t = time.time()
        fn(args, run, rep)
        rep["timing_s"][step] = round(time.time() - t, 1)
    rep["timing_s"]["total"] = round(time.time() - t0, 1)
    log(f"report: {report.write(run, rep)}")
    return rep

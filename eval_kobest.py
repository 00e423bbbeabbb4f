"""KoBEST scored exactly as lm-evaluation-harness 0.4.13 scores it, without the harness.

Five Korean tasks (BoolQ, COPA, HellaSwag, SentiNeg, WiC), each declared once in TASKS: each choice
is scored by the summed log-probability of " " + choice after the prompt; acc is the argmax,
f1 the macro F1 over the split, acc_norm (HellaSwag) the argmax of score / len(choice).
The speed comes from packing: all choices of an example share one row, the prompt is run
once, and each choice's tokens attend to the prompt and to themselves only (a tree mask), so
the numbers are those of one forward pass per choice. Rows are sorted by length and batched.

    python eval_kobest.py --model FOLDER                      # the 40-row sample in assets/
    python eval_kobest.py --model FOLDER --data KOBEST_DIR --output results.json
    python eval_kobest.py --model FOLDER --data KOBEST_DIR --num-fewshot 5 --tasks copa,wic
    python eval_kobest.py --model FOLDER --data hf            # skt/kobest_v1 via `datasets` (online)
    python redwhale.py eval --model FOLDER --data KOBEST_DIR   # the same, through the CLI

FOLDER is a Hugging Face Llama-architecture folder (config.json, safetensors, tokenizer.model);
KOBEST_DIR a folder of <task>/{train,validation,test}.jsonl with the fields of skt/kobest_v1.
From Python (an in-memory model and a support.tokenizer_io.Tokenizer):

    results = evaluate(model, Tokenizer.load(FOLDER), Settings(tasks=["copa"], data=KOBEST_DIR))
"""
import argparse
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from support import cli, outputs
from support.tokenizer_io import Tokenizer

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT / "assets" / "kobest_sample"
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


# ---- the tasks: lm-eval 0.4.13 tasks/kobest/*.yaml and utils.py, over the rows of skt/kobest_v1 ----

@dataclass(frozen=True)
class Task:
    """One task: the rows it reads, how a row becomes a prompt and its choices, what it reports."""
    fields: dict                     # field -> type of a row; its label indexes the choices
    text: Callable                   # doc -> the prompt (doc_to_text)
    choices: Callable                # doc -> the answers, each scored as " " + answer (doc_to_choice)
    target_is_text: bool = False     # the target is the answer text, found back with choices.index()
    metrics: tuple = ("acc", "f1")

    def gold(self, doc):
        """The index of the right answer; with a text target the first equal choice wins, as in lm-eval."""
        choices = self.choices(doc)
        return choices.index(choices[doc["label"]]) if self.target_is_text else doc["label"]


COPA_CONNECTORS = {"원인": " 왜냐하면", "결과": " 그래서"}   # with a space of their own: two before, as in lm-eval
TASKS = {
    "boolq": Task({"paragraph": str, "question": str, "label": int},
                  lambda d: f"{d['paragraph']} 질문: {d['question']} 답변: ", lambda d: ["아니오", "예"]),
    "copa": Task({"premise": str, "question": str, "alternative_1": str, "alternative_2": str, "label": int},
                 lambda d: f"{d['premise']} {COPA_CONNECTORS[d['question'].strip()]}",
                 lambda d: [d["alternative_1"], d["alternative_2"]], target_is_text=True),
    "hellaswag": Task({"context": str, **{f"ending_{i}": str for i in range(1, 5)}, "label": int},
                      lambda d: f"문장: {d['context']}", lambda d: [d[f"ending_{i}"] for i in range(1, 5)],
                      metrics=("acc", "f1", "acc_norm")),
    "sentineg": Task({"sentence": str, "label": int},
                     lambda d: f"문장: {d['sentence']} 긍부정:", lambda d: ["부정", "긍정"]),
    "wic": Task({"word": str, "context_1": str, "context_2": str, "label": int},
                lambda d: f"문장1: {d['context_1']} 문장2: {d['context_2']} "
                          f"두 문장에서 {d['word']}가 같은 뜻으로 쓰였나?",
                lambda d: ["아니오", "예"]),
}


def check_tasks(names):
    """The names as a list, unless one is not a KoBEST task."""
    bad = [t for t in names if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {', '.join(bad)} (known: {', '.join(TASKS)})")
    return list(names)


# ---- data: local JSONL in the skt/kobest_v1 layout, or the `datasets` library ----

def check_doc(task, doc, where):
    """Raise ValueError naming `where` (file:line) unless doc has the task's fields."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    spec = TASKS[task]
    for key, typ in spec.fields.items():
        if key not in doc:
            raise ValueError(f"{where}: missing field {key!r} (a {task} row needs {', '.join(spec.fields)})")
        v = doc[key]
        if typ is int and isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = doc[key] = int(v)  # some exports write labels as strings
        if not isinstance(v, typ) or isinstance(v, bool):
            raise ValueError(f"{where}: field {key!r} should be {typ.__name__}, got {v!r}")
    n = len(spec.choices(doc))
    if not 0 <= doc["label"] < n:
        raise ValueError(f"{where}: label {doc['label']} out of range 0..{n - 1}")
    if task == "copa" and doc["question"].strip() not in COPA_CONNECTORS:
        raise ValueError(f"{where}: COPA question must be 원인 or 결과, got {doc['question']!r}")
    return doc


def load_split(data_dir, task, split):
    """(docs, sha256 of the file) from DATA_DIR/<task>/<split>.jsonl; DATA_DIR "hf": skt/kobest_v1 via `datasets`."""
    if str(data_dir) == "hf":
        return load_split_hf(task, split)
    path = Path(data_dir) / task / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (expected the skt/kobest_v1 JSONL layout DIR/<task>/<split>.jsonl)")
    raw = path.read_bytes()
    docs = []
    for i, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
        docs.append(check_doc(task, doc, f"{path}:{i}"))
    if not docs:
        raise ValueError(f"{path}: no rows")
    return docs, hashlib.sha256(raw).hexdigest()


def load_split_hf(task, split, name="skt/kobest_v1"):
    """The same rows through `datasets` (optional; needs the library and the hub)."""
    try:
        import datasets
    except ImportError:
        raise ValueError("--data hf needs the `datasets` library (pip install datasets); "
                         "or point --data at a local folder of <task>/{train,validation,test}.jsonl") from None
    rows = [dict(r) for r in datasets.load_dataset(name, task, split=split)]
    docs = [check_doc(task, r, f"{name}/{task}/{split} row {i}") for i, r in enumerate(rows)]
    blob = "\n".join(json.dumps(r, ensure_ascii=False, sort_keys=True) for r in rows).encode()
    return docs, hashlib.sha256(blob).hexdigest()


# ---- prompts: lm-eval's ContextSampler ----

def build_contexts(task, docs, fewshot_docs=(), num_fewshot=0, seed=FEWSHOT_SEED):
    """The prompt of each doc. With num_fewshot > 0: lm-eval's ContextSampler, one
    random.Random(seed) per task drawing rnd.sample(train, k) for each test doc in order;
    each shot is written `text + " " + answer + "\\n\\n"` before the query."""
    spec = TASKS[task]
    if num_fewshot <= 0:
        return [spec.text(d) for d in docs]
    if len(fewshot_docs) < num_fewshot:
        raise ValueError(f"{task}: asked for {num_fewshot} shots but the few-shot split has {len(fewshot_docs)} rows")
    rnd = random.Random(seed)
    out = []
    for d in docs:
        shots = rnd.sample(fewshot_docs, num_fewshot)
        prefix = "".join(spec.text(s) + " " + spec.choices(s)[spec.gold(s)] + "\n\n" for s in shots)
        out.append(prefix + spec.text(d))
    return out


# ---- tokenization: what lm-eval's HFLM does with a Llama tokenizer ----

def encode_pair(tok, context, continuation):
    """(context ids, continuation ids) as lm-eval's _encode_pair: trailing spaces of the context
    move to the continuation; the context is encoded alone (with BOS when the tokenizer has one)
    and the continuation is what tokens(context + continuation) has past that length."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, ctx = tok.encode([context + continuation, context], bos=True)
    return ctx, whole[len(ctx):]


@dataclass
class Example:
    task: str
    doc_id: int
    context: str
    choices: list
    gold: int
    ctx_ids: list = field(default_factory=list)
    cont_ids: list = field(default_factory=list)   # one token list per choice


def build_examples(task, docs, contexts, tok):
    """An Example per doc: its choices and gold, its prompt's tokens and each continuation's."""
    spec = TASKS[task]
    exs = []
    for i, (doc, ctx) in enumerate(zip(docs, contexts)):
        ex = Example(task, i, ctx, spec.choices(doc), spec.gold(doc))
        for c in ex.choices:
            ctx_ids, cont = encode_pair(tok, ctx, " " + c)
            if not cont:
                raise ValueError(f"{task} doc {i}: choice {c!r} encodes to no tokens after the context")
            ex.ctx_ids = ctx_ids
            ex.cont_ids.append(cont)
        exs.append(ex)
    return exs


# ---- scoring ----

def upcast(x):
    """At least fp32 for the log-softmax (bf16 logits are upcast; a float64 model stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def lm_input(ctx_ids, cont_ids, max_len):
    """lm-eval's causal input: (ctx + cont)[-(max_len + 1):][:-1], scored on its last len(cont)."""
    return (ctx_ids + cont_ids)[-(max_len + 1):][:-1]


@torch.no_grad()
def score_reference(model, examples):
    """The slow, obviously-correct scorer: one model.forward per choice, full log-softmax,
    summed log-probabilities of the continuation tokens. Tests and the benchmark compare to it."""
    dev, M = next(model.parameters()).device, model.config.max_position_embeddings
    out = []
    for ex in examples:
        lls = []
        for cont in ex.cont_ids:
            logits, _ = model(torch.tensor([lm_input(ex.ctx_ids, cont, M)], device=dev))   # (1, T, V)
            logp = F.log_softmax(upcast(logits[0, -len(cont):]), dim=-1)  # (L, V)
            lls.append(float(logp.gather(1, torch.tensor(cont, device=dev)[:, None]).sum()))
        out.append(lls)
    return out


def pack_example(ex, max_len):
    """Rows for one example as (prefix, [(choice index, segment tokens)]). The prompt is the
    prefix; choice j adds a segment cont_j[:-1] whose first target cont_j[0] is predicted at the
    last prefix position. A choice whose input lm-eval would left-truncate gets its own row."""
    shared, rows = [], []
    for j, cont in enumerate(ex.cont_ids):
        if len(cont) > max_len:
            raise ValueError(f"{ex.task} doc {ex.doc_id}: choice {j} has {len(cont)} tokens, more than the "
                             f"model's {max_len} positions")
        if len(ex.ctx_ids) + len(cont) > max_len + 1:
            inp = lm_input(ex.ctx_ids, cont, max_len)
            rows.append((inp[:len(inp) - len(cont) + 1], [(j, cont)]))
        else:
            shared.append((j, cont))
    if shared:
        rows.append((ex.ctx_ids, shared))
    return rows


def pack_batch(rows):
    """The model's inputs for a batch of packed rows: ids and positions (B, T), the tree mask
    (B, 1, T, T), and, flat over every scored token, where it is predicted (row, position),
    its id, and whose it is (row, segment)."""
    B, T = len(rows), max(len(p) + sum(len(c) - 1 for _, c in segs) for p, segs in rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)       # 0 prefix, k+1 segment k, -1 padding
    where, targets, owner = [], [], []
    for b, (prefix, segs) in enumerate(rows):
        n = len(prefix)
        ids[b, :n] = torch.tensor(prefix)
        pos[b, :n] = torch.arange(n)
        seg[b, :n] = 0
        s = n
        for k, (j, cont) in enumerate(segs):
            L = len(cont) - 1                            # the last token is never an input
            if L:
                ids[b, s:s + L] = torch.tensor(cont[:-1])
                pos[b, s:s + L] = torch.arange(n, n + L)   # each segment continues the prefix
                seg[b, s:s + L] = k + 1
            # cont[0] is predicted at the last prefix position, cont[t] at segment position t-1
            where += [(b, n - 1)] + [(b, s + t) for t in range(L)]
            targets += cont
            owner += [(b, k)] * len(cont)
            s += L
    # mask[b, q, k]: key k is not after query q, and is in the prefix or in q's own segment
    # (padding queries see the prefix and earlier padding, so no softmax row is empty)
    order = torch.arange(T)
    causal = order[None, :, None] >= order[None, None, :]                        # (1, T, T)
    mask = (causal & ((seg[:, None, :] == 0) | (seg[:, :, None] == seg[:, None, :])))[:, None]  # (B, 1, T, T)
    return ids, pos, mask, where, targets, owner


@torch.no_grad()
def packed_forward(model, rows):
    """Run a batch of packed rows through the model with their positions and tree mask; per scored
    token, return whose it is (row, segment), its log-probability (fp32 log-softmax, as the reference)
    and whether it is the argmax. Only the positions that predict a continuation token go through the LM head."""
    dev = next(model.parameters()).device
    ids, pos, mask, where, targets, owner = pack_batch(rows)
    h = model.hidden(ids.to(dev), positions=pos.to(dev), mask=mask.to(dev))     # (B, T, C)
    bi, ti = torch.tensor(where, device=dev).unbind(1)                           # (N,) each
    logits = model.head(h[bi, ti])                                               # (N, V) activation dtype
    logp = F.log_softmax(upcast(logits), dim=-1)
    tgt = torch.tensor(targets, device=dev)
    lp = logp.gather(1, tgt[:, None])[:, 0].double().cpu().tolist()
    return zip(owner, lp, (logits.argmax(-1) == tgt).cpu().tolist())


@torch.no_grad()
def score_packed(model, examples, batch_size=32):
    """Summed log-probabilities (and is-greedy flags) per example and choice, batched:
    rows sorted longest first so each batch pads little, `batch_size` rows a forward."""
    M = model.config.max_position_embeddings
    rows = [(e, p, segs) for e, ex in enumerate(examples) for p, segs in pack_example(ex, M)]   # e: example index
    rows.sort(key=lambda r: -(len(r[1]) + sum(len(c) - 1 for _, c in r[2])))
    lls = [[0.0] * len(ex.cont_ids) for ex in examples]
    greedy = [[True] * len(ex.cont_ids) for ex in examples]
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        for (b, k), lp, g in packed_forward(model, [(p, s) for _, p, s in chunk]):
            e, j = chunk[b][0], chunk[b][2][k][0]       # the example and the choice of row b's segment k
            lls[e][j] += lp
            greedy[e][j] = greedy[e][j] and g
    return lls, greedy


# ---- metrics: lm-eval's acc, acc_norm, and sklearn's macro F1 ----

def argmax(xs):
    """The index of the largest; on a tie the first (max keeps the first of equals), like np.argmax."""
    return max(range(len(xs)), key=xs.__getitem__)


def macro_f1(golds, preds):
    """sklearn.metrics.f1_score(golds, preds, average="macro"): mean F1 over every label seen in
    either list; a label with no true or predicted positives scores 0."""
    labels = sorted(set(golds) | set(preds))
    f1s = []
    for c in labels:
        tp = sum(g == c and p == c for g, p in zip(golds, preds))
        fp = sum(g != c and p == c for g, p in zip(golds, preds))
        fn = sum(g == c and p != c for g, p in zip(golds, preds))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1s) / len(f1s)


def task_metrics(task, examples, lls):
    preds = [argmax(s) for s in lls]
    golds = [ex.gold for ex in examples]
    m = {"acc": sum(p == g for p, g in zip(preds, golds)) / len(golds), "f1": macro_f1(golds, preds)}
    if "acc_norm" in TASKS[task].metrics:
        norm = [argmax([s / len(c) for s, c in zip(sc, ex.choices)]) for sc, ex in zip(lls, examples)]
        m["acc_norm"] = sum(p == g for p, g in zip(norm, golds)) / len(golds)
    m["n"] = len(golds)
    return m


def group_metrics(per_task):
    """lm-eval's kobest group score: each metric averaged over the tasks that report it,
    weighted by their number of test examples (acc_norm is therefore HellaSwag's alone)."""
    out = {}
    for metric in ("acc", "acc_norm", "f1"):
        have = [m for m in per_task.values() if metric in m]
        if have:
            out[metric] = sum(m[metric] * m["n"] for m in have) / sum(m["n"] for m in have)
    out["n"] = sum(m["n"] for m in per_task.values())
    return out


def sample_records(task, examples, lls, greedy):
    """Per-example scores and predictions, as lm-eval's --log_samples keeps them."""
    recs = []
    for ex, sc, gr in zip(examples, lls, greedy):
        rec = {"doc_id": ex.doc_id, "context": ex.context, "choices": ex.choices, "gold": ex.gold,
               "lls": sc, "is_greedy": gr, "pred": argmax(sc), "acc": float(argmax(sc) == ex.gold)}
        if "acc_norm" in TASKS[task].metrics:
            rec["pred_norm"] = argmax([s / len(c) for s, c in zip(sc, ex.choices)])
        recs.append(rec)
    return recs


@dataclass
class Settings:
    """What evaluate() scores and how: the command line's flags, less the model and the output."""
    tasks: tuple = tuple(TASKS)
    data: str | Path = DEFAULT_DATA      # a folder of <task>/<split>.jsonl, or "hf": skt/kobest_v1 via datasets
    split: str = "test"
    num_fewshot: int = 0                 # shots drawn from train (seed FEWSHOT_SEED)
    batch_size: int = 32                 # packed rows per forward
    limit: int | None = None             # the first N examples of each task
    log_samples: bool = False            # out["samples"]: per-example scores and predictions


def evaluate(model, tok, settings=None, verbose=False):
    """Score the tasks with an in-memory Llama and a Tokenizer; returns
    {"results": {task: {acc, f1, [acc_norm], n}}, "groups": {"kobest": ...}, "data": {...},
    "timing": {...}, ["samples": {task: [...]}]}."""
    s = settings or Settings()
    tasks = check_tasks(s.tasks)
    was_training = model.training
    model.eval()
    results, samples, checksums, timing = {}, {}, {}, {}
    for task in tasks:
        t0 = time.perf_counter()
        docs, checksums[f"{task}/{s.split}"] = load_split(s.data, task, s.split)
        docs = docs[:s.limit] if s.limit else docs
        shots = []
        if s.num_fewshot > 0:
            shots, checksums[f"{task}/train"] = load_split(s.data, task, "train")
        examples = build_examples(task, docs, build_contexts(task, docs, shots, s.num_fewshot), tok)
        t1 = time.perf_counter()
        lls, greedy = score_packed(model, examples, s.batch_size)
        t2 = time.perf_counter()
        results[task] = task_metrics(task, examples, lls)
        timing[task] = {"prepare_s": t1 - t0, "score_s": t2 - t1, "examples_per_s": len(examples) / (t2 - t1)}
        if verbose:
            print(f"{task}: {len(examples)} examples in {t2 - t0:.1f}s", file=sys.stderr)
        if s.log_samples:
            samples[task] = sample_records(task, examples, lls, greedy)
    model.train(was_training)
    blob = json.dumps(checksums, sort_keys=True).encode()
    out = {"results": results, "groups": {"kobest": group_metrics(results)} if len(results) > 1 else {},
           "data": {"path": str(s.data), "split": s.split, "sha256": hashlib.sha256(blob).hexdigest(),
                    "files": checksums},
           "timing": timing}
    if s.log_samples:
        out["samples"] = samples
    return out


def format_table(out):
    lines = [f"{'task':<12}{'n':>6}{'acc':>9}{'f1':>9}{'acc_norm':>10}"]
    rows = list(out["results"].items()) + [(f"{k} (avg)", v) for k, v in out["groups"].items()]
    for name, m in rows:
        acc, f1, norm = (f"{m[k]:.4f}" if k in m else "-" for k in ("acc", "f1", "acc_norm"))
        lines.append(f"{name:<12}{m['n']:>6}{acc:>9}{f1:>9}{norm:>10}")
    return "\n".join(lines)


def checkpoint_dtype(folder):
    """What lm-eval's Hugging Face backend scores in by default (dtype="auto", handed to
    transformers): config.json's dtype (transformers 5's name; else torch_dtype), else the dtype
    of the first floating-point weight by name, float8 skipped, as transformers picks it. A
    SOLAR-derived export is float16, on any device."""
    from config import LlamaConfig
    from support.safetensors_io import DTYPES, checkpoint_files, read_header
    cfg = LlamaConfig.from_pretrained(str(folder)).source_config       # one line for a bad config.json
    named = cfg.get("dtype") or cfg.get("torch_dtype")
    if named in ("float32", "bfloat16", "float16"):
        return named
    weights = []
    for path in checkpoint_files(str(folder)):
        with open(path, "rb") as f:
            weights += [(key, DTYPES[name]) for key, name, *_ in read_header(f, path, os.path.getsize(path))[1]]
    for _, dtype in sorted(weights, key=lambda kv: kv[0]):
        if dtype.is_floating_point and dtype.itemsize > 1:
            return str(dtype).removeprefix("torch.")
    return "float32"


def run(args):
    """The command: check everything cheap first, then load, score, print and write."""
    from model import Llama, check_model_folder
    from training import runtime
    device = runtime.check_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_model_folder(args.model)
    samples_path = Path(args.output).with_suffix(".samples.jsonl") if args.output else None
    if args.output:     # checked before minutes of scoring, not after
        inputs = [args.model] + ([args.data] if args.data != "hf" else [])
        keys = {args.output: ("model", "results", "args"), samples_path: ("task", "doc_id")}  # an earlier result's
        for path in [args.output] + ([samples_path] if args.log_samples else []):
            outputs.check_output_file(path, inputs, args.force, "--output", outputs.json_with(*keys[path]))
    dtype = checkpoint_dtype(args.model) if args.dtype == "auto" else args.dtype
    tasks = check_tasks([t.strip() for t in args.tasks.split(",") if t.strip()])
    tok = Tokenizer.load(args.model)     # a missing or corrupt tokenizer.model is one line naming it
    model = Llama.from_pretrained(args.model, dtype=getattr(torch, dtype), device=device).eval()
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{tok.name} has {tok.vocab_size} pieces but {args.model}/config.json "
                         f"says vocab_size {model.config.vocab_size}")
    t0 = time.perf_counter()
    settings = Settings(tasks=tasks, data=args.data, split=args.split, num_fewshot=args.num_fewshot,
                        batch_size=args.batch_size, limit=args.limit, log_samples=args.log_samples)
    out = evaluate(model, tok, settings, verbose=True)
    elapsed = time.perf_counter() - t0
    samples = out.pop("samples", None)
    out = {"model": str(Path(args.model).resolve()), "args": vars(args) | {"device": device, "dtype": dtype},
           **out, "elapsed_s": elapsed}
    print(format_table(out))
    n = sum(m["n"] for m in out["results"].values())
    print(f"{n} examples in {elapsed:.1f}s ({n / elapsed:.1f}/s); data sha256 {out['data']['sha256'][:12]}")
    if args.output:     # each file written whole (a reader never sees half), in a folder made if need be
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        outputs.write_atomic(args.output, json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.output}")
        if samples is not None:
            outputs.write_atomic(samples_path, "".join(json.dumps({"task": t, **s}, ensure_ascii=False) + "\n"
                                                       for t, rows in samples.items() for s in rows))
            print(f"wrote {samples_path}")
    return out


def main(argv=None):
    """The command line (`redwhale.py eval` runs the same)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face Llama folder with tokenizer.model")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of " + ",".join(TASKS))
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="folder in the skt/kobest_v1 JSONL layout (<task>/<split>.jsonl), or 'hf' "
                        "for the datasets library; default: the 40-row sample in assets/")
    p.add_argument("--split", default="test", help="split to score (lm-eval scores test)")
    p.add_argument("--num-fewshot", type=cli.number(int, lo=0), default=0, help="shots drawn from train (seed 1234)")
    p.add_argument("--batch-size", type=cli.number(int, lo=1), default=32, help="packed rows (examples) per forward")
    p.add_argument("--limit", type=cli.number(int, lo=1), default=None, help="score only the first N examples per task")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto (lm-eval's default): the checkpoint's own dtype, config.json's dtype (or "
                        "torch_dtype), else its first floating-point weight's by name")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--output", default="kobest_results.json", help="JSON file for the numbers")
    p.add_argument("--log-samples", action="store_true",
                   help="also write per-example scores and predictions to OUTPUT's .samples.jsonl")
    p.add_argument("--force", action="store_true", help="replace an existing --output this script did not write")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    cli.run(main)

"""Speed and agreement of eval_kobest.py against the slow reference scorer and, where it is
installed, lm-evaluation-harness 0.4.13 itself, on the same random Llama and the same data.

    python bench/eval_bench.py --data KOBEST_DIR                       # full test sets
    python bench/eval_bench.py --limit 100 --tasks copa,hellaswag      # quick look

Prints examples/s of each scorer, the speed ratios, and whether every metric agrees to 4
decimals. lm-eval is a benchmark-only dependency (never imported by the product); install it
beside the project's torch without touching it, e.g. in a venv that sees the system packages:

    python -m venv --system-site-packages .venv-bench
    .venv-bench/bin/pip install lm_eval==0.4.13 accelerate   # keeps torch==2.13.0 (HFLM needs accelerate)
    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 .venv-bench/bin/python bench/eval_bench.py --data KOBEST_DIR

lm-eval's kobest tasks load skt/kobest_v1 from the hub; here they are re-declared as local
tasks (dataset_path: json, data_files pointing at DATA/<task>/*.jsonl) that reuse the
harness's own kobest utils.py, so prompts, metrics and the group score are the harness's.
The harness tokenizes with a transformers tokenizer built from tokenizer.model, which can
differ from SentencePiece on runs of spaces, and KoBEST has such runs
(BoolQ's moved trailing space, COPA's two spaces). So it runs twice: `hf` (the harness as a
user runs it) and `sentencepiece` (the harness with its tok_encode swapped for SentencePiece,
which isolates the scoring from the tokenizer).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import eval_kobest as ek  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402
from support.tokenizer_io import Tokenizer  # noqa: E402

TASK_YAML = {  # lm-eval 0.4.13 tasks/kobest/*.yaml with the dataset made local
    "boolq": 'doc_to_text: "{{paragraph}} 질문: {{question}} 답변: "\ndoc_to_target: "{{label}}"\n'
             'doc_to_choice: ["아니오", "예"]\n',
    "copa": "doc_to_text: !function utils.copa_doc_to_text\ndoc_to_target: !function utils.copa_doc_to_target\n"
            "doc_to_choice: !function utils.copa_doc_to_choice\n",
    "hellaswag": 'doc_to_text: "{{query}}"\ndoc_to_target: "{{label}}"\n'
                 "process_docs: !function utils.hellaswag_process_doc\ndoc_to_choice: \"choices\"\n",
    "sentineg": 'doc_to_text: !function utils.sentineg_doc_to_text\ndoc_to_target: "{{label}}"\n'
                'doc_to_choice: ["부정", "긍정"]\n',
    "wic": "doc_to_text: !function utils.wic_doc_to_text\ndoc_to_target: \"{{label}}\"\n"
           "doc_to_choice: ['아니오', '예']\n",
}
METRICS = """metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
{norm}  - metric: f1
    aggregation: !function utils.macro_f1_score
    average: macro
    hf_evaluate: true
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_lm_eval_tasks(folder, data_dir, tasks, split):
    """Local copies of lm-eval's kobest tasks (named local_kobest_<task>) and group."""
    import lm_eval
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(lm_eval.__file__).parent / "tasks" / "kobest" / "utils.py", folder / "utils.py")
    for t in tasks:
        files = {"train": str(Path(data_dir, t, "train.jsonl").resolve()),
                 split: str(Path(data_dir, t, f"{split}.jsonl").resolve())}
        norm = "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n" if t == "hellaswag" else ""
        (folder / f"local_kobest_{t}.yaml").write_text(
            f"task: local_kobest_{t}\ndataset_path: json\ndataset_kwargs:\n  data_files: {json.dumps(files)}\n"
            f"output_type: multiple_choice\ntraining_split: train\ntest_split: {split}\n"
            + TASK_YAML[t] + METRICS.format(norm=norm), encoding="utf-8")
    agg = "".join(f"  - metric: {m}\n    aggregation: mean\n    weight_by_size: true\n"
                  for m in ("acc", "acc_norm", "f1"))
    (folder / "local_kobest.yaml").write_text(
        "group: local_kobest\ntask:\n" + "".join(f"  - local_kobest_{t}\n" for t in tasks)
        + "aggregate_metric_list:\n" + agg + "metadata:\n  version: 1.0\n", encoding="utf-8")


def clock():
    """(wall seconds, CPU seconds of this process): other jobs on a shared machine stretch the
    first; the second counts only the work this process did, on all its threads."""
    return Timer(time.perf_counter(), time.process_time())


class Timer(tuple):
    def __new__(cls, wall, cpu):
        return super().__new__(cls, (wall, cpu))

    def __sub__(self, other):
        return Timer(self[0] - other[0], self[1] - other[1])

    def __add__(self, other):
        return Timer(self[0] + other[0], self[1] + other[1])


def make_lm(folder, args, sp=None):
    """lm-eval's HFLM on the HF folder; with `sp` (a Tokenizer), its tokenizer calls go through SentencePiece."""
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=str(folder), dtype="float32", device="cpu", batch_size=args.batch_size)
    if sp is not None:
        bos = [sp.bos_id]
        lm.tok_encode = lambda s, add_special_tokens=None, left_truncate_len=None, **kw: (
            (bos if add_special_tokens is not False else []) + sp.encode(s))[-(left_truncate_len or 0):]
    return lm


def run_lm_eval(lm, task_manager, task, args):
    """One task through lm_eval.simple_evaluate: (metrics, per-example log-likelihoods, seconds)."""
    import lm_eval
    t0 = clock()
    out = lm_eval.simple_evaluate(model=lm, tasks=[f"local_kobest_{task}"], num_fewshot=args.num_fewshot,
                                  limit=args.limit, task_manager=task_manager, bootstrap_iters=0,
                                  log_samples=True, fewshot_random_seed=ek.FEWSHOT_SEED)
    elapsed = clock() - t0
    r = out["results"][f"local_kobest_{task}"]
    metrics = {m: r[f"{m},none"] for m in ("acc", "f1", "acc_norm") if f"{m},none" in r}
    metrics["n"] = len(out["samples"][f"local_kobest_{task}"])
    lls = [[float(x[0][0]) for x in s["resps"]]
           for s in sorted(out["samples"][f"local_kobest_{task}"], key=lambda s: s["doc_id"])]
    return metrics, lls, elapsed


def build_model(args, tmp):
    import sentencepiece as spm
    if args.model:
        folder = Path(args.model)
        return Llama.from_pretrained(folder).eval(), Tokenizer.load(folder), folder
    tok = args.tokenizer
    if tok is None:  # a small Korean BPE, Llama-style (byte fallback, identity normalizer)
        import gzip
        with gzip.open(ROOT / "assets" / "korean_corpus.jsonl.gz", "rt", encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=str(tmp / "ko"), model_type="bpe",
            vocab_size=args.vocab_size, byte_fallback=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False,  # Llama-style: runs of spaces are kept
            split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2)
        tok = tmp / "ko.model"
    sp = Tokenizer.load(tok)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=sp.vocab_size, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                      num_hidden_layers=args.layers, num_attention_heads=args.hidden // 32,
                      num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=4096,
                      initializer_range=0.2)  # at 0.02 a random model is nearly blind
    model = Llama(cfg).eval()
    folder = tmp / "model"
    model.save_pretrained(folder)
    shutil.copy(tok, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return model, sp, folder


def compare(name, ours, theirs, tasks):
    """Print per-metric agreement to 4 decimals; return True when everything agrees."""
    ok = True
    for t in list(tasks) + (["kobest"] if "kobest" in theirs else []):
        for m in ("acc", "f1", "acc_norm"):
            if m in theirs.get(t, {}):
                a, b = ours[t][m], theirs[t][m]
                same = round(a, 4) == round(b, 4)
                ok &= same
                if not same:
                    print(f"  {name}: {t} {m} differs: eval_kobest {a:.4f} vs {b:.4f}")
    return ok


def max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ek.DEFAULT_DATA), help="KoBEST folder (skt/kobest_v1 JSONL layout)")
    p.add_argument("--tasks", default=",".join(ek.TASKS))
    p.add_argument("--limit", type=int, default=None, help="first N test examples per task")
    p.add_argument("--num-fewshot", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="for eval_kobest and lm-eval alike")
    p.add_argument("--model", default=None, help="an HF folder instead of the random model")
    p.add_argument("--tokenizer", default=None, help="tokenizer.model for the random model "
                   "(default: a Korean BPE trained here on assets/korean_corpus.jsonl.gz)")
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--reference-limit", type=int, default=100,
                   help="examples per task for the slow reference comparison (0: skip it)")
    p.add_argument("--harness", default="hf,sentencepiece",
                   help="lm-eval runs: hf (its own tokenizer), sentencepiece (tokenizer swapped), or none")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    try:
        model, sp, folder = build_model(args, tmp)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: {n_params / 1e6:.1f}M params, vocab {model.config.vocab_size}, hidden "
              f"{model.config.hidden_size}, {model.config.num_hidden_layers} layers; torch threads "
              f"{torch.get_num_threads()}; data {args.data}; batch size {args.batch_size}")

        modes = [m for m in args.harness.split(",") if m and m != "none"]
        try:
            import lm_eval  # noqa: F401
            from lm_eval.tasks import TaskManager
        except ImportError:
            print("lm-eval is not installed: skipping the harness comparison (see this file's docstring)")
            modes = []
        if modes:
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            write_lm_eval_tasks(tmp / "tasks", args.data, tasks, "test")
            tm = TaskManager(include_path=str(tmp / "tasks"))
            lms = {m: make_lm(folder, args, sp if m == "sentencepiece" else None) for m in modes}

        # Task by task, every scorer in turn, so that load from other jobs on the machine falls
        # on all of them alike; times are summed per scorer.
        ek.evaluate(model, sp, ek.Settings(tasks[:1], args.data, limit=2, batch_size=args.batch_size))  # warm-up
        secs = {k: Timer(0.0, 0.0) for k in ["ours", "ours_sub", "reference", *modes]}
        ours, our_lls, ref, ref_lls, sub, theirs = {}, {}, {}, {}, {}, {m: {} for m in modes}
        theirs_lls = {m: {} for m in modes}
        lim = min(args.reference_limit, args.limit or args.reference_limit)
        for t in tasks:
            t0 = clock()
            o = ek.evaluate(model, sp, ek.Settings([t], args.data, num_fewshot=args.num_fewshot,
                                                   batch_size=args.batch_size, limit=args.limit, log_samples=True))
            secs["ours"] += clock() - t0
            ours[t], our_lls[t] = o["results"][t], [s["lls"] for s in o["samples"][t]]
            if lim:  # the reference is slow: it and eval_kobest are timed on the first `lim` examples
                t0 = clock()
                sub[t] = ek.evaluate(model, sp, ek.Settings([t], args.data, num_fewshot=args.num_fewshot,
                                                            batch_size=args.batch_size, limit=lim))["results"][t]
                secs["ours_sub"] += clock() - t0
                t0 = clock()
                docs = ek.load_split(args.data, t, "test")[0][:lim]
                shots = ek.load_split(args.data, t, "train")[0] if args.num_fewshot else []
                exs = ek.build_examples(t, docs, ek.build_contexts(t, docs, shots, args.num_fewshot), sp)
                ref_lls[t] = ek.score_reference(model, exs)
                ref[t] = ek.task_metrics(t, exs, ref_lls[t])
                secs["reference"] += clock() - t0
            for m in modes:
                theirs[m][t], theirs_lls[m][t], sec = run_lm_eval(lms[m], tm, t, args)
                secs[m] += sec
            print(f"after {t}: " + ", ".join(f"{k} {v[0]:.0f}s wall/{v[1]:.0f}s cpu" for k, v in secs.items()),
                  flush=True)

        n = sum(m["n"] for m in ours.values())
        if len(tasks) > 1:
            ours["kobest"] = ek.group_metrics(ours)
        w, c = secs["ours"]
        print(f"eval_kobest: {n} examples in {w:.1f}s wall ({c:.1f}s CPU) = {n / w:.1f} examples/s")
        print(ek.format_table({"results": {t: ours[t] for t in tasks},
                               "groups": {"kobest": ours["kobest"]} if len(tasks) > 1 else {}}))
        if lim:
            n_sub = sum(m["n"] for m in sub.values())
            if len(tasks) > 1:
                sub["kobest"], ref["kobest"] = ek.group_metrics(sub), ek.group_metrics(ref)
            d = max(max_diff(our_lls[t][:lim], ref_lls[t]) for t in tasks)
            same = compare("reference", sub, ref, tasks)
            r, o = secs["reference"], secs["ours_sub"]
            print(f"reference (one forward per choice), first {lim} per task: {n_sub / r[0]:.1f} examples/s "
                  f"vs eval_kobest {n_sub / o[0]:.1f}: eval_kobest is {r[0] / o[0]:.2f}x faster in wall time, "
                  f"{r[1] / o[1]:.2f}x in CPU time; max |log-likelihood diff| {d:.2e}; metrics agree to 4 "
                  f"decimals: {same}")
        for m in modes:
            if len(tasks) > 1:  # the harness's group score: test-size-weighted mean of its task scores
                theirs[m]["kobest"] = ek.group_metrics({t: theirs[m][t] for t in tasks})
            d = max(max_diff(our_lls[t], theirs_lls[m][t]) for t in tasks)
            flips = sum(ek.argmax(a) != ek.argmax(b) for t in tasks
                        for a, b in zip(our_lls[t], theirs_lls[m][t]))
            same = compare(f"lm-eval[{m}]", ours, theirs[m], tasks)
            h, o = secs[m], secs["ours"]
            print(f"lm-eval 0.4.13 [{m} tokenizer]: {n / h[0]:.1f} examples/s; eval_kobest is {h[0] / o[0]:.2f}x "
                  f"faster in wall time, {h[1] / o[1]:.2f}x in CPU time; max |log-likelihood diff| {d:.2e}; "
                  f"predictions that differ {flips}/{n}; every metric agrees to 4 decimals: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

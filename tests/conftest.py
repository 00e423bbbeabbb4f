"""Shared test helpers: small hermetic corpora and throwaway SentencePiece tokenizers.

Everything here is built inside pytest's temp folders from text that ships with the repo
(the KoBEST-train corpus in assets/, Python's own pydoc text), so the suite runs offline on
a fresh clone. The real Mistral base tokenizer is optional: scripts/fetch_base_tokenizer.sh
(run by scripts/test.sh) puts it in .cache/, and tests that need it skip with a reason
when it is missing.
"""
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project is a flat folder of scripts, not a package

SHARED_KOBEST = ROOT.parent / "shared" / "kobest"
BASE_TOKENIZER = ROOT / ".cache" / "base_tokenizer" / "tokenizer.model"
needs_base_tokenizer = pytest.mark.skipif(
    not BASE_TOKENIZER.exists(), reason="run scripts/fetch_base_tokenizer.sh to fetch the Mistral base tokenizer")
needs_shared_kobest = pytest.mark.skipif(
    not SHARED_KOBEST.exists(), reason="the full KoBEST sets are not in ../shared/kobest")


def korean_docs(n=None):
    """Documents of the embedded Korean corpus (KoBEST train-split text, CC BY-SA 4.0)."""
    out = []
    with gzip.open(ROOT / "assets" / "korean_corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if n is not None and len(out) >= n:
                break
    return out


def long_docs(n, min_chars=200):
    """The first n documents of the embedded corpus with at least min_chars characters."""
    return [d for d in korean_docs() if len(d) >= min_chars][:n]


def write_jsonl(path, texts, gz=False):
    """One {"text": ...} per line (gzipped with gz); returns the path."""
    op = gzip.open if gz else open
    with op(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return path


def read_clean(out):
    """The texts data.py clean kept, in order."""
    return [json.loads(line)["text"] for line in open(Path(out) / "clean.jsonl", encoding="utf-8")]


def clean_cfg(**kw):
    """data.CleanConfig without progress bars."""
    from data import CleanConfig
    kw.setdefault("progress", False)
    return CleanConfig(**kw)


def shingle_jaccard(a, b, n=5):
    """Jaccard similarity of the two texts' sets of character n-grams (MinHash's target)."""
    sa = {a[i:i + n] for i in range(len(a) - n + 1)}
    sb = {b[i:i + n] for i in range(len(b) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def edit_words(text, frac, rng):
    """Replace `frac` of the words by other words (a planted near-duplicate)."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, round(frac * len(words)))):
        words[i] = rng.choice(["바다", "하늘", "사과나무", "기차역", "도서관"])
    return " ".join(words)


def english_docs(n=None):
    """English documents: the help topics of Python's own documentation (in every Python)."""
    from pydoc_data.topics import topics
    docs = [" ".join(topics[k].split()) for k in sorted(topics)]
    return docs[:n] if n is not None else docs


def train_spm(prefix, texts, vocab_size, model_type="bpe", **kw):
    """Train a Llama-style SentencePiece model (unk=0, bos=1, eos=2, byte fallback,
    identity normalizer) on `texts`; returns the path of the .model file."""
    import sentencepiece as spm
    opts = dict(model_type=model_type, vocab_size=vocab_size, byte_fallback=True,
                normalization_rule_name="identity", split_digits=True, character_coverage=0.9995,
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
                max_sentence_length=1 << 16)
    opts.update(kw)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(prefix), **opts)
    return Path(f"{prefix}.model")


@pytest.fixture(scope="session")
def base_spm(tmp_path_factory):
    """A tiny 'English base' tokenizer: mostly English with a little Korean, like SOLAR's."""
    d = tmp_path_factory.mktemp("base_spm")
    texts = english_docs() + korean_docs(300)
    return train_spm(d / "tokenizer", texts, vocab_size=2000, character_coverage=0.99)


# ---------------------------------------------------------------- train.py: a tiny run to train

OLD_ROWS = 1000          # pretend rows < 1000 are the base model's, the rest are new pieces
RECIPE = {"seq_len": 64, "micro_batch": 4, "old_vocab_size": OLD_ROWS, "stages": [
    {"name": "embed", "train": ["embed", "head"], "steps": 8, "lr": 1e-2, "warmup": 2, "batch_tokens": 256,
     "freeze_old_rows": True},
    {"name": "odd", "train": ["odd_layers"], "steps": 8, "lr": 1e-2, "warmup": 2, "batch_tokens": 256},
    {"name": "even", "train": ["even_layers"], "steps": 8, "lr": 1e-2, "warmup": 2, "batch_tokens": 256,
     "schedule": "wsd"},
    {"name": "lora", "train": ["lora", "embed", "head"], "steps": 8, "lr": 1e-2, "warmup": 2, "batch_tokens": 256,
     "lora": {"r": 4, "alpha": 8}}]}


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a busy 2-core machine two spinning OpenMP threads are many times slower."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_shards(folder, ids, vocab_size, n_shards=2, dtype="uint16"):
    import numpy as np
    os.makedirs(folder, exist_ok=True)
    parts = np.array_split(np.asarray(ids, dtype=dtype), n_shards)
    shards = []
    for i, part in enumerate(parts):
        part.tofile(os.path.join(folder, f"train_{i}.bin"))
        shards.append({"file": f"train_{i}.bin", "num_tokens": len(part)})
    meta = {"dtype": dtype, "vocab_size": vocab_size, "eos_id": 2, "bos_id": 1,
            "num_tokens": int(sum(len(p) for p in parts)), "shards": shards}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f)
    return folder


def load_tokens(meta_dir, split="train"):
    """All token ids of a split of a data.py tokenize folder as one array (train.py memory-maps)."""
    import numpy as np
    meta = json.loads((Path(meta_dir) / "meta.json").read_text())
    parts = [np.fromfile(Path(meta_dir) / s["file"], dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
             for s in meta["shards" if split == "train" else "val_shards"]]
    return np.concatenate(parts) if parts else np.zeros(0, np.dtype(meta["dtype"]))


@pytest.fixture(scope="session")
def train_setup(tmp_path_factory, base_spm):
    """A tiny Llama (init range 0.1, so training visibly moves it) with the tokenizer beside it,
    Korean text tokenized with that tokenizer into two shards, and the four-stage RECIPE."""
    import sentencepiece as spm
    import torch

    from model import Llama, LlamaConfig
    d = tmp_path_factory.mktemp("train")
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    ids = []
    for doc in korean_docs(1500):
        ids += [1] + sp.encode(doc) + [2]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=2000, hidden_size=64, intermediate_size=160, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.1)
    Llama(cfg).save_pretrained(str(d / "init"))
    shutil.copy(base_spm, d / "init" / "tokenizer.model")
    write_shards(str(d / "data"), ids, 2000)
    with open(d / "recipe.json", "w") as f:
        json.dump(RECIPE, f)
    return d


def run(setup, out, *extra, recipe=None):
    """train.main on the tiny setup (eval every 4 steps, no periodic checkpoints); the log."""
    import train
    train.main(["--init-from", str(setup / "init"), "--data", str(setup / "data"), "--out", str(out),
                "--recipe", str(recipe or setup / "recipe.json"), "--eval-every", "4", "--eval-batches", "4",
                "--ckpt-every", "0", *map(str, extra)])
    return read_log(out)


# subprocesses get one torch thread each, as the in-process tests do
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# what a resumed run must log exactly as an uninterrupted one
KEYS = ("stage", "step", "tokens", "loss", "lr", "grad_norm", "eval_loss", "eval_loss_before_merge",
        "eval_loss_after_merge")


def rows(log):
    return [[r.get(k) for k in KEYS] for r in log]


def sigterm_after(cmd, out, lines, sig=None):
    """Start cmd, send SIGTERM (or sig) once out/log.jsonl has `lines` lines; (return code, its output)."""
    import signal
    import subprocess
    import time
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    log = os.path.join(out, "log.jsonl")
    while proc.poll() is None and not (os.path.exists(log) and open(log).read().count("\n") >= lines):
        time.sleep(0.02)
    proc.send_signal(sig or signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    return proc.returncode, text


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def state(ckpt):
    """The model state dict of a checkpoint folder."""
    import torch
    return torch.load(os.path.join(ckpt, "model.pt"), map_location="cpu", weights_only=True)

"""Shared test helpers: small hermetic corpora and throwaway SentencePiece tokenizers.

Everything here is built inside pytest's temp folders from text that ships with the repo
(the KoBEST-train corpus in assets/, Python's own pydoc text), so the suite runs offline on
a fresh clone. The real Mistral base tokenizer is optional: scripts/fetch_base_tokenizer.sh
(run by scripts/test.sh) puts it in .cache/, and tests that need it skip with a reason
when it is missing.
"""
import gzip
import json
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

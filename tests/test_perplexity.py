"""corpus/perplexity.py's n-gram LM against a slow, obviously correct one, and data.py's perplexity cut.

The numpy model (sorted keys, searchsorted, one pass per order) is checked number for number
against the same interpolated absolute-discounting model written with Python dicts:

    p_1(w)     = (c(w) + 1) / (N + V)                                  add-one unigram
    p_k(w | h) = max(c(h w) - D, 0) / c(h .) + D * types(h .) / c(h .) * p_{k-1}(w | h[1:])
                 (just p_{k-1} when the history h was never seen)

with order - 1 boundary symbols before every document, so that a document's perplexity never
depends on the document before it.

    python -m pytest -q tests/test_perplexity.py
"""
import math
import random
from collections import Counter

import numpy as np
import pytest
from conftest import clean_cfg as cfg
from conftest import korean_docs, long_docs, read_clean, write_jsonl

from corpus import perplexity
from corpus.textclean import normalize
from data import DataError, clean
from support.tokenizer_io import Tokenizer


def slow_perplexities(train, test, order, D=0.75):
    chars = sorted(set("".join(train)))
    ids = {c: i + 1 for i, c in enumerate(chars)}   # unknown characters are 0
    V = len(chars) + 2
    bound = V - 1                                    # the document boundary symbol

    def padded(doc):
        return [bound] * (order - 1) + [ids.get(c, 0) for c in doc]

    count = Counter()                                # n-gram (tuple) -> times seen as an event
    for doc in train:
        s = padded(doc)
        for t in range(order - 1, len(s)):           # every real token, with its full history
            for k in range(1, order + 1):
                count[tuple(s[t - k + 1:t + 1])] += 1
    total, types = Counter(), Counter()              # history -> c(h .), distinct next tokens
    for gram, c in count.items():
        if len(gram) > 1:
            total[gram[:-1]] += c
            types[gram[:-1]] += 1
    n_tokens = sum(c for g, c in count.items() if len(g) == 1)

    def prob(history, w):
        p = (count[(w,)] + 1) / (n_tokens + V)
        for k in range(2, order + 1):
            h = tuple(history[len(history) - (k - 1):])
            if total[h]:
                p = max(count[h + (w,)] - D, 0) / total[h] + D * types[h] / total[h] * p
        return p

    out = []
    for doc in test:
        s = padded(doc)
        nll = [-math.log(prob(s[t - order + 1:t], s[t])) for t in range(order - 1, len(s))]
        out.append(math.exp(sum(nll) / len(nll)) if nll else math.inf)
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_perplexities_equal_the_slow_dictionary_model(order):
    train = [normalize(t) for t in korean_docs(300)]
    rng = random.Random(order)
    test = [normalize(t) for t in korean_docs(330)[300:]]
    test += ["".join(rng.sample(t, len(t))) for t in test[:5]]     # shuffled: unseen n-grams
    test += ["漢字とかなABC", "가", ""]                              # unknown characters, one token, empty
    lm = perplexity.NgramLM(order).fit(train)
    got = lm.perplexities(test)
    want = slow_perplexities(train, test, order)
    assert got[-1] == math.inf and want[-1] == math.inf
    np.testing.assert_allclose(got[:-1], want[:-1], rtol=1e-9)
    assert len(set(np.round(got[:-1], 6))) > 20                    # the values differ: a real check


def test_a_documents_perplexity_does_not_depend_on_its_neighbours():
    lm = perplexity.NgramLM(3).fit([normalize(t) for t in korean_docs(500)])
    a, b, c = (normalize(t) for t in korean_docs(503)[500:])
    alone = lm.perplexities([b])[0]
    assert lm.perplexities([a, b, c])[1] == pytest.approx(alone, rel=1e-12)
    assert lm.perplexities([c, b])[1] == pytest.approx(alone, rel=1e-12)


def test_the_percentile_cut_is_taken_over_the_documents_that_survived_dedup(tmp_path):
    """30 distinct documents plus 12 exact copies of the least fluent one: the copies are
    dropped as duplicates before the cut, so the 75th percentile is that of the 30 alone
    (with the copies counted it would move up to the copies' own perplexity, dropping none)."""
    ref = [normalize(t) for t in korean_docs(1500)]
    write_jsonl(tmp_path / "ref.jsonl", ref)
    docs = [normalize(t) for t in korean_docs(1800)[1500:] if len(t) >= 60][:30]
    lm = perplexity.NgramLM(3).fit(ref)                              # the model clean() builds from --ppl-ref
    ppl = lm.perplexities(docs)
    worst = docs[int(np.argmax(ppl))]
    corpus = docs + [worst] * 12
    write_jsonl(tmp_path / "in.jsonl", corpus)
    rep = clean([tmp_path / "in.jsonl"], tmp_path / "out",
                cfg(ppl_ref=[str(tmp_path / "ref.jsonl")], ppl_percentile=75, near_dedup=False))
    cut = np.percentile(ppl.astype(np.float32), 75)
    assert rep["perplexity_cutoff"] == pytest.approx(float(cut), rel=1e-6)
    assert cut < np.percentile(lm.perplexities(corpus).astype(np.float32), 75)   # the copies would move it
    above = int((ppl.astype(np.float32) > cut).sum())
    assert above == 8          # the cut falls at sorted position 0.75 * 29 = 21.75: positions 22..29 are above
    assert rep["dropped"] == {"exact_dup": 12, "perplexity": above}
    kept = read_clean(tmp_path / "out")
    assert kept == [d for d, p in zip(docs, ppl.astype(np.float32)) if p <= cut]


@pytest.mark.parametrize("percentile, ppl_max, which", [(75, 0, "percentile"), (0, "median", "max"),
                                                        (75, "median", "max"), (25, "high", "percentile")])
def test_with_both_cuts_the_lower_one_applies_and_a_document_at_the_cut_stays(tmp_path, percentile, ppl_max, which):
    ref = [normalize(t) for t in korean_docs(1500)]
    write_jsonl(tmp_path / "ref.jsonl", ref)
    docs = [normalize(t) for t in korean_docs(1800)[1500:] if len(t) >= 60][:21]
    write_jsonl(tmp_path / "in.jsonl", docs)
    ppl = perplexity.NgramLM(3).fit(ref).perplexities(docs).astype(np.float32)
    # "median": exactly the 11th of 21 values (kept: the cut is `above`, not `at or above`)
    ppl_max = {0: 0.0, "median": float(np.median(ppl)), "high": float(ppl.max()) * 2}[ppl_max]
    rep = clean([tmp_path / "in.jsonl"], tmp_path / "out",
                cfg(ppl_ref=[str(tmp_path / "ref.jsonl")], ppl_percentile=percentile, ppl_max=ppl_max))
    cut = ppl_max if which == "max" else float(np.percentile(ppl, percentile))
    assert rep["perplexity_cutoff"] == pytest.approx(cut, rel=1e-6)
    kept = read_clean(tmp_path / "out")
    assert kept == [d for d, p in zip(docs, ppl) if p <= np.float32(cut)]
    assert len(kept) == {"percentile": 1 + math.floor(percentile / 100 * 20), "max": 11}[which]


# ---- the n-gram model as a distribution, over SentencePiece ids, and the two filters in clean()

def test_ngram_lm_is_a_distribution_and_prefers_real_text(tmp_path):
    ref = korean_docs(2000)
    lm = perplexity.NgramLM(order=3).fit(ref)
    # p(w | history) sums to one over the vocabulary, for a seen and an unseen history
    for hist in ("대한", "\x00\x01"):
        h = lm.encode_batch([hist])[0]
        lp = [lm.logprobs([np.r_[h, w]])[-1] for w in range(lm.V)]
        assert abs(np.exp(lp).sum() - 1) < 1e-6
    real = long_docs(50)[-20:]
    shuffled = ["".join(random.Random(i).sample(t, len(t))) for i, t in enumerate(real)]
    assert (lm.perplexities(real) < lm.perplexities(shuffled)).all()
    lm.save(tmp_path / "lm.npz")
    assert np.allclose(perplexity.NgramLM.load(tmp_path / "lm.npz").perplexities(real), lm.perplexities(real))


def test_ngram_lm_over_sentencepiece_ids(base_spm):
    lm = perplexity.NgramLM(order=3, tokenizer=Tokenizer(base_spm)).fit(korean_docs(1000))
    real = long_docs(10)
    shuffled = [" ".join(random.Random(0).sample(t.split(), len(t.split()))) for t in real]
    assert lm.perplexities(real).mean() < lm.perplexities(shuffled).mean()


def test_perplexity_filter_drops_incoherent_text(tmp_path):
    ref = tmp_path / "ref.jsonl"
    write_jsonl(ref, korean_docs(3000))
    good = long_docs(40)
    garbage = ["".join(random.Random(i).sample(t, len(t))) for i, t in enumerate(long_docs(60)[40:])]
    write_jsonl(tmp_path / "in.jsonl", good + garbage)
    rep = clean([tmp_path / "in.jsonl"], tmp_path / "o", cfg(ppl_ref=[str(ref)], ppl_percentile=66))
    kept = set(read_clean(tmp_path / "o"))
    assert kept <= {normalize(t) for t in good} and len(kept) >= 38  # every shuffled text is gone
    assert rep["dropped"] == {"perplexity": 60 - len(kept)} and rep["perplexity_cutoff"] > 0
    rep = clean([tmp_path / "in.jsonl"], tmp_path / "o2", cfg())
    assert "perplexity filter skipped: no --ppl-ref given" in rep["notes"]
    with pytest.raises(DataError, match="--ppl-ref"):
        clean([tmp_path / "in.jsonl"], tmp_path / "o3", cfg(ppl_percentile=90))


def test_model_perplexity_second_stage(base_spm, tmp_path):
    import shutil

    import torch

    from model import Llama, LlamaConfig
    torch.manual_seed(0)
    cfg_m = LlamaConfig(vocab_size=2000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        initializer_range=0.2)  # a wide init so documents get distinct scores
    model = Llama(cfg_m).eval()
    model.save_pretrained(tmp_path / "m")
    shutil.copy(base_spm, tmp_path / "m" / "tokenizer.model")
    docs = [normalize(d) for d in long_docs(20)]
    write_jsonl(tmp_path / "in.jsonl", docs)
    # the reference: each document alone, no padding, its first 64 tokens after BOS
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    want = []
    with torch.no_grad():
        for d in docs:
            ids = torch.tensor([[1] + sp.encode(d)[:64]])
            _, loss = model(ids[:, :-1], ids[:, 1:])
            want.append(float(torch.exp(loss)))
    got = list(perplexity.model_perplexities(docs, tmp_path / "m", max_tokens=64, batch=3))
    assert np.allclose(got, want, rtol=1e-4)  # batching with padding changes nothing
    rep = clean([tmp_path / "in.jsonl"], tmp_path / "o", cfg(ppl_model=str(tmp_path / "m"), ppl_model_tokens=64,
                                                           ppl_model_percentile=75, ppl_model_batch=3))
    cut = np.percentile(want, 75)
    assert rep["model_perplexity_cutoff"] == pytest.approx(cut, rel=1e-4)
    assert rep["dropped"] == {"model_perplexity": 5}
    assert read_clean(tmp_path / "o") == [d for d, w in zip(docs, want) if w <= cut]

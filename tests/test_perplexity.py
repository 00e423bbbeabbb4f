"""perplexity.py's n-gram LM against a slow, obviously correct one, and data.py's perplexity cut.

The numpy model (sorted keys, searchsorted, one pass per order) is checked number for number
against the same interpolated absolute-discounting model written with Python dicts:

    p_1(w)     = (c(w) + 1) / (N + V)                                  add-one unigram
    p_k(w | h) = max(c(h w) - D, 0) / c(h .) + D * types(h .) / c(h .) * p_{k-1}(w | h[1:])
                 (just p_{k-1} when the history h was never seen)

with order - 1 boundary symbols before every document, so that a document's perplexity never
depends on the document before it.

    python -m pytest -q tests/test_perplexity.py
"""
import json
import math
import random
from collections import Counter

import numpy as np
import pytest
from conftest import korean_docs

import perplexity
from data import CleanConfig, clean
from textclean import normalize


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
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in ref))
    docs = [normalize(t) for t in korean_docs(1800)[1500:] if len(t) >= 60][:30]
    lm = perplexity.NgramLM(3).fit(ref)                              # the model clean() builds from --ppl-ref
    ppl = lm.perplexities(docs)
    worst = docs[int(np.argmax(ppl))]
    corpus = docs + [worst] * 12
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in corpus))
    cfg = CleanConfig(ppl_ref=[str(tmp_path / "ref.jsonl")], ppl_percentile=75, near_dedup=False, progress=False)
    rep = clean([tmp_path / "in.jsonl"], tmp_path / "out", cfg)
    cut = np.percentile(ppl.astype(np.float32), 75)
    assert rep["perplexity_cutoff"] == pytest.approx(float(cut), rel=1e-6)
    assert cut < np.percentile(lm.perplexities(corpus).astype(np.float32), 75)   # the copies would move it
    above = int((ppl.astype(np.float32) > cut).sum())
    assert above == 8          # the cut falls at sorted position 0.75 * 29 = 21.75: positions 22..29 are above
    assert rep["dropped"] == {"exact_dup": 12, "perplexity": above}
    kept = [json.loads(line)["text"] for line in open(tmp_path / "out" / "clean.jsonl", encoding="utf-8")]
    assert kept == [d for d, p in zip(docs, ppl.astype(np.float32)) if p <= cut]


@pytest.mark.parametrize("percentile, ppl_max, which", [(75, 0, "percentile"), (0, "median", "max"),
                                                        (75, "median", "max"), (25, "high", "percentile")])
def test_with_both_cuts_the_lower_one_applies_and_a_document_at_the_cut_stays(tmp_path, percentile, ppl_max, which):
    ref = [normalize(t) for t in korean_docs(1500)]
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in ref))
    docs = [normalize(t) for t in korean_docs(1800)[1500:] if len(t) >= 60][:21]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs))
    ppl = perplexity.NgramLM(3).fit(ref).perplexities(docs).astype(np.float32)
    # "median": exactly the 11th of 21 values (kept: the cut is `above`, not `at or above`)
    ppl_max = {0: 0.0, "median": float(np.median(ppl)), "high": float(ppl.max()) * 2}[ppl_max]
    cfg = CleanConfig(ppl_ref=[str(tmp_path / "ref.jsonl")], ppl_percentile=percentile, ppl_max=ppl_max,
                      progress=False)
    rep = clean([tmp_path / "in.jsonl"], tmp_path / "out", cfg)
    cut = ppl_max if which == "max" else float(np.percentile(ppl, percentile))
    assert rep["perplexity_cutoff"] == pytest.approx(cut, rel=1e-6)
    kept = [json.loads(line)["text"] for line in open(tmp_path / "out" / "clean.jsonl", encoding="utf-8")]
    assert kept == [d for d, p in zip(docs, ppl) if p <= np.float32(cut)]
    assert len(kept) == {"percentile": 1 + math.floor(percentile / 100 * 20), "max": 11}[which]

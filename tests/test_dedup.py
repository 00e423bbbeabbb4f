"""corpus/dedup.py: MinHash signatures, LSH parameters, exact and near duplicates.

    python -m pytest -q tests/test_dedup.py
"""
import random

import numpy as np
from conftest import edit_words, long_docs, shingle_jaccard

from corpus import dedup
from corpus.textclean import normalize


def test_minhash_estimates_jaccard_with_binomial_error():
    mh = dedup.MinHasher(num_perm=128, ngram=5)
    rng = random.Random(0)
    docs = [normalize(d) for d in long_docs(300)]
    pairs = [(d, edit_words(d, f, rng)) for d, f in zip(docs, [0.02, 0.05, 0.1, 0.2, 0.4] * 40)]
    pairs += list(zip(docs[:100], docs[200:]))  # unrelated
    sigs = mh.signatures([x for p in pairs for x in p]).reshape(len(pairs), 2, -1)
    est = (sigs[:, 0] == sigs[:, 1]).mean(axis=1)
    true = np.array([shingle_jaccard(a, b) for a, b in pairs])
    # an ideal MinHash errs like a binomial proportion: sd sqrt(J(1-J)/128)
    z = (est - true)[true > 0.05] / np.sqrt(true * (1 - true) / 128)[true > 0.05]
    assert 0.7 < np.sqrt((z ** 2).mean()) < 1.3 and abs(z.mean()) < 0.3
    assert (est[true < 0.05] < 0.1).all()
    # batches give the same signatures as one text at a time, short texts included
    texts = docs[:5] + ["", "가", "가나다라", "가나다라마"]
    assert (mh.signatures(texts) == np.stack([mh.signatures([t])[0] for t in texts])).all()


def test_lsh_params_catch_pairs_at_the_threshold():
    for t in (0.5, 0.8, 0.9):
        b, r = dedup.lsh_params(t, 128)
        assert b * r <= 128
        assert 1 - (1 - t ** r) ** b >= 0.99  # a pair at the threshold becomes a candidate...
        if t >= 0.8:
            assert 1 - (1 - (t / 2) ** r) ** b < 0.1  # ...a pair at half of it rarely does


def test_near_duplicates_keep_the_first_of_each_cluster():
    keys = np.array([[1, 10], [2, 20], [1, 30], [3, 30], [4, 40], [2, 50]], np.uint64)
    sig = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 9], [1, 2, 3, 4], [0, 0, 0, 0], [5, 0, 0, 0]], np.uint32)
    # 2 shares band 0 with 0 and 3/4 of the signature -> dropped; 3 shares band 1 only with
    # the dropped 2 -> kept; 5 shares band 0 with 1 but only 1/4 of the signature -> kept
    assert dedup.near_duplicates(keys, np.ones(6, bool), sig, 0.75).tolist() == [-1, -1, 0, -1, -1, -1]
    assert dedup.near_duplicates(keys, np.ones(6, bool), sig, 0.8).tolist() == [-1] * 6
    alive = np.array([False, True, True, True, True, True])  # 0 already dropped (say, exact dup)
    assert dedup.near_duplicates(keys, alive, sig, 0.75).tolist() == [-1, -1, -1, 2, -1, -1]
    assert dedup.exact_duplicates(np.array([5, 7, 5, 5, 9], np.uint64)).tolist() == [-1, -1, 0, 0, -1]

"""Deduplication: MinHash signatures with LSH banding, and the exact/near duplicate
decisions data.py clean makes over per-document arrays, all in numpy.

    python bench/data_bench.py      # speed, recall and precision against datasketch

Nothing here holds text: signatures and band keys are computed per batch in the workers,
the decisions are sorts over arrays that data.py spills to disk.
"""
import numpy as np

from corpus.textclean import codepoints

# MinHash with LSH banding, in numpy. Shingles are character n-grams hashed by a rolling
# polynomial and mixed by splitmix64 (no Python hash(): it changes per process); the top 32
# bits are the shingle's value x. Permutation i is x -> a_i*x mod 2^32 with odd a_i, a
# bijection of 32-bit values; the signature keeps each permutation's minimum. Its Jaccard
# estimates have the binomial variance J(1-J)/num_perm (tested), as with 64-bit products
# or an extra "+ b_i", which were 2.7x slower. (No small-prime modulus: with 2^61-1 and
# 32-bit operands "mod" is a no-op and every permutation becomes monotone.)

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix64(x):  # splitmix64 finalizer: spreads the polynomial hash over all 64 bits
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def lsh_params(threshold, num_perm):
    """(bands, rows): the most rows per band (fewest chance candidates) for which a pair at
    exactly `threshold` still shares a band with probability >= 0.99. Candidates are then
    verified by their estimated Jaccard, so the cut at the threshold is sharp both ways
    (datasketch balances false positives against false negatives instead and, unverified,
    misses a third of pairs at Jaccard 0.85)."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1 - (1 - threshold ** r) ** b >= 0.99:
            return b, r
    return num_perm, 1


class MinHasher:
    def __init__(self, num_perm=128, ngram=5, bands=None, rows=None, threshold=0.8, seed=1):
        rng = np.random.default_rng(seed)
        self.ngram, self.num_perm = ngram, num_perm
        self.a = (rng.integers(0, 2**31, num_perm, dtype=np.uint64) * 2 + 1).astype(np.uint32)  # odd
        if bands is None or rows is None:
            bands, rows = lsh_params(threshold, num_perm)
        if bands * rows > num_perm:
            raise ValueError(f"--lsh-bands * rows = {bands}*{rows} exceeds --num-perm {num_perm}")
        self.bands, self.rows = bands, rows
        self.band_mult = rng.integers(0, 2**63, rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

    def shingles(self, texts):
        """32-bit hashes of the character n-grams of each text, concatenated, and their counts.
        A text shorter than n is one shingle."""
        lens = np.fromiter(map(len, texts), np.int64, count=len(texts))
        cp = codepoints("".join(texts)).astype(np.uint64)
        n = self.ngram
        h = cp[:max(len(cp) - n + 1, 0)].copy()
        for k in range(1, n):  # h[i] = polynomial hash of cp[i:i+n]
            h = h * np.uint64(0x100000001B3) + cp[k:len(cp) - n + 1 + k]
        ends = np.cumsum(lens)
        counts = np.maximum(lens - n + 1, 0)
        starts = ends - lens
        keep = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)]) if len(texts) else starts
        h = h[keep]
        short = np.flatnonzero(lens < n)
        if len(short):  # rare (texts of 1..n-1 characters): hash the whole text
            parts, pos = [], np.r_[0, np.cumsum(counts)]
            for i in range(len(texts)):
                if 0 < lens[i] < n:
                    x = 0
                    for c in cp[starts[i]:ends[i]].tolist():
                        x = (x * 0x100000001B3 + c) & 0xFFFFFFFFFFFFFFFF
                    parts.append(np.array([x], np.uint64))
                elif lens[i]:
                    parts.append(h[pos[i]:pos[i + 1]])
            h = np.concatenate(parts) if parts else h
            counts = np.maximum(counts, lens > 0)
        return (_mix64(h) >> np.uint64(32)).astype(np.uint32), counts

    def signatures(self, texts):
        """(len(texts), num_perm) uint32 MinHash signatures; an empty text gets all ones."""
        sh, counts = self.shingles(texts)
        sig = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, np.uint32)
        pos = np.r_[0, np.cumsum(counts)]
        i, n = 0, len(texts)
        while i < n:  # groups of texts with at most 8k shingles: a (num_perm, 8k) uint32 temp
            j = i + 1
            while j < n and pos[j + 1] - pos[i] <= 8192:
                j += 1
            if j == i + 1:  # one text, maybe a long one: running minimum over chunks
                for c in range(pos[i], pos[j], 8192):
                    v = np.multiply.outer(self.a, sh[c:min(c + 8192, pos[j])])
                    np.minimum(sig[i], v.min(axis=1), out=sig[i])
            else:
                ne = np.flatnonzero(counts[i:j]) + i
                if len(ne):
                    v = np.multiply.outer(self.a, sh[pos[i]:pos[j]])  # (num_perm, shingles)
                    sig[ne] = np.minimum.reduceat(v, pos[ne] - pos[i], axis=1).T
            i = j
        return sig

    def band_keys(self, sig):  # (..., num_perm) -> (..., bands) uint64: equal key <=> equal band
        rows = sig[..., :self.bands * self.rows].reshape(*sig.shape[:-1], self.bands, self.rows)
        return _mix64((rows.astype(np.uint64) * self.band_mult).sum(axis=-1, dtype=np.uint64))


# Decisions over per-document arrays (sorts; Python runs only for the few documents that
# share an LSH bucket).

def exact_duplicates(h):
    """h (n,) uint64 -> (n,) index of the first document with the same hash, -1 for firsts."""
    n = len(h)
    order = np.argsort(h, kind="stable")  # stable: the first of a run is the earliest document
    hs = h[order]
    start = np.r_[True, hs[1:] != hs[:-1]] if n else np.zeros(0, bool)
    first = order[np.maximum.accumulate(np.where(start, np.arange(n), 0))]
    dup_of = np.full(n, -1, np.int64)
    dup_of[order] = np.where(first == order, -1, first)
    return dup_of


def near_duplicates(keys, alive, sig, threshold):
    """keys (n, bands) LSH band keys, sig (n, num_perm) MinHash signatures, alive (n,) bool
    -> (n,) index of an earlier kept document that shares a band with it and whose estimated
    Jaccard is >= threshold, or -1. Documents are visited in order and only kept ones join the
    buckets, so every kept document stands for its cluster (as a streaming LSH would)."""
    n, bands = keys.shape
    idx = np.flatnonzero(alive)
    docs, groups, ngroups = [], [], 0
    for j in range(bands):  # sort one band's keys at a time: 16 bytes per document of RAM
        k = np.asarray(keys[idx, j])
        order = np.argsort(k, kind="stable")
        ks = k[order]
        same = ks[1:] == ks[:-1]
        member = np.r_[same, False] | np.r_[False, same]  # in a bucket of 2 or more
        start = member & np.r_[True, ~same]
        gid = np.cumsum(start) - 1
        docs.append(idx[order[member]])
        groups.append(ngroups + gid[member])
        ngroups += int(start.sum())
    dup_of = np.full(n, -1, np.int64)
    if not ngroups:
        return dup_of
    docs, groups = np.concatenate(docs), np.concatenate(groups)
    order = np.lexsort((groups, docs))
    docs, groups = docs[order], groups[order]
    kept = {}  # bucket -> its kept documents so far; only buckets with collisions appear
    cuts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
    for d, gs in zip(docs[cuts].tolist(), np.split(groups, cuts[1:])):
        cands = sorted({c for g in gs.tolist() for c in kept.get(g, ())})
        if cands:
            est = (np.asarray(sig[cands]) == np.asarray(sig[d])).mean(axis=1)
            if est.max() >= threshold:
                dup_of[d] = cands[int(np.argmax(est >= threshold))]
                continue
        for g in gs.tolist():
            kept.setdefault(g, []).append(d)
    return dup_of

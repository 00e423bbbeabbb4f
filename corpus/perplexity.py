"""Perplexity filters for data.py clean: an n-gram language model in numpy (over characters
or SentencePiece ids, trained on a reference text the user names) and, as an optional second
stage, the perplexity of a model.py Llama.

    python -c "from corpus import perplexity as p; print(p.NgramLM(3).fit(['가나다라'] * 3).perplexities(['가나다']))"
"""
import json
from pathlib import Path

import numpy as np

from corpus.readers import chunked
from corpus.textclean import codepoints
from support.tokenizer_io import Tokenizer


class NgramLM:
    """Interpolated absolute discounting over characters or a Tokenizer's ids. It pickles to the
    worker processes whole (a Tokenizer pickles as its bytes)."""
    def __init__(self, order=3, discount=0.75, tokenizer=None):
        self.order, self.discount, self.tokenizer = order, discount, tokenizer

    def encode_batch(self, texts):  # ids in [0, V-1) per text; V-1 is the document boundary
        if self.tokenizer is not None:
            return [np.asarray(x, dtype=np.int64) for x in self.tokenizer.encode(list(texts))]
        lens = np.fromiter(map(len, texts), np.int64, count=len(texts))
        cp = codepoints("".join(texts))
        ids = self.char_ids[np.minimum(cp, len(self.char_ids) - 1)].astype(np.int64)
        return np.split(ids, np.cumsum(lens)[:-1])

    def fit(self, texts):
        texts = list(texts)
        if not texts:
            raise ValueError("perplexity reference text is empty")
        if self.tokenizer is not None:
            self.V = self.tokenizer.vocab_size + 1
        else:  # characters of the reference get ids 1..K, anything else 0 (unknown)
            chars = np.unique(np.concatenate([codepoints(t) for t in texts]))
            self.char_ids = np.zeros(int(chars.max()) + 2, np.int32)
            self.char_ids[chars] = np.arange(1, len(chars) + 1)
            self.V = len(chars) + 2
        if float(self.V) ** self.order >= 2**63:
            raise ValueError(f"perplexity order {self.order} is too high for a vocabulary of {self.V}")
        seq, tgt = self._pad([d for i in range(0, len(texts), 1024) for d in self.encode_batch(texts[i:i + 1024])])
        self.unigram = np.bincount(seq[tgt], minlength=self.V).astype(np.float64)
        events = {k: np.unique(self._keys(seq, k)[tgt], return_counts=True) for k in range(1, self.order + 1)}

        def as_history(k):  # the k-grams that start a (k+1)-gram: (keys, total count, distinct next)
            grams, counts = events[k + 1]
            hist, start, types = np.unique(grams // self.V, return_index=True, return_counts=True)
            return hist, np.add.reduceat(counts, start), types

        # single-token histories, as dense arrays (a unigram model, order 1, has none)
        h, tot, typ = as_history(1) if self.order > 1 else (np.zeros(0, np.int64),) * 3
        self.hist1 = (np.bincount(h, tot, self.V), np.bincount(h, typ, self.V).astype(np.float64))
        # table k: every k-gram seen as an event or as a history, with its count as an event
        # and its (total, types) as a history: a k-gram's history stats are then found by the
        # same lookup that found the (k-1)-gram event one position earlier
        self.tables = []
        for k in range(2, self.order + 1):
            grams, counts = events[k]
            h, tot, typ = as_history(k) if k < self.order else (np.zeros(0, np.int64),) * 3
            keys = np.union1d(grams, h)
            cols = np.zeros((3, len(keys)))
            cols[0, np.searchsorted(keys, grams)] = counts
            cols[1, np.searchsorted(keys, h)] = tot
            cols[2, np.searchsorted(keys, h)] = typ
            self.tables.append((keys, *cols))
        return self

    def _pad(self, docs):  # one stream, order-1 boundary ids before each document
        pad = np.full(self.order - 1, self.V - 1, np.int64)
        seq = np.concatenate([x for d in docs for x in (pad, d)]) if docs else np.zeros(0, np.int64)
        tgt = np.concatenate([x for d in docs for x in (np.zeros(len(pad), bool), np.ones(len(d), bool))])
        return seq, tgt

    def _keys(self, seq, k):  # key[t] = id(seq[t-k+1..t]) in base V (0 where t < k-1)
        key = np.zeros(len(seq), np.int64)
        for j in range(k):
            key[k - 1:] = key[k - 1:] * self.V + seq[j:len(seq) - k + 1 + j]
        return key

    def logprobs(self, docs):  # natural-log probability of every token of every document
        seq, tgt = self._pad(docs)
        t = np.flatnonzero(tgt)  # target positions; t-1 ends each target's history
        p = (self.unigram[seq[t]] + 1) / (self.unigram.sum() + self.V)
        tot, typ = self.hist1[0][seq[t - 1]], self.hist1[1][seq[t - 1]]
        D = self.discount
        for k, (keys, count, ktot, ktyp) in enumerate(self.tables, start=2):
            last = k == self.order  # the top order is only needed at the targets
            pos = t if last else np.arange(len(seq))
            key = self._keys(seq, k)[pos]
            order = np.argsort(key)  # sorted queries make searchsorted 3x faster (cache-friendly;
            ks = key[order]  # a numpy hash table was slower still)
            i = np.minimum(np.searchsorted(keys, ks), len(keys) - 1)
            idx = np.empty(len(pos), np.int64)
            idx[order] = np.where(keys[i] == ks, i, -1)
            at = idx if last else idx[t]
            c = np.where(at >= 0, count[at], 0)
            seen = tot > 0  # interpolated absolute discounting; unseen history: back off fully
            p = np.where(seen, np.maximum(c - D, 0) / np.maximum(tot, 1) + D * typ / np.maximum(tot, 1) * p, p)
            if not last:  # this k-gram, one position earlier, is the history of the next order
                prev = idx[t - 1]
                tot, typ = np.where(prev >= 0, ktot[prev], 0), np.where(prev >= 0, ktyp[prev], 0)
        return np.log(p)

    def perplexities(self, texts):
        """exp(mean negative log-likelihood per token) of each text; inf for an empty one."""
        docs = self.encode_batch(texts) if len(texts) else []
        lens = np.fromiter(map(len, docs), np.int64, count=len(docs))
        out = np.full(len(docs), np.inf)
        if lens.sum():
            lp = self.logprobs(docs)
            ne = lens > 0
            out[ne] = np.exp(-np.add.reduceat(lp, (np.cumsum(lens) - lens)[ne]) / lens[ne])
        return out

    def save(self, path):
        np.savez(path, meta=json.dumps({"order": self.order, "discount": self.discount, "V": self.V}),
                 sp_model=np.frombuffer(self.tokenizer.model_bytes if self.tokenizer else b"", np.uint8),
                 unigram=self.unigram, char_ids=getattr(self, "char_ids", np.zeros(0, np.int32)),
                 hist1_tot=self.hist1[0], hist1_typ=self.hist1[1],
                 **{f"t{k}_{i}": a for k, t in enumerate(self.tables) for i, a in enumerate(t)})

    @classmethod
    def load(cls, path):
        z = np.load(path)
        m = json.loads(str(z["meta"]))
        lm = cls(m["order"], m["discount"], Tokenizer(bytes(z["sp_model"])) if len(z["sp_model"]) else None)
        lm.V, lm.unigram, lm.char_ids = m["V"], z["unigram"], z["char_ids"]
        lm.hist1 = (z["hist1_tot"], z["hist1_typ"])
        lm.tables = [tuple(z[f"t{k}_{i}"] for i in range(4)) for k in range(m["order"] - 1)]
        return lm


def model_perplexities(texts, model_dir, tokenizer="", max_tokens=512, batch=8, device="cpu"):
    """Yield the perplexity of each text under a model.py Llama: exp of the mean next-token
    loss over its first `max_tokens` tokens after BOS (inf for an empty text). torch and
    model.py are imported only here: the rest of data.py needs neither."""
    import torch
    import torch.nn.functional as F

    from model import Llama
    path = Path(tokenizer or Path(model_dir) / "tokenizer.model")
    if not path.is_file():
        raise ValueError(f"{path}: no tokenizer for --ppl-model (give --ppl-model-tokenizer)")
    tok = Tokenizer(path)         # a corrupt tokenizer.model is one line naming it
    model = Llama.from_pretrained(model_dir, device=device).eval()
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{path}: {tok.vocab_size} pieces, but {model_dir} has {model.config.vocab_size} rows")
    bos = [tok.bos_id] if tok.bos_id is not None else []
    for chunk in chunked(texts, batch):
        ids = [bos + x[:max_tokens] for x in tok.encode(chunk)]
        x = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
        y = torch.full_like(x, -100)  # padding and the last position predict nothing
        for r, s in enumerate(ids):
            x[r, :len(s)] = torch.tensor(s)
            y[r, :len(s) - 1] = torch.tensor(s[1:])
        with torch.no_grad():
            logits, _ = model(x.to(device))  # (B, T, V)
            nll = F.cross_entropy(logits.float().transpose(1, 2), y.to(device), reduction="none")  # (B, T)
        n = (y != -100).sum(1)
        ppl = torch.exp(nll.sum(1).cpu() / n.clamp(min=1))
        yield from torch.where(n > 0, ppl, torch.inf).tolist()

"""shards.py: which documents are held out, how shards fill, and what a training window is,
each checked against the rule written out in the test.

    python -m pytest -q tests/test_shards.py
"""
import hashlib
import json

import numpy as np
import pytest
from conftest import korean_docs, write_shards

from shards import TokenShards, tokenize


def coin(seed, i):
    """The held-out rule: document i is held out when blake2b("seed:i") / 2^64 < fraction."""
    h = hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_val_fraction_holds_out_exactly_the_documents_whose_coin_is_below_it(base_spm, tmp_path, fraction):
    docs = korean_docs(200)
    write_jsonl(tmp_path / "c.jsonl", docs)
    meta = tokenize([tmp_path / "c.jsonl"], base_spm, tmp_path / "tok", val_fraction=fraction, seed=3,
                    val_text=True, progress=False)
    want = [d for i, d in enumerate(docs) if coin(3, i) < fraction]
    got = [json.loads(line)["text"] for line in open(tmp_path / "tok" / "val.jsonl", encoding="utf-8")]
    assert got == want
    assert abs(len(want) - fraction * 200) < 4 * (200 * fraction * (1 - fraction)) ** 0.5   # binomial
    assert meta["val_num_docs"] == len(want) and meta["num_docs"] == 200 - len(want)
    # characters are code points of the text as written
    assert meta["val_num_chars"] == sum(map(len, want))
    assert meta["num_chars"] == sum(map(len, docs)) - meta["val_num_chars"]
    # bits per character during training use the held-out split's tokens per character
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    val_tokens = sum(len(sp.encode(d)) + 1 for d in want)           # + EOS
    data = TokenShards(str(tmp_path / "tok"), 16, 2000)
    assert data.tokens_per_char() == pytest.approx(val_tokens / sum(map(len, want)), rel=1e-12)


def test_a_shard_is_closed_once_it_holds_shard_tokens(base_spm, tmp_path):
    """Whole documents: a shard takes documents until it has shard_tokens or more."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    docs = korean_docs(40)
    write_jsonl(tmp_path / "c.jsonl", docs)
    lengths = [len(sp.encode(d)) + 1 for d in docs]                  # + EOS
    limit = lengths[0] + lengths[1]                                  # the first shard ends exactly at it
    meta = tokenize([tmp_path / "c.jsonl"], base_spm, tmp_path / "tok", shard_tokens=limit, progress=False)
    want, n = [], 0
    for k in lengths:
        if want and n < limit:
            want[-1] += k
        else:
            want.append(k)
        n = want[-1]
    assert [s["num_tokens"] for s in meta["shards"]] == want and len(want) > 3 and want[0] == limit


def test_training_windows_are_t_plus_one_tokens_every_t_inside_one_shard(tmp_path):
    """Shards of 100 and 73 tokens, T = 8: (100 - 1) // 8 = 12 and (73 - 1) // 8 = 9 windows;
    window k of a shard is tokens [8k, 8k + 9); one epoch visits each window once."""
    ids = np.arange(173) % 500
    write_shards(str(tmp_path / "d"), ids, 500, n_shards=1)
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    (tmp_path / "d" / "train_0.bin").write_bytes(np.arange(100, dtype="<u2").tobytes())
    (tmp_path / "d" / "train_1.bin").write_bytes(np.arange(1000, 1073, dtype="<u2").tobytes())
    meta.update(vocab_size=2000, shards=[{"file": "train_0.bin", "num_tokens": 100},
                                         {"file": "train_1.bin", "num_tokens": 73}])
    (tmp_path / "d" / "meta.json").write_text(json.dumps(meta))
    data = TokenShards(str(tmp_path / "d"), 8, 2000, val_tokens=0, seed=5)
    assert data.N == 12 + 9
    windows = {tuple(data.train_window(g).tolist()) for g in range(data.N)}
    want = {tuple(range(8 * k, 8 * k + 9)) for k in range(12)} | {tuple(range(1000 + 8 * k, 1000 + 8 * k + 9))
                                                                   for k in range(9)}
    assert windows == want
    x, y = data.batch(3, 4)                                          # (B, T): y is x shifted by one
    assert x.shape == y.shape == (4, 8) and (x[:, 1:] == y[:, :-1]).all()
    assert [tuple(data.train_window(3 + b).tolist()) for b in range(4)] == \
        [tuple(x[b].tolist()) + (int(y[b, -1]),) for b in range(4)]


def test_the_sample_order_is_a_fresh_seeded_shuffle_every_epoch(tmp_path):
    write_shards(str(tmp_path / "d"), np.arange(2000) % 1500, 1500, n_shards=2)
    n = TokenShards(str(tmp_path / "d"), 8, 2000, val_tokens=0).N

    def order(seed, epoch):         # the first token of each window, in the run's order
        data = TokenShards(str(tmp_path / "d"), 8, 2000, val_tokens=0, seed=seed)
        return [int(data.train_window(epoch * n + g)[0]) for g in range(n)]
    first = order(1, 0)
    assert sorted(first) == sorted(set(first)) and len(first) == n                  # every window once
    assert first != sorted(first)                                                    # shuffled, not in order
    assert order(1, 0) == first and order(2, 0) != first                            # seeded
    assert sorted(order(1, 1)) == sorted(first) and order(1, 1) != first             # a new order each epoch

@pytest.mark.parametrize("top, ok", [(1999, True), (2000, False)])
def test_a_token_id_must_be_below_the_models_vocabulary(tmp_path, top, ok):
    ids = np.arange(300) % 1500
    ids[123] = top
    write_shards(str(tmp_path / "d"), ids, 1500, n_shards=1)
    if ok:
        assert TokenShards(str(tmp_path / "d"), 8, 2000).N > 0
    else:
        with pytest.raises(SystemExit, match="token 123 has id 2000 >= the model's vocab_size 2000"):
            TokenShards(str(tmp_path / "d"), 8, 2000)


def test_without_a_val_split_the_last_tenth_of_the_last_shard_is_held_out(tmp_path):
    write_shards(str(tmp_path / "d"), np.arange(600) % 1500, 1500, n_shards=2)     # two shards of 300
    data = TokenShards(str(tmp_path / "d"), 8, 2000)
    assert [len(a) for a in data.train] == [300, 270]                 # 300 // 10 = 30 tokens held out
    assert len(data.val[0]) == 30 and int(data.val[0][0]) == 570
    assert data.val_windows == [(data.val[0], 0), (data.val[0], 8), (data.val[0], 16)]   # (30 - 1) // 8
    assert data.N == (300 - 1) // 8 + (270 - 1) // 8
    # a tail no longer than one window is not held out
    assert [len(a) for a in TokenShards(str(tmp_path / "d"), 30, 2000).train] == [300, 300]
    assert len(TokenShards(str(tmp_path / "d"), 8, 2000, val_tokens=9).val[0]) == 9


def test_add_bos_puts_bos_before_every_document_and_eos_after(base_spm, tmp_path):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    docs = korean_docs(5)
    write_jsonl(tmp_path / "c.jsonl", docs)
    for add_bos in (False, True):
        out = tmp_path / f"tok{add_bos}"
        meta = tokenize([tmp_path / "c.jsonl"], base_spm, out, add_bos=add_bos, progress=False)
        ids = np.fromfile(out / "train_0000.bin", dtype="<u2").tolist()
        assert ids == [t for d in docs for t in ([1] if add_bos else []) + sp.encode(d) + [2]]
        assert meta["add_bos"] is add_bos and meta["bos_id"] == 1 and meta["eos_id"] == 2

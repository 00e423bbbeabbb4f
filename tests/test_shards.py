"""corpus/shards.py: which documents are held out, how shards fill, and what a training window is,
each checked against the rule written out in the test.

    python -m pytest -q tests/test_shards.py
"""
import hashlib
import json

import numpy as np
import pytest
from conftest import korean_docs, load_tokens, long_docs, write_jsonl, write_shards

import data
from corpus import shards
from corpus.shards import TokenShards, tokenize
from data import DataError


def coin(seed, i):
    """The held-out rule: document i is held out when blake2b("seed:i") / 2^64 < fraction."""
    h = hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


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
        with pytest.raises(DataError, match="token 123 has id 2000 >= the model's vocab_size 2000"):
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


# ---- tokenize: round trips, uint32 ids, ids outside the vocabulary

def test_token_shards_round_trip(base_spm, tmp_path):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(base_spm))
    docs = long_docs(30)
    write_jsonl(tmp_path / "c.jsonl", docs)
    meta = tokenize([tmp_path / "c.jsonl"], base_spm, tmp_path / "tok", shard_tokens=2000, val_docs=3,
                    progress=False)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 2000 and meta["eos_id"] == 2
    assert len(meta["shards"]) > 1 and [s["file"] for s in meta["val_shards"]] == ["val_0000.bin"]
    assert meta["num_docs"] == 27 and meta["val_num_docs"] == 3
    train, val = load_tokens(tmp_path / "tok"), load_tokens(tmp_path / "tok", "val")
    assert meta["num_tokens"] == len(train) == sum(s["num_tokens"] for s in meta["shards"])
    assert (tmp_path / "tok" / "train_0000.bin").stat().st_size == 2 * meta["shards"][0]["num_tokens"]
    # documents separated by EOS, every one of them in exactly one split, in order
    docs_ids = [sp.encode(d) + [2] for d in docs]
    split = lambda ids: np.split(ids, np.flatnonzero(ids == 2)[:-1] + 1)
    got = [x.tolist() for x in split(train)] + [x.tolist() for x in split(val)]
    assert sorted(got) == sorted(docs_ids)
    assert [x.tolist() for x in split(train)] == [d for d in docs_ids if d in [x.tolist() for x in split(train)]]
    # two workers write the same bytes
    tokenize([tmp_path / "c.jsonl"], base_spm.parent, tmp_path / "tok2", shard_tokens=2000, val_docs=3,
             workers=2, progress=False)
    for s in meta["shards"] + meta["val_shards"]:
        assert (tmp_path / "tok" / s["file"]).read_bytes() == (tmp_path / "tok2" / s["file"]).read_bytes()


def test_uint32_shards_above_65536_pieces(base_spm, tmp_path):
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    m.ParseFromString(base_spm.read_bytes())
    for i in range(66_000):
        p = m.pieces.add()
        p.piece, p.type = f"<x{i}>", pb.ModelProto.SentencePiece.USER_DEFINED
    big = tmp_path / "big.model"
    big.write_bytes(m.SerializeToString())
    write_jsonl(tmp_path / "c.jsonl", ["가나 <x65999> 다라", "마바 <x10> 사"])
    meta = tokenize([tmp_path / "c.jsonl"], big, tmp_path / "tok", progress=False)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 68_000
    ids = load_tokens(tmp_path / "tok")
    assert ids.dtype == np.uint32 and 2000 + 65_999 in ids.tolist()
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(big))
    assert ids.tolist() == sp.encode("가나 <x65999> 다라") + [2] + sp.encode("마바 <x10> 사") + [2]
    assert data.token_dtype(65_536) == np.uint16 and data.token_dtype(65_537) == np.uint32


def test_tokenize_checks_ids_against_the_vocabulary(base_spm, tmp_path, monkeypatch):
    write_jsonl(tmp_path / "c.jsonl", ["가나다"] * 3)
    calls = iter([(np.array([5, 7]), np.array([2])), (np.array([5, 2000]), np.array([2]))])
    monkeypatch.setattr(shards, "_tok_batch", lambda texts: next(calls))  # the 2nd batch is bad
    with pytest.raises(DataError, match="outside the vocabulary of 2000"):
        tokenize([tmp_path / "c.jsonl"], base_spm, tmp_path / "tok", progress=False, batch_docs=1)
    assert not (tmp_path / "tok").exists()  # no meta.json, no half-written shard...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]  # ...nor a staged folder beside it

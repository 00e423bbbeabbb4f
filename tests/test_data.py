"""data.py: normalization, filters, dedup, perplexity, sampling, reports, token shards.

    python -m pytest -q tests/test_data.py

Every corpus is built inside the test from the embedded KoBEST-train text (conftest).
"""
import gzip
import json
import random
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from conftest import ROOT, korean_docs

import data
import dedup
import perplexity
import shards
import textclean
from data import CleanConfig, DataError, clean, tokenize
from textclean import normalize


def long_docs(n, min_chars=200):
    return [d for d in korean_docs() if len(d) >= min_chars][:n]


def write_jsonl(path, texts, gz=False):
    op = gzip.open if gz else open
    with op(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return path


def read_clean(out):
    return [json.loads(line)["text"] for line in open(out / "clean.jsonl", encoding="utf-8")]


def cfg(**kw):
    kw.setdefault("progress", False)
    return CleanConfig(**kw)


def shingle_jaccard(a, b, n=5):
    sa = {a[i:i + n] for i in range(len(a) - n + 1)}
    sb = {b[i:i + n] for i in range(len(b) - n + 1)}
    return len(sa & sb) / len(sa | sb)


def edit_words(text, frac, rng):
    """Replace `frac` of the words by other words (a planted near-duplicate)."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, round(frac * len(words)))):
        words[i] = rng.choice(["바다", "하늘", "사과나무", "기차역", "도서관"])
    return " ".join(words)


# ---------------------------------------------------------------------------- normalize

def test_nfd_hangul_becomes_nfc_syllables():
    nfd = unicodedata.normalize("NFD", "한국어 문장입니다")
    assert len(nfd) > len("한국어 문장입니다")  # really decomposed into conjoining jamo
    assert normalize(nfd) == "한국어 문장입니다"


def test_compatibility_jamo_and_laughter_survive():
    assert normalize("ㅋㅋㅋ 진짜 웃기다 ㅎㅎ") == "ㅋㅋㅋ 진짜 웃기다 ㅎㅎ"
    assert normalize("ㅋㅏ") == "ㅋㅏ"  # NFKC would have made this "카"
    assert normalize("\uffa1\uffc2") == "ㄱㅏ"  # halfwidth jamo -> compatibility jamo


def test_fullwidth_folds_to_ascii():
    assert normalize("ＡＢＣ　１２３！ｋｏｒｅａ") == "ABC 123!korea"


def test_control_and_zero_width_characters_vanish():
    text = "\ufeff안\u200b녕\u200d하\u00ad세요\x07 \u3164세계\x00\u2060!"
    assert normalize(text) == "안녕하세요 세계!"


def test_every_control_and_format_character_vanishes():
    gone = [chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) in ("Cc", "Cf")
            and chr(c) not in "\t\n\r\x0b\x0c\x85"]  # those six are line breaks or tab
    assert len(gone) > 90
    assert all(normalize("가" + ch + "나") == "가나" for ch in gone)


def test_newlines_unified_spaces_collapsed_repeats_capped():
    assert normalize("첫 줄\r\n둘째   줄 \r셋째\u2028넷째\n\n\n\n다섯") == "첫 줄\n둘째 줄\n셋째\n넷째\n\n다섯"
    assert normalize("ㅋ" * 30 + "!!!!!!!!", max_repeat=5) == "ㅋ" * 5 + "!" * 5
    assert normalize("ㅋ" * 30, max_repeat=0) == "ㅋ" * 30


def test_normalize_is_idempotent():
    tricky = ["\u1100\u200b\u1161", "가" * 5 + unicodedata.normalize("NFD", "가"), "ᄀ" * 7 + "ᅡ",
              " \u3000 ａ \r\n\r\n\r\n ｂ ", "ㅋ\u200bㅋ\u200bㅋ\u200bㅋ\u200bㅋ\u200bㅋ\u200bㅋ"]
    docs = tricky + [unicodedata.normalize("NFD", d) for d in korean_docs(300)]
    for d in docs:
        once = normalize(d)
        assert normalize(once) == once, repr(d)


# ---------------------------------------------------------------------------- filters

def test_rule_filters_name_the_rule_broken():
    c = cfg()
    good = long_docs(1)[0]
    assert textclean.filter_reason(good, c) is None
    assert textclean.filter_reason("짧은 글", c) == "too_short"
    assert textclean.filter_reason("This is an English paragraph about something else entirely.", c) == "low_hangul"
    assert textclean.filter_reason("가격: 1,000원 / 2,000원 / 3,000원 / 4,000원 ###", c) == "symbols"
    assert textclean.filter_reason("\n".join(["같은 줄이 계속 반복됩니다 여기"] * 5 + ["다른 줄"]), c) == "dup_lines"
    spam = " ".join(["지금 바로 클릭하세요"] * 40)
    assert textclean.filter_reason(spam, c) == "top_2gram"
    # short texts are spared the n-gram checks (a word pair repeats by chance)...
    assert textclean.filter_reason("여자가 타지에 취직을 했다. 여자가 타지에 방을 구했다.", c) is None
    # ...and each threshold is a setting
    assert textclean.filter_reason(spam, cfg(top_ngram="", dup_ngram="")) is None


def test_repeated_ngram_filter_catches_a_repeated_passage():
    base = long_docs(1)[0].split()
    text = " ".join(base[:60] + base[:30])  # half a passage repeated
    assert textclean.filter_reason(text, cfg(top_ngram="")) == "dup_5gram"
    assert textclean.filter_reason(" ".join(base[:60]), cfg(top_ngram="")) is None


def gopher_reference(text, top, dup):
    """Gopher's repetition rules written plainly (ties for the most frequent n-gram: the longest)."""
    from collections import Counter
    words = text.split()
    total = sum(map(len, words))
    for n in range(2, 11):
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        c = Counter(grams)
        if len(grams) < 2 or max(c.values()) == 1:
            return None
        k = max(c.values())
        if n in top and k * max(sum(map(len, g)) for g in c if c[g] == k) / total > top[n]:
            return f"top_{n}gram"
        covered = {j for i, g in enumerate(grams) if c[g] > 1 for j in range(i, i + n)}
        if n in dup and sum(len(words[j]) for j in covered) / total > dup[n]:
            return f"dup_{n}gram"
    return None


def test_repetition_rules_match_a_plain_python_gopher():
    rng = random.Random(0)
    docs = [normalize(d) for d in long_docs(150, min_chars=100)]
    docs += [" ".join(w + w[:rng.randint(1, len(w))]) for w in (d.split() for d in docs[:150])]
    for c in (cfg(rep_min_words=2), cfg(rep_min_words=2, top_ngram="")):
        got = [textclean.repetition_reason(d.replace("\n", " "), c) for d in docs]
        want = [gopher_reference(d, c.top_ngrams, c.dup_ngrams) for d in docs]
        assert got == want
        assert len(set(want)) >= 3  # the rules really fire, in more than one way


# ---------------------------------------------------------------------------- MinHash

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
    assert (mh.signatures(texts) == np.stack([mh.signature(t) for t in texts])).all()


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


# ---------------------------------------------------------------------------- clean()

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """300 distinct documents plus an exact duplicate, 10 near-duplicates and 5 distinct
    documents that share a boilerplate line."""
    rng = random.Random(1)
    docs = [d for d in long_docs(330) if textclean.filter_reason(normalize(d), cfg()) is None][:320]
    base, extra = docs[:300], docs[300:]
    near = [edit_words(base[i], 0.03, rng) for i in range(10, 20)]
    boiler = [d + "\n저작권자 © 한국일보 무단 전재 및 재배포 금지" for d in extra[:5]]
    corpus = base + [base[5]] + near + boiler
    rng.shuffle(corpus)
    d = tmp_path_factory.mktemp("planted")
    write_jsonl(d / "corpus.jsonl", corpus)
    return d / "corpus.jsonl", base, near, boiler


def test_clean_removes_planted_duplicates_and_keeps_distinct_documents(planted, tmp_path):
    path, base, near, boiler = planted
    assert all(shingle_jaccard(normalize(b), normalize(n)) >= 0.8
               for b, n in zip(base[10:20], near))  # the plants really are near-duplicates
    rep = clean([path], tmp_path, cfg(keep_dropped=True))
    out = read_clean(tmp_path)
    assert rep["dropped"].get("exact_dup") == 1
    assert rep["dropped"].get("near_dup") == 10
    assert len(out) == len(set(out)) == 305
    # the distinct documents all stay (a shared boilerplate line makes no duplicate)...
    assert {normalize(b) for b in base[:10] + base[20:] + boiler} <= set(out)
    # ...and of each planted pair the first one in the corpus (either one: it was shuffled)
    assert all((normalize(b) in out) != (normalize(n) in out) for b, n in zip(base[10:20], near))
    dropped = [json.loads(line) for line in open(tmp_path / "dropped.jsonl", encoding="utf-8")]
    assert sorted(r["reason"] for r in dropped) == ["exact_dup"] + ["near_dup"] * 10
    assert all(r["duplicate_of"].startswith(str(path)) for r in dropped)


def test_report_reconciles(planted, tmp_path):
    path = planted[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "\xff\xfe broken bytes"}\nnot json\n{"other": 1}\n{"text": "short"}\n')
    rep = clean([path, bad], tmp_path / "out", cfg(target_docs=200, keep_dropped=True))
    assert rep["docs_in"] == 316 + 4
    assert rep["docs_in"] == rep["docs_out"] + sum(rep["dropped"].values())
    assert rep["docs_out"] == 200 == len(read_clean(tmp_path / "out"))
    flow = rep["docs_in"]
    for step in rep["steps"].values():
        assert step["docs_in"] == flow
        flow = step["docs_out"]
        assert step["docs_in"] - step["docs_out"] == sum(step["dropped"].values())
    assert flow == rep["docs_out"]
    assert {"bad_json", "no_text", "too_short", "exact_dup", "near_dup", "sampled_out"} <= set(rep["dropped"])
    n_dropped = sum(1 for _ in open(tmp_path / "out" / "dropped.jsonl"))
    assert n_dropped == sum(rep["dropped"].values())
    assert rep["bytes_out"] == sum(len(t.encode()) for t in read_clean(tmp_path / "out"))
    assert rep["bytes_in"] > rep["bytes_out"] > 0


def test_same_seed_same_bytes_and_workers_do_not_change_output(planted, tmp_path):
    path = planted[0]
    runs = {}
    for name, kw in {"a": dict(seed=3), "b": dict(seed=3, workers=2, batch_docs=16), "c": dict(seed=4)}.items():
        clean([path], tmp_path / name, cfg(target_chars=40_000, **kw))
        runs[name] = (tmp_path / name / "clean.jsonl").read_bytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]  # the seed matters
    kept = read_clean(tmp_path / "a")
    assert sum(map(len, kept)) <= 40_000 < sum(map(len, kept)) + 2000


def test_sampling_to_a_size_keeps_that_many_documents_or_at_most_that_many_bytes(planted, tmp_path):
    clean([planted[0]], tmp_path / "d", cfg(target_docs=17, seed=1))
    assert len(read_clean(tmp_path / "d")) == 17
    rep = clean([planted[0]], tmp_path / "b", cfg(target_bytes=30_000, seed=1))
    sizes = [len(t.encode("utf-8")) for t in read_clean(tmp_path / "b")]
    assert sum(sizes) <= 30_000 < sum(sizes) + 2 * max(sizes)         # stops at the first that would not fit
    assert rep["dropped"]["sampled_out"] > 0


def test_cp949_and_euc_kr_inputs_decode(tmp_path):
    docs = long_docs(3)
    (tmp_path / "a.txt").write_bytes("\n\n".join(docs).encode("cp949"))
    (tmp_path / "b.txt").write_bytes("\n".join(docs).encode("euc-kr"))
    rep = clean([tmp_path / "a.txt"], tmp_path / "o1", cfg())
    assert rep["files"][0]["encoding"] == "cp949"
    assert read_clean(tmp_path / "o1") == [normalize(d) for d in docs]
    clean([tmp_path / "b.txt"], tmp_path / "o2", cfg(encoding="euc-kr", txt_mode="lines"))
    assert read_clean(tmp_path / "o2") == [normalize(d) for d in docs]


def test_invalid_utf8_is_counted_not_fatal(tmp_path):
    good = long_docs(3)
    lines = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in good]
    lines.insert(1, b'{"text": "' + good[0][:60].encode() + b'\xff\xc3 \xed\xa0\x80"}')  # invalid bytes
    (tmp_path / "x.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rep = clean([tmp_path / "x.jsonl"], tmp_path / "r", cfg())  # auto: still UTF-8, one bad line
    assert rep["files"][0]["encoding"] == "utf-8"
    assert rep["files"][0]["replaced_lines"] == 1 and rep["docs_out"] == 4
    assert any("\ufffd" in t for t in read_clean(tmp_path / "r"))
    rep = clean([tmp_path / "x.jsonl"], tmp_path / "d", cfg(on_invalid="drop"))
    assert rep["files"][0]["dropped_lines"] == 1 and rep["dropped"] == {"bad_encoding": 1}
    assert read_clean(tmp_path / "d") == [normalize(t) for t in good]


def test_empty_file_and_empty_corpus_give_clear_messages(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    write_jsonl(tmp_path / "some.jsonl", long_docs(2))
    rep = clean([tmp_path / "empty.txt", tmp_path / "some.jsonl"], tmp_path / "o", cfg())
    assert rep["docs_out"] == 2
    assert any("empty.txt: no documents (empty file)" in n for n in rep["notes"])
    with pytest.raises(DataError, match=r"no documents in the input: .*empty\.txt"):
        clean([tmp_path / "empty.txt"], tmp_path / "o2", cfg())
    with pytest.raises(DataError, match="no documents in the input"):  # cli.run prints it as one line
        data.main(["clean", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o3")])
    assert not (tmp_path / "o3").exists()
    with pytest.raises(DataError, match="missing.jsonl: no such file"):
        clean([tmp_path / "missing.jsonl"], tmp_path / "o4", cfg())
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(DataError, match=r"notes\.docx: unknown input type"):
        clean([tmp_path / "notes.docx"], tmp_path / "o5", cfg())


def test_failed_run_leaves_previous_output_intact(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", long_docs(5))
    clean([tmp_path / "in.jsonl"], tmp_path / "out", cfg())
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="already exists"):  # a finished output is replaced only with force
        clean([tmp_path / "empty.jsonl"], tmp_path / "out", cfg())
    with pytest.raises(DataError, match="no documents in the input"):
        clean([tmp_path / "empty.jsonl"], tmp_path / "out", cfg(), force=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before  # no temp files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "in.jsonl", "out"]  # nor beside it


def test_folders_gzip_txt_modes_and_shards(tmp_path):
    docs = long_docs(6)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.txt").write_text("\n\n".join(docs[:2]) + "\n", encoding="utf-8")
    write_jsonl(tmp_path / "in" / "sub" / "b.jsonl.gz", docs[2:5], gz=True)
    (tmp_path / "in" / "c.txt").write_text(docs[5] + "\n")
    (tmp_path / "in" / "skip.csv").write_text("ignored")
    (tmp_path / "in" / ".hidden").mkdir()
    write_jsonl(tmp_path / "in" / ".hidden" / "x.jsonl", ["숨은 파일은 읽지 않는다 " * 5])
    with pytest.raises(DataError, match="inside the input folder"):  # it would read its own output back
        clean([tmp_path / "in"], tmp_path / "in" / "o", cfg())
    rep = clean([tmp_path / "in"], tmp_path / "o", cfg(shard_docs=4))
    assert [f["path"].rsplit("/", 1)[1] for f in rep["files"]] == ["a.txt", "c.txt", "b.jsonl.gz"]
    assert rep["outputs"] == ["clean_00000.jsonl", "clean_00001.jsonl"]
    got = [json.loads(line)["text"] for name in rep["outputs"] for line in open(tmp_path / "o" / name)]
    assert got == [normalize(d) for d in docs[:2] + docs[5:] + docs[2:5]]
    lines = tmp_path / "l.txt"
    lines.write_text("\n".join(docs[:3]))
    assert clean([lines], tmp_path / "o2", cfg(txt_mode="lines"))["docs_in"] == 3


# ---------------------------------------------------------------------------- perplexity

def test_ngram_lm_is_a_distribution_and_prefers_real_text(tmp_path):
    ref = korean_docs(2000)
    lm = perplexity.NgramLM(order=3).fit(ref)
    # p(w | history) sums to one over the vocabulary, for a seen and an unseen history
    for hist in ("대한", "\x00\x01"):
        h = lm.encode(hist)
        lp = [lm.logprobs([np.r_[h, w]])[-1] for w in range(lm.V)]
        assert abs(np.exp(lp).sum() - 1) < 1e-6
    real = long_docs(50)[-20:]
    shuffled = ["".join(random.Random(i).sample(t, len(t))) for i, t in enumerate(real)]
    assert (lm.perplexities(real) < lm.perplexities(shuffled)).all()
    lm.save(tmp_path / "lm.npz")
    assert np.allclose(perplexity.NgramLM.load(tmp_path / "lm.npz").perplexities(real), lm.perplexities(real))


def test_ngram_lm_over_sentencepiece_ids(base_spm):
    lm = perplexity.NgramLM(order=3, sp_model=base_spm.read_bytes()).fit(korean_docs(1000))
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


# ---------------------------------------------------------------------------- tokenize

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
    train, val = data.load_tokens(tmp_path / "tok"), data.load_tokens(tmp_path / "tok", "val")
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
    ids = data.load_tokens(tmp_path / "tok")
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


# ---------------------------------------------------------------------------- command line

def test_command_line_clean_then_tokenize(base_spm, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", long_docs(50) + long_docs(50)[:10])
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "data.py"), *map(str, a)],
                                    capture_output=True, text=True, cwd=tmp_path)
    r = run("clean", "c.jsonl", "--out", "out", "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "60 documents in, 50 out" in r.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["docs_out"] == 50 and rep["dropped"] == {"exact_dup": 10}
    r = run("tokenize", "out/clean.jsonl", "--tokenizer", base_spm, "--out", "tok", "--val-fraction", "0.2",
            "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert meta["num_docs"] + meta["val_num_docs"] == 50 and meta["val_num_docs"] > 0
    r = run("clean", "nothing.jsonl", "--out", "o")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ["error: nothing.jsonl: no such file or folder"]


# ---------------------------------------------------------------------------- model perplexity

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

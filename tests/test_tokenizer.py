"""tokenizer.py: train the Korean SentencePiece model, filter it, merge it into a Llama base.

Hermetic tests merge into the tiny `base_spm` of conftest; the `needs_base_tokenizer` ones merge
into the real Mistral-7B v0.1 tokenizer (32,000 BPE pieces, 346 Hangul), the layout of SOLAR's.
"""
import gzip
import json

import pytest
import sentencepiece as spm
from conftest import (
    BASE_TOKENIZER,
    ROOT,
    SHARED_KOBEST,
    english_docs,
    korean_docs,
    needs_base_tokenizer,
    needs_shared_kobest,
)
from sentencepiece import sentencepiece_model_pb2 as pb

import expand as E
import tokenizer as T


def norm(text):
    return " ".join(text.split())  # what data.py leaves: no leading/trailing or repeated spaces


@pytest.fixture(scope="module")
def korean_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ko")
    texts = korean_docs(4000) + ["ㅋㅋㅋ 진짜 웃기다 ㅋㅋ"] * 20
    return T.train_korean(iter(texts), d, vocab_size=3000, num_threads=1)  # a generator, not a file


@pytest.fixture(scope="module")
def merged_tiny(tmp_path_factory, base_spm, korean_model):
    out = tmp_path_factory.mktemp("merged")
    return out, T.merge(base_spm, korean_model, out)


def pieces(model):
    return list(T.load_proto(model).pieces)


# ---- reading and training ----

def test_read_texts_plain_jsonl_gz_and_all_fields(tmp_path):
    (tmp_path / "a.txt").write_text("첫째 줄\n\n둘째 줄\n", encoding="utf-8")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "압축된 문서", "source": "x"}, ensure_ascii=False) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"premise": "전제", "alt": "대안", "label": 1}) + "\n")
    assert list(T.read_texts([tmp_path / "a.txt", tmp_path / "b.jsonl.gz"])) == ["첫째 줄", "둘째 줄", "압축된 문서"]
    # "*": KoBEST-style rows give each string field; rows with a "text" field give just that
    assert list(T.read_texts([tmp_path / "c.jsonl", tmp_path / "b.jsonl.gz"], "*")) == ["전제", "대안", "압축된 문서"]


@pytest.mark.parametrize("content, message", [
    (b'{"text": "good"}\n{"body": "no text"}\n', "bad.jsonl:2: no string field 'text'"),
    (b'{"text": "good"}\n{"text": \n', "bad.jsonl:2: not valid JSON"),
    (b'{"text": "good"}\n{"text": "\xb0\xa1"}\n', "bad.jsonl:2: not UTF-8"),
])
def test_read_texts_names_file_and_line(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        list(T.read_texts([tmp_path / "bad.jsonl"]))


def test_korean_model_is_identity_bpe_with_byte_fallback(korean_model):
    proto = T.load_proto(korean_model)
    assert proto.trainer_spec.model_type == pb.TrainerSpec.BPE
    assert proto.normalizer_spec.name == "identity" and proto.trainer_spec.byte_fallback
    assert proto.trainer_spec.split_digits and len(proto.pieces) == 3000
    sp = spm.SentencePieceProcessor(model_file=str(korean_model))
    # identity normalizer: "ㅋㅋ" stays compatibility jamo (NFKC would make it unknown conjoining jamo)
    assert sp.unk_id() not in sp.encode("ㅋㅋㅋ 진짜") and sp.decode(sp.encode("ㅋㅋㅋ 진짜")) == "ㅋㅋㅋ 진짜"
    assert (korean_model.parent / "korean.vocab").read_text(encoding="utf-8").count("\n") == 3000


# ---- filtering ----

def toy_proto(specs):
    m = pb.ModelProto()
    for piece, kind in specs:
        p = m.pieces.add()
        p.piece, p.score, p.type = piece, -len(m.pieces), getattr(pb.ModelProto.SentencePiece, kind)
    return m


def test_each_filter_rule_drops_what_it_names():
    base = toy_proto([("<unk>", "UNKNOWN"), ("가", "NORMAL"), ("▁있다", "NORMAL")])
    korean = toy_proto([("<unk>", "UNKNOWN"), ("▁있다", "NORMAL"), ("▁the", "NORMAL"), ("》(", "NORMAL"),
                        ("料理", "NORMAL"), ("ㅋㅋ", "NORMAL"), ("▁가", "NORMAL"), ("▁대한민국", "NORMAL"),
                        ("▁조선민주주의인민공화국", "NORMAL"), ("니다", "NORMAL")])
    kept, dropped, examples = T.filter_pieces(korean, base, drop_covered_chars=True, max_piece_chars=8)
    assert kept == ["▁대한민국", "니다"]
    assert dropped == {"not_normal": 1, "in_base": 1, "latin_digit_punct": 2, "non_hangul": 2,
                       "covered_char": 1, "too_long": 1}
    assert examples["non_hangul"] == ["料理", "ㅋㅋ"]
    # every rule but the two that keep the model loadable can be switched off
    kept, dropped, _ = T.filter_pieces(korean, base, hangul_only=False, drop_latin=False,
                                       drop_covered_chars=False, max_piece_chars=0)
    assert kept == ["▁the", "》(", "料理", "ㅋㅋ", "▁가", "▁대한민국", "▁조선민주주의인민공화국", "니다"]
    assert dropped["not_normal"] == dropped["in_base"] == 1 and sum(dropped.values()) == 2



def test_filter_rules_at_their_boundaries():
    """Each rule with a piece just inside and just outside it: 8 syllables kept and 9 dropped
    (the leading "▁" is not counted), the first and last precomposed syllables (U+AC00, U+D7A3)
    kept and their neighbours (U+ABFF, U+D7A4) not, non-ASCII punctuation, digits and Latin
    letters dropped by the Latin/digit/punctuation rule, not by the Hangul one."""
    base = toy_proto([("<unk>", "UNKNOWN")])
    korean = toy_proto([("<unk>", "UNKNOWN"), ("▁가나다라마바사아", "NORMAL"), ("가나다라마바사아자", "NORMAL"),
                        ("\uac00", "NORMAL"), ("\ud7a3", "NORMAL"), ("\uabff", "NORMAL"), ("\ud7a4", "NORMAL"),
                        ("가·나", "NORMAL"), ("３가", "NORMAL"), ("café", "NORMAL")])
    kept, dropped, examples = T.filter_pieces(korean, base, max_piece_chars=8)
    assert kept == ["▁가나다라마바사아", "\uac00", "\ud7a3"]
    assert examples["too_long"] == ["가나다라마바사아자"]
    assert examples["non_hangul"] == ["\uabff", "\ud7a4"]
    assert examples["latin_digit_punct"] == ["가·나", "３가", "café"]

# ---- merging ----

def test_merge_keeps_base_and_appends_filtered_pieces_in_order(merged_tiny, base_spm, korean_model):
    out, report = merged_tiny
    base, merged, korean = pieces(base_spm), pieces(out / "tokenizer.model"), pieces(korean_model)
    n = len(base)
    assert [(p.piece, p.score, p.type) for p in merged[:n]] == [(p.piece, p.score, p.type) for p in base]
    new = merged[n:]
    assert len({p.piece for p in merged}) == len(merged), "duplicate pieces"
    assert all(p.type == pb.ModelProto.SentencePiece.NORMAL for p in new)
    floor = min(p.score for p in base if p.score > -1e6)
    scores = [p.score for p in new]
    assert max(scores) < floor and scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    order = {p.piece: i for i, p in enumerate(korean)}
    assert [order[p.piece] for p in new] == sorted(order[p.piece] for p in new), "learned order kept"
    assert all(T.is_hangul(c) for p in new for c in p.piece.lstrip("▁"))
    mp, bp = T.load_proto(out / "tokenizer.model"), T.load_proto(base_spm)
    assert mp.normalizer_spec == bp.normalizer_spec and mp.trainer_spec.byte_fallback
    assert report["base_size"] == n and report["final_size"] == len(merged) == n + report["added"]
    assert report["korean_size"] == len(korean) == sum(report["dropped"].values()) + report["added"]
    learned = [p.piece for p in korean if p.type == pb.ModelProto.SentencePiece.NORMAL]
    assert report["overlap"] == len(set(learned) & {b.piece for b in base}) > 0
    assert json.loads((out / "merge_report.json").read_text(encoding="utf-8"))["added"] == report["added"] > 1000


def assert_each_new_piece_encodes_to_itself(model_file, start):
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    for i in range(start, sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if piece.startswith("▁"):  # a word start: the dummy prefix supplies the "▁"
            assert sp.encode(piece[1:]) == [i], (piece, sp.encode(piece[1:], out_type=str))
        else:                      # a word middle: put something in front of it
            ids = sp.encode("a" + piece)
            assert ids[-1] == i and sp.decode(ids[:-1]) == "a", (piece, sp.encode("a" + piece, out_type=str))


def test_every_added_piece_is_produced_from_its_own_text(merged_tiny, base_spm):
    out, report = merged_tiny
    assert_each_new_piece_encodes_to_itself(out / "tokenizer.model", report["base_size"])


def test_merged_folder_loads_in_transformers_like_sentencepiece(merged_tiny):
    transformers = pytest.importorskip("transformers")
    out, _ = merged_tiny
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert len(tok) == sp.get_piece_size()
    for text in [norm(t) for t in korean_docs(40)[::4] + english_docs(10)]:
        assert tok(text)["input_ids"] == [sp.bos_id()] + sp.encode(text)  # BOS added like the base


def test_failed_merge_leaves_previous_output_untouched(tmp_path, base_spm, merged_tiny):
    out, _ = merged_tiny
    target = tmp_path / "out"
    T.merge(base_spm, out / "tokenizer.model", target)  # a merge that works (nothing new to add)
    before = (target / "tokenizer.model").read_bytes()
    (tmp_path / "broken.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="broken.model"):
        T.merge(base_spm, tmp_path / "broken.model", target)
    assert (target / "tokenizer.model").read_bytes() == before


def test_base_folder_with_colliding_added_tokens_is_refused(tmp_path, base_spm, korean_model):
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    (base_dir / "tokenizer.model").write_bytes(base_spm.read_bytes())
    (base_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": {"2000": {"content": "<pad>"}}}))
    with pytest.raises(ValueError, match="tokenizer_config.json: added tokens at ids"):
        T.merge(base_dir, korean_model, tmp_path / "out")


# ---- decomposition, ratio, sweep, command line ----

def test_decompose_splits_text_as_the_base_does_inside_running_text(merged_tiny, base_spm):
    out, report = merged_tiny
    base = spm.SentencePieceProcessor(model_file=str(base_spm))
    space = base.piece_to_id("▁")
    word = E.decompose("▁대한민국", base_spm)
    assert base.decode(word) == "대한민국" and base.id_to_piece(word[0]).startswith("▁")
    suffix = E.decompose("니다", base_spm)
    assert space not in suffix and base.decode(suffix) == "니다"  # no dummy-prefix "▁" for a suffix
    decs = E.decompositions(out, report["base_size"])
    merged = pieces(out / "tokenizer.model")
    assert sorted(decs) == list(range(report["base_size"], report["final_size"]))
    for i, ids in decs.items():
        assert ids and max(ids) < report["base_size"]
        assert bytes_of(base, ids) == merged[i].piece.replace("▁", " ").encode()


def bytes_of(sp, ids):
    # decode() drops a leading space; rebuild the exact text from pieces and byte pieces
    out = b""
    for i in ids:
        p = sp.id_to_piece(i)
        out += bytes([int(p[3:5], 16)]) if sp.is_byte(i) else p.replace("▁", " ").encode()
    return out


def test_ratio_counts_tokens_of_both_tokenizers(merged_tiny, base_spm):
    out, _ = merged_tiny
    texts = [norm(t) for t in korean_docs(4600)[4500:]]  # seen by neither tokenizer
    r = T.token_ratio(out, base_spm, texts)
    new, base = (spm.SentencePieceProcessor(model_file=str(p)) for p in (out / "tokenizer.model", base_spm))
    assert r["new_tokens"] == sum(len(new.encode(t)) for t in texts)
    assert r["base_tokens"] == sum(len(base.encode(t)) for t in texts)
    # the tiny base already learned common Korean from 300 documents: a modest gain
    assert r["ratio"] == round(r["new_tokens"] / r["base_tokens"], 4) < 0.9
    english = [norm(t) for t in english_docs(20)]
    assert T.token_ratio(out, base_spm, english)["ratio"] == 1.0  # English is the base's business


def test_sweep_rows_grow_with_vocab_size(base_spm):
    texts = korean_docs(3000)
    evals = {"held_out": [norm(t) for t in korean_docs(3300)[3000:]]}
    rows = T.sweep(texts, base_spm, [1500, 4000], evals, hidden_size=64,
                   cfg=T.VocabConfig(num_threads=1, character_coverage=0.99))
    small, big = rows
    assert small["added"] < big["added"] and big["ratio"]["held_out"] < small["ratio"]["held_out"] < 1
    assert big["embedding_params_added"] == big["added"] * 64 * 2
    table = T.format_sweep(rows, 64)
    assert "ratio held_out" in table and table.count("\n") == 3


def test_training_samples_lines_uniformly_at_corpus_scale(tmp_path):
    """SentencePiece holds every training line in memory, so by default a uniform sample of
    T.SAMPLE_SENTENCES lines is drawn from the whole stream (not its first lines)."""
    early = [t for t in korean_docs(3000) if len(t) > 20][:1500]
    late = ["흙냄새 가득한 들판에서 뻐꾸기가 울었다 " * 3] * 1500     # only at the end of the stream
    T.main(["train", "--vocab-size", "1500", "--character-coverage", "0.99", "--threads", "1",
            "--input-sentence-size", "600", "--out", str(tmp_path / "s"), *write_corpus(tmp_path, early + late)])
    proto = T.load_proto(tmp_path / "s" / "korean.model")
    assert proto.trainer_spec.input_sentence_size == 600          # recorded in the model
    assert any("뻐꾸기" in p.piece for p in proto.pieces)    # a sample of the first 600 lines has none
    T.main(["train", "--vocab-size", "1500", "--character-coverage", "0.99", "--threads", "1",
            "--out", str(tmp_path / "d"), *write_corpus(tmp_path, early)])
    assert T.load_proto(tmp_path / "d" / "korean.model").trainer_spec.input_sentence_size == 2_000_000


def test_the_line_sample_is_uniform_seeded_and_in_stream_order():
    n, k = 50, 10
    counts = [0] * n
    for seed in range(4000):
        sample = T.sample_lines(map(str, range(n)), k, seed)
        assert len(sample) == k and sample == sorted(sample, key=int)       # stream order
        for x in sample:
            counts[int(x)] += 1
    assert all(abs(c / 4000 - k / n) < 0.03 for c in counts)              # each line kept with p = k/n
    assert T.sample_lines(map(str, range(n)), k, 7) == T.sample_lines(map(str, range(n)), k, 7)
    assert T.sample_lines(map(str, range(5)), k) == ["0", "1", "2", "3", "4"]
    assert T.sample_lines(map(str, range(n)), 0) == [str(i) for i in range(n)]



def test_every_pair_of_four_lines_is_an_equally_likely_sample():
    """k = 2 of 4 lines: a uniform sampler picks each of the 6 pairs with probability 1/6."""
    from collections import Counter
    trials = 12000
    pairs = Counter(tuple(T.sample_lines("abcd", 2, seed)) for seed in range(trials))
    assert set(pairs) == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")}
    assert all(abs(c / trials - 1 / 6) < 0.02 for c in pairs.values()), pairs     # 5 sigma: 0.017

def test_a_sampled_training_run_is_the_same_in_every_process(tmp_path):
    """SentencePiece's own sampler reseeds from the OS in each process; ours is seeded."""
    import subprocess
    import sys
    corpus = write_corpus(tmp_path, korean_docs(3000))
    models = []
    for k in range(2):
        subprocess.run([sys.executable, str(ROOT / "tokenizer.py"), "train", *corpus, "--vocab-size", "1500",
                        "--character-coverage", "0.99", "--input-sentence-size", "800", "--threads", "1",
                        "--out", str(tmp_path / f"m{k}")], check=True, capture_output=True)
        models.append((tmp_path / f"m{k}" / "korean.model").read_bytes())
    assert models[0] == models[1]


def write_corpus(tmp_path, texts):
    path = tmp_path / f"corpus{len(texts)}.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return [str(path)]


def test_vocab_flags_are_vocab_config_settings(monkeypatch, capsys):
    """train's flags are VocabConfig's trainer settings, merge's its filters, sweep's both, each with
    VocabConfig's default and range; --threads sets num_threads."""
    got = []
    monkeypatch.setattr(T, "run", got.append)
    for argv in (["train", "c.txt", "--out", "o"], ["merge", "--base", "b", "--korean", "k", "--out", "o"],
                 ["sweep", "c.txt", "--base", "b", "--eval", "e.txt"]):
        T.main(argv)
        assert T._config(got[-1]) == T.VocabConfig()
    train, merge, sweep = (set(vars(a)) for a in got)
    assert set(T.FILTERS) <= merge - train and set(T.FILTERS) <= sweep
    assert {"model_type", "num_threads", "seed"} <= (train & sweep) - merge
    T.main(["train", "c.txt", "--out", "o", "--threads", "3"])
    assert got[-1].num_threads == 3
    T.main(["merge", "--base", "b", "--korean", "k", "--out", "o", "--no-hangul-only", "--max-piece-chars", "0"])
    assert T._config(got[-1]).filters() == {**T.VocabConfig().filters(), "hangul_only": False, "max_piece_chars": 0}
    for argv in (["train", "c.txt", "--out", "o", "--character-coverage", "0"],
                 ["merge", "--base", "b", "--korean", "k", "--out", "o", "--max-piece-chars", "-1"]):
        with pytest.raises(SystemExit):
            T.main(argv)
        assert "must be a" in capsys.readouterr().err


def test_command_line_train_merge_ratio(tmp_path, base_spm, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in korean_docs(2000)),
                      encoding="utf-8")
    T.main(["train", str(corpus), "--vocab-size", "2000", "--character-coverage", "0.99", "--out",
            str(tmp_path / "ko"), "--threads", "1"])
    assert (tmp_path / "ko" / "korean.model").exists()
    T.main(["merge", "--base", str(base_spm), "--korean", str(tmp_path / "ko" / "korean.model"),
            "--out", str(tmp_path / "tok"), "--eval", str(corpus), "--max-piece-chars", "4"])
    capsys.readouterr()
    report = json.loads((tmp_path / "tok" / "merge_report.json").read_text(encoding="utf-8"))
    assert report["filters"]["max_piece_chars"] == 4 and report["dropped"]["too_long"] > 0
    assert report["ratio"][str(corpus)]["ratio"] < 1
    T.main(["ratio", "--tokenizer", str(tmp_path / "tok"), "--base", str(base_spm), str(corpus)])
    printed = json.loads(capsys.readouterr().out)
    assert printed["ratio"] == report["ratio"][str(corpus)]["ratio"]
    assert printed["per_text"][str(corpus)]["texts"] == 2000
    (tmp_path / "bad.jsonl").write_text('{"text": "좋아요"}\n{"txt": "오타"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r".*bad.jsonl:2: no string field 'text'"):   # cli.run: one line
        T.main(["train", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "ko2")])
    assert not (tmp_path / "ko2" / "korean.model").exists()


# ---- the real Llama-2-style base (Mistral-7B v0.1) ----

@pytest.fixture(scope="module")
def merged_real(tmp_path_factory):
    if not BASE_TOKENIZER.exists():
        pytest.skip("run scripts/fetch_base_tokenizer.sh to fetch the Mistral base tokenizer")
    d = tmp_path_factory.mktemp("real")
    korean = T.train_korean(T.read_texts([ROOT / "assets" / "korean_corpus.jsonl.gz"]), d / "ko", vocab_size=8000)
    return d / "tok", T.merge(BASE_TOKENIZER, korean, d / "tok"), korean


@needs_base_tokenizer
def test_real_base_keeps_its_32000_pieces_and_english_ids(merged_real):
    out, report, _ = merged_real
    base, merged = pieces(BASE_TOKENIZER), pieces(out / "tokenizer.model")
    assert len(base) == 32000 and report["added"] > 5000
    assert [(p.piece, p.score, p.type) for p in merged[:32000]] == [(p.piece, p.score, p.type) for p in base]
    assert len({p.piece for p in merged}) == len(merged) == 32000 + report["added"]
    old = spm.SentencePieceProcessor(model_file=str(BASE_TOKENIZER))
    new = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    for text in english_docs(60) + ["def f(x):\n    return x ** 2  # 42", "  two  spaces\tand a tab"]:
        assert new.encode(text) == old.encode(text)
    for text in [norm(t) for t in korean_docs(300)] + ["ㅋㅋㅋ 𝔘 鬱 \U0001F600 한글\n줄바꿈"]:
        ids = new.encode(text)
        assert new.decode(ids) == text and len(ids) <= len(old.encode(text))
    assert_each_new_piece_encodes_to_itself(out / "tokenizer.model", 32000)


@needs_base_tokenizer
def test_real_base_transformers_matches_sentencepiece(merged_real):
    transformers = pytest.importorskip("transformers")
    out, _, _ = merged_real
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    texts = [norm(t) for t in korean_docs(2000)[::50] + english_docs(30)] + ["한국어와 English가 섞인 문장 123."]
    for text in texts:
        assert tok(text)["input_ids"] == [1] + sp.encode(text), text[:60]
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


@needs_base_tokenizer
def test_filtering_a_stepping_stone_drops_the_pieces_it_made_unreachable(tmp_path, merged_real):
    # "▁X" pieces are BPE's first step into most Korean words: dropping them (--drop-covered-chars)
    # would strand the longer pieces; merge finds those and leaves them out too
    _, full, korean = merged_real
    report = T.merge(BASE_TOKENIZER, korean, tmp_path, drop_covered_chars=True)
    assert report["dropped"]["covered_char"] > 100 and report["dropped"]["unreachable"] > 1000
    assert report["added"] < full["added"] - report["dropped"]["unreachable"]
    assert T.unreachable(T.load_proto(tmp_path / "tokenizer.model"), 32000) == []


@needs_base_tokenizer
@needs_shared_kobest
def test_kobest_token_ratio_at_20k(tmp_path):
    # the acceptance number: trained on KoBEST train text at 20k, measured on KoBEST test
    train = sorted(SHARED_KOBEST.glob("*/train.jsonl"))
    test = sorted(SHARED_KOBEST.glob("*/test.jsonl"))
    korean = T.train_korean(T.read_texts(train, "*"), tmp_path / "ko", vocab_size=20000)
    report = T.merge(BASE_TOKENIZER, korean, tmp_path / "tok")
    assert 15000 < report["added"] < 20000 and report["overlap"] > 1000
    kobest = T.ratios(tmp_path / "tok", BASE_TOKENIZER, test, "*")
    assert kobest["ratio"] <= 0.42 and all(r["ratio"] < 0.55 for r in kobest["per_text"].values())
    statute = T.ratios(tmp_path / "tok", BASE_TOKENIZER, [ROOT / "assets" / "statute_sample.jsonl"])
    assert kobest["ratio"] < statute["ratio"] < 0.6  # out of domain: fewer whole words learned

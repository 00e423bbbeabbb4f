"""Bits per character (tools/score.py): models with different tokenizers, measured on the same characters.

Two tiny models, one with the English-ish base tokenizer and one with a Korean tokenizer, score
the same documents. The characters counted must be the same for both, and each number must
equal a direct computation: each document in one forward pass, -ln p of every token summed in
float64, divided by ln 2 and the characters (and, on one short line, one forward pass per token).
"""
import json
import math

import pytest
import sentencepiece as spm
import torch
from conftest import english_docs, korean_docs, train_spm

import redwhale
from model import Llama, LlamaConfig
from support import cli
from support.tokenizer_io import Tokenizer
from tools import score


def tiny(vocab, seed):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             initializer_range=0.2)).eval()


@pytest.fixture(scope="module")
def two(tmp_path_factory, base_spm):
    d = tmp_path_factory.mktemp("score")
    korean = train_spm(d / "ko", korean_docs(2000), vocab_size=1500, character_coverage=0.99)
    out = []
    for name, path, seed in (("base", base_spm, 0), ("korean", korean, 1)):
        sp = spm.SentencePieceProcessor(model_file=str(path))
        model = tiny(sp.get_piece_size(), seed)
        model.save_pretrained(d / name)
        (d / name / "tokenizer.model").write_bytes(path.read_bytes())
        out.append((d / name, model, sp, Tokenizer.load(path)))
    return out


DOCS = korean_docs(6)[1:4] + [t[:400] for t in english_docs(2)] + ["한국어 and English, 2024년 5월!"]


def direct_bits_per_char(model, sp, docs):
    """Each document whole in one forward pass (they fit in the context): -ln p of every token
    after BOS from the row before it, in float64, summed over the documents, / (ln 2 x chars)."""
    nats = 0.0
    for text in docs:
        ids = torch.tensor([sp.bos_id()] + sp.encode(text))
        with torch.no_grad():
            logits, _ = model(ids[None, :-1])                          # (1, n-1, V): row i predicts ids[i+1]
        logp = torch.log_softmax(logits[0].double(), -1)
        nats -= sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))
    return nats / (math.log(2) * sum(len(t) for t in docs))


def per_token_bits_per_char(model, sp, text):
    """The slowest, plainest version: one forward pass per predicted token, from everything before it."""
    ids = [sp.bos_id()] + sp.encode(text)
    nats = 0.0
    for i in range(1, len(ids)):
        with torch.no_grad():
            logits, _ = model(torch.tensor([ids[:i]]))
        nats -= torch.log_softmax(logits[0, -1].double(), -1)[ids[i]].item()
    return nats / (math.log(2) * len(text))


def test_two_tokenizers_are_scored_on_the_same_characters(two):
    results = []
    for _, model, sp, tok in two:
        r = score.score(model, tok, DOCS, context=512)
        assert r["chars"] == sum(len(t) for t in DOCS)                        # code points, as given
        assert r["tokens"] == sum(len(sp.encode(t)) for t in DOCS)            # every token, no BOS, no EOS
        assert r["bits_per_char"] == pytest.approx(direct_bits_per_char(model, sp, DOCS), rel=1e-5)
        short = DOCS[-1]                                                      # the mixed-script line
        assert score.score(model, tok, [short], context=512)["bits_per_char"] == pytest.approx(
            per_token_bits_per_char(model, sp, short), rel=1e-5)
        assert r["bits_per_char"] == pytest.approx(r["nats"] / math.log(2) / r["chars"])
        results.append(r)
    assert results[0]["chars"] == results[1]["chars"] and results[0]["tokens"] != results[1]["tokens"]


def test_long_documents_are_scored_in_half_overlapping_windows(two):
    _, model, sp, _ = two[1]
    text = " ".join(korean_docs(40))
    ids = [sp.bos_id()] + sp.encode(text)
    seen = []
    real = model.forward

    def spy(x, *a, **k):
        seen.append(x.shape[1])
        return real(x, *a, **k)
    model.forward = spy
    try:
        nats = score.document_nll(model, ids, context=64)
    finally:
        del model.forward
    assert len(ids) > 300 and max(seen) <= 64 and seen[0] == 64
    assert sum(seen) - seen[0] == sum(min(64, n) for n in seen[1:])
    # every token predicted once: the windows' new predictions add up to the document
    assert 64 + 32 * (len(seen) - 2) < len(ids) - 1 <= 64 + 32 * (len(seen) - 1)
    assert nats == pytest.approx(score.document_nll(model, ids, context=len(ids)), rel=0.05)   # close, not equal


def test_a_tokenizer_without_bos_prepends_nothing_and_predicts_all_but_the_first_token(two, tmp_path):
    _, model, _, _ = two[1]
    tok = Tokenizer.load(train_spm(tmp_path / "nobos", english_docs(200), vocab_size=600, bos_id=-1))
    r = score.score(model, tok, DOCS[:3], context=512)
    assert tok.bos_id is None and r["tokens"] == sum(len(tok.encode(t)) - 1 for t in DOCS[:3])
    assert r["nats"] == pytest.approx(sum(score.document_nll(model, tok.encode(t), 512) for t in DOCS[:3]))


def test_the_command_line_writes_per_file_and_overall_numbers(two, tmp_path, capsys):
    folder, model, _, tok = two[0]
    (tmp_path / "ko.txt").write_text("\n\n".join(DOCS[:3]) + "\n", encoding="utf-8")
    (tmp_path / "en.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in DOCS[3:5]))
    rows = score.main(["--model", str(folder), str(tmp_path / "ko.txt"), str(tmp_path / "en.jsonl"),
                       "--text-field", "body", "--output", str(tmp_path / "s.json")])
    saved = json.loads((tmp_path / "s.json").read_text())["scores"]
    assert saved["all"]["chars"] == sum(len(t) for t in DOCS[:5]) and saved["all"]["docs"] == 5
    want = score.score(model, tok, DOCS[:5])["bits_per_char"]
    assert saved["all"]["bits_per_char"] == pytest.approx(want) == rows["all"]["bits_per_char"]
    assert "bits/char" in capsys.readouterr().out
    with pytest.raises(SystemExit):                                         # a user's file is not replaced
        cli.run(redwhale.main, ["score", "--model", str(folder), str(tmp_path / "ko.txt"),
                                "--output", str(tmp_path / "en.jsonl")])
    assert "not an output of this step" in capsys.readouterr().err


def test_train_logs_every_named_held_out_set_in_bits_per_char(train_setup, base_spm, tmp_path):
    """--eval-data ko=DIR en=DIR: each set's loss and bits per character at every eval and stage end."""
    from conftest import run

    from corpus import shards
    ko_docs, en_docs = korean_docs(1600)[1500:], english_docs(60)
    shards.tokenize([_jsonl(tmp_path / "ko.jsonl", ko_docs)], base_spm, tmp_path / "ko", progress=False)
    shards.tokenize([_jsonl(tmp_path / "en.jsonl", en_docs)], base_spm, tmp_path / "en", progress=False)
    log = run(train_setup, tmp_path / "o", "--steps-per-stage", 2, "--max-steps", 3, "--eval-data",
              f"ko={tmp_path / 'ko'}", f"en={tmp_path / 'en'}")
    assert [r["global_step"] for r in log if "eval_en_loss" in r] == [2]     # stage 1's end (step 3: no eval)
    for name in ("ko", "en"):
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["num_chars"] == sum(len(t) for t in (ko_docs if name == "ko" else en_docs))
        r = log[1]
        assert r[f"eval_{name}_bpc"] == pytest.approx(r[f"eval_{name}_loss"] * meta["num_tokens"] / meta["num_chars"]
                                                      / math.log(2))
    assert log[1]["eval_ko_loss"] != log[1]["eval_en_loss"]


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path

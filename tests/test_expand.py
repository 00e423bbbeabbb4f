"""Vocabulary expansion (expand.py): grow a Llama to the merged tokenizer and initialize the
new rows by one of the five named methods (DESIGN.md section 1).

The base model is a tiny random Llama over the tiny `base_spm` vocabulary, with
initializer_range 0.2 so that rows differ visibly; the merged tokenizer adds Korean pieces.
"""
import json

import pytest
import sentencepiece as spm
import torch
from conftest import BASE_TOKENIZER, korean_docs, needs_base_tokenizer, train_spm

import expand as E
import tokenizer as T
from expand import INIT_METHODS, expand_vocab
from model import Llama, LlamaConfig
from support.safetensors_io import read_safetensors


def tiny_config(vocab_size, **kw):
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       initializer_range=0.2, **kw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, base_spm):
    """(base HF folder, merged tokenizer folder, merge report) for an untied tiny Llama."""
    d = tmp_path_factory.mktemp("expand")
    korean = train_spm(d / "korean", korean_docs(3000), vocab_size=3000)
    report = T.merge(base_spm, korean, d / "tok")
    torch.manual_seed(0)
    base = Llama(tiny_config(report["base_size"]))
    base.save_pretrained(d / "base")
    (d / "base" / "tokenizer.model").write_bytes(base_spm.read_bytes())
    return d / "base", d / "tok", report


_DECOMPS = {}


def decomps(setup):
    _, tok, report = setup
    if tok not in _DECOMPS:  # {new id: base ids}, computed once per merged tokenizer
        _DECOMPS[tok] = E.decompositions(tok, report["base_size"])
    return _DECOMPS[tok]


def sample_ids(n_vocab, T_=24):
    return torch.randint(0, n_vocab, (2, T_), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("init", INIT_METHODS)
def test_old_vocabulary_logits_are_unchanged(setup, init):
    base_dir, _, report = setup
    before = Llama.from_pretrained(base_dir).eval()
    after = Llama.from_pretrained(base_dir).eval()
    expand_vocab(after, report["final_size"], init=init, decompositions=decomps(setup))
    x = sample_ids(report["base_size"])  # a base-vocabulary input
    with torch.no_grad():
        old, new = before(x)[0], after(x)[0]
    assert new.shape[-1] == report["final_size"]
    torch.testing.assert_close(new[..., :report["base_size"]], old, rtol=0, atol=1e-5)


def expanded(setup, init, **kw):
    base_dir, _, report = setup
    model = Llama.from_pretrained(base_dir)
    old_emb, old_head = model.model.embed_tokens.weight.clone(), model.lm_head.weight.clone()
    expand_vocab(model, report["final_size"], init=init, decompositions=decomps(setup), **kw)
    return model, old_emb, old_head


@pytest.mark.parametrize("init", ["subword", "subword-embed", "subword-first-head", "mean"])
def test_each_init_method_builds_the_rows_its_definition_says(setup, init):
    model, old_emb, old_head = expanded(setup, init)
    n = old_emb.size(0)
    emb, head = model.model.embed_tokens.weight, model.lm_head.weight
    mean_emb, mean_head = old_emb.mean(0), old_head.mean(0)
    for i, ids in list(decomps(setup).items())[::37]:
        sub_emb, sub_head = old_emb[ids].mean(0), old_head[ids].mean(0)
        want_emb = mean_emb if init == "mean" else sub_emb
        want_head = {"subword": sub_head, "subword-embed": mean_head, "mean": mean_head,
                     "subword-first-head": old_head[ids[0]]}[init]
        torch.testing.assert_close(emb[i], want_emb, rtol=0, atol=1e-6)
        torch.testing.assert_close(head[i], want_head, rtol=0, atol=1e-6)
    assert torch.equal(emb[:n], old_emb) and torch.equal(head[:n], old_head)


def test_subword_rows_are_means_of_named_base_rows(setup):
    # the base model's own tokenizer.model names the sub-tokens of a new piece, e.g. "▁대한민국"
    model, old_emb, old_head = expanded(setup, "subword")
    base_dir, tok, report = setup
    merged = spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model"))
    base = spm.SentencePieceProcessor(model_file=str(base_dir / "tokenizer.model"))
    checked = 0
    for new_id in range(report["base_size"], report["final_size"]):
        piece = merged.id_to_piece(new_id)
        ids = [base.piece_to_id(p) for p in base.encode(piece.replace("▁", ""), out_type=str)]
        if not piece.startswith("▁") or base.unk_id() in ids or len(ids) < 3:
            continue  # simple whole-word pieces the base splits into >= 3 of its pieces
        assert ids == E.decompose(piece, base_dir / "tokenizer.model")
        torch.testing.assert_close(model.model.embed_tokens.weight[new_id], old_emb[ids].mean(0))
        torch.testing.assert_close(model.lm_head.weight[new_id], old_head[ids].mean(0))
        checked += 1
    assert checked >= 10


def test_random_rows_follow_initializer_range_and_seed(setup):
    a, old_emb, _ = expanded(setup, "random", seed=0)
    b, _, _ = expanded(setup, "random", seed=0)
    c, _, _ = expanded(setup, "random", seed=1)
    n = old_emb.size(0)
    new = a.model.embed_tokens.weight[n:]
    assert torch.equal(new, b.model.embed_tokens.weight[n:]) and not torch.equal(new, c.model.embed_tokens.weight[n:])
    assert abs(new.std().item() - 0.2) < 0.01 and abs(a.lm_head.weight[n:].std().item() - 0.2) < 0.01


@needs_base_tokenizer
def test_first_head_skips_the_bare_space_of_a_real_base(tmp_path):
    """With the Mistral tokenizer every "▁word" piece decomposes as ['▁', ...]: the head row is the
    first sub-token after that bare "▁", so distinct pieces get distinct rows."""
    korean = train_spm(tmp_path / "korean", korean_docs(3000), vocab_size=3000)
    T.merge(BASE_TOKENIZER, korean, tmp_path / "tok")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, initializer_range=0.2)
    Llama(cfg).save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "tokenizer.model").write_bytes(BASE_TOKENIZER.read_bytes())
    base_head = Llama.from_pretrained(tmp_path / "b").lm_head.weight
    model = E.expand(tmp_path / "b", tmp_path / "tok", init="subword-first-head", out_dir=tmp_path / "x")
    sp = spm.SentencePieceProcessor(model_file=str(BASE_TOKENIZER))
    space = sp.piece_to_id("\u2581")
    pieces = [p.piece for p in T.load_proto(tmp_path / "tok").pieces]
    word_starts = [i for i in range(32000, len(pieces)) if pieces[i].startswith("\u2581") and len(pieces[i]) > 1]
    decomps = E.decompositions(tmp_path / "tok", 32000)
    assert len(word_starts) > 200 and all(decomps[i][0] == space for i in word_starts)   # the degenerate case
    for i in word_starts:
        want = next(j for j in decomps[i] if j != space)        # the first sub-token after the bare "▁"
        assert torch.equal(model.lm_head.weight[i], base_head[want])
    distinct = {tuple(model.lm_head.weight[i].tolist()) for i in word_starts}
    assert len(distinct) > 0.3 * len(word_starts)              # not one row for all of them


def test_tied_model_stays_tied(tmp_path):
    torch.manual_seed(0)
    model = Llama(tiny_config(50, tie_word_embeddings=True))
    old = model.model.embed_tokens.weight.clone()
    expand_vocab(model, 53, init="subword-first-head", decompositions={50: [3, 4], 51: [5], 52: [6, 7, 8]})
    assert model.lm_head is None and model.output_weight() is model.model.embed_tokens.weight
    torch.testing.assert_close(model.model.embed_tokens.weight[50], old[[3, 4]].mean(0))  # the embedding rule
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    keys = dict(read_safetensors(tmp_path / "model.safetensors"))
    assert "lm_head.weight" not in keys and keys["model.embed_tokens.weight"].shape == (53, 64)


def test_padding_to_a_multiple_is_never_predicted_and_dropped_on_save(setup, tmp_path):
    _, _, report = setup
    V = report["final_size"]
    model, _, _ = expanded(setup, "subword", vocab_multiple=64)
    rows = -(-V // 64) * 64
    assert model.model.embed_tokens.weight.shape[0] == model.lm_head.weight.shape[0] == rows > V
    assert model.config.padded_vocab_size == rows and model.config.vocab_size == V
    assert not model.lm_head.weight[V:].any()
    with torch.no_grad():
        logits, loss = model(sample_ids(V), targets=sample_ids(V))
    assert logits.shape[-1] == V and torch.isfinite(loss)
    model.save_pretrained(tmp_path)
    assert dict(read_safetensors(tmp_path / "model.safetensors"))["lm_head.weight"].shape[0] == V
    again = Llama.from_pretrained(tmp_path, vocab_multiple=64)
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)


def test_bad_requests_fail_clearly(setup):
    base_dir, _, report = setup
    model = Llama.from_pretrained(base_dir)
    with pytest.raises(ValueError, match="choose one of random, mean"):
        expand_vocab(model, report["final_size"], init="zeros")
    with pytest.raises(ValueError, match="needs the base ids of every new piece"):
        expand_vocab(model, report["final_size"], init="subword", decompositions={})
    with pytest.raises(ValueError, match="outside the old vocabulary"):
        expand_vocab(model, report["base_size"] + 1, init="subword", decompositions={report["base_size"]: [10**6]})
    with pytest.raises(ValueError, match="smaller than vocab_size"):
        expand_vocab(model, 10, init="mean")
    assert model.config.vocab_size == report["base_size"]  # nothing changed by the failed calls


def test_expand_refuses_a_tokenizer_not_built_on_the_model_tokenizer(setup, tmp_path, base_spm):
    base_dir, _, _ = setup
    other = train_spm(tmp_path / "other", korean_docs(2000)[::-1], vocab_size=2600)
    T.merge(other, train_spm(tmp_path / "ko", korean_docs(1500), vocab_size=2700), tmp_path / "tok")
    with pytest.raises(ValueError, match="not .*tokenizer.model's pieces"):
        E.expand(base_dir, tmp_path / "tok", "subword", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_expand_keeps_the_checkpoint_dtype(setup, tmp_path):
    base_dir, tok, report = setup
    Llama.from_pretrained(base_dir, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    (tmp_path / "bf16" / "tokenizer.model").write_bytes((base_dir / "tokenizer.model").read_bytes())
    model = E.expand(tmp_path / "bf16", tok, "subword", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    weights = dict(read_safetensors(tmp_path / "out" / "model.safetensors"))
    emb = weights["model.embed_tokens.weight"]
    assert emb.dtype == torch.bfloat16 and emb.shape[0] == report["final_size"]
    old = Llama.from_pretrained(tmp_path / "bf16").model.embed_tokens.weight  # fp32 copy of the bf16 rows
    i, ids = next(iter(decomps(setup).items()))
    assert torch.equal(emb[i], old[ids].mean(0).to(torch.bfloat16))  # mean in fp32, then cast
    assert torch.equal(model.model.embed_tokens.weight, emb)


def test_expanded_folder_loads_in_transformers_and_reloads(setup, tmp_path):
    transformers = pytest.importorskip("transformers")
    base_dir, tok, report = setup
    E.main(["--model", str(base_dir), "--tokenizer", str(tok), "--init", "subword",
            "--out", str(tmp_path / "out"), "--vocab-multiple", "64"])
    out = tmp_path / "out"
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
            "merge_report.json", "expand_report.json"} <= {p.name for p in out.iterdir()}
    expand_report = json.loads((out / "expand_report.json").read_text())
    assert expand_report["old_vocab_size"] == report["base_size"] and expand_report["init"] == "subword"
    assert expand_report["new_vocab_size"] == report["final_size"]
    ours = Llama.from_pretrained(out).eval()
    assert ours.config.vocab_size == report["final_size"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    ref = transformers.LlamaForCausalLM.from_pretrained(str(out)).eval()
    text = " ".join(korean_docs(3200)[3100].split())
    ids = hf_tok(text, return_tensors="pt")["input_ids"][:, :64]
    assert int(ids.max()) >= report["base_size"]  # the input uses new Korean pieces
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], ref(ids).logits, rtol=1e-4, atol=1e-4)

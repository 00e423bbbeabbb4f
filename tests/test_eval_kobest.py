"""eval_kobest.py: KoBEST prompts, token split, scores and metrics as lm-evaluation-harness 0.4.13.

A tiny random Llama (init range 0.2, so that a wrong mask or position moves the scores) and a
SentencePiece tokenizer trained here stand in for a real model. The packed scorer is checked
against the obviously-correct one (one forward pass per choice), in float64 to 1e-9 and in
float32 to a relative 1e-5. Few-shot expectations were read off lm-eval 0.4.13 itself.
"""
import hashlib
import json
import random
import re
import sys

import pytest
import torch
from conftest import SHARED_KOBEST, korean_docs, needs_shared_kobest, train_spm

import eval_kobest as ek
from model import Llama, LlamaConfig
from support import cli
from support.tokenizer_io import Tokenizer

SAMPLE = ek.DEFAULT_DATA


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("ko_spm")
    # Llama-style whitespace handling (runs of spaces kept), as the merged tokenizers have
    path = train_spm(d / "tokenizer", korean_docs(1500), vocab_size=1500, remove_extra_whitespaces=False,
                     character_coverage=0.98)
    return Tokenizer.load(path)


def tiny_llama(vocab, max_pos=1024, tie=False, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_pos,
                      tie_word_embeddings=tie, initializer_range=0.2)
    return Llama(cfg).eval()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok.vocab_size)


def examples(tok, tasks=ek.TASKS, n=10, data=SAMPLE):
    out = []
    for t in tasks:
        docs = ek.load_split(data, t, "test")[0][:n]
        out += ek.build_examples(t, docs, ek.build_contexts(t, docs), tok)
    return out


def max_rel_diff(a, b):
    return max(abs(x - y) / max(1.0, abs(y)) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


# ---- prompts and choices (DESIGN.md section 4) ----

# Written from the table in DESIGN.md section 4, independently of eval_kobest.py
EXPECTED = {
    "boolq": (lambda d: f"{d['paragraph']} 질문: {d['question']} 답변: ", lambda d: ["아니오", "예"]),
    "copa": (lambda d: d["premise"] + {"원인": "  왜냐하면", "결과": "  그래서"}[d["question"].strip()],
             lambda d: [d["alternative_1"], d["alternative_2"]]),
    "hellaswag": (lambda d: "문장: " + d["context"],
                  lambda d: [d["ending_1"], d["ending_2"], d["ending_3"], d["ending_4"]]),
    "sentineg": (lambda d: f"문장: {d['sentence']} 긍부정:", lambda d: ["부정", "긍정"]),
    "wic": (lambda d: f"문장1: {d['context_1']} 문장2: {d['context_2']} 두 문장에서 {d['word']}가 같은 뜻으로 쓰였나?",
            lambda d: ["아니오", "예"]),
}


@pytest.mark.parametrize("task", ek.TASKS)
def test_every_sample_prompt_and_choice_follow_the_design_table(task):
    docs, _ = ek.load_split(SAMPLE, task, "test")
    assert len(docs) == 40
    text, choices = EXPECTED[task]
    for d, ctx in zip(docs, ek.build_contexts(task, docs)):
        assert ctx == text(d)
        assert ek.TASKS[task].choices(d) == choices(d)
        assert ek.TASKS[task].gold(d) == d["label"]


def test_spot_checks_written_out_by_hand():
    first = {t: ek.load_split(SAMPLE, t, "test")[0][0] for t in ek.TASKS}
    assert ek.TASKS["boolq"].text(first["boolq"]) == (
        "콜라독립 815(815 Cola)는 코카콜라를 대한민국에서 라이선스로 만들어 오던 범양식품이 1998년 4월 1일에 "
        "출시한 탄산음료다. 질문: 콜라독립 815는 코카콜라에서 만들었나요? 답변: ")
    assert ek.TASKS["copa"].text(first["copa"]) == "새로 산 바지의 허리가 컸다.  그래서"   # two spaces
    assert ek.TASKS["copa"].choices(first["copa"]) == ["바지의 밑단을 잘랐다.", "벨트를 바지에 끼워 사이즈를 조절했다."]
    assert ek.TASKS["copa"].text({**first["copa"], "question": "원인 "}) == "새로 산 바지의 허리가 컸다.  왜냐하면"
    assert ek.TASKS["hellaswag"].text(first["hellaswag"]).startswith("문장: 여자는 새벽까지 잔업을 마치고")
    assert ek.TASKS["hellaswag"].gold(first["hellaswag"]) == 3
    assert ek.TASKS["sentineg"].text(first["sentineg"]) == "문장: 택배사 정말 마음에 듬 긍부정:"
    assert ek.TASKS["wic"].text(first["wic"]) == (
        "문장1: 토양에 [양분]이 풍부하여 나무가 잘 자란다. 문장2: 태아는 모체로부터 [양분]과 산소를 공급받게 된다. "
        "두 문장에서 양분가 같은 뜻으로 쓰였나?")


def test_copa_gold_is_the_first_equal_alternative_as_in_the_harness():
    # lm-eval's COPA target is the answer text, found back with choices.index()
    doc = {"premise": "p", "question": "결과", "alternative_1": "같다", "alternative_2": "같다", "label": 1}
    assert ek.TASKS["copa"].gold(doc) == 0


def test_token_split_moves_boolqs_trailing_space_and_prepends_bos(tok):
    ctx, cont = ek.encode_pair(tok, "질문: 맞나요? 답변: ", " 예")
    # the context loses its trailing space and is encoded alone, with BOS
    assert ctx == [tok.bos_id] + tok.encode("질문: 맞나요? 답변:")
    # the continuation is "  예" (moved space + delimiter): the tokens of the whole past the context
    whole = [tok.bos_id] + tok.encode("질문: 맞나요? 답변:  예")
    assert whole[:len(ctx)] == ctx and cont == whole[len(ctx):]
    assert "".join(tok.sp.id_to_piece(i) for i in cont).replace("\u2581", " ") == "  예"


def test_token_split_for_copa_and_a_boundary_that_merges(tok):
    ctx, cont = ek.encode_pair(tok, "새로 산 바지의 허리가 컸다.  그래서", " 벨트를 바지에 끼웠다.")
    assert ctx == [tok.bos_id] + tok.encode("새로 산 바지의 허리가 컸다.  그래서")
    assert tok.decode(ctx[1:] + cont) == "새로 산 바지의 허리가 컸다.  그래서 벨트를 바지에 끼웠다."
    # when context and continuation merge into one token, the split is by position in the
    # whole (the harness's rule), not by encoding the continuation alone
    whole = [tok.bos_id] + tok.encode("대한민국")
    ctx, cont = ek.encode_pair(tok, "대한", "민국")
    assert cont == whole[len(ctx):]


def test_no_bos_when_the_tokenizer_has_none(tok):
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2
    proto = sp_pb2.ModelProto()
    proto.CopyFrom(tok.proto)
    proto.trainer_spec.bos_piece = "<no-bos>"     # the same pieces, none of them BOS (as with bos_id=-1)
    no_bos = Tokenizer(proto)
    assert no_bos.bos_id is None and no_bos.vocab_size == tok.vocab_size
    ctx, cont = ek.encode_pair(no_bos, "문장: 좋아요 긍부정:", " 긍정")
    assert ctx == tok.encode("문장: 좋아요 긍부정:")
    assert cont == tok.encode("문장: 좋아요 긍부정: 긍정")[len(ctx):]


# ---- few-shot (lm-eval's ContextSampler, seed 1234) ----

# Read off lm-eval 0.4.13 (local copies of its kobest tasks over assets/kobest_sample,
# num_fewshot=2, fewshot seed 1234): the train rows shown before test docs 0..3, in order.
LM_EVAL_TWO_SHOT_ROWS = [[28, 7], [0, 5], [37, 2], [5, 6]]


@pytest.mark.parametrize("task", ek.TASKS)
def test_two_shot_prompts_use_the_harness_rows_and_format(task):
    docs, _ = ek.load_split(SAMPLE, task, "test")
    train, _ = ek.load_split(SAMPLE, task, "train")
    ctxs = ek.build_contexts(task, docs[:4], train, num_fewshot=2)
    text, choices = EXPECTED[task]
    for ctx, rows, d in zip(ctxs, LM_EVAL_TWO_SHOT_ROWS, docs):
        shots = "".join(text(train[r]) + " " + choices(train[r])[train[r]["label"]] + "\n\n" for r in rows)
        assert ctx == shots + text(d)


def test_copa_two_shot_prompt_exactly_as_lm_eval_printed_it():
    docs, _ = ek.load_split(SAMPLE, "copa", "test")
    train, _ = ek.load_split(SAMPLE, "copa", "train")
    assert ek.build_contexts("copa", docs[:1], train, 2)[0] == (
        "초밥에서 매운 맛이 심하게 났다.  왜냐하면 초밥에 와사비가 많이 들어갔다.\n\n"
        "여자가 검은 선글라스를 썼다  왜냐하면 바깥에 해가 내리쬐었다.\n\n"
        "새로 산 바지의 허리가 컸다.  그래서")


def test_fewshot_draws_depend_on_seed_and_too_few_rows_is_an_error():
    docs, _ = ek.load_split(SAMPLE, "sentineg", "test")
    train, _ = ek.load_split(SAMPLE, "sentineg", "train")
    assert ek.build_contexts("sentineg", docs, train, 3) != ek.build_contexts("sentineg", docs, train, 3, seed=1)
    assert ek.build_contexts("sentineg", docs, train, 3) == ek.build_contexts("sentineg", docs, train, 3)
    with pytest.raises(ValueError, match="5 shots"):
        ek.build_contexts("sentineg", docs, train[:4], 5)


# ---- scores: the packed scorer equals one forward pass per choice ----

def test_packed_scores_equal_the_reference_in_float64(tok, model):
    exs = examples(tok)
    m64 = tiny_llama(tok.vocab_size).double()
    ref = ek.score_reference(m64, exs)
    fast, greedy = ek.score_packed(m64, exs, batch_size=16)
    assert max(abs(a - b) for ra, rb in zip(fast, ref) for a, b in zip(ra, rb)) < 1e-9
    assert all(isinstance(g, bool) for row in greedy for g in row)
    assert min(min(r) for r in ref) < -20  # real sums over several tokens, not trivially zero


def test_packed_scores_equal_the_reference_in_float32(tok, model):
    exs = examples(tok)
    fast, _ = ek.score_packed(model, exs, batch_size=16)
    assert max_rel_diff(fast, ek.score_reference(model, exs)) < 1e-5


def test_a_wrong_position_or_mask_would_be_caught(tok, model):
    # the reference is sensitive to what packing must preserve: shifting the continuation's
    # position by one (as a packing bug would) moves the scores far beyond the tolerance
    ex = examples(tok, ["hellaswag"], n=1)[0]
    shifted = ek.Example(ex.task, 0, ex.context, ex.choices, ex.gold, [tok.bos_id] + ex.ctx_ids, ex.cont_ids)
    assert max_rel_diff(ek.score_reference(model, [shifted]), ek.score_reference(model, [ex])) > 1e-3


def test_left_truncated_inputs_and_tied_heads_match_the_reference(tok):
    # max_position_embeddings 40 < most prompts: lm-eval keeps the last 41 tokens of ctx + cont
    m = tiny_llama(tok.vocab_size, max_pos=40, tie=True, seed=1).double()
    exs = examples(tok, ["boolq", "hellaswag", "copa"], n=6)
    assert any(len(e.ctx_ids) + len(c) > 41 for e in exs for c in e.cont_ids)
    fast, _ = ek.score_packed(m, exs, batch_size=4)
    assert max(abs(a - b) for ra, rb in zip(fast, ek.score_reference(m, exs)) for a, b in zip(ra, rb)) < 1e-9


def test_batch_size_and_order_do_not_change_any_score(tok):
    m64 = tiny_llama(tok.vocab_size, seed=2).double()
    exs = examples(tok, n=6)
    base, _ = ek.score_packed(m64, exs, batch_size=1000)
    perm = list(range(len(exs)))
    random.Random(0).shuffle(perm)
    for bs in (1, 3, 7):
        got, _ = ek.score_packed(m64, [exs[i] for i in perm], batch_size=bs)
        back = [None] * len(exs)
        for k, i in enumerate(perm):
            back[i] = got[k]
        assert max(abs(a - b) for ra, rb in zip(back, base) for a, b in zip(ra, rb)) < 1e-9



def test_a_too_long_input_keeps_its_last_max_len_plus_one_tokens_then_drops_the_last():
    """lm-eval: (ctx + cont)[-(max_len + 1):][:-1], the continuation scored on the last len(cont)."""
    ctx, cont = list(range(1, 11)), [11, 12]
    assert ek.lm_input(ctx, cont, 5) == [7, 8, 9, 10, 11]
    assert ek.lm_input(ctx, cont, 100) == list(range(1, 12))       # short enough: all but the last

# ---- metrics ----

def test_metrics_worked_out_by_hand():
    exs = [ek.Example("boolq", i, "", ["아니오", "예"], g) for i, g in enumerate([0, 1, 1, 0, 1])]
    lls = [[-1, -2], [-3, -1], [-1, -1], [-0.5, -4], [-2, -3]]     # preds 0, 1, 0 (tie: first), 0, 0
    m = ek.task_metrics("boolq", exs, lls)
    assert m["acc"] == pytest.approx(3 / 5)
    # label 0: tp 2, fp 2, fn 0 -> F1 4/6; label 1: tp 1, fp 0, fn 2 -> F1 2/4; macro = 7/12
    assert m["f1"] == pytest.approx(7 / 12)
    assert "acc_norm" not in m and m["n"] == 5

    # HellaSwag: acc_norm divides by the choice's length in characters (no leading space)
    # not in tokens: each choice here is one token, so dividing by token counts would give
    # argmax(lls) again (pred 1 and 2, both wrong: acc_norm 0)
    one_token = [[7], [8], [9], [10]]
    hs = [ek.Example("hellaswag", 0, "", ["가나다라", "가", "가나", "가나다"], 0, [1], one_token),
          ek.Example("hellaswag", 1, "", ["가나", "가나다라마바", "가", "가나다"], 1, [1], one_token)]
    lls = [[-8.0, -3.0, -7.0, -9.0],     # acc: pred 1 (wrong); norm: -2, -3, -3.5, -3 -> 0 (right)
           [-4.0, -9.0, -1.0, -6.0]]     # acc: pred 2 (wrong); norm: -2, -1.5, -1, -2 -> 2 (wrong)
    m = ek.task_metrics("hellaswag", hs, lls)
    assert m["acc"] == 0.0 and m["acc_norm"] == 0.5
    # golds {0, 1}, preds {1, 2}: labels 0, 1, 2 all score F1 0
    assert m["f1"] == 0.0


def test_macro_f1_counts_labels_seen_in_golds_or_preds():
    # golds 0,0,1,1; preds 0,1,1,2: F1(0) = 2/(2+0+1), F1(1) = 2/(2+1+1), F1(2) = 0 -> 7/18
    assert ek.macro_f1([0, 0, 1, 1], [0, 1, 1, 2]) == pytest.approx(7 / 18)
    assert ek.macro_f1([1, 1], [1, 1]) == 1.0


def test_group_score_is_weighted_by_test_size():
    per = {"boolq": {"acc": 0.5, "f1": 0.4, "n": 2}, "copa": {"acc": 1.0, "f1": 1.0, "n": 6},
           "hellaswag": {"acc": 0.25, "acc_norm": 0.75, "f1": 0.2, "n": 4}}
    g = ek.group_metrics(per)
    assert g["acc"] == pytest.approx((0.5 * 2 + 6 + 0.25 * 4) / 12)
    assert g["f1"] == pytest.approx((0.4 * 2 + 6 + 0.2 * 4) / 12)
    assert g["acc_norm"] == 0.75 and g["n"] == 12        # only HellaSwag reports acc_norm


def test_evaluate_metrics_equal_a_hand_computation_from_reference_scores(tok, model):
    out = ek.evaluate(model, tok, ek.Settings(tasks=["boolq", "hellaswag"], data=SAMPLE, limit=12, batch_size=5,
                                             log_samples=True))
    for task in ("boolq", "hellaswag"):
        exs = examples(tok, [task], n=12)
        ref = ek.score_reference(model, exs)
        # metrics are compared exactly only where no choice is within the tolerance of the best
        for sc in ref:
            top = sorted(sc, reverse=True)
            assert top[0] - top[1] > 1e-4
        golds = [e.gold for e in exs]
        preds = [max(range(len(s)), key=lambda j: (s[j], -j)) for s in ref]
        acc = sum(p == g for p, g in zip(preds, golds)) / len(golds)
        assert out["results"][task]["acc"] == pytest.approx(acc)
        assert [s["pred"] for s in out["samples"][task]] == preds
        assert max_rel_diff([s["lls"] for s in out["samples"][task]], ref) < 1e-5
    norm = [max(range(4), key=lambda j: s[j] / len(e.choices[j])) for s, e in
            zip(ek.score_reference(model, examples(tok, ["hellaswag"], n=12)), examples(tok, ["hellaswag"], n=12))]
    golds = [e.gold for e in examples(tok, ["hellaswag"], n=12)]
    assert out["results"]["hellaswag"]["acc_norm"] == pytest.approx(sum(p == g for p, g in zip(norm, golds)) / 12)
    n = {t: out["results"][t]["n"] for t in out["results"]}
    assert out["groups"]["kobest"]["acc"] == pytest.approx(
        sum(out["results"][t]["acc"] * n[t] for t in n) / sum(n.values()))


# ---- data errors ----

def bad_data(tmp_path, task, lines):
    (tmp_path / task).mkdir(parents=True, exist_ok=True)
    (tmp_path / task / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_malformed_line_names_file_and_line(tmp_path):
    good = json.dumps({"sentence": "좋아요", "label": 1}, ensure_ascii=False)
    d = bad_data(tmp_path, "sentineg", [good, good, '{"sentence": "나빠요", "label": 0'])
    with pytest.raises(ValueError, match=r"sentineg/test\.jsonl:3: malformed JSON"):
        ek.load_split(d, "sentineg", "test")


@pytest.mark.parametrize("row, msg", [
    ({"sentence": "좋아요"}, "missing field 'label'"),
    ({"sentence": 3, "label": 1}, "field 'sentence' should be str"),
    ({"sentence": "좋아요", "label": 2}, "label 2 out of range"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_bad_rows_name_the_line_and_the_problem(tmp_path, row, msg):
    good = json.dumps({"sentence": "좋아요", "label": 1}, ensure_ascii=False)
    d = bad_data(tmp_path, "sentineg", [good, json.dumps(row, ensure_ascii=False)])
    with pytest.raises(ValueError, match=r"test\.jsonl:2: " + msg):
        ek.load_split(d, "sentineg", "test")


def test_copa_question_and_missing_split_are_clear_errors(tmp_path):
    row = {"premise": "p", "question": "이유", "alternative_1": "a", "alternative_2": "b", "label": 0}
    d = bad_data(tmp_path, "copa", [json.dumps(row, ensure_ascii=False)])
    with pytest.raises(ValueError, match="원인 or 결과"):
        ek.load_split(d, "copa", "test")
    with pytest.raises(FileNotFoundError, match=r"copa/validation\.jsonl"):
        ek.load_split(d, "copa", "validation")


def test_hf_data_goes_through_datasets_load_dataset(monkeypatch, tok, model):
    import types
    rows = [dict(r) for r in ek.load_split(SAMPLE, "sentineg", "test")[0][:5]]
    calls = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, task, split: calls.append((name, task, split)) or [dict(r) for r in rows]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    docs, sha = ek.load_split_hf("sentineg", "test")
    assert docs == rows and calls == [("skt/kobest_v1", "sentineg", "test")] and len(sha) == 64
    out = ek.evaluate(model, tok, ek.Settings(tasks=["sentineg"], data="hf"))
    assert out["results"]["sentineg"] == ek.evaluate(
        model, tok, ek.Settings(tasks=["sentineg"], data=SAMPLE, limit=5))["results"]["sentineg"]
    rows[3] = {"sentence": "좋아요"}
    with pytest.raises(ValueError, match=r"skt/kobest_v1/sentineg/test row 3: missing field 'label'"):
        ek.load_split_hf("sentineg", "test")


def test_hf_data_without_the_datasets_library_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)   # import datasets -> ImportError
    with pytest.raises(ValueError, match="pip install datasets"):
        ek.load_split_hf("copa", "test")


# ---- the command line ----

@pytest.fixture(scope="module")
def model_dir(tok, model, tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_model") / "m"
    model.save_pretrained(d)
    (d / "tokenizer.model").write_bytes(tok.model_bytes)
    return d


def test_cli_prints_a_table_and_writes_json_and_samples(model_dir, model, tok, tmp_path, capsys):
    out_path = tmp_path / "res" / "kobest.json"
    ek.main(["--model", str(model_dir), "--tasks", "copa,sentineg", "--limit", "8", "--batch-size", "3",
             "--output", str(out_path), "--log-samples"])
    printed = capsys.readouterr().out
    assert "copa" in printed and "sentineg" in printed and "kobest (avg)" in printed
    res = json.loads(out_path.read_text(encoding="utf-8"))
    assert set(res["results"]) == {"copa", "sentineg"} and res["results"]["copa"]["n"] == 8
    assert res["args"]["limit"] == 8 and res["args"]["dtype"] == "float32"
    assert res["model"] == str(model_dir.resolve())
    files = {f"{t}/test": hashlib.sha256((SAMPLE / t / "test.jsonl").read_bytes()).hexdigest()
             for t in ("copa", "sentineg")}
    assert res["data"]["files"] == files
    # the same numbers as evaluate() on the in-memory model
    mem = ek.evaluate(model, tok, ek.Settings(tasks=["copa", "sentineg"], data=SAMPLE, limit=8))
    for t in ("copa", "sentineg"):
        assert res["results"][t] == pytest.approx(mem["results"][t])
    assert res["groups"]["kobest"] == pytest.approx(mem["groups"]["kobest"])
    rows = [json.loads(x) for x in out_path.with_suffix(".samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 16 and {r["task"] for r in rows} == {"copa", "sentineg"}
    assert all(len(r["lls"]) == 2 and r["pred"] in (0, 1) for r in rows)
    assert not list(out_path.parent.glob("*.tmp"))


def test_the_default_dtype_is_the_checkpoints_own_as_in_lm_eval(model, tok, tmp_path):
    """lm-eval's HF backend loads dtype="auto": config.json's torch_dtype, else the weights' own
    dtype. So do we, on every device, and the output says which dtype scored."""
    import copy
    import shutil
    half = tmp_path / "half"
    copy.deepcopy(model).half().save_pretrained(half)       # the shared fixture stays float32
    (half / "tokenizer.model").write_bytes(tok.model_bytes)
    assert json.loads((half / "config.json").read_text())["torch_dtype"] == "float16"
    res = ek.main(["--model", str(half), "--tasks", "copa", "--limit", "4", "--output", str(tmp_path / "h.json")])
    assert res["args"]["dtype"] == "float16"
    assert json.loads((tmp_path / "h.json").read_text())["args"]["dtype"] == "float16"
    shutil.copytree(half, tmp_path / "bf16")            # no torch_dtype in config.json: the weights decide
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    del cfg["torch_dtype"]
    (tmp_path / "bf16" / "config.json").write_text(json.dumps(cfg))
    assert ek.checkpoint_dtype(tmp_path / "bf16") == "bfloat16"
    # both names: transformers 5's "dtype" wins; neither: the first floating weight by name
    (tmp_path / "bf16" / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "float16", "dtype": "float32"}))
    assert ek.checkpoint_dtype(tmp_path / "bf16") == "float32"
    (tmp_path / "bf16" / "config.json").write_text(json.dumps(cfg))
    from support.safetensors_io import write_safetensors
    write_safetensors(tmp_path / "bf16" / "model.safetensors",
                      {"z": torch.zeros(2, dtype=torch.bfloat16), "a": torch.zeros(2), "b": torch.zeros(2).half()})
    assert ek.checkpoint_dtype(tmp_path / "bf16") == "float32"          # "a" (float32) comes first by name
    assert ek.main(["--model", str(half), "--tasks", "copa", "--limit", "4", "--dtype", "float32",
                    "--output", ""])["args"]["dtype"] == "float32"


def test_cli_rejects_unknown_tasks_and_bad_data(model_dir, tmp_path, capsys):
    def last_error_line(argv):        # as `python eval_kobest.py ...` ends: exit code 1, one line
        with pytest.raises(SystemExit) as e:
            cli.run(ek.main, argv)
        assert e.value.code == 1
        return capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown task(s) mmlu" in last_error_line(["--model", str(model_dir), "--tasks", "copa,mmlu"])
    with pytest.raises(ValueError, match=r"unknown task\(s\) mmlu"):      # the Python API checks the same
        ek.evaluate(None, None, ek.Settings(tasks=["copa", "mmlu"]))
    d = bad_data(tmp_path / "data", "copa", ["{oops"])
    line = last_error_line(["--model", str(model_dir), "--tasks", "copa", "--data", str(d), "--output", ""])
    assert line.startswith("error: ") and re.search(r"copa/test\.jsonl:1: malformed JSON", line)


# ---- the full sets, when ../shared/kobest is there ----

@needs_shared_kobest
def test_full_kobest_sets_load_and_build():
    counts = {"boolq": 1404, "copa": 1000, "hellaswag": 500, "sentineg": 397, "wic": 1260}
    for task, n in counts.items():
        docs, sha = ek.load_split(SHARED_KOBEST, task, "test")
        assert len(docs) == n and len(sha) == 64
        ctxs = ek.build_contexts(task, docs, ek.load_split(SHARED_KOBEST, task, "train")[0], 1)
        assert all(c.endswith(EXPECTED[task][0](d)) for c, d in zip(ctxs, docs))

"""recipe.py: the recipe file, batch arithmetic, learning-rate schedules, parameter groups.

    python -m pytest -q tests/test_recipe.py
"""
import json
from types import SimpleNamespace

import pytest

import recipe
from model import Llama, LlamaConfig
from recipe import default_recipe, load_recipe, lr_at, resolve, select_params


def flags(**kw):
    return SimpleNamespace(**{"batch_size": 0, "seq_len": 0, "grad_accum": 0, "steps_per_stage": 0, **kw})


def test_default_recipe_is_redwhales_four_stages_and_round_trips_through_json(tmp_path, capsys):
    r = default_recipe()
    assert [s.train for s in r.stages] == [["embed", "head"], ["odd_layers"], ["even_layers"],
                                           ["lora", "embed", "head"]]
    assert r.stages[3].lora == {"r": 32, "alpha": 32.0, "dropout": 0.1, "targets": [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    recipe.main([])
    (tmp_path / "r.json").write_text(capsys.readouterr().out)
    assert load_recipe(str(tmp_path / "r.json")) == r


def test_toml_recipe_reads_like_json(tmp_path):
    (tmp_path / "r.toml").write_text('seq_len = 128\n[[stages]]\nname = "a"\ntrain = ["embed"]\nsteps = 5\n'
                                     '[[stages]]\ntrain = "lora"\nsteps = 3\nlora = {r = 4}\n')
    r = load_recipe(str(tmp_path / "r.toml"))
    assert r.seq_len == 128 and [s.name for s in r.stages] == ["a", "stage2"]
    assert r.stages[1].train == ["lora"] and r.stages[1].lora["r"] == 4 and r.stages[1].lora["alpha"] == 32.0


@pytest.mark.parametrize("bad, want", [
    ({"stages": []}, "needs a non-empty list 'stages'"),
    ({"stages": [{"train": ["embed"], "steps": 1}], "lr": 1}, "unknown key 'lr'"),
    ({"stages": [{"train": ["embed"], "steps": 1, "learning_rate": 1}]}, "stage 1: unknown key 'learning_rate'"),
    ({"stages": [{"train": ["embed"]}]}, "stage 1: give 'tokens' or 'steps'"),
    ({"stages": [{"train": ["embed"], "steps": 1, "schedule": "linear"}]}, "stage 1: schedule 'linear' is not"),
    ({"stages": [{"train": ["lora"], "steps": 1, "lora": {"rank": 8}}]}, "stage 1: unknown lora keys \\['rank'\\]"),
])
def test_bad_recipes_name_the_file_and_the_key(tmp_path, bad, want):
    (tmp_path / "r.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="r.json: " + want):
        load_recipe(str(tmp_path / "r.json"))


def test_batch_arithmetic_keeps_the_global_batch_whatever_the_world_size():
    r = default_recipe()            # 2^20 tokens a step, 2.5B tokens a stage
    one = resolve(r, flags(batch_size=4, seq_len=2048), world=1)
    eight = resolve(r, flags(batch_size=4, seq_len=2048), world=8)
    assert (one[0]["G"], eight[0]["G"]) == (128, 16)
    assert one[0]["batch_tokens"] == eight[0]["batch_tokens"] == 1 << 20
    assert one[0]["steps"] == eight[0]["steps"] == 2385          # ceil(2.5e9 / 2^20)
    assert one[0]["warmup"] == 24                                # 1% of the steps
    smoke = resolve(r, flags(batch_size=2, seq_len=256, steps_per_stage=20), world=2)
    assert smoke[0] == {"name": "embed", "B": 2, "T": 256, "G": 1, "steps": 20, "warmup": 0, "batch_tokens": 1024}
    with pytest.raises(ValueError, match="batch_tokens 1048576 is not a multiple of batch-size 3"):
        resolve(r, flags(batch_size=3, seq_len=2048), world=1)


def test_learning_rate_schedules():
    cos, wsd = default_recipe().stages[0], default_recipe().stages[0]
    cos.lr, cos.warmup = 1.0, 10
    wsd.__dict__.update(lr=1.0, warmup=10, schedule="wsd", decay_frac=0.2)
    p = {"steps": 100, "warmup": 10}
    c = [lr_at(cos, p, i) for i in range(100)]
    w = [lr_at(wsd, p, i) for i in range(100)]
    assert c[0] == pytest.approx(0.1) and c[9] == pytest.approx(1.0) and c[99] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(c[9:], c[10:]))                 # cosine: never rises after warmup
    assert w[10:80] == [1.0] * 70 and w[99] == pytest.approx(0.1)       # stable, then linear decay
    assert all(a > b for a, b in zip(w[79:], w[80:]))



def test_schedules_written_out_for_a_short_stage():
    """Every value by hand: lr 1, floor 0.2 (min_lr_ratio, not its default), 2 warmup steps."""
    st = default_recipe().stages[0]
    st.__dict__.update(lr=1.0, min_lr_ratio=0.2)
    # cosine over 6 steps: t = (step - 2) / 3 after the warmup, 0.2 + 0.4 (1 + cos(pi t))
    assert [lr_at(st, {"steps": 6, "warmup": 2}, i) for i in range(6)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.8, 0.4, 0.2])
    # warmup-stable-decay over 14 steps, decay_frac 0.25: round(3.5) = 4 decay steps, linear to 0.2
    st.__dict__.update(schedule="wsd", decay_frac=0.25)
    assert [lr_at(st, {"steps": 14, "warmup": 2}, i) for i in range(14)] == pytest.approx(
        [0.5, 1.0] + [1.0] * 8 + [0.8, 0.6, 0.4, 0.2])
    # no warmup: the first step is already at the peak
    assert lr_at(st, {"steps": 14, "warmup": 0}, 0) == 1.0


@pytest.mark.parametrize("warmup, steps", [(0.25, 25), (0.999, 100), (1, 1), (1.0, 1), (7, 7), (0, 0)])
def test_warmup_below_one_is_a_fraction_of_the_steps_and_from_one_a_step_count(warmup, steps):
    r = default_recipe()
    r.stages = r.stages[:1]
    r.stages[0].__dict__.update(steps=100, warmup=warmup)
    assert resolve(r, flags(batch_size=4, seq_len=2048), world=1)[0]["warmup"] == steps

def test_parameter_groups():
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    m = Llama(cfg)
    odd, even = select_params(m, ["odd_layers"]), select_params(m, ["even_layers"])
    assert not odd & even and odd | even == select_params(m, ["layers"])
    assert {n.split(".")[2] for n in odd} == {"1", "3"} and {n.split(".")[2] for n in even} == {"0", "2", "4"}
    assert len(select_params(m, ["layers.4"])) == 9                     # 7 projections + 2 norms
    assert select_params(m, ["all"]) == {n for n, _ in m.named_parameters()}
    with pytest.raises(ValueError, match="group 'layers.5', but the model has 5 layers"):
        select_params(m, ["layers.5"])
    tied = Llama(LlamaConfig(**{**cfg.__dict__, "tie_word_embeddings": True}))
    assert select_params(tied, ["head"]) == {"model.embed_tokens.weight"}
    with pytest.raises(ValueError, match="group 'lora' selects no parameters"):
        select_params(m, ["lora"])

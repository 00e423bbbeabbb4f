"""tools/report.py: the demo report's tables say what the log and the scores say.

    python -m pytest -q tests/test_report.py
"""
import pytest

from support import cli
from tools import report

LOG = [{"stage": 1, "stage_name": "embed", "step": 1, "loss": 9.0, "tokens": 100},
       {"stage": 1, "stage_name": "embed", "step": 2, "loss": 8.0, "tokens": 200, "eval_loss": 8.5},
       {"stage": 1, "stage_name": "embed", "step": 3, "loss": 7.5, "tokens": 300},
       {"stage": 2, "stage_name": "odd_layers", "step": 1, "loss": 7.0, "tokens": 400, "eval_loss": 7.2},
       {"stage": 2, "stage_name": "odd_layers", "step": 2, "loss": 6.0, "tokens": 500, "eval_loss": 6.1}]


def test_stage_rows_take_the_first_and_last_loss_and_the_last_eval_of_each_stage():
    assert report.stage_rows(LOG) == {
        "1 embed": {"first_loss": 9.0, "last_loss": 7.5, "steps": 3, "tokens": 300, "eval_loss": 8.5},
        "2 odd_layers": {"first_loss": 7.0, "last_loss": 6.0, "steps": 2, "tokens": 500, "eval_loss": 6.1}}


def test_kobest_table_rows_before_and_after():
    before = {"results": {"boolq": {"acc": 0.5, "f1": 0.4, "n": 10},
                          "hellaswag": {"acc": 0.25, "acc_norm": 0.3, "f1": 0.2, "n": 4}},
              "groups": {"kobest": {"acc": 0.4286, "f1": 0.3429, "n": 14}}}
    after = {"results": {"boolq": {"acc": 0.6, "f1": 0.55, "n": 10},
                         "hellaswag": {"acc": 0.5, "acc_norm": 0.75, "f1": 0.45, "n": 4}},
             "groups": {"kobest": {"acc": 0.5714, "f1": 0.5214, "n": 14}}}
    lines = report.kobest_table(before, after).splitlines()
    assert lines[2:] == ["| boolq | 10 | 0.500 | 0.600 | 0.400 | 0.550 |",
                         "| hellaswag (acc_norm 0.300 -> 0.750) | 4 | 0.250 | 0.500 | 0.200 | 0.450 |",
                         "| **average (test-size weighted)** | 14 | 0.429 | 0.571 | 0.343 | 0.521 |"]


def test_a_missing_or_broken_report_json_is_one_line(tmp_path, capsys):
    for text, msg in ((None, "report.json not found (give a demo output folder)"), ("{oops", "not valid JSON")):
        if text is not None:
            (tmp_path / "report.json").write_text(text)
        with pytest.raises(SystemExit) as e:
            cli.run(report.main, [str(tmp_path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 1 and len(err) == 1 and err[0].startswith("error: ") and msg in err[0]

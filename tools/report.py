"""The demo's report: report.json (every number), report.md (the same, for people), loss.png
and bpc.png (bits per character stage by stage).

    python tools/report.py runs/demo      # re-render report.md and loss.png from report.json

matplotlib is optional: without it the report says so and keeps the numbers.
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):     # run as a file (python tools/NAME.py): import from the project folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import eval_kobest  # noqa: E402
from support import cli, outputs  # noqa: E402


def stage_rows(log):
    """First and last training loss, last eval loss and tokens of each stage, in order."""
    out = {}
    for r in log:
        name = f"{r['stage']} {r['stage_name']}".strip()
        s = out.setdefault(name, {"first_loss": r["loss"], "steps": 0})
        s["last_loss"], s["steps"], s["tokens"] = r["loss"], s["steps"] + 1, r["tokens"]
        if r.get("eval_loss") is not None:
            s["eval_loss"] = r["eval_loss"]
    return out


def plot(run, rep):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    log = rep["train"]["log"]
    curves = [("base pretraining", rep["base"].get("log", []))]
    curves += [(f"stage {s}", [r for r in log if r["stage"] == s]) for s in sorted({r["stage"] for r in log})]
    x = 0
    for name, rows in curves:
        if rows:
            ax.plot(range(x, x + len(rows)), [r["loss"] for r in rows], label=name)
            ev = [(x + i, r["eval_loss"]) for i, r in enumerate(rows) if r.get("eval_loss") is not None]
            if ev:
                ax.plot(*zip(*ev), "k.", markersize=5)
            x += len(rows)
    ax.set(xlabel="optimizer step (all stages)", ylabel="loss (dots: held-out)",
           title="RedWhale demo: base pretraining, then the four Korean stages")
    bpc_fig, ax2 = plt.subplots(figsize=(8, 3.5))     # bpc.png: bits per character, model by model
    bpc = rep["bits_per_char"]
    for lang in ("korean", "english"):
        ax2.plot(range(len(bpc)), [r[lang] for r in bpc.values()], "o-", label=lang)
    ax2.set_xticks(range(len(bpc)), list(bpc), rotation=20, fontsize=8)
    ax2.set_ylabel("bits per character")
    for f, a, name in ((fig, ax, "loss.png"), (bpc_fig, ax2, "bpc.png")):
        a.legend(fontsize=8)
        f.tight_layout()
        f.savefig(Path(run) / name, dpi=100)
        plt.close(f)
    return Path(run) / "loss.png"


def kobest_table(before, after):
    """A row per task of eval_kobest.TASKS scored before and after, then the group's average."""
    lines = ["| task | n | acc before | acc after | f1 before | f1 after |", "|---|---:|---:|---:|---:|---:|"]
    for t in [*eval_kobest.TASKS, "kobest"]:
        b, a = ((r["groups"] if t == "kobest" else r["results"]).get(t) for r in (before, after))
        if b and a:
            name = "**average (test-size weighted)**" if t == "kobest" else t
            extra = f" (acc_norm {b['acc_norm']:.3f} -> {a['acc_norm']:.3f})" if "acc_norm" in b else ""
            lines.append(f"| {name}{extra} | {a.get('n', '')} | {b['acc']:.3f} | {a['acc']:.3f} | "
                         f"{b['f1']:.3f} | {a['f1']:.3f} |")
    return "\n".join(lines)


def markdown(rep, png):
    b, c, tk = rep["base"], rep["clean"], rep["tokenizer"]
    L = ["# RedWhale demo report", ""]
    L += ["## 1. Base model", "", f"- model: `{b['model']}`" + (" (given)" if b["given"] else
          f" (tiny Llama pretrained here: loss {b['loss_first']:.3f} -> {b['loss_last']:.3f})"), ""]
    L += ["## 2. Corpus (data.py)", "", f"- documents in: {c['docs_in']}, kept: {c['docs_out']}",
          "- dropped by reason: " + (", ".join(f"{k} {v}" for k, v in c["dropped"].items() if v) or "none"), ""]
    L += ["## 3. Tokenizer (tokenizer.py)", "",
          f"- base {tk['base_size']} pieces, Korean {tk['korean_size']}, overlap {tk['overlap']}, "
          f"added {tk['added']}, final {tk['final_size']}",
          "- dropped by rule: " + ", ".join(f"{k} {v}" for k, v in tk["dropped"].items()),
          "- token ratio (merged / base tokens, lower is better): " +
          ", ".join(f"{k} {v['ratio']:.3f}" for k, v in tk["ratio"].items()), ""]
    L += ["## 4. Expansion and training (expand.py, train.py)", "",
          f"- held-out Korean loss right after expansion: {rep['loss_after_expansion']:.3f}",
          f"- held-out Korean loss after the four stages: {rep['loss_after_training']:.3f}", "",
          "| stage | steps | first loss | last loss | eval loss |", "|---|---:|---:|---:|---:|"]
    for name, s in stage_rows(rep["train"]["log"]).items():
        ev = f"{s['eval_loss']:.3f}" if "eval_loss" in s else "-"
        L.append(f"| {name} | {s['steps']} | {s['first_loss']:.3f} | {s['last_loss']:.3f} | {ev} |")
    L += ["", "![loss curves](loss.png)" if png else "(matplotlib is not installed: no plot; "
          "`pip install matplotlib` and rerun `python tools/report.py RUN_DIR`)", ""]
    L += ["### Bits per character on held-out text (tools/score.py; the same characters for every model)", "",
          "| model | Korean bits/char | English bits/char |", "|---|---:|---:|"]
    L += [f"| {name} | {r['korean']:.3f} | {r['english']:.3f} |" for name, r in rep["bits_per_char"].items()]
    L += ["", "![bits per character](bpc.png)" if png else "", ""]
    L += ["## 5. KoBEST (shipped sample, lm-eval rules; a tiny model scores near chance)", "",
          kobest_table(rep["kobest_before"], rep["kobest_after"]), ""]
    L += ["## 6. Generations (greedy)", ""]
    for p in rep["generations_before"]:
        L += [f"- before: `{rep['generations_before'][p]}`", f"- after: `{rep['generations_after'][p]}`"]
    L += ["", "## Timing (seconds)", "", ", ".join(f"{k} {v}" for k, v in rep["timing_s"].items()), ""]
    return "\n".join(L)


def write(run, rep):
    run = Path(run)
    outputs.write_atomic(run / "report.json", json.dumps(rep, ensure_ascii=False, indent=1))
    png = plot(run, rep)
    (run / "report.md").write_text(markdown(rep, png), encoding="utf-8")
    return run / "report.md"


def main(argv=None):
    p = argparse.ArgumentParser(description="re-render a demo run's report.md (and plots) from its report.json")
    p.add_argument("run_dir", help="a demo output folder holding report.json (e.g. runs/demo)")
    path = Path(p.parse_args(argv).run_dir) / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (give a demo output folder)")
    try:
        rep = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    print(write(path.parent, rep))


if __name__ == "__main__":
    cli.run(main)

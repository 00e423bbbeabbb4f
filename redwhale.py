"""RedWhale-ref: one command line for the whole Korean continual-pretraining pipeline.

    python redwhale.py demo [--quick] [--out runs/demo]     # everything, end to end, on a laptop
    python redwhale.py clean RAW... --out clean/            # data.py clean
    python redwhale.py tokenize clean/clean.jsonl --tokenizer merged/ --out tokens/ --val-docs 1000
    python redwhale.py tokenizer-train clean/clean.jsonl --vocab-size 20000 --out ko/
    python redwhale.py merge --base BASE/tokenizer.model --korean ko/korean.model --out merged/
    python redwhale.py ratio --tokenizer merged/ --base BASE/tokenizer.model TEXT...
    python redwhale.py sweep clean/clean.jsonl --base BASE/tokenizer.model --eval TEXT...
    python redwhale.py expand --model BASE/ --tokenizer merged/ --init subword --out expanded/
    python redwhale.py recipe > my.json                      # the default recipe, to edit
    python redwhale.py plan --init-from expanded/ [--recipe FILE]
    python redwhale.py train --init-from expanded/ --data tokens/ --out runs/ko [--nproc 8] [--resume auto]
    python redwhale.py export runs/ko                        # merged LoRA -> runs/ko/final
    python redwhale.py eval --model runs/ko/final [--data KOBEST_DIR]
    python redwhale.py score --model runs/ko/final heldout_ko.txt heldout_en.jsonl   # bits per character
    python redwhale.py generate --model runs/ko/final --prompt "대한민국의 수도는"

Each step is a thin call into the module that owns it (`python data.py ...` etc. work the
same); `python redwhale.py STEP --help` lists its flags. No step writes into an input, and
none replaces an existing output folder unless given --force, which only ever removes a
folder this project wrote (support/outputs.py). Errors a user can make end with one line (set
REDWHALE_DEBUG=1 for the traceback), printed once under --nproc N.
"""
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from support import cli  # noqa: E402 (after the path)

# subcommand -> (module, leading arguments, one-line help)
STEPS = {
    "clean": ("data", ["clean"], "normalize, filter, deduplicate and sample a Korean corpus"),
    "tokenize": ("data", ["tokenize"], "cleaned JSONL -> token shards for training"),
    "tokenizer-train": ("tokenizer", ["train"], "train the Korean SentencePiece model"),
    "merge": ("tokenizer", ["merge"], "merge the Korean pieces into the base tokenizer"),
    "ratio": ("tokenizer", ["ratio"], "token ratio of a merged tokenizer against the base"),
    "sweep": ("tokenizer", ["sweep"], "train + merge at several Korean vocabulary sizes"),
    "expand": ("expand", [], "grow a base model to the merged vocabulary"),
    "recipe": ("recipe", [], "print the training recipe (default: RedWhale's four stages) as JSON"),
    "plan": ("training.plan", [], "per-stage trainable parameters and GPU memory estimate"),
    "train": ("train", [], "the four RedWhale stages (add --nproc N for torchrun)"),
    "export": ("training.checkpoint", [], "merge LoRA and write RUN_DIR/final"),
    "eval": ("eval_kobest", [], "KoBEST, scored as lm-evaluation-harness does"),
    "score": ("tools.score", [], "bits per character of any model on any text (compares tokenizers)"),
    "generate": ("tools.generate", [], "generate text from a model folder"),
}


def usage():
    lines = [__doc__.split("\n")[0], "", "usage: python redwhale.py STEP [flags]   (STEP --help for its flags)", ""]
    lines += [f"  {'demo':16s} the whole pipeline end to end on the embedded corpus"]
    lines += [f"  {k:16s} {v[2]}" for k, v in STEPS.items()]
    return "\n".join(lines)


def run_train(argv):
    """`train --nproc N ...` launches train.py under torchrun (gloo on CPU, NCCL on CUDA)."""
    import argparse

    import train
    from training import launch, options
    p = argparse.ArgumentParser(prog="redwhale.py train", add_help=False)
    p.add_argument("--nproc", type=cli.number(int, lo=1), default=1, help="processes (GPUs) on this node")
    known, argv = p.parse_known_args(argv)
    if known.nproc > 1 and "-h" not in argv and "--help" not in argv:
        options.prepare(argv, known.nproc)         # a user error is one line here, not one per rank
        launch.torchrun(argv, known.nproc)
        return 0
    return train.main(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    step, rest = argv[0], argv[1:]
    if step == "demo":
        import argparse

        import demo
        p = argparse.ArgumentParser(prog="redwhale.py demo", description=demo.__doc__.split("\n")[0])
        demo.add_args(p)
        demo.main(p.parse_args(rest))
        return
    if step not in STEPS:
        print(usage(), file=sys.stderr)
        raise SystemExit(f"error: unknown step {step!r}")
    module, lead, _ = STEPS[step]
    if step == "train":
        return run_train(rest)
    return importlib.import_module(module).main(lead + rest)  # some mains return an exit code


if __name__ == "__main__":
    cli.run(main)

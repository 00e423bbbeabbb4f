"""RedWhale-ref: one command line for the whole Korean continual-pretraining pipeline.

    python redwhale.py demo [--quick] [--out runs/demo]     # everything, end to end, on a laptop
    python redwhale.py clean RAW... --out clean/            # data.py clean
    python redwhale.py tokenize clean/clean.jsonl --tokenizer merged/ --out tokens/ --val-docs 1000
    python redwhale.py tokenizer-train clean/clean.jsonl --vocab-size 20000 --out ko/
    python redwhale.py merge --base BASE/tokenizer.model --korean ko/korean.model --out merged/
    python redwhale.py ratio --tokenizer merged/ --base BASE/tokenizer.model TEXT...
    python redwhale.py sweep clean/clean.jsonl --base BASE/tokenizer.model --eval TEXT...
    python redwhale.py expand --model BASE/ --tokenizer merged/ --init subword --out expanded/
    python redwhale.py plan --init-from expanded/ [--recipe FILE]
    python redwhale.py train --init-from expanded/ --data tokens/ --out runs/ko [--nproc 8] [--resume auto]
    python redwhale.py export runs/ko                        # merged LoRA -> runs/ko/final
    python redwhale.py eval --model runs/ko/final [--data KOBEST_DIR]
    python redwhale.py generate --model runs/ko/final --prompt "대한민국의 수도는"

Each step is a thin call into the module that owns it (`python data.py ...` etc. work the
same); `python redwhale.py STEP --help` lists its flags. A step refuses to write into an
output folder that already holds a finished result unless given --force. Errors a user can
make end with one line (set REDWHALE_DEBUG=1 for the traceback).
"""
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

# subcommand -> (module, leading arguments, one-line help)
STEPS = {
    "clean": ("data", ["clean"], "normalize, filter, deduplicate and sample a Korean corpus"),
    "tokenize": ("data", ["tokenize"], "cleaned JSONL -> token shards for training"),
    "tokenizer-train": ("tokenizer", ["train"], "train the Korean SentencePiece model"),
    "merge": ("tokenizer", ["merge"], "merge the Korean pieces into the base tokenizer"),
    "ratio": ("tokenizer", ["ratio"], "token ratio of a merged tokenizer against the base"),
    "sweep": ("tokenizer", ["sweep"], "train + merge at several Korean vocabulary sizes"),
    "expand": ("tokenizer", ["expand"], "grow a base model to the merged vocabulary"),
    "plan": ("train", ["--plan"], "per-stage trainable parameters and GPU memory estimate"),
    "train": ("train", [], "the four RedWhale stages (add --nproc N for torchrun)"),
    "export": ("train", ["--export"], "merge LoRA and write RUN_DIR/final"),
    "eval": ("eval_kobest", [], "KoBEST, scored as lm-evaluation-harness does"),
    "generate": ("model", [], "generate text from a model folder"),
}


def usage():
    lines = [__doc__.split("\n")[0], "", "usage: python redwhale.py STEP [flags]   (STEP --help for its flags)", ""]
    lines += [f"  {'demo':16s} the whole pipeline end to end on the embedded corpus"]
    lines += [f"  {k:16s} {v[2]}" for k, v in STEPS.items()]
    return "\n".join(lines)


def guard_output(argv):
    """Refuse to overwrite a finished step's output folder unless --force (which clears it)."""
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    if "--out" in argv and "--resume" not in argv:
        out = Path(argv[argv.index("--out") + 1])
        if out.exists() and any(out.iterdir()):
            if not force:
                raise SystemExit(f"error: {out} already exists and is not empty; pass --force to overwrite it")
            shutil.rmtree(out)
    return argv


def run_train(argv):
    """`train --nproc N ...` relaunches train.py under torchrun (gloo on CPU, NCCL on CUDA)."""
    nproc = 1
    if "--nproc" in argv:
        i = argv.index("--nproc")
        nproc = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(ROOT / "train.py"), *argv]
        raise SystemExit(subprocess.run(cmd).returncode)
    import train
    train.main(argv)


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
        raise SystemExit(f"error: unknown step {step!r}\n\n{usage()}")
    module, lead, _ = STEPS[step]
    if "-h" not in rest and "--help" not in rest:
        rest = guard_output(rest)
    if step == "train":
        return run_train(rest)
    return importlib.import_module(module).main(lead + rest)  # some mains return an exit code


if __name__ == "__main__":
    try:
        sys.exit(main() or 0)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        if os.environ.get("REDWHALE_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"error: {msg}") from None

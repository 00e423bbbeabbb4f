"""The paper's vocabulary-size study, on the data we have.

Train the Korean SentencePiece model on the KoBEST *train* text at several sizes, merge each
into the real Mistral-7B v0.1 base tokenizer (the layout of SOLAR's), and print pieces added,
the token ratio (merged tokens / base tokens) on the KoBEST *test* text and on statute-style
text of a kind the tokenizer never saw (assets/statute_sample.jsonl), and the embedding
parameters the new rows cost a SOLAR-sized model (hidden 4096, untied head: 2 x rows x 4096).

    bash scripts/fetch_base_tokenizer.sh                # once: .cache/base_tokenizer/tokenizer.model
    python bench/tokenizer_sweep.py --kobest KOBEST_DIR           # about a minute on 2 CPU cores
    python bench/tokenizer_sweep.py --kobest KOBEST_DIR --sizes 8000,20000 --hidden-size 5120

Needs the full KoBEST sets (KOBEST_DIR: <task>/{train,test}.jsonl); same result as
`python tokenizer.py sweep KOBEST_DIR/*/train.jsonl --text-field '*' --eval ...`.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tokenizer as T  # noqa: E402

BASE = ROOT / ".cache" / "base_tokenizer" / "tokenizer.model"
TASKS = ("boolq", "copa", "hellaswag", "sentineg", "wic")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8000,16000,20000,32000,40000", help="Korean vocabulary sizes")
    ap.add_argument("--hidden-size", type=int, default=4096, help="for the embedding-parameter column")
    ap.add_argument("--base", default=str(BASE), help="base tokenizer.model")
    ap.add_argument("--kobest", required=True, help="folder with <task>/{train,test}.jsonl (the full KoBEST sets)")
    a = ap.parse_args(argv)
    kobest = Path(a.kobest)
    if not kobest.exists() or not Path(a.base).exists():
        sys.exit(f"needs {kobest} and {a.base} (scripts/fetch_base_tokenizer.sh)")
    train = list(T.read_texts([kobest / t / "train.jsonl" for t in TASKS], "*"))
    evals = {t: list(T.read_texts([kobest / t / "test.jsonl"], "*")) for t in TASKS}
    evals["kobest"] = [x for t in TASKS for x in evals[t]]
    evals["statute"] = list(T.read_texts([ROOT / "assets" / "statute_sample.jsonl"]))
    print(f"Korean training text: {len(train)} texts, {sum(map(len, train)) / 1e6:.2f}M chars (KoBEST train); "
          f"evaluation: KoBEST test {sum(map(len, evals['kobest'])) / 1e6:.2f}M chars, "
          f"statute {sum(map(len, evals['statute']))} chars")
    t0 = time.time()
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = T.sweep(train, a.base, sizes, evals, hidden_size=a.hidden_size)
    print(f"{len(sizes)} sizes trained and merged in {time.time() - t0:.0f}s\n")
    print(T.format_sweep(rows, a.hidden_size))


if __name__ == "__main__":
    main()

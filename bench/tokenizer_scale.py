"""Korean tokenizer training at corpus scale: time and peak memory of `tokenizer.py train`.

    python bench/tokenizer_scale.py --size 1G --all-too --out /tmp/tokscale    # the issue-13 measurement

Builds a synthetic corpus of --size bytes of JSONL from the shipped Korean text: documents of
3-8 lines, each line 5-25 words drawn at random from the text's words, so (as in a real corpus,
and unlike copies of the text, which SentencePiece would count once) nearly every line is new.
Then runs the real command line in a child process, as a user would, with the default
sampling (--input-sentence-size, tokenizer.SAMPLE_SENTENCES) and, with --all-too, with every
line (--input-sentence-size 0) side by side. Prints wall time, the child's peak RSS and the ratio.
"""
import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def size(text):
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def build_corpus(path, nbytes, seed=0):
    """Lines of 5-25 words drawn at random from the shipped text's words: every line is new (a
    real corpus has few repeated lines; SentencePiece counts a repeated one once), and the
    words and characters keep the real text's frequencies."""
    words = []
    with gzip.open(ROOT / "assets" / "korean_corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            words += json.loads(line)["text"].split()
    rng, written, docs = random.Random(seed), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < nbytes:
            lines = [" ".join(rng.choices(words, k=rng.randint(5, 25))) for _ in range(rng.randint(3, 8))]
            line = json.dumps({"text": "\n".join(lines)}, ensure_ascii=False)
            f.write(line + "\n")
            written += len(line.encode()) + 1
            docs += 1
    return docs, len(words)


def train(corpus, out, extra):
    """The CLI in a child process: (wall seconds, peak RSS of the child in MB, its last line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "tokenizer.py"), "train", str(corpus), "--vocab-size", "20000",
                        "--out", str(out), "--force", *extra], capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode:
        sys.exit(p.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss   # KB on Linux; the max over children so far
    if peak <= before:
        print("note: this run's peak did not exceed an earlier child's; reported as <= that")
    return wall, peak / 1024, p.stdout.strip().splitlines()[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=size, default=size("1G"), help="corpus bytes (e.g. 100M, 1G)")
    ap.add_argument("--out", type=Path, required=True, help="scratch folder (the corpus is written here)")
    ap.add_argument("--all-too", action="store_true", help="also train on every line (needs RAM ~ corpus)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    corpus = a.out / "corpus.jsonl"
    t = time.time()
    docs, pool = build_corpus(corpus, a.size)
    print(f"corpus: {corpus.stat().st_size / 1e9:.2f} GB, {docs:,} documents drawn from {pool:,} words "
          f"({time.time() - t:.0f}s)")
    rows = [("sampled (default)", train(corpus, a.out / "sampled", []))]
    if a.all_too:     # the all-lines run goes second: RUSAGE_CHILDREN keeps the max, and it is the bigger one
        rows.append(("every line", train(corpus, a.out / "all", ["--input-sentence-size", "0"])))
    print("| run | wall s | peak RSS MB | result |\n|---|---:|---:|---|")
    for name, (wall, rss, last) in rows:
        print(f"| {name} | {wall:.0f} | {rss:.0f} | {last} |")
    if len(rows) == 2:
        print(f"every line / sampled: {rows[1][1][0] / rows[0][1][0]:.2f}x time, {rows[1][1][1] / rows[0][1][1]:.2f}x "
              "peak memory")


if __name__ == "__main__":
    main()

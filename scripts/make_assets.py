"""Rebuild the shipped data from the full KoBEST sets in KOBEST_DIR (CC BY-SA 4.0).

    python scripts/make_assets.py --kobest KOBEST_DIR

- assets/korean_corpus.jsonl.gz: the Korean text of the *train* splits only (never test), one
  document per line as {"text", "source"}: BoolQ paragraphs; COPA premise + the right
  alternative; HellaSwag context + the right ending; SentiNeg sentences; WiC first sentences
  with the target-word brackets removed. Exact repeats are skipped.
- assets/kobest_sample/<task>/{test,train}.jsonl: the first 40 rows of each split, unchanged.
"""
import argparse
import gzip
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def doc_text(task, r):
    if task == "boolq":
        return r["paragraph"].strip()
    if task == "copa":
        return r["premise"].strip() + " " + r["alternative_%d" % (r["label"] + 1)].strip()
    if task == "hellaswag":
        return r["context"].strip() + " " + r["ending_%d" % (r["label"] + 1)].strip()
    if task == "wic":
        return r["context_1"].replace("[", "").replace("]", "").strip()
    return r["sentence"].strip()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kobest", required=True,
                   help="folder of the full KoBEST sets: <task>/{train,validation,test}.jsonl")
    p.add_argument("--sample-rows", type=int, default=40)
    a = p.parse_args()
    tasks = ["boolq", "copa", "hellaswag", "sentineg", "wic"]
    docs = []
    for task in tasks:
        seen = set()
        with open(os.path.join(a.kobest, task, "train.jsonl"), encoding="utf-8") as f:
            for line in f:
                t = doc_text(task, json.loads(line))
                if t and t not in seen:
                    seen.add(t)
                    docs.append({"text": t, "source": f"kobest/{task}/train"})
    body = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    with open(os.path.join(ROOT, "assets", "korean_corpus.jsonl.gz"), "wb") as f:
        f.write(gzip.compress(body, mtime=0))  # mtime 0: the same bytes on every rebuild
    for task in tasks:
        os.makedirs(os.path.join(ROOT, "assets", "kobest_sample", task), exist_ok=True)
        for split in ("test", "train"):
            with open(os.path.join(a.kobest, task, f"{split}.jsonl"), encoding="utf-8") as f:
                rows = f.readlines()[:a.sample_rows]
            with open(os.path.join(ROOT, "assets", "kobest_sample", task, f"{split}.jsonl"), "w",
                      encoding="utf-8") as f:
                f.writelines(rows)
    print(f"{len(docs)} documents in assets/korean_corpus.jsonl.gz")


if __name__ == "__main__":
    main()

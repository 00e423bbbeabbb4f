"""Corpus pipeline benchmark: per-step speed, near-duplicate recall/precision and memory,
side by side with datasketch's MinHash + MinHashLSH in the same run.

    pip install datasketch==2.0.0      # for this benchmark only; data.py never imports it
    python bench/data_bench.py                     # 22 MB corpus, a few minutes on 2 cores
    python bench/data_bench.py --mb 50 --workers 4

The corpus is built here: the embedded KoBEST-train text (real Korean, 3.5 MB) plus
synthetic documents made of its sentences in random order, until --mb MB of UTF-8; then
exact copies and near-duplicates (1-5% of the words replaced, deleted or inserted) are
planted at random later positions. Ground truth is the exact Jaccard of character 5-gram
sets of the normalized texts: recall counts planted copies at Jaccard >= 0.8 that were
removed, precision counts removals whose true Jaccard with the document they were matched
to is >= 0.8. Both MinHash implementations see the same documents (those that reach the
near-dedup step), use 128 permutations, 5-character shingles and threshold 0.8, and run on
one core; datasketch with its own LSH parameters, as a user would run it.
"""
import argparse
import gzip
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from corpus import dedup  # noqa: E402
from corpus.textclean import normalize  # noqa: E402


def build_corpus(path, mb, n_near, n_exact, seed):
    rng = random.Random(seed)
    real = [json.loads(line)["text"] for line in gzip.open(ROOT / "assets" / "korean_corpus.jsonl.gz", "rt")]
    sents = [s for d in real for s in re.split(r"(?<=[.!?])\s+", d) if len(s) >= 10]
    docs, size = list(real), sum(len(d.encode()) for d in real)
    while size < mb * 1e6:
        paras = [" ".join(rng.choice(sents) for _ in range(rng.randint(2, 8))) for _ in range(rng.randint(1, 4))]
        d = "\n".join(paras)
        docs.append(d)
        size += len(d.encode())
    rng.shuffle(docs)
    fillers = [s.split()[0] for s in sents[:5000] if s.split()]
    src = [i for i, d in enumerate(docs) if len(d) >= 300]
    plants = []  # (source index, text, kind)
    for i in rng.sample(src, n_near + n_exact):
        kind = "near" if len(plants) < n_near else "exact"
        words = docs[i].split(" ")
        if kind == "near":
            for _ in range(max(1, round(rng.uniform(0.01, 0.05) * len(words)))):
                j, op = rng.randrange(len(words)), rng.choice("rdi")
                if op == "r":
                    words[j] = rng.choice(fillers)
                elif op == "d" and len(words) > 10:
                    del words[j]
                else:
                    words.insert(j, rng.choice(fillers))
        plants.append((i, " ".join(words), kind))
    # each plant goes after its source: order[k] = (text, source index or -1, kind)
    slots = {}
    for i, text, kind in plants:
        slots.setdefault(rng.randrange(i + 1, len(docs) + 1), []).append((text, i, kind))
    order = []
    for k in range(len(docs) + 1):
        order += slots.get(k, [])
        if k < len(docs):
            order.append((docs[k], -1, "orig"))
    pos, plant_lines = {}, []  # original index -> its line; (copy line, source index, kind)
    with open(path, "w", encoding="utf-8") as f:
        for ln, (text, s, kind) in enumerate(order, start=1):
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            if kind == "orig":
                pos[len(pos)] = ln
            else:
                plant_lines.append((ln, s, kind))
    plant_lines = [(ln, pos[s], kind) for ln, s, kind in plant_lines]
    return [t for t, _, _ in order], plant_lines, size


def shingle_set(text, n=5):
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def jaccard(a, b):
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / max(1, len(sa | sb))


def quality(matches, texts, positives):
    """matches {dropped line: matched line}; positives {copy line: source line} with J >= 0.8."""
    found = sum(1 for c in positives if c in matches)
    good = sum(1 for d, m in matches.items() if jaccard(texts[d], texts[m]) >= 0.8)
    return found / max(1, len(positives)), good / max(1, len(matches)), len(matches)


def run_clean(inputs, out, extra, workers):
    """Whole pipeline in a child process: wall seconds, CPU seconds of the child and its
    workers, and the main process's peak RSS in MB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child of this (large)
    # process would report our own RSS
    code = ("import sys, data; rc = data.main(sys.argv[1:]); "
            "print('MAXRSS', [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]); "
            "sys.exit(rc)")
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = ru.ru_utime + ru.ru_stime
    t = time.time()
    r = subprocess.run([sys.executable, "-c", code, "clean", *map(str, inputs), "--out", str(out),
                        "--workers", str(workers), "--no-progress", *extra],
                       capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(r.stderr)
    rss = int(r.stdout.split("MAXRSS")[1]) / 1024
    return wall, ru.ru_utime + ru.ru_stime - cpu0, rss, json.loads((Path(out) / "report.json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=22, help="corpus size in MB of UTF-8 text")
    ap.add_argument("--near", type=int, default=1000, help="planted near-duplicates")
    ap.add_argument("--exact", type=int, default=200, help="planted exact copies")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers for the parallel run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-datasketch", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="data_bench-"))
    corpus = tmp / "corpus.jsonl"
    t = time.time()
    raw, plants, size = build_corpus(corpus, args.mb, args.near, args.exact, args.seed)
    print(f"corpus: {len(raw)} documents, {size / 1e6:.1f} MB of UTF-8, {args.near} near + {args.exact} exact "
          f"copies planted ({time.time() - t:.0f}s to build); {os.cpu_count()} cores, torch not used")
    ref = ROOT / "assets" / "korean_corpus.jsonl.gz"  # the perplexity reference: real text
    ppl = ["--ppl-ref", str(ref), "--ppl-percentile", "95"]
    load = os.getloadavg()[0]

    # 1. whole pipeline, one worker (per-core rate): default steps, then with the perplexity
    # filter; then all workers (same output?)
    rep = None
    for label, flags, out in (("default steps", ["--keep-dropped"], "o1"), ("with perplexity", ppl, "o2")):
        wall1, cpu1, rss1, r = run_clean([corpus], tmp / out, flags, 1)
        rep = rep or r
        mb_in = r["bytes_in"] / 1e6
        print(f"\nwhole pipeline ({label}), 1 worker: {cpu1:.1f} CPU s ({wall1:.1f}s wall): {mb_in / cpu1:.2f} MB/s "
              f"and {r['docs_in'] / cpu1:.0f} docs/s per core, peak RSS {rss1:.0f} MB; {r['docs_in']} in -> "
              f"{r['docs_out']} out; dropped {r['dropped']}")
        print(f"{'step':<12} {'docs in':>8} {'CPU s':>8} {'docs/s':>9} {'MB/s':>7}  (one core; MB of input text)")
        for name, s in r["steps"].items():
            if name in ("read", "sample") or (name == "perplexity" and label == "default steps"):
                continue
            sec = max(s["cpu_seconds"], 1e-9)
            frac = s["docs_in"] / r["docs_in"]  # share of the input reaching the step, approximately
            print(f"{name:<12} {s['docs_in']:>8} {sec:>8.2f} {s['docs_in'] / sec:>9.0f} {mb_in * frac / sec:>7.1f}")
        rest = cpu1 - sum(s["cpu_seconds"] for s in r["steps"].values())
        print(f"{'rest':<12} {'':>8} {rest:>8.2f}  (start-up, reading and JSON, writing; perplexity model training)")
        if label == "default steps":
            rss_1x = rss1
    wallN, cpuN, _, repN = run_clean([corpus], tmp / "oN", ppl, args.workers)
    same = (tmp / "o2" / "clean.jsonl").read_bytes() == (tmp / "oN" / "clean.jsonl").read_bytes()
    print(f"whole pipeline (with perplexity), {args.workers} workers: {wallN:.1f}s wall, {mb_in / wallN:.2f} MB/s "
          f"({cpuN:.1f} CPU s); output identical to 1 worker: {same}")

    # 2. near-duplicate quality: the documents that reached near-dedup, in order
    texts = {i + 1: normalize(t) for i, t in enumerate(raw)}
    dropped = [json.loads(line) for line in open(tmp / "o1" / "dropped.jsonl", encoding="utf-8")]
    before = {int(r["source"].rsplit(":", 1)[1]) for r in dropped
              if r["reason"] not in ("near_dup", "perplexity", "sampled_out")}
    lines = [ln for ln in texts if ln not in before]
    ours = {int(r["source"].rsplit(":", 1)[1]): int(r["duplicate_of"].rsplit(":", 1)[1])
            for r in dropped if r["reason"] == "near_dup"}
    positives = {c: s for c, s, kind in plants if kind == "near" and c in set(lines) and s in set(lines)
                 and jaccard(texts[c], texts[s]) >= 0.8}
    n_planted = sum(1 for _, _, k in plants if k == "near")
    print(f"\nnear-dup quality on {len(lines)} documents; {len(positives)} of {n_planted} planted copies reach the "
          "step with Jaccard >= 0.8 to their source")
    r, p, k = quality(ours, texts, positives)
    print(f"data.py   recall {r:.3f} precision {p:.3f} ({k} removed)")

    # 3. MinHash speed, one core, same documents: data.py vs datasketch
    docs = [texts[ln] for ln in lines]
    mh = dedup.MinHasher(128, 5, threshold=0.8)
    t = time.process_time()  # CPU time: this machine may be shared; both sides measured alike
    sig = np.concatenate([mh.signatures(docs[i:i + 256]) for i in range(0, len(docs), 256)])
    keys = mh.band_keys(sig)
    t_ours = time.process_time() - t
    t = time.process_time()
    dedup.near_duplicates(keys, np.ones(len(docs), bool), sig, 0.8)
    t_lsh = time.process_time() - t
    print(f"\nMinHash (signatures + band keys), one core: data.py {len(docs) / t_ours:.0f} docs/s "
          f"({sum(len(d.encode()) for d in docs) / 1e6 / t_ours:.1f} MB/s); LSH dedup {t_lsh:.2f}s")
    rows = [("data.py MinHash", len(docs) / t_ours)]
    if not args.skip_datasketch:
        from datasketch import MinHash, MinHashLSH
        t = time.process_time()
        ms = []
        for d in docs:
            m = MinHash(num_perm=128)
            m.update_batch([s.encode("utf-8") for s in shingle_set(d)])
            ms.append(m)
        t_ds = time.process_time() - t
        t = time.process_time()
        lsh, ds = MinHashLSH(threshold=0.8, num_perm=128), {}
        for ln, m in zip(lines, ms):
            hit = lsh.query(m)
            if hit:
                ds[ln] = min(hit)
            else:
                lsh.insert(ln, m)
        t_dslsh = time.process_time() - t
        print(f"datasketch MinHash, one core: {len(docs) / t_ds:.0f} docs/s; LSH query+insert {t_dslsh:.2f}s "
              f"(bands, rows = {lsh.b}, {lsh.r}; data.py uses {mh.bands}, {mh.rows} + verification)")
        print(f"speed ratio data.py / datasketch: MinHash {t_ds / t_ours:.2f}x, "
              f"MinHash+LSH {(t_ds + t_dslsh) / (t_ours + t_lsh):.2f}x")
        r2, p2, k2 = quality(ds, texts, positives)
        print(f"datasketch recall {r2:.3f} precision {p2:.3f} ({k2} removed)")
        rows.append(("datasketch MinHash", len(docs) / t_ds))

    # 4. memory: the same pipeline over the corpus given 3 times (3x the documents)
    wall3, _, rss3, rep3 = run_clean([corpus] * 3, tmp / "o3", [], 1)
    per_m = (rss3 - rss_1x) / max(1, rep3["docs_in"] - rep["docs_in"]) * 1e6
    print(f"\nmemory (default steps): peak RSS {rss_1x:.0f} MB for {rep['docs_in']} docs, {rss3:.0f} MB for "
          f"{rep3['docs_in']} docs ({wall3:.0f}s): {per_m:+.0f} MB per million documents")
    print(f"load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()

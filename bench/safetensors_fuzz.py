"""The differential fuzz of tests/test_hostile_files.py, at scale: our safetensors reader
against the safetensors library on many more damaged files than the test runs.

    python bench/safetensors_fuzz.py --seeds 40 --per-file 200     # 40 x 2 x 200 = 16,000 files

Prints the files tried, how many both refused, and every disagreement (there should be none).
"""
import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_hostile_files as T  # noqa: E402 (the mutations live with the test)

from support.safetensors_io import read_safetensors  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--per-file", type=int, default=200)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    originals = T.originals(tmp)
    n = refused = 0
    bad = []
    t0 = time.time()
    for seed in range(a.seeds):
        rng = random.Random(10_000 + seed)          # seeds the test does not use
        for data in originals:
            for _ in range(a.per_file):
                case = T.mutate(rng, data)
                path = tmp / "case.safetensors"
                path.write_bytes(case)
                theirs = T.outcome(T.library_load, case)
                ours = T.outcome(lambda q: dict(read_safetensors(q)), path)
                n += 1
                if isinstance(ours, Exception) and not isinstance(ours, ValueError):
                    bad.append(f"ours raised {type(ours).__name__}: {ours}")
                elif isinstance(ours, Exception) != isinstance(theirs, Exception) or (
                        not isinstance(ours, Exception) and ours != theirs):
                    bad.append(f"ours: {ours!r:.200} / library: {theirs!r:.200}")
                refused += isinstance(ours, Exception)
    print(f"{n} damaged files, {refused} refused by both, {n - refused - len(bad)} read identically, "
          f"{len(bad)} disagreements ({time.time() - t0:.0f}s)")
    for b in bad[:20]:
        print(" ", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

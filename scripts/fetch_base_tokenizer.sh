#!/usr/bin/env bash
# Fetch a real Llama-2-style base tokenizer for tests and benchmarks: the Mistral-7B v0.1
# SentencePiece model (32000 BPE pieces, byte fallback; Apache-2.0), shipped inside the
# PyPI wheel of mistral-common. We read the one file out of the wheel and never install the
# package (it pins an old numpy). Result: .cache/base_tokenizer/tokenizer.model
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/base_tokenizer/tokenizer.model
[ -s "$out" ] && exit 0
tmp=$(mktemp -d)
python -m pip download --no-deps --quiet mistral-common==1.12.0 -d "$tmp"
mkdir -p "$(dirname "$out")"
python - "$tmp" "$out" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/mistral_common-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2] + ".tmp", "wb") as f:
    f.write(z.read("mistral_common/data/tokenizer.model.v1"))
PY
mv "$out.tmp" "$out"
rm -rf "$tmp"
echo "base tokenizer: $out"

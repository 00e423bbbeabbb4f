"""Bits per character of a Hugging Face model on any text: the one loss that compares models with
different tokenizers (a base model with its own, the adapted model with the merged one).

    python redwhale.py score --model BASE_DIR heldout_ko.txt heldout_en.jsonl
    python redwhale.py score --model runs/ko/final heldout_ko.txt heldout_en.jsonl --output scores.json
    python tools/score.py --model runs/ko/final data.jsonl --text-field body   # the same, run as a file

The convention. Documents: a .txt file is blank-line separated blocks, a .jsonl file one
document per line (--text-field), either optionally .gz. Each document is BOS followed by its
tokens under the model's own tokenizer.model (as that tokenizer encodes running text); every
token of the text is predicted, and nothing after it (no EOS). Its characters are its Unicode
code points, as read. Then

    bits per character = (sum over all documents of -ln p(token)) / (ln 2 x all their characters)

so two models are compared on exactly the same characters, whatever their tokens. A document
longer than the context (--context, default the model's max_position_embeddings, at most 4096)
is scored in windows of that many tokens that advance by half of it: every token is predicted
once, from at least half a context of preceding tokens (all of them while the document fits).
"""
import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):     # run as a file (python tools/NAME.py): import from the project folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpus.readers import ReadConfig, expand_inputs, read_docs  # noqa: E402
from support import cli, outputs  # noqa: E402


def read_documents(paths, text_field="text"):
    """{path: [document, ...]} of .txt (blank-line blocks) and .jsonl files or folders of them."""
    cfg = ReadConfig(text_field=text_field, txt_mode="blocks")
    return {str(p): [t for _, t, why in read_docs(p, cfg, {}) if why is None and t] for p in expand_inputs(paths)}


@torch.no_grad()
def document_nll(model, ids, context):
    """Sum of -ln p over ids[1:] (ids[0] is BOS, never predicted), in windows of `context`."""
    dev = next(model.parameters()).device
    ids = torch.tensor(ids, dtype=torch.long, device=dev)
    n, stride, total, scored = len(ids), max(1, context // 2), 0.0, 1
    while scored < n:
        stop = min(n, scored + (context if scored == 1 else stride))    # predict ids[scored:stop]
        start = max(0, stop - 1 - context)                               # from inputs ids[start:stop-1]
        logits, _ = model(ids[None, start:stop - 1])                     # (1, stop-1-start, V)
        logp = F.log_softmax(logits[0, scored - 1 - start:].float(), dim=-1)   # the rows predicting ids[scored:stop]
        total -= logp.gather(1, ids[scored:stop, None]).sum().item()
        scored = stop
    return total


def score(model, tok, docs, context=None):
    """Bits per character (and nats per token) of `model` with its Tokenizer `tok` over `docs`."""
    context = context or min(model.config.max_position_embeddings, 4096)
    nats = tokens = chars = 0
    for text in docs:
        ids = tok.encode(text, bos=True)      # without a BOS piece the first token is context, never predicted
        nats += document_nll(model, ids, context)
        tokens += len(ids) - 1
        chars += len(text)
    return {**combine([{"docs": len(docs), "chars": chars, "tokens": tokens, "nats": nats}]), "context": context}


def combine(results):
    """score()'s numbers over several sets at once (sums, not a mean of ratios)."""
    r = {k: sum(x[k] for x in results) for k in ("docs", "chars", "tokens", "nats")}
    return {**r, "bits_per_char": r["nats"] / (math.log(2) * r["chars"]) if r["chars"] else None,
            "nats_per_token": r["nats"] / r["tokens"] if r["tokens"] else None}


def main(argv=None):
    from eval_kobest import checkpoint_dtype
    from model import Llama, check_model_folder
    from support.tokenizer_io import Tokenizer
    from training import runtime
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="+", help=".txt (blank-line separated documents) or .jsonl files, .gz ok")
    p.add_argument("--model", required=True, help="Hugging Face model folder with its tokenizer.model")
    p.add_argument("--text-field", default="text", help="JSONL field holding the document")
    p.add_argument("--context", type=cli.number(int, lo=2), default=None,
                   help="tokens a window sees (default: max_position_embeddings, at most 4096)")
    p.add_argument("--max-docs", type=cli.number(int, lo=1), default=None, help="score the first N per file")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: the checkpoint's own dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--output", help="also write the numbers as JSON here")
    p.add_argument("--force", action="store_true", help="replace an existing --output that is not a score")
    a = p.parse_args(argv)
    runtime.check_device(a.device)
    check_model_folder(a.model)
    if a.output:
        outputs.check_output_file(a.output, [a.model, *a.texts], a.force, "--output", ours=outputs.json_with("scores"))
    docs = {k: v[:a.max_docs] for k, v in read_documents(a.texts, a.text_field).items()}
    tok = Tokenizer.load(a.model)
    dtype = checkpoint_dtype(a.model) if a.dtype == "auto" else a.dtype
    model = Llama.from_pretrained(a.model, dtype=getattr(torch, dtype), device=a.device).eval()
    rows = {path: score(model, tok, d, a.context) for path, d in docs.items()}
    if len(rows) > 1:
        rows["all"] = combine(rows.values())
    for path, r in rows.items():
        print(f"{path}: {r['bits_per_char']:.4f} bits/char ({r['docs']} documents, {r['chars']:,} characters, "
              f"{r['tokens']:,} tokens, {r['nats_per_token']:.4f} nats/token)")
    if a.output:
        outputs.write_atomic(a.output, json.dumps({"model": str(Path(a.model).resolve()), "dtype": dtype,
                                                   "scores": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    cli.run(main)

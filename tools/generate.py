"""Generate text from a model folder, or check model.py end to end on a tiny random model.

    python redwhale.py generate --model runs/ko/final --prompt "대한민국의 수도는" --max-new-tokens 32
    python redwhale.py generate --model runs/ko/final --temperature 0.7 --top-p 0.9
    python redwhale.py generate --smoke   # tiny random model: save, reload bit-identically, generate
    python tools/generate.py --smoke      # the same, run as a file

Greedy at temperature 0 (the default), else nucleus sampling (model.next_token), with a KV
cache (Llama.generate). The folder needs its tokenizer.model.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch

if __package__ in (None, ""):     # run as a file (python tools/NAME.py): import from the project folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import LlamaConfig  # noqa: E402
from model import Llama, check_model_folder  # noqa: E402
from support import cli  # noqa: E402
from support.tokenizer_io import Tokenizer  # noqa: E402
from training import runtime  # noqa: E402


def smoke():
    """A tiny random model: save, reload (bit for bit), generate greedily."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = Llama(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        again = Llama.from_pretrained(d).eval()
        same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
        out = again.generate([1, 5, 7], max_new_tokens=8)
        print(f"saved and reloaded {sum(p.numel() for p in model.parameters())} parameters "
              f"(bit-identical: {same}); greedy continuation of [1, 5, 7]: {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="build a tiny random model, save, reload, generate")
    p.add_argument("--model", help="HF model folder with tokenizer.model")
    p.add_argument("--prompt", default="대한민국의 수도는", help="text to continue")
    p.add_argument("--max-new-tokens", type=cli.number(int, lo=1), default=32)
    p.add_argument("--temperature", type=cli.number(float, lo=0), default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=cli.number(float, lo=0, hi=1, lo_open=True), default=0.9)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    if args.smoke:
        return smoke()
    if not args.model:
        p.error("give --model FOLDER or --smoke")
    runtime.check_device(args.device)
    check_model_folder(args.model)
    tok = Tokenizer.load(args.model)      # a missing or corrupt tokenizer.model is one line naming it
    model = Llama.from_pretrained(args.model, dtype=getattr(torch, args.dtype), device=args.device).eval()
    ids = tok.encode(args.prompt, bos=True)
    out = model.generate(ids, args.max_new_tokens, args.temperature, args.top_p, tok.eos_id)
    print(tok.decode(ids + out))        # BOS, a control piece, decodes to nothing


if __name__ == "__main__":
    cli.run(main)

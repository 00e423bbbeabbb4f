"""The paper's comparison of new-row initializations, at small scale.

1. Build a tiny "English base": a 2,000-piece SentencePiece tokenizer and a small Llama trained
   for a few minutes on Python's own documentation (mostly English) plus ~10% Korean, as
   SOLAR saw mostly English and a little Korean.
2. Train a Korean tokenizer on the Korean training split, merge it into the base tokenizer.
3. Expand the base model with each of the five methods (random, mean, subword-embed,
   subword, subword-first-head) and measure the Korean loss on held-out text before and after
   the same stage-1 run (embeddings + LM head only, same batches, same seed).

    python bench/init_compare.py                        # ~14 CPU-minutes: ~10-18 min on 2 busy cores
    python bench/init_compare.py --base-steps 300 --stage1-steps 50   # a quick look

Loss per token compares the five methods with each other (same merged tokenization); nats
per character also compares them with the base model on its own tokenization.
Needs only the product's dependencies.
"""
import argparse
import gzip
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tokenizer as T  # noqa: E402
from expand import INIT_METHODS, decompositions, expand_vocab  # noqa: E402
from model import Llama, LlamaConfig  # noqa: E402


def korean_docs():
    with gzip.open(ROOT / "assets" / "korean_corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def english_docs():
    from pydoc_data.topics import topics
    return [" ".join(topics[k].split()) for k in sorted(topics)]


def stream(sp, docs):
    """One long id stream: BOS + the ids of each document."""
    out = []
    for ids in sp.encode(docs):
        out += [sp.bos_id()] + ids
    return torch.tensor(out, dtype=torch.long)


def batch(data, B, T_, gen):
    ix = torch.randint(0, len(data) - T_ - 1, (B,), generator=gen)
    x = torch.stack([data[i:i + T_] for i in ix])            # (B, T)
    y = torch.stack([data[i + 1:i + T_ + 1] for i in ix])    # (B, T)
    return x, y


@torch.no_grad()
def eval_loss(model, data, T_):
    """Mean loss per predicted token over all of `data`, in non-overlapping windows."""
    model.eval()
    n = (len(data) - 1) // T_ * T_
    x, y = data[:n].view(-1, T_), data[1:n + 1].view(-1, T_)
    total = sum(model(x[i:i + 16], y[i:i + 16], reduction="sum")[1].item() for i in range(0, len(x), 16))
    model.train()
    return total / y.numel(), y.numel()


def train(model, params, steps, lr, sample, warmup=20, log_every=0):
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    t0 = time.time()
    for step in range(steps):
        # warmup, then cosine to 10%: a pure function of the step, the same for every method
        f = (step + 1) / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr * f
        x, y = sample()
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps}: loss {loss.item():.3f} ({(time.time() - t0) / (step + 1):.2f}s/step)")
    return loss.item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-steps", type=int, default=600, help="steps to pretrain the tiny English base")
    ap.add_argument("--stage1-steps", type=int, default=150, help="stage-1 steps (embeddings + head) per method")
    ap.add_argument("--korean-share", type=float, default=0.1, help="share of Korean batches in base pretraining")
    ap.add_argument("--korean-vocab", type=int, default=4000, help="Korean tokenizer size before the merge")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--base-lr", type=float, default=3e-3)
    ap.add_argument("--stage1-lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()

    ko = korean_docs()
    random.Random(a.seed).shuffle(ko)
    ko_train, ko_eval = ko[:-400], ko[-400:]  # the held-out 400 documents are never trained on
    en = english_docs()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. the tiny English base: tokenizer, then model
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(en + ko_train[:300]), model_prefix=str(tmp / "base"), model_type="bpe",
            vocab_size=2000, byte_fallback=True, normalization_rule_name="identity", split_digits=True,
            character_coverage=0.99, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=a.threads,
            minloglevel=2, max_sentence_length=1 << 16)
        base_sp = spm.SentencePieceProcessor(model_file=str(tmp / "base.model"))
        en_data, ko_base_data = stream(base_sp, en), stream(base_sp, ko_train)
        cfg = LlamaConfig(vocab_size=base_sp.get_piece_size(), hidden_size=128, intermediate_size=384,
                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=a.seq_len, initializer_range=0.02)
        torch.manual_seed(a.seed)
        base = Llama(cfg)
        gen = torch.Generator().manual_seed(a.seed)
        mix = random.Random(a.seed)
        def base_sample():
            data = ko_base_data if mix.random() < a.korean_share else en_data
            return batch(data, a.batch_size, a.seq_len, gen)
        last = train(base, list(base.parameters()), a.base_steps, a.base_lr, base_sample, log_every=200)
        base.save_pretrained(tmp / "base_hf")
        (tmp / "base_hf" / "tokenizer.model").write_bytes((tmp / "base.model").read_bytes())
        en_eval = stream(base_sp, en[::7])
        ko_eval_base = stream(base_sp, ko_eval)
        chars = sum(len(d) + 1 for d in ko_eval)  # + 1: each document's BOS-to-text boundary
        print(f"base: {sum(p.numel() for p in base.parameters()) / 1e6:.2f}M params, {a.base_steps} steps "
              f"({time.time() - t0:.0f}s), last train loss {last:.3f}, English loss (seen text) "
              f"{eval_loss(base, en_eval, a.seq_len)[0]:.3f}")
        ko_loss, ko_tokens = eval_loss(base, ko_eval_base, a.seq_len)
        base_per_char = ko_loss * len(ko_eval_base) / chars  # nats/token x tokens/char
        print(f"base on held-out Korean, base tokenizer: {ko_loss:.3f}/token, {base_per_char:.3f} "
              f"nats/char ({ko_tokens} tokens)")

        # 2. the Korean tokenizer, merged into the base
        korean = T.train_korean(ko_train, tmp / "ko", vocab_size=a.korean_vocab, num_threads=a.threads)
        rep = T.merge(tmp / "base.model", korean, tmp / "tok")
        merged_sp = spm.SentencePieceProcessor(model_file=str(tmp / "tok" / "tokenizer.model"))
        decs = decompositions(tmp / "tok", rep["base_size"])
        ko_train_new, ko_eval_new = stream(merged_sp, ko_train), stream(merged_sp, ko_eval)
        ratio = T.token_ratio(tmp / "tok", tmp / "base.model", ko_eval)["ratio"]
        print(f"merged tokenizer: +{rep['added']} pieces ({rep['final_size']}), token ratio on held-out "
              f"Korean {ratio:.3f}\n")

        # 3. expand with each method, then the same stage 1 (embeddings + head only)
        rows = []
        for init in INIT_METHODS:
            model = Llama.from_pretrained(tmp / "base_hf")
            expand_vocab(model, rep["final_size"], init=init, decompositions=decs, seed=a.seed)
            before, _ = eval_loss(model, ko_eval_new, a.seq_len)
            for p in model.parameters():
                p.requires_grad = False
            params = [model.model.embed_tokens.weight, model.lm_head.weight]
            for p in params:
                p.requires_grad = True
            g = torch.Generator().manual_seed(a.seed + 1)  # the same batches for every method
            train(model, params, a.stage1_steps, a.stage1_lr, lambda: batch(ko_train_new, a.batch_size, a.seq_len, g))
            after, _ = eval_loss(model, ko_eval_new, a.seq_len)
            per_char = len(ko_eval_new) / chars  # tokens per character with the merged tokenizer
            rows.append((init, before, after, before * per_char, after * per_char))
            print(f"{init:>20}: Korean loss {before:.3f} -> {after:.3f} after {a.stage1_steps} stage-1 steps "
                  f"({time.time() - t0:.0f}s)")

    print(f"\n| init | Korean loss at start | after {a.stage1_steps} stage-1 steps | nats/char start | "
          f"nats/char after |\n|---|---:|---:|---:|---:|")
    for init, b, f, bc, fc in rows:
        print(f"| {init} | {b:.3f} | {f:.3f} | {bc:.3f} | {fc:.3f} |")
    print(f"| (base model, base tokenizer) | {ko_loss:.3f} | | {base_per_char:.3f} | |")
    best = min(rows, key=lambda r: r[2])[0]
    print(f"\nlowest loss after stage 1: {best}; total time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()

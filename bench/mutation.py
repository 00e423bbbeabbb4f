"""Mutation testing: would the suite notice a plausible one-line bug?

Each mutant below is a small semantic edit a developer could make by mistake (an off-by-one,
a wrong constant, a skipped step). For each one, alone, the tree is copied to a temporary
folder, the edit is applied there (the working tree is never touched) and the test suite is
run against the copy. A mutant is *killed* when a test fails, and the same test passes when
rerun alone on the unmutated copy; one that passes every test *survived*: the suite would let
that bug through. A timeout, a collection error or a test that fails unmutated too is
reported apart, outside the score.

    python bench/mutation.py --output mut.json   # every mutant: the score and the survivors
    python bench/mutation.py --list              # the mutants, one line each
    python bench/mutation.py --only lora-scale,wd-norms --output /tmp/mut.json
    python bench/mutation.py --check             # each edit applies exactly once (fast, no tests)

The tests most likely to catch a mutant run first, then the rest of the suite with -x, so
a killed mutant costs seconds to a minute and a survivor the whole suite (about 4 minutes on
a 2-core machine). Tests that need files outside the repository skip in the copy, as they
do on a fresh clone. It is a benchmark, not part of CI: results go in bench/RESULTS.md.
--first-only runs each mutant's own test files and nothing else: a quick first look while
writing tests, not the score.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, file, old text, new text, the tests to run first). `old` must occur exactly once.
MUTANTS = [
    # ---- lora.py
    ("lora-scale", "lora.py", "self.scale = r, alpha, alpha / r", "self.scale = r, alpha, alpha",
     "test_lora.py"),
    ("lora-merge-sign", "lora.py", "self.weight.float() + self.delta()", "self.weight.float() - self.delta()",
     "test_lora.py"),
    # ---- train.py
    ("frozen-rows-after-clip", "train.py",
     "        self.frozen.zero_grads()                # before the norm: frozen rows take no part in clipping\n"
     "        gn = self.grad_norm()\n",
     "        gn = self.grad_norm()\n        self.frozen.zero_grads()\n", "test_train_step.py test_train.py"),
    ("betas-ignored", "train.py", "betas=tuple(self.recipe.betas)", "betas=(0.9, 0.999)",
     "test_train_step.py test_train.py"),
    ("wd-norms-group", "train.py", '{"params": no_decay, "weight_decay": 0.0}',
     '{"params": no_decay, "weight_decay": st.weight_decay}', "test_train_step.py test_train.py"),
    ("ddp-no-sync-skipped", "training/strategy.py", "if self.env.distributed and not last:", "if False:",
     "test_ddp_accum.py"),
    ("loss-scale-world", "train.py", "(loss * (W / n_tok)).backward()", "(loss * (1 / n_tok)).backward()",
     "test_ddp_accum.py test_train.py"),
    ("clip-off-by-default", "train.py", "if self.recipe.grad_clip > 0:", "if self.recipe.grad_clip > 1e9:",
     "test_train_step.py test_train.py"),
    ("frozen-rows-not-restored", "training/parallel.py",
     "            first_rows(p, self.k).copy_(kept)\n", "            pass\n", "test_train_step.py test_train.py"),
    # ---- recipe.py
    ("warmup-off-by-one", "recipe.py", "return st.lr * (step + 1) / w", "return st.lr * step / w",
     "test_train_step.py test_recipe.py"),
    ("cosine-no-floor", "recipe.py", "lo = p[\"steps\"], p[\"warmup\"], st.lr * st.min_lr_ratio",
     "lo = p[\"steps\"], p[\"warmup\"], 0.0", "test_train_step.py test_recipe.py"),
    ("wsd-decay-length", "recipe.py", "d = max(1, int(round(st.decay_frac * n)))",
     "d = max(1, int(st.decay_frac * n))", "test_recipe.py"),
    ("odd-even-layers", "recipe.py", '"odd_layers": [n for n, i in layer.items() if i % 2 == 1]',
     '"odd_layers": [n for n, i in layer.items() if i % 2 == 0]', "test_recipe.py test_train.py"),
    ("grad-accum-rounding", "recipe.py", "if rem or G < 1:", "if G < 1:", "test_recipe.py"),
    # ---- model.py
    ("rmsnorm-eps-outside", "model.py", "torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)",
     "torch.rsqrt(h.pow(2).mean(-1, keepdim=True)) + self.eps", "test_model.py"),
    ("rope-theta", "model.py", "inv = 1.0 / (cfg.rope_theta ** (", "inv = 1.0 / ((cfg.rope_theta / 2) ** (",
     "test_model.py"),
    ("swiglu-swapped", "model.py", "F.silu(self.gate_proj(x)) * self.up_proj(x)",
     "F.silu(self.up_proj(x)) * self.gate_proj(x)", "test_model.py"),
    ("expand-mean-of-new", "expand.py", "return old.mean(0, keepdim=True).expand(n, -1)",
     "return old[1:].mean(0, keepdim=True).expand(n, -1)", "test_expand.py"),
    ("expand-subword-sum", "expand.py", "torch.stack([old[g].mean(0) for g in groups])",
     "torch.stack([old[g].sum(0) for g in groups])", "test_expand.py"),
    # ---- tokenizer.py
    ("merge-scores-above-base", "tokenizer.py", "floor - 1.0 - i, NORMAL", "floor + 1.0 + i, NORMAL",
     "test_tokenizer.py"),
    ("filter-too-long-off-by-one", "tokenizer.py", "max_piece_chars and len(text) > max_piece_chars",
     "max_piece_chars and len(text) >= max_piece_chars", "test_tokenizer.py"),
    ("hangul-range", "tokenizer.py", 'return "\\uac00" <= c <= "\\ud7a3"', 'return "\\uac00" <= c < "\\ud7a3"',
     "test_tokenizer.py"),
    # ---- eval_kobest.py
    ("acc-norm-token-length", "eval_kobest.py", "norm = [argmax([s / len(c) for s, c in zip(sc, ex.choices)])",
     "norm = [argmax([s / len(t) for s, t in zip(sc, ex.cont_ids)])", "test_eval_kobest.py"),
    ("macro-f1-labels-gold-only", "eval_kobest.py", "labels = sorted(set(golds) | set(preds))",
     "labels = sorted(set(golds))", "test_eval_kobest.py"),
    ("argmax-last-tie", "eval_kobest.py", "    return max(range(len(xs)), key=xs.__getitem__)",
     "    return max(reversed(range(len(xs))), key=xs.__getitem__)", "test_eval_kobest.py"),
    ("encode-pair-spaces", "eval_kobest.py", "    if n_spaces > 0:\n", "    if n_spaces > 1:\n",
     "test_eval_kobest.py"),
    ("group-unweighted", "eval_kobest.py", "sum(m[metric] * m[\"n\"] for m in have) / sum(m[\"n\"] for m in have)",
     "sum(m[metric] for m in have) / len(have)", "test_eval_kobest.py"),
    # ---- corpus/perplexity.py
    ("ngram-pad-one", "corpus/perplexity.py", "pad = np.full(self.order - 1, self.V - 1, np.int64)",
     "pad = np.full(1, self.V - 1, np.int64)", "test_perplexity.py test_data.py"),
    ("ngram-discount-backoff", "corpus/perplexity.py", "+ D * typ / np.maximum(tot, 1) * p, p)",
     "+ D / np.maximum(tot, 1) * p, p)", "test_perplexity.py test_data.py"),
    ("ngram-unigram-addone", "corpus/perplexity.py", "p = (self.unigram[seq[t]] + 1) / (self.unigram.sum() + self.V)",
     "p = (self.unigram[seq[t]] + 1) / (self.unigram.sum() + 1)", "test_perplexity.py test_data.py"),
    # ---- data.py
    ("ppl-percentile-over-all", "data.py", "np.percentile(ppl[reason == KEPT], cfg.ppl_percentile)",
     "np.percentile(ppl, cfg.ppl_percentile)", "test_perplexity.py test_data.py"),
    ("ppl-cut-max-not-min", "data.py", "        ppl_cut = min(cuts)\n", "        ppl_cut = max(cuts)\n",
     "test_perplexity.py test_data.py"),
    ("sample-drops-dups-again", "data.py", "reason[alive & ~sample_to_target(",
     "reason[~sample_to_target(", "test_data.py"),
    # ---- corpus/dedup.py
    ("exact-dedup-keeps-last", "corpus/dedup.py", 'order = np.argsort(h, kind="stable")',
     'order = np.argsort(h, kind="stable")[::-1]', "test_dedup.py test_data.py"),
    ("near-dedup-threshold-strict", "corpus/dedup.py", "if est.max() >= threshold:", "if est.max() > threshold:",
     "test_dedup.py test_data.py"),
    ("lsh-probability", "corpus/dedup.py", "if 1 - (1 - threshold ** r) ** b >= 0.99:",
     "if 1 - (1 - threshold ** r) ** b >= 0.5:", "test_dedup.py test_data.py"),
    # ---- corpus/textclean.py
    ("min-chars-off-by-one", "corpus/textclean.py", "if len(text) < cfg.min_chars:", "if len(text) <= cfg.min_chars:",
     "test_textclean.py test_data.py"),
    ("hangul-frac-strict", "corpus/textclean.py", "hangul / letters < cfg.min_hangul_frac",
     "hangul / letters <= cfg.min_hangul_frac", "test_textclean.py test_data.py"),
    ("dup-line-frac", "corpus/textclean.py", "if dup / len(lines) > cfg.max_dup_line_frac or",
     "if dup / len(lines) >= cfg.max_dup_line_frac or", "test_textclean.py test_data.py"),
    ("max-repeat-off", "corpus/textclean.py", "    if max_repeat > 0:", "    if max_repeat > 1000:",
     "test_textclean.py test_data.py"),
    # ---- corpus/shards.py
    ("val-coin-inverted", "corpus/shards.py", "/ 2**64 < fraction", "/ 2**64 > fraction",
     "test_shards.py test_data.py"),
    ("shard-window-short", "corpus/shards.py", "arr[start:start + self.T + 1]", "arr[start:start + self.T]",
     "test_shards.py test_train.py"),
    ("tokens-per-char-train-split", "corpus/shards.py", 'split = "val_" if self.meta.get("val_shards") else ""',
     'split = ""', "test_shards.py test_score.py"),
    # ---- tools/score.py
    ("score-counts-bos", "tools/score.py", "tokens += len(ids) - 1", "tokens += len(ids)", "test_score.py"),
    ("score-stride-full", "tools/score.py", "stride, total, scored = len(ids), max(1, context // 2), 0.0, 1",
     "stride, total, scored = len(ids), max(1, context), 0.0, 1", "test_score.py"),
    # ---- training/checkpoint.py
    ("keep-one-more", "training/checkpoint.py", "for old in list_checkpoints(ckdir)[:-keep]:",
     "for old in list_checkpoints(ckdir)[:-keep - 1]:", "test_train.py test_train_recovery.py"),
    ("tmp-is-a-checkpoint", "training/checkpoint.py", 'if re.fullmatch(r"step-\\d+", d)',
     'if re.match(r"step-\\d+", d)', "test_train_recovery.py"),
    # ---- support/outputs.py
    ("guard-inside-input", "support/outputs.py", "        if p in o.parents:\n", "        if False:\n",
     "test_outputs.py"),
    ("force-without-marker", "support/outputs.py", "        if not ours(out):\n", "        if False:\n",
     "test_outputs.py"),
    # ---- support/cli.py
    ("range-open-bound", "support/cli.py", "(value == lo and not lo_open)", "(value == lo)", "test_cli_errors.py"),
    # ---- support/safetensors_io.py
    ("st-hole-allowed", "support/safetensors_io.py", "        if start != pos:\n", "        if start < pos:\n",
     "test_hostile_files.py"),
    ("st-trailing-bytes", "support/safetensors_io.py", "    if 8 + n + pos != size:", "    if 8 + n + pos > size:",
     "test_hostile_files.py"),
    # ---- corpus/readers.py
    ("cp949-accepts-garbage", "corpus/readers.py", 'if other == "utf-8" or _mostly_hangul(text):',
     'if True:', "test_readers.py test_data_reliability.py"),
    # ---- training/runtime.py
    ("auto-dtype-bf16-on-cpu", "training/runtime.py", 'return "bf16" if device.type == "cuda" else "fp32"',
     'return "bf16"', "test_train_gpu_paths.py test_train.py"),
    # ---- training/parallel.py
    ("first-rows-all", "training/parallel.py", "return local[:max(0, min(k - start, local.shape[0]))]",
     "return local[:max(0, min(k - start + 1, local.shape[0]))]", "test_train.py test_fsdp.py"),
    # ---- training/plan.py
    ("flops-no-attention", "training/plan.py", "attn = 4 * T * cfg.num_attention_heads * cfg.head_dim",
     "attn = 0", "test_plan.py"),
    # ---- tools/report.py
    # ---- demo.py
    ("demo-heldout-overlaps", "demo.py", "if i % 5], docs[::5]", "if i % 4], docs[::5]", "test_demo.py"),
    # ---- redwhale.py
    ("cli-nproc-ignored", "redwhale.py", "if known.nproc > 1 and", "if known.nproc > 2 and",
     "test_train.py test_cli_errors.py"),
    ("cli-ratio-runs-merge", "redwhale.py", '"ratio": ("tokenizer", ["ratio"]', '"ratio": ("tokenizer", ["merge"]',
     "test_tokenizer.py test_cli_errors.py"),
    ("report-first-loss", "tools/report.py", 's = out.setdefault(name, {"first_loss": r["loss"], "steps": 0})',
     's = out.setdefault(name, {"first_loss": 0.0, "steps": 0})', "test_report.py test_demo.py"),
    # ---- second list: thresholds and formulas beyond the six
    ("causal-on-cached-token", "model.py", "is_causal=mask is None and T > 1", "is_causal=mask is None",
     "test_model.py"),
    ("init-std-fixed", "model.py", "std = self.config.initializer_range", "std = 0.02", "test_model.py"),
    ("rope-rotate-sign", "model.py", "torch.cat((-x2, x1), dim=-1)", "torch.cat((x2, -x1), dim=-1)",
     "test_model.py"),
    ("shard-id-equal-vocab", "corpus/shards.py", "        if top >= vocab:\n", "        if top > vocab:\n",
     "test_shards.py test_train.py"),
    ("packed-segment-positions-restart", "eval_kobest.py", "pos[b, s:s + L] = torch.arange(n, n + L)",
     "pos[b, s:s + L] = torch.arange(0, L)", "test_eval_kobest.py"),
    ("packed-mask-ignored", "model.py", "attn_mask=mask, is_causal=mask is None and T > 1",
     "attn_mask=None, is_causal=T > 1",
     "test_eval_kobest.py test_model.py"),
    ("lm-input-truncation", "eval_kobest.py", "return (ctx_ids + cont_ids)[-(max_len + 1):][:-1]",
     "return (ctx_ids + cont_ids)[-max_len:][:-1]", "test_eval_kobest.py"),
    ("latin-rule-ascii-only", "tokenizer.py", 'return c.isascii() or cat[0] in "PN" or',
     'return c.isascii() or', "test_tokenizer.py"),
    ("decompose-with-a-new-piece", "expand.py", "    del base.pieces[n_base:]", "    del base.pieces[n_base + 1:]",
     "test_tokenizer.py test_expand.py"),
    ("max-chars-off-by-one", "corpus/textclean.py", "if cfg.max_chars and len(text) > cfg.max_chars:",
     "if cfg.max_chars and len(text) >= cfg.max_chars:", "test_textclean.py test_data.py"),
    ("symbol-frac-strict", "corpus/textclean.py", "nonspace and symbols / nonspace > cfg.max_symbol_frac:",
     "nonspace and symbols / nonspace >= cfg.max_symbol_frac:", "test_textclean.py test_data.py"),
    ("rep-min-words", "corpus/textclean.py", "if len(words) < max(cfg.rep_min_words, 2) or",
     "if len(words) <= max(cfg.rep_min_words, 2) or", "test_textclean.py test_data.py"),
    ("digit-frac-strict", "corpus/textclean.py", "nonspace and digits / nonspace > max_digit:",
     "nonspace and digits / nonspace >= max_digit:", "test_textclean.py test_data.py"),
    ("sample-to-target-strict", "data.py", "keep[idx[np.cumsum(sizes[idx]) <= target]] = True",
     "keep[idx[np.cumsum(sizes[idx]) < target]] = True", "test_data.py"),
    ("local-token-count", "train.py", "            dist.all_reduce(n_tok)\n", "            pass\n",
     "test_ddp_accum.py test_train.py"),
    ("warmup-fraction-boundary", "recipe.py", "if st.warmup < 1 else int(st.warmup)",
     "if st.warmup <= 1 else int(st.warmup)", "test_recipe.py"),
    ("fsdp-rows-floor", "training/parallel.py", "rank * math.ceil(rows / world)", "rank * (rows // world)",
     "test_fsdp.py"),
    ("cp949-majority-tie", "corpus/readers.py", 'for c in non_ascii) > len(non_ascii)',
     'for c in non_ascii) >= len(non_ascii)', "test_readers.py test_data_reliability.py"),
    ("plan-no-head-flops", "training/plan.py", "head = cfg.hidden_size * cfg.vocab_size", "head = 0", "test_plan.py"),
    ("int-accepts-fraction", "support/cli.py", "        ok = ok and float(value).is_integer()\n", "        pass\n",
     "test_cli_errors.py"),
    ("score-counts-bytes", "tools/score.py", "        chars += len(text)\n", "        chars += len(text.encode())\n",
     "test_score.py"),
    ("st-header-limit", "support/safetensors_io.py", "MAX_HEADER = 100_000_000", "MAX_HEADER = 10 ** 12",
     "test_hostile_files.py"),
    ("force-other-step", "support/outputs.py", "        if step and written_by(out) not in (\"\", step):\n",
     "        if False:\n", "test_outputs.py"),
    ("resume-oldest", "training/checkpoint.py", "    for name in reversed(have):\n", "    for name in have:\n",
     "test_train_recovery.py test_train.py"),
    # ---- third list: more formulas a reader could get wrong
    ("stage-data-restarts", "train.py", 'offset = sum(q["steps"] * (q["batch_tokens"] // q["T"])',
     'offset = 0 * sum(q["steps"] * (q["batch_tokens"] // q["T"])', "test_train_step.py test_train.py"),
    ("micro-rank-major", "train.py", "data.batch(first + m * B * W + rank * B, B)",
     "data.batch(first + rank * B * G + m * B, B)", "test_ddp_accum.py test_train.py"),
    ("eval-mean-per-window", "training/metrics.py", "            tot[1] += y.numel()\n",
     "            tot[1] += y.size(1)\n", "test_train_step.py test_score.py"),
    ("bpc-no-ln2", "training/metrics.py", "loss * tpc / math.log(2)", "loss * tpc", "test_score.py test_train.py"),
    ("clip-constant", "train.py", "clip_grad_norm_(self.params, self.recipe.grad_clip)",
     "clip_grad_norm_(self.params, 1.0)", "test_train_step.py test_train_gpu_paths.py"),
    ("storage-trained-bf16", "training/runtime.py", "return torch.float32 if trained else frozen",
     "return frozen if trained else torch.float32", "test_train_gpu_paths.py test_train.py"),
    ("fp16-base-rounded", "training/runtime.py",
     "return base, (torch.bfloat16 if base == torch.float32 else base) if mixed else torch.float32",
     "return base, torch.bfloat16 if mixed else torch.float32", "test_train_gpu_paths.py"),
    ("memory-check-skipped", "training/plan.py", "env.mixed) if available else []", "env.mixed) if False else []",
     "test_train_gpu_paths.py"),
    ("other-ranks-silent", "support/cli.py", 'if rank == 0 or (every_rank and world != "1"):', "if rank == 0:",
     "test_train_gpu_paths.py test_cli_errors.py"),
    ("shared-out-unchecked", "training/run_folder.py", 'None if os.path.exists(probe) else "missing"',
     "None", "test_train_gpu_paths.py"),
    ("recompile-limit-unreported", "training/runtime.py", 'self.hits += "recompile_limit" in record.getMessage()',
     "self.hits += 0", "test_train_gpu_paths.py"),
    ("top-p-drops-crossing", "model.py", "keep = sorted_p.cumsum(-1) - sorted_p < top_p",
     "keep = sorted_p.cumsum(-1) < top_p", "test_model.py"),
    ("padded-logits-kept", "model.py", "            logits = logits[..., :self.config.vocab_size]",
     "            logits = logits", "test_model.py test_expand.py"),
    ("shingle-hash-short", "corpus/dedup.py", "h = h * np.uint64(0x100000001B3) + cp[k:len(cp) - n + 1 + k]",
     "h = h * np.uint64(0x100000001B3) + cp[k - 1:len(cp) - n + k]", "test_dedup.py test_data.py"),
    ("token-ratio-inverted", "tokenizer.py", '"ratio": round(n_new / max(n_base, 1), 4)',
     '"ratio": round(n_base / max(n_new, 1), 4)', "test_tokenizer.py"),
    ("reservoir-bias", "tokenizer.py", "j = rng.randrange(i + 1)", "j = rng.randrange(i)", "test_tokenizer.py"),
    ("ppl-model-tokens", "corpus/perplexity.py", "ids = [bos + x[:max_tokens]", "ids = [bos + x[:max_tokens - 1]",
     "test_perplexity.py"),
    ("score-window-start", "tools/score.py", "start = max(0, stop - 1 - context)", "start = max(0, stop - context)",
     "test_score.py"),
    ("fullwidth-range", "corpus/textclean.py", "range(0xFF01, 0xFF5F)", "range(0xFF01, 0xFF5E)",
     "test_textclean.py test_data.py"),
    ("lora-unmerge-sign", "lora.py", "            self.weight.data = self.weight.float() - self.delta()",
     "            self.weight.data = self.weight.float() + self.delta()", "test_lora.py"),
    ("old-not-restored", "support/outputs.py", "            if kind == \"old\" and not out.exists():",
     "            if False:", "test_outputs.py"),
    # ---- fourth list, held out: written after the tests above, and first run before any test was
    # written for them, to see how the suite does on bugs it was not tuned for (bench/RESULTS.md)
    ("rmsnorm-weight-ignored", "model.py", "        return self.weight * h.to(x.dtype)", "        return h.to(x.dtype)",
     "test_model.py"),
    ("f1-is-jaccard", "eval_kobest.py", "2 * tp / (2 * tp + fp + fn) if", "tp / (tp + fp + fn) if",
     "test_eval_kobest.py"),
    ("ppl-cut-inclusive", "data.py", "reason[(reason == KEPT) & (ppl > ppl_cut)] = PERPLEXITY",
     "reason[(reason == KEPT) & (ppl >= ppl_cut)] = PERPLEXITY", "test_perplexity.py test_data.py"),
    ("batch-tokens-one-rank", "recipe.py", "batch_tokens = B * T * G * world", "batch_tokens = B * T * G",
     "test_recipe.py"),
    ("tokens-per-rank", "train.py", 'tokens += b["batch_tokens"]', 'tokens += b["B"] * b["T"]',
     "test_ddp_accum.py test_train.py"),
    ("spaces-not-collapsed", "corpus/textclean.py", '    text = _SPACE_RUN.sub(" ", text)\n', "",
     "test_data.py test_textclean.py"),
    ("lora-a-zero", "lora.py", "        nn.init.kaiming_uniform_(a, a=math.sqrt(5))\n", "        a.zero_()\n",
     "test_lora.py test_train.py"),
    ("no-shuffle", "corpus/shards.py", "w = int(self._perm[1][i])", "w = i", "test_shards.py test_train.py"),
    ("merge-floor-max", "tokenizer.py", "floor = min(scores) if scores else 0.0",
     "floor = max(scores) if scores else 0.0", "test_tokenizer.py"),
    ("ngram-discount", "corpus/perplexity.py", "def __init__(self, order=3, discount=0.75",
     "def __init__(self, order=3, discount=0.5", "test_perplexity.py test_data.py"),
]


def files_of(root):
    """The tracked and untracked-but-not-ignored files, plus .cache (the fetched base tokenizer)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                         capture_output=True).stdout.decode().split("\0")
    return [f for f in out if f and (root / f).is_file()]


def copy_tree(root, dest):
    for f in files_of(root):
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, dest / f)
    if (root / ".cache").is_dir():
        shutil.copytree(root / ".cache", dest / ".cache")


def apply(tree, mutant):
    name, fname, old, new, _ = mutant
    path = tree / fname
    text = path.read_text(encoding="utf-8")
    n = text.count(old)
    if n != 1:
        raise SystemExit(f"error: mutant {name}: the text to change occurs {n} times in {fname}, not once")
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_order(tree, first, first_only=False):
    """The named test files first, then every other test file (pytest keeps this order)."""
    first = [f"tests/{f}" for f in first.split() if (tree / "tests" / f).is_file()]
    if first_only and first:
        return first
    rest = sorted(str(p.relative_to(tree)) for p in (tree / "tests").glob("test_*.py"))
    return first + [f for f in rest if f not in first]


def pytest(tree, args, timeout):
    """(return code or None on timeout, stdout): pytest in its own process group, all of which
    (torchrun workers, the demo's children) is killed on a timeout."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, ""
    return proc.returncode, out


def run_suite(tree, clean, first, timeout, first_only=False):
    """(outcome, how, seconds), outcome one of killed / survived / timeout / error. A kill is a
    test that fails (pytest exit 1 naming it) and passes when rerun alone on the clean tree;
    anything else (a timeout, a collection or internal error, a test that also fails unmutated)
    is reported apart and left out of the score."""
    t0 = time.time()
    rc, out = pytest(tree, ["-x", *test_order(tree, first, first_only)], timeout)
    sec = time.time() - t0
    if rc is None:
        return "timeout", f"no result after {timeout} s", sec
    if rc in (4, 5):      # a usage error or no tests: a fault of this script
        raise SystemExit(f"error: pytest exited {rc}: {out[-3000:]}")
    if rc == 0:
        return "survived", "all tests passed", sec
    # a failing test, or one whose fixture failed (ERROR path::test); not a collection error
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in out.splitlines()      # "FAILED id - why"
              if ln.startswith(("FAILED ", "ERROR ")) and "::" in ln]
    if rc != 1 or not failed:
        return "error", f"pytest exit {rc}: {(out.strip().splitlines() or ['?'])[-1][:140]}", sec
    rc_clean, _ = pytest(clean, [failed[0]], timeout)
    if rc_clean != 0:
        return "error", f"{failed[0]} fails on the clean tree too (flaky?)", sec
    return "killed", failed[0][:160], sec


def git_state(root):
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    return head.strip() + (" + uncommitted changes" if dirty.strip() else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated mutant names (default: all)")
    p.add_argument("--list", action="store_true", help="print the mutants and exit")
    p.add_argument("--check", action="store_true", help="check every edit applies exactly once, run no tests")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the unmutated run that must pass first (and that sets the timeout)")
    p.add_argument("--first-only", action="store_true",
                   help="run only each mutant's own test files (a quick first look; the score is the full run)")
    p.add_argument("--timeout", type=int, default=0,
                   help="seconds per mutant (default: 3 x the baseline's time, or 1800)")
    p.add_argument("--output", default="", help="write the results as JSON here (after every mutant)")
    a = p.parse_args(argv)
    mutants = MUTANTS
    if a.only:
        want = a.only.split(",")
        unknown = set(want) - {m[0] for m in MUTANTS}
        if unknown:
            raise SystemExit(f"error: --only: no mutant named {', '.join(sorted(unknown))} (see --list)")
        mutants = [m for m in MUTANTS if m[0] in want]
    if a.list:
        for name, fname, *_ in mutants:
            print(f"{name:32s} {fname}")
        return
    state = git_state(ROOT)
    print(f"{len(mutants)} mutants in {len({m[1] for m in mutants})} files, tree {state}", flush=True)
    if a.check:            # the working tree is what the copies are made from
        bad = [f"{m[0]}: occurs {n} times in {m[1]}" for m in mutants
               if (n := (ROOT / m[1]).read_text(encoding="utf-8").count(m[2])) != 1]
        print("\n".join(bad) or "every mutant applies exactly once")
        raise SystemExit(1 if bad else 0)
    report = {"tree": state, "mutants": []}
    with tempfile.TemporaryDirectory(prefix="redwhale-mutation-") as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(ROOT, clean)
        timeout = a.timeout or 1800
        if not a.no_baseline:
            t0 = time.time()
            rc, out = pytest(clean, [], timeout)
            report["baseline_s"] = round(time.time() - t0)
            print(f"baseline: exit {rc} in {report['baseline_s']} s", flush=True)
            if rc != 0:
                raise SystemExit(f"error: the unmutated suite fails: fix it before measuring mutants\n{out[-3000:]}")
            timeout = a.timeout or 3 * report["baseline_s"]
        for i, m in enumerate(mutants):
            tree = Path(tmp) / m[0]
            shutil.copytree(clean, tree, symlinks=True)
            apply(tree, m)
            outcome, how, sec = run_suite(tree, clean, m[4], timeout, a.first_only)
            shutil.rmtree(tree, ignore_errors=True)
            report["mutants"].append({"name": m[0], "file": m[1], "outcome": outcome, "by": how,
                                      "seconds": round(sec, 1)})
            print(f"[{i + 1}/{len(mutants)}] {m[0]:32s} {outcome:8s} {sec:6.0f} s  {how}", flush=True)
            if a.output:
                Path(a.output).write_text(json.dumps(report, indent=1))
    res = report["mutants"]
    k = sum(r["outcome"] == "killed" for r in res)
    scored = sum(r["outcome"] in ("killed", "survived") for r in res)
    print(f"\nscore: {k}/{scored} killed ({100 * k / max(1, scored):.1f}%)")
    for r in res:
        if r["outcome"] != "killed":
            print(f"{r['outcome']}: {r['name']} ({r['file']}): {r['by']}")


if __name__ == "__main__":
    main()

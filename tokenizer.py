"""Korean vocabulary for an English Llama tokenizer (RedWhale part 2).

Train a Korean SentencePiece BPE model on the cleaned corpus, filter its pieces by rules,
append the survivors to a Llama-style base `tokenizer.model` through the SentencePiece model
proto, and measure the token ratio (tokens with the merged tokenizer / tokens with the base).

    python tokenizer.py train assets/korean_corpus.jsonl.gz --vocab-size 20000 --out out/ko
    python tokenizer.py merge --base .cache/base_tokenizer/tokenizer.model \
        --korean out/ko/korean.model --out out/merged          # HF tokenizer folder + merge_report.json
    python tokenizer.py ratio --tokenizer out/merged --base .cache/base_tokenizer/tokenizer.model \
        --text-field '*' KOBEST_DIR/*/test.jsonl           # JSON with "ratio" and per-file ratios
    python tokenizer.py sweep KOBEST_DIR/*/train.jsonl --base .cache/base_tokenizer/tokenizer.model \
        --sizes 8000,16000,20000,32000,40000 --eval KOBEST_DIR/*/test.jsonl --text-field '*'

Corpus files are plain text (one text per line) or JSONL (field --text-field, default "text";
"*" takes a row's "text" field if it has one, else each of its string fields as a text of its
own, as for KoBEST rows), optionally gzipped.
"""
import argparse
import contextlib
import gzip
import io
import itertools
import json
import os
import random
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, fields, replace
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from corpus.readers import add_flags, setting
from support import cli, outputs
from support.tokenizer_io import HF_TOKENIZER_FILES, Tokenizer, load_proto

NORMAL = sp_pb2.ModelProto.SentencePiece.NORMAL
SPACE = "\u2581"  # "▁", SentencePiece's visible whitespace
PARKED = -1e6     # Llama/Mistral park whitespace-run pieces at -1e9: not part of the score range
# what merge writes of a Hugging Face tokenizer folder: not tokenizer.json (the base's fast tokenizer
# knows no Korean piece) nor added_tokens.json (the base's added tokens hold the ids the new pieces take)
MERGED_FILES = tuple(f for f in HF_TOKENIZER_FILES if f not in ("tokenizer.json", "added_tokens.json"))


# ---- reading text ----

def read_texts(paths, text_field="text"):
    """Yield the texts of plain-text (one per line) or JSONL files, gzipped or not.
    Errors name the file and line; nothing is copied to disk."""
    for path in paths:
        path = str(path)
        opener = gzip.open if path.endswith(".gz") else open
        is_json = ".jsonl" in path or path.endswith((".json", ".json.gz"))
        try:
            with opener(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    try:  # decode line by line so that an error can name its line
                        line = raw.decode("utf-8").rstrip("\r\n")
                    except UnicodeDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: not UTF-8 ({e.reason}); clean the corpus first") from None
                    if not line.strip():
                        continue
                    if not is_json:
                        yield line
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
                    if text_field == "*":  # "text" if there is one, else every string field (KoBEST rows)
                        texts = [] if not isinstance(row, dict) else [row["text"]] if "text" in row else [
                            v for v in row.values() if isinstance(v, str)]
                    else:
                        texts = [row.get(text_field)] if isinstance(row, dict) else []
                    if not texts or not all(isinstance(t, str) for t in texts):
                        raise ValueError(f"{path}:{lineno}: no string field {text_field!r} "
                                         f"(choose one with --text-field, or '*' for all string fields)")
                    yield from (t for t in texts if t)  # an empty text is no error, just nothing
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None


def sample_lines(lines, k, seed=0):
    """A uniform random sample of k lines from a stream read once (reservoir sampling, Vitter's
    algorithm R), in stream order; every line when there are at most k (or k is 0). Done here,
    seeded, rather than by SentencePiece, whose own sampler draws a new seed in every process."""
    rng, keep, idx = random.Random(seed), [], []
    for i, line in enumerate(lines):
        if not k or i < k:
            keep.append(line)
            idx.append(i)
        else:
            j = rng.randrange(i + 1)       # line i replaces a kept one with probability k / (i + 1)
            if j < k:
                keep[j], idx[j] = line, i
    return [keep[j] for j in sorted(range(len(keep)), key=idx.__getitem__)]


def _drain(lines):
    """Hand the lines over one by one and let go of each: SentencePiece copies them, so the
    sample is never held twice."""
    lines.reverse()
    while lines:
        yield lines.pop()


# ---- training ----

# SentencePiece keeps every training sentence in memory: at corpus scale (tens of GB) train on
# this many lines, a uniform seeded sample of the whole stream (sample_lines), which is plenty
# for a 20k vocabulary. 0 trains on everything.
SAMPLE_SENTENCES = 2_000_000
FILTERS = ("hangul_only", "drop_latin", "drop_covered_chars", "max_piece_chars")  # merge's part of VocabConfig


@dataclass
class VocabConfig:
    """How the Korean vocabulary is made: the trainer's settings (the flags of `train`) and which
    learned pieces merge keeps (FILTERS, the flags of `merge`); `sweep` takes both. Each setting is
    declared once (corpus.readers.setting): its default, --help line and the flag's range."""
    model_type: str = setting("bpe", "BPE merges cleanly into a BPE base (Llama); unigram pieces often end up "
                              "unreachable", choices=["bpe", "unigram"])
    character_coverage: float = setting(0.9995, "share of characters covered by pieces; the rest go to byte fallback",
                                        lo=0, hi=1, lo_open=True)
    input_sentence_size: int = setting(SAMPLE_SENTENCES, "train on a uniform random sample of this many lines of the "
                                       "whole corpus, so memory stays bounded at any corpus size (0: all lines)", lo=0)
    max_sentence_length: int = setting(16384, "skip longer lines (bytes)", lo=1)
    seed: int = setting(0, "seed of the line sample", lo=0)
    num_threads: int = setting(None, "trainer threads (default: all cores)", lo=1, option="--threads",
                               metavar="THREADS")
    hangul_only: bool = setting(True, "keep only pieces made of Hangul syllables (with or without a leading '▁')",
                                action=argparse.BooleanOptionalAction)
    drop_latin: bool = setting(True, "drop pieces with Latin letters, digits or punctuation (the base handles those)",
                               action=argparse.BooleanOptionalAction)
    # off by default: "▁X" pieces are BPE's first step into most Korean words; dropping them left
    # 7,364 of 18k longer pieces unreachable at 20k, and the KoBEST ratio went from 0.387 to 0.591
    # (bench/RESULTS.md)
    drop_covered_chars: bool = setting(False, "drop single-character pieces ('▁X') whose character the base already "
                                       "has", action=argparse.BooleanOptionalAction)
    max_piece_chars: int = setting(8, "drop longer pieces (0: no limit)", lo=0)

    def filters(self):
        """The merge filters, as filter_pieces takes them and merge_report.json records them."""
        return {k: getattr(self, k) for k in FILTERS}


def train_korean(texts, out_dir, vocab_size=20000, cfg=None, **settings):
    """Train the Korean SentencePiece model from an iterator of texts (read once, streamed: only
    the sampled sentences are held); writes out_dir/korean.model. `cfg` is a VocabConfig, or
    give its trainer settings as keywords (character_coverage=0.99, num_threads=1)."""
    cfg = replace(cfg or VocabConfig(), **settings)
    if cfg.model_type != "bpe":
        print(f"warning: merging a {cfg.model_type} model into a BPE base leaves many pieces unreachable",
              file=sys.stderr)
    buf = io.BytesIO()
    # SentencePiece trains on sentences: one per line of each document. Only the sample is held
    # (every line streams straight through with input_sentence_size 0)
    n = cfg.input_sentence_size
    lines = (line for text in texts for line in text.split("\n") if line.strip())
    lines = _drain(sample_lines(lines, n, cfg.seed)) if n else lines
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines, model_writer=buf, model_type=cfg.model_type, vocab_size=vocab_size,
            # the merged model keeps the base's identity normalizer, so learn pieces on text as-is
            # (data.py already normalized it; NFKC here would turn "ㅋㅋ" into unknown conjoining jamo)
            normalization_rule_name="identity", remove_extra_whitespaces=False, byte_fallback=True,
            split_digits=True, character_coverage=cfg.character_coverage,
            # the lines are already our seeded sample (sample_lines): SentencePiece takes them all, in
            # order; the size is recorded in the model's trainer_spec
            input_sentence_size=n, shuffle_input_sentence=False, max_sentence_length=cfg.max_sentence_length,
            num_threads=cfg.num_threads or os.cpu_count() or 1, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            minloglevel=2)
    except RuntimeError as e:  # sentencepiece's own message says what to change (vocab size, coverage)
        raise ValueError(f"training the Korean SentencePiece model failed: {e}") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_atomic(out_dir / "korean.model", buf.getvalue())
    proto = load_proto(buf.getvalue())
    outputs.write_atomic(out_dir / "korean.vocab", "".join(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces).encode())
    return out_dir / "korean.model"


# ---- filtering and merging ----

def is_hangul(c):
    return "\uac00" <= c <= "\ud7a3"  # the 11,172 precomposed syllables


def is_latin_digit_punct(c):
    cat = unicodedata.category(c)
    return c.isascii() or cat[0] in "PN" or "LATIN" in unicodedata.name(c, "")


RULES = ("not_normal", "in_base", "latin_digit_punct", "non_hangul", "covered_char", "too_long")


def filter_pieces(korean, base, hangul_only=True, drop_latin=True, drop_covered_chars=False,
                  max_piece_chars=8):
    """Learned pieces worth adding, in learned order, and how many each rule dropped.
    A piece is dropped by the first rule that matches, in the order of RULES."""
    korean, base = load_proto(korean), load_proto(base)
    base_pieces = {p.piece for p in base.pieces}
    kept, dropped = [], {r: 0 for r in RULES}
    examples = {r: [] for r in RULES}
    for p in korean.pieces:
        text = p.piece[1:] if p.piece.startswith(SPACE) else p.piece
        if p.type != NORMAL:
            rule = "not_normal"          # unk/control/byte pieces: the base has its own
        elif p.piece in base_pieces:
            rule = "in_base"             # a duplicate piece makes the model fail to load
        elif drop_latin and any(is_latin_digit_punct(c) for c in p.piece.replace(SPACE, "")):
            rule = "latin_digit_punct"   # the base's English pieces handle these
        elif hangul_only and not (text and all(is_hangul(c) for c in text)):
            rule = "non_hangul"          # Hanja, jamo, kana, symbols, whitespace runs
        elif drop_covered_chars and len(text) == 1 and text in base_pieces:
            rule = "covered_char"        # "▁X" where the base already has "X"
        elif max_piece_chars and len(text) > max_piece_chars:
            rule = "too_long"
        else:
            kept.append(p.piece)
            continue
        dropped[rule] += 1
        if len(examples[rule]) < 10:
            examples[rule].append(p.piece)
    return kept, dropped, examples


def append_pieces(base, pieces):
    """A copy of the base proto with `pieces` appended as NORMAL pieces, each scored below every
    base piece and in the given order, so BPE merges them only after all base merges."""
    out = sp_pb2.ModelProto()
    out.CopyFrom(load_proto(base))
    scores = [p.score for p in out.pieces if p.score > PARKED]
    floor = min(scores) if scores else 0.0
    seen = {p.piece for p in out.pieces}
    for i, piece in enumerate(pieces):
        assert piece not in seen, f"duplicate piece {piece!r}"
        seen.add(piece)
        new = out.pieces.add()
        new.piece, new.score, new.type = piece, floor - 1.0 - i, NORMAL
    new_scores = [p.score for p in out.pieces[len(out.pieces) - len(pieces):]]
    # float32 scores: integers are exact only below 2**24; check nothing collapsed
    assert len(set(new_scores)) == len(new_scores), "new piece scores are not distinct in float32"
    return out


def unreachable(proto, start):
    """Pieces from index `start` on that BPE never produces when their own text is encoded alone
    (e.g. a needed intermediate piece was filtered away)."""
    tok = Tokenizer(proto, raw=True)
    return [proto.pieces[i].piece for i in range(start, len(proto.pieces))
            if tok.encode(proto.pieces[i].piece.replace(SPACE, " ")) != [i]]


def merge(base, korean, out_dir, eval_texts=None, **filters):
    """Merge the filtered Korean pieces into the base; write an HF tokenizer folder and
    merge_report.json to out_dir; return the report. `filters`: VocabConfig's (hangul_only=...)."""
    base_proto, korean_proto = load_proto(base), load_proto(korean)
    filters = VocabConfig(**filters).filters()
    if korean_proto.trainer_spec.model_type != sp_pb2.TrainerSpec.BPE:
        print("warning: the Korean model is not BPE; many merged pieces may be unreachable", file=sys.stderr)
    kept, dropped, examples = filter_pieces(korean_proto, base_proto, **filters)
    # dropping an unreachable piece cannot make another one reachable, but may (rarely) break
    # one that used it as an intermediate: repeat until stable
    dropped["unreachable"], examples["unreachable"] = 0, []
    while True:
        merged = append_pieces(base_proto, kept)
        bad = set(unreachable(merged, len(base_proto.pieces)))
        if not bad:
            break
        dropped["unreachable"] += len(bad)
        examples["unreachable"] += sorted(bad)[:10 - len(examples["unreachable"])]
        kept = [p for p in kept if p not in bad]
    report = {
        "base": str(base) if not isinstance(base, (bytes, sp_pb2.ModelProto)) else None,
        "korean": str(korean) if not isinstance(korean, (bytes, sp_pb2.ModelProto)) else None,
        "base_size": len(base_proto.pieces), "korean_size": len(korean_proto.pieces),
        "overlap": dropped["in_base"], "dropped": dropped, "added": len(kept),
        "final_size": len(merged.pieces), "filters": filters, "dropped_examples": examples,
    }
    if eval_texts:
        report["ratio"] = {name: token_ratio(merged, base_proto, texts) for name, texts in eval_texts.items()}
    write_hf_tokenizer(merged, out_dir, base=base)
    _write_json(Path(out_dir) / "merge_report.json", report)
    return report


def write_hf_tokenizer(proto, out_dir, base=None):
    """tokenizer.model plus the config files transformers' LlamaTokenizer reads. If the base is an
    HF folder with its own tokenizer_config.json, that one is kept (its added tokens must not
    collide with the new ids)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = proto.trainer_spec
    def piece(i, fallback):
        return proto.pieces[i].piece if 0 <= i < len(proto.pieces) else fallback
    cfg = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": spec.bos_id >= 0, "add_eos_token": False,
           "bos_token": piece(spec.bos_id, "<s>"), "eos_token": piece(spec.eos_id, "</s>"),
           "unk_token": piece(spec.unk_id, "<unk>"), "pad_token": None, "clean_up_tokenization_spaces": False,
           "legacy": False, "sp_model_kwargs": {}, "model_max_length": 1_000_000_000}
    smap = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token")}
    base_dir = Path(base) if isinstance(base, (str, Path)) and Path(base).is_dir() else None
    if base_dir and (base_dir / "tokenizer_config.json").exists():
        cfg = json.loads((base_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        n_base = len(load_proto(base_dir).pieces)
        clash = [i for i in cfg.get("added_tokens_decoder", {}) if int(i) >= n_base]
        if clash:
            raise ValueError(f"{base_dir}/tokenizer_config.json: added tokens at ids {clash} would collide "
                             f"with the new Korean pieces; remove them or merge into tokenizer.model only")
        if (base_dir / "special_tokens_map.json").exists():
            smap = json.loads((base_dir / "special_tokens_map.json").read_text(encoding="utf-8"))
    outputs.write_atomic(out_dir / "tokenizer.model", proto.SerializeToString())
    _write_json(out_dir / "tokenizer_config.json", cfg)
    _write_json(out_dir / "special_tokens_map.json", smap)
    (out_dir / "tokenizer.json").unlink(missing_ok=True)  # transformers would prefer a stale fast tokenizer file


# ---- measuring ----

def token_ratio(tokenizer, base, texts):
    """Tokens with `tokenizer` / tokens with `base` over the same texts (no BOS)."""
    texts = list(texts)
    n_new = sum(len(ids) for ids in Tokenizer(tokenizer).encode(texts))
    n_base = sum(len(ids) for ids in Tokenizer(base).encode(texts))
    return {"texts": len(texts), "chars": sum(len(t) for t in texts), "base_tokens": n_base,
            "new_tokens": n_new, "ratio": round(n_new / max(n_base, 1), 4)}


def ratios(tokenizer, base, paths, text_field="text"):
    """token_ratio per file and over all of them together."""
    per = {str(p): token_ratio(tokenizer, base, read_texts([p], text_field)) for p in paths}
    nb, nn = sum(r["base_tokens"] for r in per.values()), sum(r["new_tokens"] for r in per.values())
    return {"ratio": round(nn / max(nb, 1), 4), "base_tokens": nb, "new_tokens": nn, "per_text": per}


def sweep(corpus_texts, base, sizes, eval_texts, hidden_size=4096, tied=False, out_dir=None, cfg=None):
    """Train (with VocabConfig `cfg`) and merge at each Korean vocabulary size; one row per size:
    pieces added, token ratio per evaluation set, and the embedding parameters the new rows cost
    (embedding + untied head). The tokenizers are kept in out_dir when one is given."""
    corpus_texts, cfg = list(corpus_texts), cfg or VocabConfig()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out_dir or tmp)
        for size in sizes:
            korean = train_korean(corpus_texts, root / f"ko{size}", size, cfg)
            rep = merge(base, korean, root / f"merged{size}", eval_texts, **cfg.filters())
            rows.append({"korean_size": size, "overlap": rep["overlap"], "added": rep["added"],
                         "final_size": rep["final_size"],
                         "ratio": {k: v["ratio"] for k, v in rep.get("ratio", {}).items()},
                         "embedding_params_added": rep["added"] * hidden_size * (1 if tied else 2)})
    return rows


def format_sweep(rows, hidden_size):
    names = list(rows[0]["ratio"]) if rows else []
    head = ["korean vocab", "in base", "added", "final vocab"] + [f"ratio {n}" for n in names] + [
        f"emb params added (h={hidden_size})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["korean_size"], r["overlap"], r["added"], r["final_size"]] + [
            f"{r['ratio'][n]:.3f}" for n in names] + [f"{r['embedding_params_added'] / 1e6:.1f}M"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _write_json(path, obj):
    outputs.write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


# ---- command line ----

def _config(a):
    """The VocabConfig of the flags this command has (train: the trainer's, merge: the filters, sweep: both)."""
    return VocabConfig(**{f.name: getattr(a, f.name) for f in fields(VocabConfig) if hasattr(a, f.name)})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train the Korean SentencePiece model: DIR/korean.model")
    p.add_argument("corpus", nargs="+", help="text or JSONL files (.gz ok)")
    p.add_argument("--vocab-size", type=cli.number(int, lo=2), default=20000,
                   help="Korean vocabulary size (paper: 20k)")
    p.add_argument("--out", required=True, help="output folder")
    cli.add_force(p)
    add_flags(p, VocabConfig, skip=FILTERS)
    p = sub.add_parser("merge", help="merge korean.model into a base tokenizer.model: an HF tokenizer folder")
    p.add_argument("--base", required=True, help="base tokenizer.model (or an HF folder holding one)")
    p.add_argument("--korean", required=True, help="the Korean .model from `train`")
    p.add_argument("--out", required=True, help="output folder")
    cli.add_force(p)
    p.add_argument("--eval", nargs="*", default=[], help="texts to report the token ratio on, per file")
    add_flags(p, VocabConfig, skip=[f.name for f in fields(VocabConfig) if f.name not in FILTERS])
    p = sub.add_parser("ratio", help="token ratio of a tokenizer against the base, per file and overall")
    p.add_argument("texts", nargs="+", help="text or JSONL files")
    p.add_argument("--tokenizer", required=True, help="merged tokenizer folder or .model")
    p.add_argument("--base", required=True, help="base tokenizer.model")
    p = sub.add_parser("sweep", help="train + merge at several Korean vocabulary sizes; print a table")
    p.add_argument("corpus", nargs="+", help="text or JSONL files (.gz ok)")
    p.add_argument("--base", required=True, help="base tokenizer.model")
    p.add_argument("--sizes", default="8000,16000,20000,32000,40000", help="comma-separated Korean vocab sizes")
    p.add_argument("--eval", nargs="+", required=True, help="texts to measure the token ratio on, per file")
    p.add_argument("--hidden-size", type=cli.number(int, lo=1), default=4096, help="for the embedding-parameter column")
    p.add_argument("--tied", action="store_true", help="tied embeddings: new rows cost one matrix, not two")
    p.add_argument("--out", default=None, help="keep the trained and merged tokenizers here")
    cli.add_force(p)
    p.add_argument("--json", default=None, help="also write the rows as JSON to this file (replaces only an "
                   "earlier sweep's, unless --force)")
    add_flags(p, VocabConfig)
    for name in ("train", "merge", "ratio", "sweep"):
        sub.choices[name].add_argument("--text-field", default="text",
                                       help="JSONL field with the text ('*': 'text' if present, else all strings)")
    a = ap.parse_args(argv)
    if a.cmd == "sweep":
        size = cli.number(int, lo=2)      # what a flag's type would check, but one line naming --sizes
        try:
            a.sizes = [size(x) for x in a.sizes.split(",")]
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--sizes {a.sizes!r}: each size {e}") from None
    run(a)


def _inputs(a):
    """Every file or folder this command reads: no output may be, hold or sit inside one."""
    return [*getattr(a, "corpus", []), *getattr(a, "texts", []), *(getattr(a, "eval", None) or []),
            *[getattr(a, k, None) for k in ("base", "korean", "tokenizer")]]


def run(a):
    if a.cmd == "train":
        texts = _nonempty(read_texts(a.corpus, a.text_field), a.corpus)
        with outputs.staged(a.out, _inputs(a), a.force, step="tokenizer-train") as tmp:
            path = train_korean(texts, tmp, a.vocab_size, _config(a))
            n = len(load_proto(path).pieces)
        print(f"wrote {Path(a.out) / 'korean.model'} ({n} pieces)")
    elif a.cmd == "merge":
        evals = {p: list(read_texts([p], a.text_field)) for p in a.eval}
        with outputs.staged(a.out, _inputs(a), a.force, step="merge") as tmp:
            rep = merge(a.base, a.korean, tmp, evals, **_config(a).filters())
        rep.pop("dropped_examples")
        print(json.dumps(rep, ensure_ascii=False, indent=2))
    elif a.cmd == "ratio":
        print(json.dumps(ratios(a.tokenizer, a.base, a.texts, a.text_field), ensure_ascii=False, indent=2))
    elif a.cmd == "sweep":
        if a.json:
            outputs.check_output_file(a.json, _inputs(a), a.force, "--json", ours=outputs.json_with("korean_size"))
        evals = {Path(p).parent.name or p: list(read_texts([p], a.text_field)) for p in a.eval}
        if len(evals) < len(a.eval):  # names collide: fall back to full paths
            evals = {p: list(read_texts([p], a.text_field)) for p in a.eval}
        evals["all"] = [t for v in list(evals.values()) for t in v]
        texts = _nonempty(read_texts(a.corpus, a.text_field), a.corpus)
        with outputs.staged(a.out, _inputs(a), a.force, step="sweep") if a.out else contextlib.nullcontext() as tmp:
            rows = sweep(texts, a.base, a.sizes, evals, a.hidden_size, a.tied, tmp, _config(a))
        print(format_sweep(rows, a.hidden_size))
        if a.json:
            _write_json(a.json, rows)


def _nonempty(texts, paths):
    """The texts, still streamed; one line when there are none (empty files, or only blank lines)."""
    texts = iter(texts)
    for first in texts:
        if first.strip():
            return itertools.chain([first], texts)
    raise ValueError(f"{', '.join(map(str, paths))}: no text to train on (empty, or only blank lines)")


if __name__ == "__main__":
    cli.run(main)

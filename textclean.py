"""Korean text normalization and rule filters: the per-document half of data.py clean.

    python -c "from textclean import normalize; print(normalize('ＡＢＣ　ㅋㅋㅋ\u200b한국어'))"

Pure functions of one text (no I/O), used by data.py's workers; tested in tests/test_data.py.
"""
import re
import unicodedata

import numpy as np

# ----------------------------------------------------------------------------------------
# Normalization. Never NFKC the whole text: it would turn the
# compatibility jamo of "ㅋㅋㅋ" into conjoining jamo and "ㅋㅏ" into "카".

def _build_table():
    t = {}
    for cp in range(0xFF01, 0xFF5F):  # fullwidth ASCII -> ASCII
        t[cp] = cp - 0xFEE0
    t[0x3000] = 0x20  # ideographic space
    for cp in range(0xFFA1, 0xFFDD):  # halfwidth Hangul -> compatibility jamo ("<narrow> 3131")
        dec = unicodedata.decomposition(chr(cp))
        if dec.startswith("<narrow>"):
            t[cp] = int(dec.split()[1], 16)
    for cp in (0x3164, 0x115F, 0x1160, 0xFFA0):  # Hangul fillers: invisible, break tokenizers
        t[cp] = None
    for cp in range(0x10000):  # controls and format characters (zero-width, BOM, bidi marks)
        cat = unicodedata.category(chr(cp))
        if cat == "Cc" or cat == "Cf":
            t[cp] = None
        elif cat == "Zs" and cp != 0x20:
            t[cp] = 0x20  # no-break and other spaces
    for cp in (0xE0001, *range(0xE0020, 0xE0080)):  # tag characters
        t[cp] = None
    del t[0x09], t[0x0A]  # tab and newline stay
    for cp in (0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029):  # every line break becomes \n
        t[cp] = 0x0A
    return t


_TABLE = _build_table()


def _char_class(cps):  # "[a-bc-d...]" from code points, as ranges: a long class is 15x slower
    cps, parts = sorted(cps), []
    lo = prev = cps[0]
    for c in cps[1:] + [-1]:
        if c != prev + 1:
            parts.append(re.escape(chr(lo)) + ("-" + re.escape(chr(prev)) if prev > lo else ""))
            lo = c
        prev = c
    return re.compile("[" + "".join(parts) + "]")


_NEEDS_TABLE = _char_class(_TABLE)  # most texts have nothing to fold or delete: skip translate
_SPACES = re.compile(r"[ \t]*\n[ \t]*")
_SPACE_RUN = re.compile(r" {2,}")
_BLANK_RUN = re.compile(r"\n{3,}")


def normalize(text, max_repeat=5):
    """NFC, folds, deletions, unified newlines, collapsed spaces, repeats capped to
    `max_repeat` (0: no cap). Idempotent: normalize(normalize(x)) == normalize(x)."""
    if _NEEDS_TABLE.search(text):  # delete before NFC: a zero-width space can split jamo
        text = text.replace("\r\n", "\n").translate(_TABLE)
    text = unicodedata.normalize("NFC", text)
    text = _SPACE_RUN.sub(" ", text)
    if "\n" in text:
        text = _BLANK_RUN.sub("\n\n", _SPACES.sub("\n", text))
    text = text.strip()
    if max_repeat > 0:  # after NFC, so composing cannot make a new run longer than the cap
        text = re.sub(r"(.)\1{%d,}" % max_repeat, lambda m: m.group(1) * max_repeat, text, flags=re.S)
    return text


# ----------------------------------------------------------------------------------------
# Rule filters: cheap per-document statistics, Gopher-style repetition checks.

def codepoints(text):  # (len,) uint32 Unicode code points
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _char_classes():
    """uint8 class per code point: 0 space, 1 other (digit, punctuation, symbol), 2 letter, 3 Hangul."""
    cls = np.ones(0x110000, np.uint8)
    for lo, hi in ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x370, 0x52F), (0x3040, 0x30FF),
                   (0x4E00, 0x9FFF), (0xF900, 0xFAFF)):  # Latin, Greek, Cyrillic, kana, Hanja
        cls[lo:hi + 1] = 2
    cls[[0xD7, 0xF7]] = 1  # x and / signs sit inside Latin-1
    for lo, hi in ((0xAC00, 0xD7A3), (0x3131, 0x318E), (0x1100, 0x11FF)):  # syllables, both jamo
        cls[lo:hi + 1] = 3
    cls[[0x20, 0x0A, 0x09]] = 0
    return cls


_CLASS = _char_classes()


def char_stats(text):
    """(Hangul letters, all letters, non-space characters)."""
    n = np.bincount(_CLASS[codepoints(text)], minlength=4)
    return int(n[3]), int(n[2] + n[3]), int(n[1] + n[2] + n[3])



def repetition_reason(text, cfg):
    """Gopher (Rae et al. 2021, table A1) repetition checks; returns a reason or None."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) > 1:
        seen, dup, dup_chars = set(), 0, 0
        for ln in lines:
            if ln in seen:
                dup += 1
                dup_chars += len(ln)
            seen.add(ln)
        if dup / len(lines) > cfg.max_dup_line_frac or dup_chars / len(text) > cfg.max_dup_line_char_frac:
            return "dup_lines"
    words = text.split()
    if len(words) < max(cfg.rep_min_words, 2) or len(set(words)) == len(words):
        return None  # short texts repeat a word pair by chance (Gopher: 50+ words); no repeated word
    # word ids by str hash: only compared inside this text, so the per-process hash seed
    # cannot change a decision (short of a 2^-64 collision), and it is 5x faster than a dict
    ids = np.fromiter(map(hash, words), np.int64, count=len(words)).view(np.uint64)
    wlen = np.fromiter(map(len, words), np.int64, count=len(words))
    csum = np.concatenate(([0], np.cumsum(wlen)))
    total = int(csum[-1])
    top, dup = cfg.top_ngrams, cfg.dup_ngrams
    key = ids
    for n in range(2, max([1, *top, *dup]) + 1):
        # key[i] identifies words[i:i+n] (wrapping uint64 polynomial; collisions ~2^-64)
        key = key[:-1] * np.uint64(0x9E3779B97F4A7C15) + ids[n - 1:]
        if len(key) < 2:
            break
        order = np.argsort(key)
        ks = key[order]
        same = ks[1:] == ks[:-1]
        if not same.any():
            break  # no n-gram repeats, so no longer one does either
        if n in top:  # the most frequent n-gram (runs of equal sorted keys; ties: the longest)
            starts = np.flatnonzero(np.concatenate(([True], ~same, [True])))
            runs = np.diff(starts)
            first = order[starts[:-1][runs == runs.max()]]  # one occurrence of each most frequent
            chars = (csum[first + n] - csum[first]).max()
            if runs.max() * chars / total > top[n]:
                return f"top_{n}gram"
        if n in dup:  # characters of the words covered by n-grams that occur twice or more
            rep = np.zeros(len(key), bool)
            rep[order] = np.concatenate((same, [False])) | np.concatenate(([False], same))
            covered = np.zeros(len(words) + 1, np.int64)  # +1 at a repeated n-gram's start, -1 after its end
            np.add.at(covered, np.flatnonzero(rep), 1)
            np.add.at(covered, np.flatnonzero(rep) + n, -1)
            if int(wlen[np.cumsum(covered[:-1]) > 0].sum()) / total > dup[n]:
                return f"dup_{n}gram"
    return None


def filter_reason(text, cfg):
    """The first rule the (normalized) text breaks, or None."""
    if not text:
        return "empty"
    if len(text) < cfg.min_chars:
        return "too_short"
    if cfg.max_chars and len(text) > cfg.max_chars:
        return "too_long"
    hangul, letters, nonspace = char_stats(text)
    if cfg.min_hangul_frac > 0 and (letters == 0 or hangul / letters < cfg.min_hangul_frac):
        return "low_hangul"
    if cfg.max_symbol_frac < 1 and nonspace and (nonspace - letters) / nonspace > cfg.max_symbol_frac:
        return "symbols"
    return repetition_reason(text, cfg)

"""Korean text normalization and rule filters: the per-document half of data.py clean.

    python -c "from corpus.textclean import normalize; print(normalize('ＡＢＣ　ㅋㅋㅋ\u200b한국어'))"

Pure functions of one text (no I/O), used by data.py's workers; tested in tests/test_data.py
and tests/test_textclean.py, measured on real prose and junk by bench/filter_bench.py.
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
        # a run of one character longer than max_repeat becomes max_repeat of it: \1\1...\1
        text = re.sub(r"(.)\1{%d,}" % max_repeat, r"\1" * max_repeat, text, flags=re.S)
    return text


# ----------------------------------------------------------------------------------------
# Rule filters: cheap per-document statistics, Gopher-style repetition checks, sentence shape.

def codepoints(text):  # (len,) uint32 Unicode code points
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


SPACE, SYMBOL, LETTER, HANGUL, DIGIT = range(5)  # character classes


def _char_classes():
    """uint8 class per code point. Letters are every script's letters and combining marks (a
    Thai or Khmer name in parentheses is text, not symbols); digits are their own class,
    because Korean prose writes dates, amounts and shares in digits (2018년, 1,000만 명,
    4.5%); symbols are what is left: punctuation, signs, other numerals (①, ²)."""
    cls = np.full(0x110000, SYMBOL, np.uint8)
    for cp in range(0x32400):  # up to the last Hanja extension (above: tags, selectors, private use)
        cat = unicodedata.category(chr(cp))
        if cat[0] in "LM":
            cls[cp] = LETTER
        elif cat == "Nd":
            cls[cp] = DIGIT
    for lo, hi in ((0xAC00, 0xD7A3), (0x3131, 0x318E), (0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF)):
        cls[lo:hi + 1] = HANGUL  # syllables and every block of jamo
    cls[[0x20, 0x0A, 0x09]] = SPACE
    return cls


_CLASS = _char_classes()


def char_stats(text):
    """(Hangul letters, all letters, digits, non-space characters)."""
    n = np.bincount(_CLASS[codepoints(text)], minlength=5)
    return int(n[HANGUL]), int(n[LETTER] + n[HANGUL]), int(n[DIGIT]), int(n[SYMBOL:].sum())


def repetition_reason(text, cfg, scale=1.0):
    """Gopher (Rae et al. 2021, table A1) repetition checks; returns a reason or None.
    `scale` multiplies the n-gram thresholds (filter_reason's allowance for short paragraphs).
    The n-gram part is computed with hashes and sorts; tests/test_textclean.py's repetition_plain
    is its definition in plain Python, and the two agree."""
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
            if runs.max() * chars / total > top[n] * scale:
                return f"top_{n}gram"
        if n in dup:  # characters of the words covered by n-grams that occur twice or more
            rep = np.zeros(len(key), bool)
            rep[order] = np.concatenate((same, [False])) | np.concatenate(([False], same))
            covered = np.zeros(len(words) + 1, np.int64)  # +1 at a repeated n-gram's start, -1 after its end
            np.add.at(covered, np.flatnonzero(rep), 1)
            np.add.at(covered, np.flatnonzero(rep) + n, -1)
            if int(wlen[np.cumsum(covered[:-1]) > 0].sum()) / total > dup[n] * scale:
                return f"dup_{n}gram"
    return None


def short_text_scale(text, cfg):
    """How much to relax the n-gram thresholds for a short document. Gopher's thresholds are
    shares of the text, and in a paragraph of 50-100 words one phrase said twice (a term and
    its definition, "정체전선이 한반도 부근에 머무르며 ...") is already 15-20% of it: real
    encyclopedia paragraphs were dropped for that. So a document of fewer than rep_full_words words is
    judged as if it had that many (the missing words not repeating); a paragraph pasted twice
    is still far over (bench/filter_bench.py)."""
    return max(1.0, cfg.rep_full_words / max(1, len(text.split())))


# A sentence ends with . ! ? … 。 (then closing quotes or brackets, maybe a citation mark [2])
# before a space or the end; or a line ends in a Hangul sentence ending written without a
# period (다, 요, informal 음, 함, 임, ㅋ). A decimal point (4.5%) or a menu item is no end.
_CLOSERS = "\"'”’)」』》〉\\]"
_SENTENCE_END = re.compile(rf"[.!?…。][{_CLOSERS}]*(?:\[\d+\])?(?=\s|$)|[다요죠까네음함임ㅋㅎ~][{_CLOSERS}]*$", re.M)


def sentence_spans(text, longest):
    """(start, end) of each sentence: a stretch that runs up to a sentence end, across line
    breaks (hard-wrapped prose breaks lines inside sentences), of at most `longest`
    characters (a table that ends in one full stop is not one long sentence)."""
    spans, prev = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() - prev <= longest:
            spans.append((prev, m.end()))
        prev = m.end()
    return spans


def sentence_reason(text, cfg):
    """Tables, price and phone lists, menus and listings are lines with (almost) no
    sentences, whether or not they are heavy in digits; prose is sentences, and its
    headings, list items and unfinished last sentence are short. A document of
    sentence_min_lines lines or more is junk when less than min_sentence_frac of it is
    sentences. (One line is not judged: a one-line review often has no period, and a
    flattened listing is caught by its digits outside sentences.)"""
    lines = sum(1 for ln in text.split("\n") if ln.strip())     # blank lines do not make a listing
    if cfg.min_sentence_frac <= 0 or lines < cfg.sentence_min_lines:
        return None
    in_sentences = sum(b - a for a, b in sentence_spans(text, cfg.max_sentence_chars))
    return "no_sentences" if in_sentences / len(text) < cfg.min_sentence_frac else None


def filter_reason(text, cfg):
    """The first rule the (normalized) text breaks, or None. cfg: data.CleanConfig, whose
    fields declare each threshold's default and meaning."""
    if not text:
        return "empty"
    if len(text) < cfg.min_chars:
        return "too_short"
    if cfg.max_chars and len(text) > cfg.max_chars:
        return "too_long"
    hangul, letters, digits, nonspace = char_stats(text)
    if cfg.min_hangul_frac > 0 and (letters == 0 or hangul / letters < cfg.min_hangul_frac):
        return "low_hangul"
    symbols = nonspace - letters - digits
    if digits and (symbols + digits) / nonspace > cfg.max_symbol_frac:
        # digits count as symbols outside sentences only: 2018년, 1,000만 명 and 4.5% are prose
        # in a sentence, and a price list, listing or table when they stand alone
        in_sentences = "".join(text[a:b] for a, b in sentence_spans(text, cfg.max_sentence_chars))
        symbols += digits - char_stats(in_sentences)[2]
    if cfg.max_symbol_frac < 1 and nonspace and symbols / nonspace > cfg.max_symbol_frac:
        return "symbols"
    max_digit = cfg.max_digit_frac  # a document of mostly digits, sentences or not
    if max_digit < 1 and nonspace and digits / nonspace > max_digit:
        return "digits"
    reason = repetition_reason(text, cfg, short_text_scale(text, cfg))
    return reason or sentence_reason(text, cfg)

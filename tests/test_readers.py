"""corpus/readers.py: how one raw line is decoded when a file mixes encodings.

    python -m pytest -q tests/test_readers.py
"""
import pytest

from corpus.readers import decode_line


@pytest.mark.parametrize("raw, auto, want", [
    ("가나다 abc".encode("utf-8"), True, ("가나다 abc", None)),         # the file's own encoding
    ("가나漢".encode("cp949"), True, ("가나漢", "mixed")),               # CP949, 2 of 3 non-ASCII Hangul
    ("가漢".encode("cp949"), True, (None, "bad")),                       # exactly half: not Korean enough
    ("가나漢".encode("cp949"), False, (None, "bad")),                    # no guessing without auto
    (b"abc \xea\xb0", True, (None, "bad")),     # UTF-8 cut mid-character: CP949 reads it as Hanja (媛)
])
def test_a_line_in_the_other_encoding_must_look_korean(raw, auto, want):
    assert decode_line(raw, "utf-8", auto) == want


def test_a_cp949_file_takes_utf8_lines_as_they_are():
    assert decode_line("한국어 ✓".encode("utf-8"), "cp949", True) == ("한국어 ✓", "mixed")
    assert decode_line("한국어".encode("cp949"), "cp949", True) == ("한국어", None)

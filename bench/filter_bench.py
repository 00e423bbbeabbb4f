"""Rule filters on real prose and on junk (issue 13, item 6): the share of real clean prose
each rule drops and the share of junk it catches, old rules and new side by side.

    python bench/filter_bench.py                       # the labeled sample + the shipped corpus
    python bench/filter_bench.py --kobest KOBEST_DIR   # + every BoolQ paragraph and statute (5,775)
    python bench/filter_bench.py --set rep_min_words=80 --set max_digit_frac=0.4   # try settings
    python bench/filter_bench.py --make-sample         # rebuild assets/filter_sample.jsonl.gz

Data (all normalized as data.py clean does, then filtered one document at a time):
- assets/filter_sample.jsonl.gz, the labeled sample, {"text", "label", "kind"} a line. Prose:
  paragraphs of the shipped corpus (KoBEST train text, CC BY-SA 4.0), every one that is heavy
  in digits, symbols or foreign script plus a seeded random draw of the rest, and the shipped
  statute sample. Junk: made here (JUNK) from seeded templates and the shipped text:
  navigation menus, footers and copyright boilerplate, number tables, price lists, phone
  lists, board listings, schedules, repeated lines, hashtag and keyword spam, a paragraph
  pasted twice or more, mojibake; 30% of the listings flattened to one line (kind "_1line").
  --make-sample rebuilds it byte for byte.
- the whole shipped corpus (documents of min_chars or more; all real text, so every drop is
  a false positive), its BoolQ paragraphs hard-wrapped at 40 characters and gathered into
  articles under headings (other_shapes), and with --kobest the BoolQ paragraphs of all three
  splits (Wikipedia-style, the issue's set) plus the statute sample.

"old" is the rule set before issue 13 (digits and every script outside Latin, Greek,
Cyrillic, kana and Hanja counted as symbols; no digit or sentence rule; Gopher's n-gram
thresholds as they are for 50+ words), reproduced in old_filter_reason; "new" is
textclean.filter_reason with CleanConfig's defaults and any --set.
"""
import argparse
import glob
import gzip
import json
import os
import random
import sys
import textwrap
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from corpus import textclean  # noqa: E402
from corpus.textclean import normalize  # noqa: E402
from data import CleanConfig  # noqa: E402

SAMPLE = ROOT / "assets" / "filter_sample.jsonl.gz"
CORPUS = ROOT / "assets" / "korean_corpus.jsonl.gz"
STATUTES = ROOT / "assets" / "statute_sample.jsonl"


# ----------------------------------------------------------------------------------------
# The old rules, for reference: the character classes before issue 13.

def _old_classes():
    cls = np.ones(0x110000, np.uint8)
    for lo, hi in ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x370, 0x52F), (0x3040, 0x30FF),
                   (0x4E00, 0x9FFF), (0xF900, 0xFAFF)):
        cls[lo:hi + 1] = 2
    cls[[0xD7, 0xF7]] = 1
    for lo, hi in ((0xAC00, 0xD7A3), (0x3131, 0x318E), (0x1100, 0x11FF)):
        cls[lo:hi + 1] = 3
    cls[[0x20, 0x0A, 0x09]] = 0
    return cls


_OLD = _old_classes()


def old_filter_reason(text, cfg):
    """textclean.filter_reason as it was: digits were symbols, no digit rule."""
    if len(text) < cfg.min_chars:
        return "too_short"
    if cfg.max_chars and len(text) > cfg.max_chars:
        return "too_long"
    n = np.bincount(_OLD[textclean.codepoints(text)], minlength=4)
    hangul, letters, nonspace = int(n[3]), int(n[2] + n[3]), int(n[1] + n[2] + n[3])
    if cfg.min_hangul_frac > 0 and (letters == 0 or hangul / letters < cfg.min_hangul_frac):
        return "low_hangul"
    if cfg.max_symbol_frac < 1 and nonspace and (nonspace - letters) / nonspace > cfg.max_symbol_frac:
        return "symbols"
    return textclean.repetition_reason(text, cfg)


# ----------------------------------------------------------------------------------------
# Junk, made from templates (seeded): what a Korean web crawl holds besides prose.

MENU = ["홈", "로그인", "회원가입", "마이페이지", "장바구니", "주문조회", "고객센터", "공지사항", "이벤트",
        "자주 묻는 질문", "1:1 문의", "회사소개", "이용약관", "개인정보처리방침", "사이트맵", "전체메뉴",
        "뉴스", "정치", "경제", "사회", "생활/문화", "세계", "IT/과학", "스포츠", "연예", "오피니언", "포토",
        "동영상", "블로그", "카페", "쇼핑", "지도", "웹툰", "날씨", "부동산", "증권", "랭킹", "구독하기",
        "기사제보", "광고문의", "채용정보", "찾아오시는 길", "아이디 찾기", "비밀번호 찾기", "로그아웃",
        "신상품", "베스트", "세일", "기획전", "브랜드", "여성의류", "남성의류", "가방/잡화", "뷰티",
        "리빙", "식품", "유아동", "반려동물", "상품후기", "Q&A", "상품문의", "배송안내", "교환/반품"]
COMPANIES = ["(주)한빛미디어", "㈜그린소프트", "주식회사 바른식품", "(주)누리커머스", "한국정보신문사",
             "㈜다온리빙", "(주)새봄출판", "주식회사 하늘여행", "㈜미래교육", "(주)푸른산업"]
STREETS = ["서울특별시 강남구 테헤란로", "서울특별시 마포구 월드컵북로", "경기도 성남시 분당구 판교역로",
           "부산광역시 해운대구 센텀중앙로", "대전광역시 유성구 대학로", "인천광역시 연수구 송도과학로"]
NAMES = ["김민준", "이서연", "박지훈", "최수아", "정도윤", "강하은", "조현우", "윤지민", "장예준", "임채원"]
REGIONS = ["서울", "부산", "대구", "인천", "광주", "대전", "울산", "세종", "경기", "강원", "충북", "충남",
           "전북", "전남", "경북", "경남", "제주"]
TEAMS = ["두산", "LG", "SSG", "키움", "KT", "NC", "삼성", "롯데", "한화", "KIA"]
STOCKS = ["삼성전자", "SK하이닉스", "LG에너지솔루션", "현대차", "기아", "NAVER", "카카오", "셀트리온",
          "POSCO홀딩스", "KB금융", "신한지주", "삼성바이오로직스"]
DRINKS = ["아메리카노", "카페라떼", "바닐라라떼", "카푸치노", "카라멜 마키아토", "콜드브루", "녹차라떼",
          "자몽에이드", "레몬에이드", "아이스티", "초코라떼", "딸기스무디", "플레인 요거트", "허니브레드", "치즈케이크"]
GOODS = ["여성 니트 가디건", "남성 슬림핏 청바지", "무선 블루투스 이어폰", "스테인리스 텀블러 500ml",
         "국내산 햇사과 5kg", "유기농 현미 10kg", "접이식 캠핑의자", "LED 스탠드 조명", "극세사 담요",
         "어린이 그림책 세트", "고양이 모래 7L", "차량용 휴대폰 거치대", "대용량 보조배터리 20000mAh"]
BRANCHES = ["강남점", "서초점", "잠실점", "홍대점", "신촌점", "분당점", "일산점", "수원점", "서면점",
            "동성로점", "충장로점", "둔산점"]
TAGS = ["맛집", "서울맛집", "강남맛집", "데이트", "카페", "카페스타그램", "먹스타그램", "일상", "소통",
        "맞팔", "선팔", "좋아요", "여행", "제주여행", "오늘의코디", "데일리룩", "셀카", "주말", "힐링", "육아"]
SPAM = ["원룸", "투룸", "월세", "전세", "매매", "급매", "신축", "역세권", "풀옵션", "대출", "무직자대출",
        "당일대출", "저금리", "중고차", "할부", "성형", "다이어트", "보험", "비교", "추천", "강남", "분당"]
WEEKDAYS = "월화수목금토일"


def _phone(r):
    area = r.choice(["02", "031", "032", "051", "053", "062", "042", "070"])
    return f"{area}-{r.randint(200, 9999)}-{r.randint(1000, 9999)}"


def _date(r, sep="."):
    return f"{r.randint(2015, 2024)}{sep}{r.randint(1, 12):02d}{sep}{r.randint(1, 28):02d}"


def _won(r, lo, hi, step=100):
    return f"{r.randrange(lo, hi, step):,}"


def nav_menu(r, sents):
    lines = [r.choice([" | ", " · ", "  ", " / "]).join(r.sample(MENU, r.randint(4, 9)))
             for _ in range(r.randint(1, 4))]
    if r.random() < 0.5:
        lines.insert(r.randint(0, len(lines)), " > ".join(["홈"] + r.sample(MENU, r.randint(2, 3))))
    return "\n".join(lines)


def footer(r, sents):
    co, year = r.choice(COMPANIES), r.randint(2005, 2024)
    parts = [f"상호: {co}", f"대표: {r.choice(NAMES)}",
             f"사업자등록번호: {r.randint(100, 999)}-{r.randint(10, 99)}-{r.randint(10000, 99999)}",
             f"통신판매업신고: 제{year}-서울강남-{r.randint(1000, 9999):05d}호",
             f"주소: {r.choice(STREETS)} {r.randint(1, 500)}, {r.randint(2, 20)}층",
             f"전화: {_phone(r)}", f"팩스: {_phone(r)}", "이메일: help@example.co.kr",
             f"개인정보보호책임자: {r.choice(NAMES)}"]
    lines = [" | ".join(r.sample(parts, r.randint(4, len(parts))))]
    lines += r.sample([f"Copyright © {year} {co}. All rights reserved.",
                       f"저작권자 © {co} 무단 전재 및 재배포 금지",
                       "이용약관 | 개인정보처리방침 | 이메일무단수집거부 | 청소년보호정책",
                       f"Copyright(c) {year} {co} All Rights Reserved"], r.randint(1, 3))
    r.shuffle(lines)
    return "\n".join(lines)


def number_table(r, sents):
    kind = r.randrange(3)
    if kind == 0:  # baseball standings
        rows = ["순위 팀 경기 승 패 무 승률 게임차"]
        for i, t in enumerate(r.sample(TEAMS, len(TEAMS))):
            w = r.randint(50, 90)
            rows.append(f"{i + 1} {t} 144 {w} {144 - w - 2} 2 {w / 142:.3f} {r.randint(0, 30) / 2:.1f}")
    elif kind == 1:  # stock quotes
        rows = ["종목명 현재가 전일비 등락률 거래량"]
        for s in r.sample(STOCKS, r.randint(5, len(STOCKS))):
            rows.append(f"{s} {_won(r, 5000, 900000)} {r.choice('▲▼')}{_won(r, 100, 9000)} "
                        f"{r.uniform(-5, 5):+.2f}% {r.randint(10000, 9999999):,}")
    else:  # population by region
        rows = [r.choice(["시도별 인구 현황 (단위: 명)", "지역 2022 2023 증감률"])]
        for g in r.sample(REGIONS, r.randint(6, len(REGIONS))):
            a = r.randint(100000, 9999999)
            rows.append(f"{g} {a:,} {int(a * r.uniform(0.97, 1.03)):,} {r.uniform(-3, 3):.1f}%")
    sep = r.choice([" ", "\t", " | "])
    return "\n".join(sep.join(row.split(" ")) for row in rows)


def price_list(r, sents):
    if r.random() < 0.5:
        return "\n".join(f"{d} {_won(r, 2500, 7000)}원" for d in r.sample(DRINKS, r.randint(6, 12)))
    out = []
    for g in r.sample(GOODS, r.randint(4, 8)):
        p = r.randrange(9900, 199000, 1000)
        tag = r.choice(["무료배송", "오늘출발", "특가", "단독"])
        out.append(f"[{tag}] {g} {p:,}원 → {int(p * 0.7) // 100 * 100:,}원 "
                   f"({r.randint(10, 60)}% 할인) 리뷰 {r.randint(3, 9999):,}")
    return "\n".join(out)


def phone_list(r, sents):
    lines = [f"{b} {_phone(r)}" + (f" {r.choice(STREETS)} {r.randint(1, 500)}" if r.random() < 0.4 else "")
             for b in r.sample(BRANCHES, r.randint(5, 10))]
    if r.random() < 0.5:
        lines.insert(0, f"대표번호 1588-{r.randint(1000, 9999)} 상담시간 평일 09:00~18:00 (점심 12:00~13:00)")
    return "\n".join(lines)


def board_list(r, sents):
    rows = []
    for i in range(r.randint(5, 12)):
        title = r.choice(sents)[:r.randint(12, 30)].strip()
        rows.append(f"{r.randint(100, 9999)} {r.choice(['', '[공지] ', '[이벤트] ', '[질문] '])}{title} "
                    f"{r.choice(NAMES)} {_date(r)} 조회 {r.randint(3, 9999)}")
    return "\n".join(rows)


def schedule(r, sents):
    rows = []
    for _ in range(r.randint(5, 10)):
        h = r.randint(7, 20)
        rows.append(f"{_date(r)} ({r.choice(WEEKDAYS)}) {h:02d}:{r.choice(['00', '30'])}~{h + 1:02d}:00 "
                    f"{r.choice(['회의실 A', '대강당', '3층 세미나실', '온라인', '본관 201호'])}")
    return "\n".join(rows)


def repeated_lines(r, sents):
    block = r.sample([f"좋아요 {r.randint(0, 99)} 댓글 {r.randint(0, 9)} 공유하기", "답글 | 신고",
                      "로그인 후 댓글을 작성할 수 있습니다.", f"익명 {_date(r)} 삭제 신고",
                      "이 게시물을 신고하시겠습니까?", "더보기", "목록으로 이전글 다음글", r.choice(sents)[:40]],
                     r.randint(1, 3))
    return "\n".join(block * r.randint(3, 8))


def hashtags(r, sents):
    if r.random() < 0.5:
        return " ".join("#" + t for t in r.choices(TAGS, k=r.randint(15, 40)))
    return " ".join(r.choices(SPAM, k=r.randint(3, 5)) + ["".join(r.sample(SPAM, 2)) for _ in range(r.randint(20, 60))])


def pasted_twice(r, sents):
    para = r.choice([s for s in sents if len(s) > 80])
    return (" " if r.random() < 0.5 else "\n").join([para] * r.randint(2, 4))


def mojibake(r, sents):
    """UTF-8 or CP949 bytes read as Latin-1 / CP1252, as a crawler that guessed wrong shows them."""
    s = r.choice(sents)[:r.randint(60, 300)]
    raw = s.encode("utf-8") if r.random() < 0.5 else s.encode("cp949", errors="replace")
    return raw.decode(r.choice(["latin-1", "cp1252"]), errors="replace")


FLATTENED = ("nav_menu", "footer", "number_table", "price_list", "phone_list", "board_list", "schedule")
JUNK = {f.__name__: f for f in (nav_menu, footer, number_table, price_list, phone_list, board_list, schedule,
                                  repeated_lines, hashtags, pasted_twice, mojibake)}


# ----------------------------------------------------------------------------------------
# The labeled sample

def shipped_prose():
    docs = [json.loads(line) for line in gzip.open(CORPUS, "rt", encoding="utf-8")]
    docs += [json.loads(line) for line in open(STATUTES, encoding="utf-8")]
    return [(d["text"], "statute" if d["source"].startswith("statute") else d["source"].split("/")[1]) for d in docs]


def hard(text):
    """Prose the old rules are near: heavy in digits, symbols or scripts outside the old list."""
    cp = textclean.codepoints(text)
    old = _OLD[cp]
    nonspace = max(1, int((old != 0).sum()))
    digits = ((cp >= 0x30) & (cp <= 0x39)).sum()
    other_script = any(unicodedata.category(chr(c))[0] in "LM" for c in cp[old == 1])
    return (old == 1).sum() / nonspace > 0.12 or digits / nonspace > 0.08 or other_script


def make_sample(path, n_prose, n_junk, seed):
    r = random.Random(seed)
    prose = [(t, k) for t, k in shipped_prose() if len(normalize(t)) >= 100 or k == "statute"]
    hard_ones = [p for p in prose if hard(p[0]) or p[1] == "statute"]
    rest = [p for p in prose if p not in hard_ones]
    pick = hard_ones + r.sample(rest, max(0, n_prose - len(hard_ones)))
    sents = [t for t, k in prose if k == "boolq"]
    rows = [{"text": t, "label": "prose", "kind": k} for t, k in pick]
    for i in range(n_junk):
        kind = list(JUNK)[i % len(JUNK)]
        text = JUNK[kind](r, sents)
        if kind in FLATTENED and r.random() < 0.3:  # a crawler that drops <br> and <td> boundaries
            text, kind = " ".join(text.split("\n")), kind + "_1line"
        rows.append({"text": text, "label": "junk", "kind": kind})
    r.shuffle(rows)
    # mtime=0 and no file name in the gzip header: a rebuild is byte-identical
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        for row in rows:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    return rows


def load_sample(path=SAMPLE):
    return [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]


# ----------------------------------------------------------------------------------------
# Measuring

def reasons(texts, rule, cfg):
    return [rule(normalize(t, cfg.max_repeat), cfg) for t in texts]


def share(rs):
    """'1.23% (45 of 3,660): symbols 30, dup_5gram 15'."""
    hit = Counter(x for x in rs if x)
    n = sum(hit.values())
    by = ", ".join(f"{k} {v}" for k, v in hit.most_common())
    return f"{100 * n / max(1, len(rs)):.2f}% ({n:,} of {len(rs):,})" + (f": {by}" if by else "")


def report(name, texts, cfg, goal):
    print(f"\n{name}, {goal}")
    for label, rule in (("old", old_filter_reason), ("new", textclean.filter_reason)):
        print(f"  {label}: {share(reasons(texts, rule, cfg))}")


def speed(texts, cfg, rounds=3):
    """MB/s of each rule set on one core (process time, best of `rounds`), normalized text."""
    texts = [normalize(t, cfg.max_repeat) for t in texts]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    out = []
    for label, rule in (("old", old_filter_reason), ("new", textclean.filter_reason)):
        best = float("inf")
        for _ in range(rounds):
            t0 = time.process_time()
            for t in texts:
                rule(t, cfg)
            best = min(best, time.process_time() - t0)
        out.append(f"{label} {mb / best:.1f} MB/s ({len(texts) / best:,.0f} docs/s)")
    return ", ".join(out)


def other_shapes(prose, seed=0):
    """The shipped paragraphs in the shapes of other sources, for the line and sentence rules:
    hard-wrapped (a text file or PDF breaks lines inside sentences) and articles of several
    paragraphs under headings."""
    r = random.Random(seed)
    paras = [t for t, k in prose if k == "boolq" and len(t) >= 100]
    heads = ["개요", "역사", "특징", "생애", "1. 배경", "주요 내용", "같이 보기", "각주"]
    return {
        f"shipped BoolQ paragraphs of 100+ characters hard-wrapped at 40 characters ({len(paras):,})":
            [textwrap.fill(t, 40) for t in paras],
        "articles: 2-6 shipped BoolQ paragraphs under headings (2,000)":
            ["\n".join(x for h, p in zip(r.sample(heads, 6), r.sample(paras, r.randint(2, 6))) for x in (h, p))
             for _ in range(2000)],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kobest", help="folder of the full KoBEST sets: adds every BoolQ paragraph (all splits)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a CleanConfig setting (the old rules read only those they had)")
    p.add_argument("--make-sample", action="store_true", help=f"rebuild {SAMPLE.relative_to(ROOT)} and stop")
    p.add_argument("--n-prose", type=int, default=800)
    p.add_argument("--n-junk", type=int, default=660)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--show", action="store_true", help="print the prose the new rules drop and the junk they keep")
    a = p.parse_args(argv)
    if a.make_sample:
        rows = make_sample(SAMPLE, a.n_prose, a.n_junk, a.seed)
        labels = Counter(r["label"] for r in rows)
        print(f"wrote {SAMPLE.relative_to(ROOT)}: {dict(labels)}, {os.path.getsize(SAMPLE):,} bytes")
        return
    kw = dict(progress=False)
    for item in a.set:
        name, value = item.split("=", 1)
        default = getattr(CleanConfig, name, None)
        kw[name] = value if isinstance(default, str) else type(default)(value)
    cfg = CleanConfig(**kw)
    print("settings:", ", ".join(f"{k}={v}" for k, v in kw.items() if k != "progress") or "defaults")

    sample = load_sample()
    junk = [s for s in sample if s["label"] == "junk"]
    report(f"labeled sample: prose ({sum(s['label'] == 'prose' for s in sample):,} shipped paragraphs) dropped",
           [s["text"] for s in sample if s["label"] == "prose"], cfg, "goal <= 0.2%")
    report(f"labeled sample: junk ({len(junk):,} made) caught", [s["text"] for s in junk], cfg, "higher is better")
    print("  caught by kind, old -> new:")
    for kind in sorted({s["kind"] for s in junk}, key=lambda k: (list(JUNK).index(k.replace("_1line", "")), k)):
        texts = [s["text"] for s in junk if s["kind"] == kind]
        old, new = (sum(x is not None for x in reasons(texts, rule, cfg))
                    for rule in (old_filter_reason, textclean.filter_reason))
        print(f"    {kind:20s} {old:3d} -> {new:3d} of {len(texts)}")
    corpus = [t for t, k in shipped_prose() if len(normalize(t)) >= cfg.min_chars]
    report(f"shipped corpus + statutes, documents of {cfg.min_chars}+ characters, dropped", corpus, cfg, "goal <= 0.2%")
    print("  speed, one core:", speed(corpus, cfg))
    for name, texts in other_shapes(shipped_prose()).items():
        report(name + ", dropped", texts, cfg, "goal <= 0.2%")
    if a.kobest:
        paras = [json.loads(line)["paragraph"] for f in sorted(glob.glob(os.path.join(a.kobest, "boolq", "*.jsonl")))
                 for line in open(f, encoding="utf-8")]
        paras += [json.loads(line)["text"] for line in open(STATUTES, encoding="utf-8")]
        paras = list(dict.fromkeys(paras))
        report(f"KoBEST BoolQ paragraphs (train+validation+test) + statutes, {len(paras):,} distinct, dropped",
               paras, cfg, "goal <= 0.2%")
    if a.show:
        new = textclean.filter_reason
        print("\nprose the new rules drop:")
        for t in corpus + (paras if a.kobest else []):
            rs = new(normalize(t), cfg)
            if rs:
                print(f"  [{rs}] {normalize(t)[:160]!r}")
        print("\njunk the new rules keep:")
        for s in junk:
            if new(normalize(s["text"]), cfg) is None:
                print(f"  [{s['kind']}] {normalize(s['text'])[:160]!r}")


if __name__ == "__main__":
    main()

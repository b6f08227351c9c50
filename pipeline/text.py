"""Text normalisation shared by deduplication and clustering.

Everything that turns article text into comparable units lives here, so the
stored fingerprints (content hashes, MinHash bands, story keys) and the
in-memory clustering are computed by exactly the same code:

* :func:`clean_text` — light clean-up of plain text (page furniture lines such as
  "Advertisement", "Logo", repeated captions) for text that did not come through
  the HTML extractor;
* :func:`words` — the word tokenizer (case-folded, accents and hyphens folded);
* :func:`content_hash` — exact fingerprint of the normalised word stream;
* :func:`shingles` — word k-gram ids for near-duplicate detection;
* :func:`quotations`, :func:`names` — direct quotations and proper names, the
  most discriminative evidence that two write-ups report the same event;
* :func:`key_hash` — the stable signed 64-bit hash used for stored keys.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence

# Function words and reporting verbs: never content terms, never names.
STOPWORDS = frozenset(
    """
    a about above across after again against ago ahead all almost along already also although always am among an and
    another any anyone anything are around as at away back be became because become been before being below between
    both but by can cannot could did do does doing done down during each either else enough even ever every few for
    from further had has have having he her here hers herself him himself his how however i if in into is it its
    itself just last least less let like many may me might mine more most much must my myself near neither never new
    next no nor not now of off often on once one only onto or other others our ours ourselves out over own per perhaps
    quite rather same several shall she should since so some still such than that the their theirs them themselves then
    there these they this those though through thus to today too toward towards under until up upon us was we were
    what whatever when where whether which while who whom whose why will with within without would yet you your yours
    yourself yourselves s t ll re ve d m said says say saying told tell tells added adding according asked stated
    noted also mr mrs ms dr st its it's via amid despite including include includes made make makes get got go goes
    going took take takes well very really will would year years day days week weeks month months time times first
    second third two three four five six seven eight nine ten hundred thousand million billion monday tuesday wednesday
    thursday friday saturday sunday yesterday tomorrow tonight morning evening night im ive id dont didnt doesnt isnt
    wasnt werent arent cant couldnt wont wouldnt shouldnt youre theyre weve thats lets theres heres whats
    """.split()
)

# Words that are capitalised at the start of a sentence or in headlines but are
# not names; kept out of the name set even when capitalised mid-sentence.
_NOT_NAMES = (STOPWORDS - {"new"}) | frozenset(
    """
    advertisement photo file image video read also related story stories news reporter correspondent staff editor
    desk web updated published pm am gmt ist pkt est edt ap afp reuters ians pti app apn copyright rights reserved
    click here subscribe share comments comment logo close menu home page sign follow twitter facebook whatsapp
    january february march april june july august september october november december jan feb mar apr jun jul aug
    sep sept oct nov dec
    """.split()
)

_NOT_NAMES_ACRONYM = _NOT_NAMES - STOPWORDS

_QUOTE_FOLD = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2033": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "`": "'",
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\u200b": "",
    }
)

_FOLD_CHARS = re.compile("[" + re.escape("".join(map(chr, _QUOTE_FOLD))) + "]")


def _fold_char(m: re.Match[str]) -> str:
    return _QUOTE_FOLD[ord(m.group())]


# A word: letters/digits, joined across apostrophes, hyphens and inner dots ("U.S.").
_WORD = re.compile(r"[^\W_]+(?:['\-.][^\W_]+)*")
_SENT_END = re.compile(r"[.!?]['\")\]]*$")
_DOUBLE_QUOTE_SPAN = re.compile(r'"([^"]+)"?')
_CURLY_SINGLE_SPAN = re.compile(r"\u2018([^\u2018\u2019]+?)\u2019(?![a-z])")
_DATE_LINE = re.compile(
    r"^(?:\w+day,?\s+)?(?:\d{1,2}(?:st|nd|rd|th)?\s+\w+\.?,?\s+\d{4}|\w+\.?\s+\d{1,2},?\s+\d{4})(?:[.,]?\s+\d{1,2}:\d{2}\s*(?:am|pm)?)?\.?$",
    re.I,
)
MIN_CLEAN_LINE_WORDS = 6


def fold(text: str) -> str:
    """Unicode-normalise (NFKC) and fold typographic quotes, dashes and spaces to ASCII forms."""
    if text.isascii():  # nothing to fold; the common case once a text has been folded
        return text
    # A regex over the few characters to fold: str.translate visits every character in
    # Python and costs ten times as much on a news article.
    return _FOLD_CHARS.sub(_fold_char, unicodedata.normalize("NFKC", text))


def _strip_accents(s: str) -> str:
    if s.isascii():
        return s
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


def _norm_word_uncached(w: str) -> str:
    # "counter-terrorism" = "counterterrorism", "U.S." = "us", "Pakistan's" = "pakistan".
    w = w.casefold()
    if w.endswith(("'s", "'")):
        w = w.rsplit("'", 1)[0]
    return _strip_accents(w.replace("-", "").replace(".", "").replace("'", ""))


_NORM_CACHE: dict[str, str] = {}


def _norm_word(w: str) -> str:
    # Vocabulary repeats heavily across articles: a plain dict beats recomputing.
    n = _NORM_CACHE.get(w)
    if n is None:
        if len(_NORM_CACHE) > 500_000:
            _NORM_CACHE.clear()
        n = _NORM_CACHE[w] = _norm_word_uncached(w)
    return n


def words(text: str) -> list[str]:
    """Case-folded word tokens, accents, hyphens, inner dots and possessives folded."""
    norm = _norm_word
    return [n for n in (norm(w) for w in _WORD.findall(fold(text))) if n]


def stem(w: str) -> str:
    """A deliberately light English suffix fold so "talks", "talked" and "talk" meet.

    Plurals, -ing and -ed are stripped, a doubled final consonant is undoubled
    ("stopped" → "stop") and a final "e" dropped ("agreed" and "agree" → "agre").
    """
    if len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("ing") and len(w) > 5:
        w = w[:-3]
    elif w.endswith("ed") and len(w) > 4:
        w = w[:-2]
    elif w.endswith("es") and len(w) > 4 and not w.endswith(("ses", "xes", "zes", "ches", "shes")):
        w = w[:-1]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiousl":
        w = w[:-1]
    while len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


_STEM_CACHE: dict[str, str] = {}


def content_terms(text: str | list[str]) -> list[str]:
    """Stemmed words that carry content (no stopwords, no one-letter tokens), of a text or its :func:`words`."""
    toks = words(text) if isinstance(text, str) else text
    out = []
    for w in toks:
        if w in STOPWORDS or len(w) < 2:
            continue
        st = _STEM_CACHE.get(w)
        if st is None:
            if len(_STEM_CACHE) > 500_000:
                _STEM_CACHE.clear()
            st = _STEM_CACHE[w] = stem(w)
        out.append(st)
    return out


def content_hash(text: str | list[str]) -> str:
    """Exact fingerprint: SHA-256 of the normalised word stream (case, punctuation, spacing ignored)."""
    toks = words(text) if isinstance(text, str) else text
    return hashlib.sha256(" ".join(toks).encode()).hexdigest()


def key_hash(kind: str, value: str | bytes) -> int:
    """A stable signed 64-bit hash (fits a BIGINT column) of one typed key."""
    data = value if isinstance(value, bytes) else value.encode()
    digest = hashlib.blake2b(data, digest_size=8, person=kind.encode()[:16]).digest()
    return int.from_bytes(digest, "big", signed=True)


def shingles(tokens: Sequence[str], k: int) -> set[int]:
    """Ids (stable 32-bit) of the word k-grams of ``tokens``; short texts yield one id per token run."""
    if not tokens:
        return set()
    if len(tokens) < k:
        return {zlib.crc32(" ".join(tokens).encode())}
    joined = [t.encode() for t in tokens]
    return {zlib.crc32(b" ".join(joined[i : i + k])) for i in range(len(joined) - k + 1)}


def clean_text(text: str) -> str:
    """Lightly clean plain text: drop page furniture and repeated lines, keep the article.

    A line survives if it reads like prose (at least six words, or ending in
    sentence punctuation with at least three). Short labels ("Logo",
    "Advertisement", bylines, dates, "close") and lines repeated verbatim (a
    caption printed twice) are dropped. Text that has no prose lines at all is
    returned as it was, so a headline-only document is not emptied.
    """
    seen: set[str] = set()
    kept: list[str] = []
    for raw in fold(text).splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        key = line.casefold()
        if key in seen:
            continue
        seen.add(key)
        n = len(_WORD.findall(line))
        if _DATE_LINE.match(line):
            continue
        if n >= MIN_CLEAN_LINE_WORDS or (n >= 3 and _SENT_END.search(line)):
            kept.append(line)
    return "\n".join(kept) if kept else " ".join(fold(text).split())


def guess_title(text: str) -> str:
    """The first headline-like line of plain text (4-25 words, no final full stop), or ""."""
    for raw in fold(text).splitlines()[:12]:
        line = " ".join(raw.split())
        n = len(_WORD.findall(line))
        if 4 <= n <= 25 and not line.endswith((".", ",", ";")) and not _DATE_LINE.match(line):
            return line
    return ""


def quotations(text: str, min_words: int = 4) -> list[list[str]]:
    """Direct quotations of at least ``min_words`` words, as normalised token lists.

    Double quotes (straight or typographic) are paired within a paragraph; an
    unclosed quote runs to the end of its paragraph, as in news style where a
    quotation continues into the next paragraph. Typographic single quotes are
    used for headline-style quotes.
    """
    out: list[list[str]] = []
    for para in text.split("\n"):
        for m in _CURLY_SINGLE_SPAN.finditer(para):
            toks = words(m.group(1))
            if len(toks) >= min_words:
                out.append(toks)
        folded = fold(para)
        for m in _DOUBLE_QUOTE_SPAN.finditer(folded):
            toks = words(m.group(1))
            if len(toks) >= min_words:
                out.append(toks)
    return out


def _is_titlecase_line(tokens: list[str]) -> bool:
    # Headline style: every longer content word capitalised. One lowercase content
    # word ("spoke") makes it a sentence that merely has many names in it.
    content = [t for t in tokens if len(t) > 3 and t.isalpha() and t.casefold() not in STOPWORDS]
    return len(content) >= 3 and all(t[:1].isupper() for t in content)


_SENT_PUNCT = frozenset(".!?:;")
# Headlines longer than this are not checked for title case (sentences are).
_MAX_HEADLINE_WORDS = 30


def names(text: str) -> list[str]:
    """Proper names and acronyms, normalised; multi-word names give the whole name and each part.

    A capitalised word counts when it is not a function word and either stands
    inside a sentence or is seen capitalised inside a sentence elsewhere in the
    text (so a sentence-initial "Officials" is not a name but "Kirby" is), or
    opens a multi-word name. Title-case lines (headlines) only contribute words
    confirmed elsewhere. A name run stops at punctuation: "Pakistan, Miller
    said" gives two names, not one.
    """
    # One pass over the tokens: for each capitalised token note whether it opens
    # a sentence and whether it follows the previous token across a bare space.
    # None marks lowercase tokens (they end a name run); a run of them is one None.
    cands: list[tuple[str, bool, bool, bool] | None] = []
    append = cands.append
    for line in fold(text).split("\n"):
        matches = list(_WORD.finditer(line))
        if not matches:
            continue
        titlecase = len(matches) <= _MAX_HEADLINE_WORDS and _is_titlecase_line([m.group() for m in matches])
        prev_end, first = 0, True
        for m in matches:
            t = m.group()
            start = m.start()
            if t[0].isupper():
                gap = line[prev_end:start]
                initial = first or not _SENT_PUNCT.isdisjoint(gap)
                append((t, initial, not initial and gap.isspace(), titlecase))
            elif cands and cands[-1] is not None:
                append(None)
            prev_end, first = m.end(), False
        if cands and cands[-1] is not None:
            append(None)
    inner_caps = {_norm_word(c[0]) for c in cands if c is not None and not c[1] and not c[3]}
    result: list[str] = []
    run: list[str] = []

    def flush() -> None:
        result.extend(run)
        if len(run) > 1:
            result.append(" ".join(run))
        run.clear()

    last = len(cands) - 1
    for i, c in enumerate(cands):
        keep = False
        if c is not None:
            t, initial, joined, titlecase = c
            if run and not joined:
                flush()
            w = _norm_word(t)
            acronym = len(t) > 1 and t.isupper() and not titlecase
            nxt = cands[i + 1] if i < last else None
            keep = (
                w not in (_NOT_NAMES_ACRONYM if acronym else _NOT_NAMES)
                and len(w) > 1
                and not w.isdigit()
                and (
                    (not initial and not titlecase)
                    or w in inner_caps
                    or acronym
                    # A sentence-initial word that opens a multi-word name ("Pentagon Press Secretary").
                    or (initial and not titlecase and nxt is not None and nxt[2])
                )
            )
        if keep:
            run.append(w)
        elif run:
            flush()
    if run:
        flush()
    return result


def numbers(text: str) -> list[str]:
    """Figures that identify an event (casualty counts, amounts, article numbers); years excluded."""
    out = []
    for m in re.finditer(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w.])", fold(text)):
        v = m.group().replace(",", "")
        if len(v) == 4 and v[:2] in ("19", "20"):
            continue  # a year: shared by everything written that year
        if v in ("0", "1", "2"):
            continue
        out.append(v)
    return out


def bottom_k(values: Iterable[int], k: int) -> list[int]:
    """The ``k`` smallest distinct values: a consistent sample (two sets sample their overlap alike)."""
    return sorted(set(values))[:k]

"""Article pages → clean text and metadata.

:func:`extract_html` turns one page into an :class:`~pipeline.types.ExtractedArticle`
with trafilatura (precision mode, comments excluded; docs/extract.md records the
measurement behind these settings) followed by :func:`clean_text`, which removes
the furniture extraction still leaves on news pages. :func:`extract_pending` is the
stage: pending feed entries are fetched with :class:`pipeline.fetcher.Fetcher` on
threads, extracted in worker processes (CPU-bound; a page that hangs or kills its
worker fails alone), and stored as ``articles`` rows with their URL aliases, in
small transactions.

When a page cannot be had (network error, 4xx, not HTML, too large) or yields
little text, the feed's own content or summary is stored instead, with status
``fallback`` and the reason. Nothing usable at all is ``failed``: the entry is
retried on later passes until ``ingest.max_extract_attempts``, except for
failures that cannot get better (4xx, refused URL, not HTML), which are final.
"""

from __future__ import annotations

import html as html_lib
import logging
import multiprocessing
import os
import queue
import re
import threading
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import regex
from sqlalchemy import bindparam, func, select, update

from pipeline.config import DATA_DIR, Settings
from pipeline.store import (
    Article,
    ArticleUrl,
    Entry,
    Feed,
    Store,
    chunked,
    dialect_insert,
    insert_ignore,
    lock,
    utcnow,
)
from pipeline.types import DateSource, ExtractedArticle, ExtractionStatus, ExtractReport
from pipeline.urls import InvalidURL, canonical_url, site_of

log = logging.getLogger(__name__)

__all__ = [
    "EXTRACTION_OPTIONS",
    "ExtractionError",
    "ExtractionPool",
    "choose_published",
    "clean_text",
    "decode_page",
    "detect_language",
    "extract_feed_text",
    "extract_html",
    "extract_pending",
    "html_to_text",
    "looks_like_html",
    "word_count",
]

# trafilatura settings, chosen on the article-extraction benchmark (docs/extract.md):
# precision mode drops the related-links and teaser blocks that default mode keeps,
# at almost no cost in recall; reader comments are never article text.
EXTRACTION_OPTIONS: dict[str, Any] = {
    "favor_precision": True,
    "include_comments": False,
    "include_tables": True,
    "deduplicate": False,
}
# When precision mode finds (almost) nothing, trafilatura's default mode gets a second look.
RETRY_BELOW_WORDS = 25
# htmldate: structured sources only (meta tags, JSON-LD, <time>, URL); its free-text
# search guesses from any date printed on the page, which the feed or fetch time beats.
DATE_PARAMS = {"original_date": True, "extensive_search": False, "outputformat": "%Y-%m-%dT%H:%M:%S%z"}
DEFAULT_MIN_WORDS = 50
# The feed's text replaces a page's that is this many times shorter (a paywall teaser).
FEED_PREFERRED_RATIO = 3
SUMMARY_CHARS = 600
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/xml", "text/xml", "text/plain", ""})
ACCEPT_HTML = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"
# Dates before this are parse errors, not news.
EARLIEST_DATE = datetime(1995, 1, 1, tzinfo=timezone.utc)
WRITE_LOCK = "newsmon.extract.write"
# The store's URL columns hold this much.
MAX_URL_CHARS = 2048
# Entries loaded per query; results are committed every ``ingest.batch_size``.
LOAD_CHUNK = 500
# While feeds are still being fetched, how often to look for newly queued entries
# when no page is in flight (seconds).
ARRIVAL_POLL = 0.05
# Once every page is queued, results are committed in batches this many times smaller:
# the clustering of the last batch is what a pass waits for after its last page.
TAIL_BATCH_DIVISOR = 5

# trafilatura and htmldate log every discarded page at WARNING/ERROR; this module
# reports those outcomes itself (status and reason), once, in the store.
for _name in ("trafilatura", "htmldate", "courlan"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.CRITICAL)


def word_count(text: str) -> int:
    """Words in ``text`` (Unicode-aware: Indic vowel signs do not split a word)."""
    return len(_WORD_RE.findall(text or ""))


# ---------------------------------------------------------------- clean_text

# The regex module's \w includes combining marks; the re module's splits "है" in two.
_WORD_RE = regex.compile(r"\w+")
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_KEY_STRIP = re.compile(r"[\W_]+")
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
_AD_SIZE = re.compile(r"(?:[a-z]+ ){0,2}\d{2,4} ?x ?\d{2,4}(?: [a-z]+){0,2}")
_COUNTER = re.compile(
    r"\d[\d,.]*k? (?:comments?|shares?|views?|reads?|likes?|reactions?|responses?|min(?:ute)?s? read)"
)
_ALSO_ON_SITE = re.compile(r"also on [\w-]+(?:\.[\w-]+)+\b", re.I)
_SHORTCODE = re.compile(r"^\[(\w+)\b[^\]]*\].*\[/\1\]$|^\[/?\w+(?:\s+\w+=[^\]]*)+\]$", re.S)
_PHOTO_WORDS = r"(?:photos?|file photo|images?|pictures?|pics?|photograph|screen ?grab|screenshot|video grab|illustration)"
_CAPTION_CREDIT = re.compile(
    rf"(?:\((?:[^()]{{0,80}}\b)?{_PHOTO_WORDS}\b[^()]{{0,80}}\)\.?"
    rf"|\b{_PHOTO_WORDS}(?: credits?)?\s*[:|/©]\s*[^.:|]{{1,80}}"
    rf"|^{_PHOTO_WORDS}\s*[:|]\s*.*)$",
    re.I,
)
# A credit after a dash ends a caption ("… in Washington. — AFP"); only trusted near
# the top, where no article paragraph (which may end "— AFP" too) has begun.
_DASH_CREDIT = re.compile(r"[\s.]\s*[—–-]{1,2}\s*(?:[A-Z][\w.]*(?:[ /][A-Z][\w.]*){0,3})\s*\.?$")
_DATELINE = re.compile(r"(?:[A-Z][\w.'-]*\s?){1,3}(?:\(\w+\))?\s?[:—–-]")
# Blog engines append this to every feed item ("The post X appeared first on Y.").
_FEED_FOOTER = re.compile(r"^the post .{1,400} appeared first on .{1,200}$", re.I)
_BY_LINE = re.compile(r"^(?:by|written by|reported by|posted by|story by|words by|author:|text:)\s*:?\s+(\S)", re.I)
# Calls to action speak to the reader; reported speech and third-person prose do not.
# ("us" in lower case only: "US" is the United States.)
_READER_WORDS = re.compile(r"\b(?:[Yy]ou|[Yy]our|[Oo]ur|us|[Ww]e|YOU|YOUR|OUR|WE)\b")
_QUOTE_MARKS = re.compile(r"[\"“”«»]|\bsaid\b", re.I)

_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
_DAYS = "monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat sun"
_DATE_FILLER = (
    "updated published posted last modified first on at date time the of am pm a m p hrs hours hour ago "
    "minutes minute mins min seconds secs days day read today yesterday edited "
    "utc gmt ist pkt est edt et pt pst pdt ct cst cdt mt bst cet cest eet aest sast wib jst"
)
_DATE_WORDS = frozenset((_MONTHS + " " + _DAYS + " " + _DATE_FILLER).split())
_NUMBER_TOKEN = re.compile(r"\d{1,4}(?:st|nd|rd|th)?")
_MONTH_WORDS = frozenset(_MONTHS.split() + _DAYS.split())
_NUMERIC_DATE = re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b|\b\d{1,2}:\d{2}\b")
# Text is judged only after this many header lines whatever they contain.
HEADER_MAX_LINES = 12
BODY_MIN_WORDS = 20


@dataclass(frozen=True)
class _Boilerplate:
    lines: frozenset[str]
    prompt_prefixes: tuple[str, ...]
    footer_prefixes: tuple[str, ...]
    footer_calls: re.Pattern[str]
    credit_lines: frozenset[str]
    byline_words: frozenset[str]


@lru_cache(maxsize=1)
def _boilerplate() -> _Boilerplate:
    with (DATA_DIR / "boilerplate.toml").open("rb") as f:
        data = tomllib.load(f)
    return _Boilerplate(
        lines=frozenset(_key(x) for x in data["lines"]),
        prompt_prefixes=tuple(x.casefold() for x in data["prompt_prefixes"]),
        footer_prefixes=tuple(x.casefold() for x in data["footer_prefixes"]),
        footer_calls=re.compile(r"\b(?:" + "|".join(re.escape(x.casefold()) for x in data["footer_calls"]) + r")\b"),
        credit_lines=frozenset(_key(x) for x in data["credit_lines"]),
        byline_words=frozenset(_key(x) for x in data["byline_words"]),
    )


def _key(line: str) -> str:
    """Comparison form of a line: case-folded words only."""
    return _KEY_STRIP.sub(" ", line.casefold()).strip()


def _norm_line(line: str) -> str:
    if not line.isascii():  # the invisible characters are all non-ASCII
        line = _INVISIBLE.sub("", line)
    return _SPACES.sub(" ", line).strip()


def _starts_with(lowered: str, prefixes: Iterable[str]) -> bool:
    for p in prefixes:
        if lowered.startswith(p):
            # "read:" needs nothing after it; "also read" must end on a word boundary.
            if not p[-1].isalnum() or len(lowered) == len(p) or not lowered[len(p)].isalnum():
                return True
    return False


def _is_date_only(key: str, key_source: str) -> bool:
    """Whether a line (``key`` its comparison form, ``key_source`` the line) is a date or time and nothing else."""
    tokens = key.split()
    if not tokens or len(tokens) > 14:
        return False
    numbers = 0
    for t in tokens:
        if _NUMBER_TOKEN.fullmatch(t):
            numbers += 1
        elif t not in _DATE_WORDS:
            return False
    if any(t in _MONTH_WORDS for t in tokens):
        return True
    # Numbers alone are a date only in a date or time shape ("05/10/2018", "1:23"),
    # not a phone number or a score.
    return numbers > 0 and bool(_NUMERIC_DATE.search(key_source))


def _is_furniture(line: str, key: str, words: int) -> bool:
    """Page furniture wherever it appears: UI labels, ad slots, calls to action."""
    bp = _boilerplate()
    if not key:
        return not any(ch.isalnum() for ch in line)  # separators: "***", "—", "|"
    if key in bp.lines or _AD_SIZE.fullmatch(key) or _COUNTER.fullmatch(key):
        return True
    if _SHORTCODE.match(line):
        return True
    if words <= 30:
        lowered = " ".join(line.casefold().split())
        if _starts_with(lowered, bp.prompt_prefixes) or _ALSO_ON_SITE.match(line):
            # A call to action is a label, a short line or speaks to the reader; a full
            # sentence of reporting that merely starts the same way is kept.
            return words <= 12 or not _SENTENCE_END.search(line) or bool(_READER_WORDS.search(line))
    return False


def _title_keys(titles: Iterable[str]) -> set[str]:
    keys: set[str] = set()
    for t in titles:
        t = _norm_line(t or "")
        if not t:
            continue
        keys.add(_key(t))
        # "Headline | Site" and "Headline - Site": the headline part alone, too.
        for part in re.split(r"\s+[|–—:-]{1,2}\s+|\s*\|\s*", t):
            if len(part.split()) >= 3:
                keys.add(_key(part))
    keys.discard("")
    return keys


def _is_caption(line: str, header: bool) -> bool:
    if _CAPTION_CREDIT.search(line):
        return True
    return header and bool(_DASH_CREDIT.search(line)) and len(line.split()) <= 80


def _is_byline(line: str, key: str, words: int) -> bool:
    bp = _boilerplate()
    if key in bp.credit_lines:
        return True
    m = _BY_LINE.match(line)
    if m and words <= 12:
        return m.group(1)[:1].isupper() or m.group(1)[:1] == "@"
    if words <= 6 and not _SENTENCE_END.search(line):
        tokens = key.split()
        # "Web DeskWeb Editor", "Staff Correspondent", "Anwar Iqbal | Dawn Correspondent".
        if any(w in bp.byline_words for w in tokens) or any(
            w.endswith(tuple(bp.byline_words)) and len(w) <= 16 for w in tokens
        ):
            caps = [w for w in line.split() if w[:1].isalpha()]
            return bool(caps) and sum(w[:1].isupper() for w in caps) >= len(caps) - 1
    return False


def _is_prose(line: str) -> bool:
    words = word_count(line)
    if _CAPTION_CREDIT.search(line):
        return False
    return words >= 2 * BODY_MIN_WORDS or (words >= BODY_MIN_WORDS and bool(_SENTENCE_END.search(line)))


def _is_header_junk(line: str, key: str, words: int, titles: set[str], *, dash_credit: bool) -> bool:
    return (
        key in titles
        or _is_date_only(key, line)
        or _is_byline(line, key, words)
        or _is_caption(line, header=dash_credit)
    )


def _is_footer_junk(line: str, key: str, words: int) -> bool:
    bp = _boilerplate()
    lowered = " ".join(line.casefold().split())
    if _FEED_FOOTER.match(line):
        return True
    if words <= 40 and ("©" in line or "all rights reserved" in lowered):
        return True
    if words <= 25 and _starts_with(lowered.lstrip("*_-–— "), bp.footer_prefixes):
        # "Published in Dawn, June 22nd" is a sign-off; "Published in 1998, the
        # report found …" is a sentence.
        return words <= 12 or not _SENTENCE_END.search(line)
    if words <= 40 and bp.footer_calls.search(lowered) and _READER_WORDS.search(line) and not _QUOTE_MARKS.search(line):
        return True
    return _is_date_only(key, line) or key in bp.credit_lines


def _drop_consecutive_duplicates(lines: list[str]) -> list[str]:
    out: list[str] = []
    last = None
    for line in lines:
        k = _key(line) or line
        if k != last:
            out.append(line)
        last = k
    return out


def clean_text(text: str, *, title: str | Iterable[str] = "") -> str:
    """Remove the page furniture extraction leaves behind; keep every article sentence.

    Paragraphs are one per line in, separated by a blank line out. Removed:

    * anywhere: lines that are UI labels or ad slots from ``data/boilerplate.toml``
      ("Advertisement", "Logo", "close", "Adsence 300X250", "12 comments"), short
      calls to action ("Also Read: …", "Click here to …", "Follow us on …"), leaked
      CMS shortcodes, and a line repeated immediately after itself (captions
      printed twice);
    * at the top, before the first paragraph of prose: date-only lines
      ("Thursday November 21, 2024"), bylines and wire credits ("By …",
      "Web Desk", "IANS"), photo captions with a credit, and repeats of the
      headline (``title``: one string or several);
    * at the bottom: sign-offs ("Reporting by …", "Published in …", "Tags: …"),
      subscription and share prompts, copyright lines and trailing dates.

    The rules are generic (no per-site patterns) and conservative: a line that
    starts like a call to action is removed only when it is short, has no full
    stop or addresses the reader, so reporting that begins the same way stays.
    """
    titles = _title_keys([title] if isinstance(title, str) else title)
    lines = [_norm_line(raw) for raw in (text or "").splitlines()]
    info = [(ln, _key(ln), word_count(ln)) for ln in lines if ln]
    info = [t for t in info if not _is_furniture(*t)]
    lines = _drop_consecutive_duplicates([t[0] for t in info])

    # Header: the lines before the first paragraph of prose (a standfirst has no
    # full stop; a caption ends in a credit). A caption's dash credit ("— AFP") is
    # only trusted when prose follows: a one-paragraph wire story may end in one.
    body = next((i for i, ln in enumerate(lines[:HEADER_MAX_LINES]) if _is_prose(ln)), None)
    header_end = body if body is not None else min(len(lines), HEADER_MAX_LINES)
    kept: list[str] = []
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if i < header_end:
            key = _key(line)
            if key in seen or _is_header_junk(line, key, word_count(line), titles, dash_credit=body is not None):
                continue
            seen.add(key)
        kept.append(line)

    # Footer: strip junk lines from the end until the first one that is not.
    while kept and _is_footer_junk(kept[-1], _key(kept[-1]), word_count(kept[-1])):
        kept.pop()
    # A dateline printed on its own line ("WASHINGTON:") opens the first paragraph.
    if len(kept) > 1 and _DATELINE.fullmatch(kept[0]):
        kept[:2] = [f"{kept[0]} {kept[1]}"]
    return "\n\n".join(_drop_consecutive_duplicates(kept))


# ---------------------------------------------------------------- language

# Scripts written (in news) in one language only: the script is the answer.
_SCRIPT_LANGUAGE = {
    "BENGALI": "bn", "GURMUKHI": "pa", "GUJARATI": "gu", "TAMIL": "ta", "TELUGU": "te", "KANNADA": "kn",
    "MALAYALAM": "ml", "SINHALA": "si", "THAI": "th", "HANGUL": "ko", "HIRAGANA": "ja", "KATAKANA": "ja",
    "CJK": "zh", "HEBREW": "he", "GREEK": "el", "GEORGIAN": "ka", "ARMENIAN": "hy", "MYANMAR": "my",
    "KHMER": "km", "LAO": "lo", "ETHIOPIC": "am",
}  # fmt: skip
# Shared scripts: the commonest function words of each language tell them apart.
_FUNCTION_WORDS = {
    "LATIN": {
        "en": "the of and to in is that for it was on with as by at from he said are be this have has not but they his an which",
        "fr": "le la les de des du et est une un que qui dans pour pas sur au avec il elle ce sont par plus aux ont",
        "de": "der die das und ist nicht ein eine zu den von mit sich des auf für im dem sie es auch als werden wird",
        "es": "el la los las de del y en que es un una por con para se no al lo su como más fue ha",
        "pt": "o a os as de do da dos das e em que um uma para com não no na por se é mais ao foi",
        "it": "il lo la gli le di del della e che è un una per con non in si da al sono anche ha",
        "nl": "de het een en van is dat in op te niet zijn met voor er ook aan door als maar",
        "tr": "ve bir bu da de için ile olarak olan gibi daha çok ama ne ki mi",
        "id": "yang dan di ini itu dengan untuk tidak dari dalam akan pada juga ke ada adalah oleh",
        "sv": "och att det som en på är av för med till den har inte om ett var",
        "pl": "i w na nie z się do że jest to o jak po od za przez",
    },
    "CYRILLIC": {
        "ru": "и в не на что с по как это он она к но из у за от о для так его был",
        "uk": "і в не на що з як це та до за від у але про для або його був",
    },
    "ARABIC": {
        "ur": "کے کی ہے اور میں سے کو نے کا یہ پر ہیں کہ تھا بھی ایک گیا ہو کر",
        "ar": "في من على إلى أن عن التي الذي هذا مع كان قد لا ما هو بين كما أو",
        "fa": "و در به از که این را با است برای آن یک می تا بر هم شد",
    },
    "DEVANAGARI": {
        "hi": "के है में की और से को का एक यह पर भी कि ने हैं था लिए तो नहीं गया",
        "mr": "आणि आहे या व हे की ते त्या होते आहेत म्हणून पण केले करण्यात मध्ये",
        "ne": "र छ को मा पनि भएको गर्न लागि छन् थियो हो यो गरेको तथा",
    },
}  # fmt: skip
_FUNCTION_SETS = {
    script: {code: frozenset(words.split()) for code, words in langs.items()} for script, langs in _FUNCTION_WORDS.items()
}
_LANG_TAG = re.compile(r"^([a-z]{2,3})(?:[-_]|$)", re.I)


def _dominant_script(text: str) -> tuple[str, Counter[str]]:
    scripts: Counter[str] = Counter()
    seen = 0
    for c in text[:3000]:
        if c.isalpha():
            # ASCII letters are Latin: skip the (slow) Unicode name lookup for them.
            scripts["LATIN" if c < "\x80" else unicodedata.name(c, "UNKNOWN").split(" ", 1)[0]] += 1
            seen += 1
            if seen >= 600:
                break
    return (scripts.most_common(1)[0][0] if scripts else ""), scripts


def detect_language(text: str, declared: str = "") -> str:
    """ISO 639-1 code of ``text``, "" when unsure.

    The declared language (HTML ``lang``, ``og:locale``) stands unless the text
    plainly contradicts it (another script, or none of its function words);
    otherwise the script decides, and within a shared script (Latin, Arabic,
    Devanagari, Cyrillic) the share of each language's commonest function words.
    """
    m = _LANG_TAG.match((declared or "").strip())
    declared = m.group(1).lower() if m else ""
    script, scripts = _dominant_script(text)
    if not script:
        return declared
    if script == "CJK" and scripts["HIRAGANA"] + scripts["KATAKANA"] > 0.1 * sum(scripts.values()):
        return "ja"
    if script in _SCRIPT_LANGUAGE:
        return _SCRIPT_LANGUAGE[script]
    langs = _FUNCTION_SETS.get(script, {})
    tokens = Counter(t.casefold() for t in _WORD_RE.findall(text[:12000]))
    total = sum(tokens.values())
    if not langs or total < 5:
        return declared

    def share(words: frozenset[str]) -> float:
        return sum(n for t, n in tokens.items() if t in words) / total

    if declared in langs and (total < 20 or share(langs[declared]) >= 0.04):
        return declared
    best = max(langs, key=lambda code: share(langs[code]))
    if share(langs[best]) >= 0.08:
        return best
    return declared if declared and declared not in langs else ""


def _declared_language(tree: Any) -> str:
    for xpath in (
        "/html/@lang",
        "/html/@xml:lang",
        "//meta[translate(@http-equiv,'CONTENTLAGU','contentlagu')='content-language']/@content",
        "//meta[@property='og:locale']/@content",
        "//meta[@name='language']/@content",
    ):
        try:
            values = tree.xpath(xpath)
        except Exception:  # an odd namespace or a broken tree: no declaration
            continue
        for v in values:
            if isinstance(v, str) and _LANG_TAG.match(v.strip()):
                return v.strip()
    return ""


# ---------------------------------------------------------------- dates


def _parse_page_date(value: str | None) -> datetime | None:
    if not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            dt = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    return None


def choose_published(
    feed: datetime | None, page: datetime | None, fetched_at: datetime
) -> tuple[datetime, DateSource]:
    """The feed's time, else the page's, else the fetch time; implausible values are skipped.

    A date more than a day after the fetch, or before 1995, is a parse or time-zone
    error and is not used.
    """
    latest = fetched_at + timedelta(days=1)
    for value, source in ((feed, DateSource.FEED), (page, DateSource.PAGE)):
        if value is not None:
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            if EARLIEST_DATE <= value <= latest:
                return value.astimezone(timezone.utc), source
    return fetched_at, DateSource.FETCH


# ---------------------------------------------------------------- HTML → article

_BLOCK_TAGS = frozenset(
    "p div br li ul ol h1 h2 h3 h4 h5 h6 blockquote pre tr table section article header footer figure figcaption dd dt".split()
)


_MARKUP = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>|&(?:[a-zA-Z]+|#\d+);")


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment (a feed's summary or content), one block per line.

    Text without markup is returned with entities decoded.
    """
    if not fragment or not fragment.strip():
        return ""
    if not _MARKUP.search(fragment):
        # Plain text (feeds usually hand over text already): keep its line breaks.
        return "\n".join(_norm_line(x) for x in html_lib.unescape(fragment).splitlines() if x.strip())
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    except (etree.ParserError, ValueError):
        return html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment)).strip()
    for bad in root.xpath(".//script|.//style|.//noscript|.//iframe|.//template"):
        bad.drop_tree()  # keeps the text that follows it
    etree.strip_tags(root, etree.Comment, etree.ProcessingInstruction)
    parts: list[str] = []
    # iterwalk, not recursion: a feed's markup can be nested arbitrarily deep.
    for event, el in etree.iterwalk(root, events=("start", "end")):
        is_element = isinstance(el.tag, str)
        block = is_element and el.tag.lower() in _BLOCK_TAGS
        if event == "start":
            if block:
                parts.append("\n")
            if is_element and el.text:
                parts.append(el.text)
        else:
            if block:
                parts.append("\n")
            if el.tail and el is not root:
                parts.append(el.tail)
    return "\n".join(_norm_line(x) for x in "".join(parts).splitlines() if x.strip())


def _summary_of(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    if end >= limit // 3:
        return cut[: end + 1]
    return cut.rsplit(" ", 1)[0] + "…"


@dataclass(frozen=True)
class _Page:
    text: str = ""
    title: str = ""
    author: str = ""
    sitename: str = ""
    description: str = ""
    date: datetime | None = None
    language: str = ""
    error: str | None = None


def _page_metadata(tree: Any, url: str) -> Any:
    """trafilatura's page metadata, the fields an article keeps: its ``extract_metadata``
    steps for title, author, description, site name and date, without the categories,
    tags and licence it also looks for (a fifth of all extraction time, never used)."""
    from htmldate import find_date
    from trafilatura.metadata import (
        META_URL,
        examine_meta,
        extract_author,
        extract_meta_json,
        extract_sitename,
        extract_title,
        extract_url,
    )

    meta = examine_meta(tree)
    if meta.author and " " not in meta.author:
        meta.author = None  # a one-word byline is a handle or the outlet, as trafilatura judges
    try:
        meta = extract_meta_json(tree, meta)
    except Exception:  # trafilatura's JSON-LD reader trips on odd markup; the meta tags still count
        pass
    meta.title = meta.title or extract_title(tree)
    meta.author = meta.author or extract_author(tree)
    meta.url = meta.url or extract_url(tree, url or None)
    meta.date = find_date(tree, **DATE_PARAMS, url=meta.url)
    meta.sitename = (meta.sitename or extract_sitename(tree) or "").lstrip("@")
    if meta.sitename and "." not in meta.sitename and not meta.sitename[0].isupper():
        meta.sitename = meta.sitename.title()
    elif not meta.sitename and meta.url and (m := META_URL.match(meta.url)):
        meta.sitename = m[1]
    meta.clean_and_trim()
    return meta


def _extract_page(html: str | bytes, url: str) -> _Page:
    import trafilatura

    try:
        tree = trafilatura.load_html(html)
    except Exception as exc:  # decoding or parser failure inside lxml
        return _Page(error=f"unreadable HTML: {type(exc).__name__}: {exc}")
    if tree is None:
        return _Page(error="not an HTML document")
    declared = _declared_language(tree)
    try:
        # bare_extraction works on its own copy of the tree: the metadata below reads the original.
        doc = trafilatura.bare_extraction(tree, url=url or None, **EXTRACTION_OPTIONS)
        text = (doc.text or "") if doc is not None else ""
        if word_count(text) < RETRY_BELOW_WORDS:
            # Precision mode can discard a page whose article is one short block.
            retry = trafilatura.bare_extraction(tree, url=url or None, include_comments=False, include_tables=True)
            if retry is not None and word_count(retry.text or "") > word_count(text):
                text = retry.text or ""
                doc = doc if doc is not None else retry
        if doc is None:
            return _Page(language=declared, error="no article text found on the page")
        meta = _page_metadata(tree, url)
    except RecursionError:
        return _Page(error="page too deeply nested to extract")
    except Exception as exc:  # trafilatura raises whatever a broken page provokes
        return _Page(error=f"extraction failed: {type(exc).__name__}: {exc}")
    return _Page(
        text=text,
        title=_norm_line(meta.title or ""),
        author=_norm_line(meta.author or ""),
        sitename=_norm_line(meta.sitename or ""),
        description=_norm_line(meta.description or ""),
        date=_parse_page_date(meta.date),
        language=declared,
    )


def extract_feed_text(
    feed_text: str, url: str = "", *, feed_title: str = "", error: str | None = None
) -> ExtractedArticle:
    """An article from the feed's own content or summary (HTML or text): status
    FALLBACK with ``error`` as the reason, or FAILED when the feed has no text."""
    return _feed_article(html_to_text(feed_text), url, feed_title=feed_title, error=error)


def _feed_article(plain: str, url: str, *, feed_title: str, error: str | None = None) -> ExtractedArticle:
    text = clean_text(plain, title=feed_title)
    title = _norm_line(html_to_text(feed_title).replace("\n", " "))
    if not text:
        return ExtractedArticle(
            url=url, title=title, text="", status=ExtractionStatus.FAILED, site=site_of(url),
            error=f"{error}; the feed has no text either" if error else "the feed has no text",
        )  # fmt: skip
    return ExtractedArticle(
        url=url, title=title, text=text, status=ExtractionStatus.FALLBACK, site=site_of(url),
        language=detect_language(text), summary=_summary_of(text), error=error or "page not used",
    )  # fmt: skip


def extract_html(
    html: str | bytes,
    url: str = "",
    *,
    feed_title: str = "",
    feed_text: str = "",
    min_words: int = DEFAULT_MIN_WORDS,
) -> ExtractedArticle:
    """Extract the article from one page.

    Returns status OK with the page's cleaned text and metadata (title, author,
    site, language, page date in ``published``, meta description in ``summary``).
    ``feed_title`` is the title when given (feeds carry the outlet's clean
    headline) and is removed where the text repeats it. ``feed_text`` (the
    entry's content or summary, HTML or text) is used instead, with status
    FALLBACK and the reason, when the page yields fewer than ``min_words`` words
    and the feed has more, or when the feed has at least three times the page's
    words (a paywall teaser). FAILED when neither has any text. Never raises for
    bad input.
    """
    page = _extract_page(html, url)
    titles = [page.title, feed_title]
    text = clean_text(page.text, title=titles) if page.text else ""
    words = word_count(text)
    title = _norm_line(html_to_text(feed_title).replace("\n", " ")) or page.title
    site = site_of(url) if url else page.sitename
    feed_plain = html_to_text(feed_text) if feed_text else ""
    # Cleaning only removes lines and characters, so the plain text's word count bounds
    # the cleaned one: a feed text too short to be preferred to a full page is not cleaned.
    if feed_plain and (words < min_words or word_count(feed_plain) >= FEED_PREFERRED_RATIO * words):
        fallback = _feed_article(feed_plain, url, feed_title=feed_title)
        feed_words = word_count(fallback.text)
        if words < min_words:
            reason = page.error or (f"page text too short ({words} words)" if words else "no article text found on the page")
            use_feed = feed_words > words
        else:
            # A paywall or teaser page: the feed carries the whole article.
            reason = f"page text much shorter than the feed's ({words} vs {feed_words} words)"
            use_feed = feed_words >= FEED_PREFERRED_RATIO * words
        if use_feed:
            return replace(
                fallback,
                title=title,
                site=site,
                author=page.author,
                published=page.date,
                language=detect_language(fallback.text, page.language),
                error=reason,
            )
    if not text:
        return ExtractedArticle(
            url=url, title=title, text="", status=ExtractionStatus.FAILED, author=page.author, site=site,
            language=detect_language("", page.language), published=page.date,
            error=page.error or "no article text found on the page",
        )  # fmt: skip
    return ExtractedArticle(
        url=url,
        title=title,
        text=text,
        status=ExtractionStatus.OK,
        author=page.author,
        site=site,
        language=detect_language(text, page.language),
        published=page.date,
        summary=page.description or _summary_of(text.split("\n\n", 1)[0]),
    )


# ---------------------------------------------------------------- worker processes


class ExtractionError(Exception):
    """A page could not be extracted: it timed out, killed its worker or made the extractor raise."""


def _worker_main(conn: Any, memory_mb: int) -> None:
    import signal

    # Ctrl-C goes to the whole process group; the parent decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb > 0:
        try:
            import resource

            limit = memory_mb * 1024 * 1024
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        except (ImportError, ValueError, OSError):
            pass
    import trafilatura  # noqa: F401  (loaded before the first page's clock starts)

    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        args, kwargs = task
        try:
            reply: tuple[str, Any] = ("ok", extract_html(*args, **kwargs))
        except MemoryError:
            reply = ("error", "page needs too much memory to extract")
        except BaseException as exc:  # report, never die: the worker serves the next page
            reply = ("error", f"extraction failed: {type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


# A new worker imports the extraction stack before it takes pages.
WORKER_START_TIMEOUT = 120.0

# What the fork server imports once, so that each extraction worker forked from it
# starts at once. Only the extraction stack: the server is ready in a fraction of a
# second, and the one clustering process imports the rest itself.
_PRELOAD = ["lxml.html", "trafilatura", "pipeline.extract"]


def process_context() -> Any:
    """The start method of the pipeline's worker processes.

    A fork server that has imported the pipeline once: each worker is forked from
    it in milliseconds, instead of spending a good part of a second of CPU importing
    lxml, trafilatura and SQLAlchemy as a spawned interpreter would. The server is a
    fresh interpreter, so workers inherit none of the caller's threads or open
    database connections (forking the caller itself would copy those). Where
    there is no fork server (not POSIX), workers are spawned.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def warm_up() -> None:
    """Start the fork server now (it imports the pipeline in the background), so
    that the first workers need not wait for it."""
    if process_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class _Worker:
    def __init__(self, ctx: Any, memory_mb: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, memory_mb), daemon=True, name="newsmon-extract")
        self.process.start()
        child.close()
        try:
            ready = self.conn.poll(WORKER_START_TIMEOUT) and self.conn.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise ExtractionError(f"an extraction worker did not start (exit code {self.process.exitcode})")

    def stop(self, timeout: float = 2.0) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class ExtractionPool:
    """Worker processes running :func:`extract_html`, shared by many threads.

    Workers are started on demand (at most ``workers``) and reused. A page that
    takes longer than ``timeout`` seconds, or kills its worker (a crash in lxml,
    the memory cap), raises :class:`ExtractionError` for that page only; the worker
    is replaced. Workers come from :func:`process_context`: they share nothing
    with the caller's threads and database connections.
    """

    def __init__(self, workers: int = 0, timeout: float = 30.0, memory_mb: int = 0) -> None:
        self.size = workers if workers > 0 else (os.cpu_count() or 1)
        self.timeout = timeout
        self.memory_mb = memory_mb
        self._ctx = process_context()
        # None is a free slot without a live worker (spawned when taken).
        self._free: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(self.size):
            self._free.put(None)
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def extract(self, html: str | bytes, url: str = "", **kwargs: Any) -> ExtractedArticle:
        """:func:`extract_html` in a worker; raises :class:`ExtractionError` for a page
        that timed out, crashed its worker or made extraction raise."""
        if self._closed:
            raise RuntimeError("extraction pool is closed")
        worker = self._free.get()
        healthy = False
        try:
            if worker is not None and not worker.process.is_alive():
                self._discard(worker)
                worker = None
            if worker is None:
                worker = _Worker(self._ctx, self.memory_mb)
                with self._lock:
                    self._all.add(worker)
            try:
                worker.conn.send(((html, url), kwargs))
                if not worker.conn.poll(self.timeout):
                    raise ExtractionError(f"extraction took longer than {self.timeout:g}s")
                status, value = worker.conn.recv()
            except (EOFError, OSError) as exc:
                worker.process.join(1)
                code = worker.process.exitcode
                raise ExtractionError(
                    f"the page crashed its extraction worker (exit code {code if code is not None else 'unknown'})"
                ) from exc
            healthy = True
            if status != "ok":
                raise ExtractionError(value)
            return value
        finally:
            if healthy:
                self._free.put(worker)
            else:
                if worker is not None:
                    self._discard(worker)
                self._free.put(None)

    def pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None and w.process.is_alive()]

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            w.stop()

    def __enter__(self) -> ExtractionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- the stage


@dataclass
class _Job:
    """One page to fetch for one or more pending entries (same canonical link)."""

    entry_ids: list[int]
    link: str
    canonical: str
    feed_id: int | None
    outlet: str
    country: str
    guid: str
    title: str
    summary: str
    content: str
    author: str
    published: datetime | None
    attempts: int


@dataclass
class _Outcome:
    job: _Job
    article: ExtractedArticle
    fetched_at: datetime
    final_url: str = ""
    aliases: list[str] = field(default_factory=list)
    # A failure that cannot get better by retrying (4xx, refused URL, not HTML).
    permanent: bool = False


def _feed_text(job: _Job) -> str:
    content, summary = html_to_text(job.content), html_to_text(job.summary)
    return job.content if word_count(content) >= word_count(summary) else job.summary


def looks_like_html(content_type: str, body: bytes) -> bool:
    """Whether a response is a page to extract: an HTML (or untyped) body that is not a known binary format."""
    head = body[:1024].lstrip().lower()
    if head.startswith((b"%pdf", b"\x89png", b"gif8", b"\xff\xd8\xff", b"pk\x03\x04")):
        return False
    return content_type in HTML_TYPES or head.startswith((b"<!doctype html", b"<html"))


def decode_page(body: bytes, content_type_header: str) -> str | bytes:
    """The body as text when the Content-Type names a charset, else the bytes for trafilatura to sniff."""
    m = re.search(r"charset=[\"']?([\w.:-]+)", content_type_header or "", re.I)
    if m:
        try:
            return body.decode(m.group(1), errors="replace")
        except LookupError:
            pass
    return body  # trafilatura detects the encoding (meta charset, then a guess)


def _process(job: _Job, fetcher: Any, pool: ExtractionPool, settings: Settings) -> _Outcome:
    """Fetch, extract and fall back for one job; never raises."""
    from pipeline.fetcher import BlockedURL, FetchError, HTTPStatusError, ResponseTooLarge, TooManyRedirects

    feed_text = _feed_text(job)
    min_words = settings.ingest.min_article_words
    permanent = False
    try:
        resp = fetcher.get(job.link, max_bytes=settings.http.max_page_bytes, accept=ACCEPT_HTML)
    except HTTPStatusError as exc:
        reason = f"page not available: {exc.message}"
        permanent = 400 <= exc.status < 500 and exc.status not in (408, 425, 429)
        resp = None
    except (BlockedURL, TooManyRedirects, ResponseTooLarge) as exc:
        reason, permanent, resp = f"page not fetched: {exc.message}", True, None
    except FetchError as exc:
        reason, resp = f"page not available: {exc.message}", None
    except Exception as exc:  # a fetcher bug must not stop the stage
        log.exception("unexpected error fetching %s", job.link)
        reason, resp = f"page not available: {type(exc).__name__}: {exc}", None
    fetched_at = utcnow()
    final_url = resp.url if resp is not None else job.link
    aliases = [job.link, *(resp.history if resp is not None else ()), final_url]
    if resp is not None:
        ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not resp.content.strip():
            reason = "the page is empty"
        elif not looks_like_html(ctype, resp.content):
            reason, permanent = f"not an HTML page ({ctype or 'unknown type'})", True
        else:
            try:
                article = pool.extract(
                    decode_page(resp.content, resp.headers.get("content-type", "")),
                    final_url,
                    feed_title=job.title,
                    feed_text=feed_text,
                    min_words=min_words,
                )
            except ExtractionError as exc:
                # A page that hangs or crashes the extractor will do so again.
                reason, permanent = str(exc), True
            except Exception as exc:  # the pool itself (e.g. no process could be started)
                log.exception("extraction pool failed on %s", final_url)
                reason = f"extraction failed: {type(exc).__name__}: {exc}"
            else:
                # An empty page and an empty feed entry may both fill in later: retried.
                return _Outcome(job, article, fetched_at, final_url, aliases)
    article = extract_feed_text(feed_text, final_url, feed_title=job.title, error=reason)
    return _Outcome(job, article, fetched_at, final_url, aliases, permanent=permanent)


def _canonical(url: str) -> str | None:
    try:
        return canonical_url(url)
    except InvalidURL:
        return None


def _existing_articles(session: Any, groups: list[Iterable[str]]) -> list[int | None]:
    """For each group of URLs, the stored article reached by any of them (alias first, then
    canonical URL), or None: two queries for the whole list."""
    groups = [[u for u in dict.fromkeys(g) if u and len(u) <= MAX_URL_CHARS] for g in groups]
    keys = sorted({u for g in groups for u in g})
    by_alias: dict[str, int] = {}
    by_canonical: dict[str, int] = {}
    for chunk in chunked(keys):
        q = select(ArticleUrl.url, ArticleUrl.article_id).where(ArticleUrl.url.in_(chunk))
        by_alias.update(session.execute(q).tuples().all())
        q = select(Article.canonical_url, Article.id).where(Article.canonical_url.in_(chunk))
        by_canonical.update(session.execute(q).tuples().all())
    out: list[int | None] = []
    for g in groups:
        found = next((by_alias[u] for u in g if u in by_alias), None)
        if found is None:
            found = next((by_canonical[u] for u in g if u in by_canonical), None)
        out.append(found)
    return out


def _alias_rows(article_id: int, urls: Iterable[str]) -> list[dict[str, Any]]:
    seen: dict[str, None] = {}
    for u in urls:
        if not u:
            continue
        for v in (u, _canonical(u)):
            if v and len(v) <= MAX_URL_CHARS:
                seen[v] = None
    return [{"url": u, "article_id": article_id} for u in seen]


def _mark_entries(session: Any, ids: list[int], **values: Any) -> None:
    session.execute(
        update(Entry).where(Entry.id.in_(ids)).values(attempts=Entry.attempts + 1, **values),
        execution_options={"synchronize_session": False},
    )


# Entries settled by a batch: one statement executed for many rows.
_ENTRY_DONE = (
    Entry.__table__.update()
    .where(Entry.__table__.c.id == bindparam("b_id"))
    .values(status="done", article_id=bindparam("b_article"), error=bindparam("b_error"),
            attempts=Entry.__table__.c.attempts + 1)
)  # fmt: skip


def _insert_articles(session: Any, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new articles (skipping canonical URLs stored meanwhile); canonical URL → id of those inserted."""
    if not rows:
        return {}
    stmt = (
        dialect_insert(session, Article)
        .on_conflict_do_nothing(index_elements=["canonical_url"])
        .returning(Article.canonical_url, Article.id)
    )
    return dict(session.execute(stmt, rows).tuples().all())


def _write(store: Store, outcomes: list[_Outcome], settings: Settings, report: ExtractReport) -> None:
    """Store one batch in one transaction: articles, aliases and entry states together.

    A handful of statements per batch, not per article: one lookup of the URLs
    already stored, one insert of the new articles, one of their aliases and one
    update of the entries.
    """
    if not outcomes:
        return
    max_attempts = settings.ingest.max_extract_attempts
    with store.session() as s:
        # Writers take turns: two passes inserting the same articles in different
        # orders would otherwise deadlock (PostgreSQL); a batch writes in milliseconds.
        lock(s, WRITE_LOCK)
        stored: list[tuple[_Outcome, str]] = []
        for o in outcomes:
            job, art = o.job, o.article
            if art.status is ExtractionStatus.FAILED:
                final = o.permanent or job.attempts + 1 >= max_attempts
                _mark_entries(s, job.entry_ids, status="failed" if final else "pending", error=art.error)
                report.failed += len(job.entry_ids)
                report.errors.append(f"{job.link}: {art.error}")
                continue
            key = _canonical(o.final_url) or job.canonical
            if len(key) > MAX_URL_CHARS:  # a redirect to a monster URL: keep the entry's key
                key = job.canonical
            stored.append((o, key))
        if not stored:
            return
        found = _existing_articles(s, [[key, o.final_url, *o.aliases] for o, key in stored])
        new_rows: dict[str, dict[str, Any]] = {}
        for (o, key), existing in zip(stored, found):
            if existing is None and key not in new_rows:
                new_rows[key] = _article_row(o, key)
        created = _insert_articles(s, list(new_rows.values()))
        # Keys stored meanwhile by another writer (the insert skipped them) are looked up.
        missing = [k for k in new_rows if k not in created]
        ids = dict(created)
        if missing:
            q = select(Article.canonical_url, Article.id).where(Article.canonical_url.in_(missing))
            ids.update(s.execute(q).tuples().all())
        aliases: dict[str, dict[str, Any]] = {}
        entries: list[dict[str, Any]] = []
        counted: set[str] = set()
        for (o, key), existing in zip(stored, found):
            job, art = o.job, o.article
            article_id = existing if existing is not None else ids[key]
            for row in _alias_rows(article_id, [key, job.canonical, *o.aliases]):
                aliases.setdefault(row["url"], row)
            error = art.error if art.status is ExtractionStatus.FALLBACK else None
            entries += [{"b_id": e, "b_article": article_id, "b_error": error} for e in job.entry_ids]
            if existing is None and key in created and key not in counted:
                counted.add(key)
                report.article_ids.append(article_id)
                if art.status is ExtractionStatus.OK:
                    report.extracted += 1
                else:
                    report.fallback += 1
                report.known += len(job.entry_ids) - 1
            else:
                report.known += len(job.entry_ids)
        insert_ignore(s, ArticleUrl, list(aliases.values()), "url")
        s.connection().execute(_ENTRY_DONE, entries)


def _article_row(o: _Outcome, key: str) -> dict[str, Any]:
    job, art = o.job, o.article
    published, source = choose_published(job.published, art.published, o.fetched_at)
    return {
        "canonical_url": key,
        "url": o.final_url,
        "feed_id": job.feed_id,
        "guid": job.guid,
        "title": art.title or job.title,
        "text": art.text,
        "summary": _summary_of(html_to_text(job.summary)) or art.summary or _summary_of(art.text),
        "author": (job.author or art.author)[:512],
        "site": site_of(o.final_url)[:256],
        "outlet": job.outlet[:200],
        "country": job.country[:8],
        "language": (art.language or "")[:16],
        "published_at": published,
        "published_source": source.value,
        "fetched_at": o.fetched_at,
        "extraction_status": art.status.value,
        "extraction_error": art.error,
        # content_hash is dedupe's to set: it computes the word stream anyway (here it cost
        # 0.8 ms an article on the process that feeds the extraction workers).
        "word_count": word_count(art.text),
    }


def _pending_query(entry_ids: list[int] | None):
    q = select(Entry, Feed.name, Feed.country).join(Feed, Feed.id == Entry.feed_id, isouter=True)
    q = q.where(Entry.status == "pending")
    if entry_ids is not None:
        q = q.where(Entry.id.in_(entry_ids))
    return q


def _load_jobs(
    store: Store,
    settings: Settings,
    entry_ids: list[int] | None,
    after_id: int,
    report: ExtractReport,
    unwritten: dict[str, _Job],
) -> tuple[list[_Job], int, int]:
    """The next chunk of pending entries as jobs; entries already stored, too old or
    unfetchable are settled here. An entry whose page is already queued (a job in
    ``unwritten``, by canonical URL) joins that job. Returns (jobs, last entry id,
    entries settled)."""
    cutoff = utcnow() - timedelta(days=settings.ingest.max_entry_age_days)
    jobs: dict[str, _Job] = {}
    settled = 0
    last_id = after_id
    with store.session() as s:
        lock(s, WRITE_LOCK)
        rows = s.execute(_pending_query(entry_ids).where(Entry.id > after_id).order_by(Entry.id).limit(LOAD_CHUNK)).all()
        if rows:
            last_id = rows[-1][0].id
        keys = [entry.canonical_link or _canonical(entry.link or "") for entry, _, _ in rows]
        found = _existing_articles(s, [[k or "", entry.link] for k, (entry, _, _) in zip(keys, rows)])
        for (entry, feed_name, feed_country), key, existing in zip(rows, keys, found):
            # A backlog (after an outage) does not fetch month-old pages; entries
            # asked for by id (reprocessing) are extracted whatever their age.
            if entry_ids is None and entry.published_at is not None and entry.published_at < cutoff:
                _mark_entries(s, [entry.id], status="skipped", error="older than ingest.max_entry_age_days")
                settled += 1
                continue
            if not key or len(key) > MAX_URL_CHARS:
                _mark_entries(s, [entry.id], status="failed", error=f"invalid link {entry.link[:200]!r}")
                report.failed += 1
                report.errors.append(f"entry {entry.id}: invalid link {entry.link[:200]!r}")
                settled += 1
                continue
            queued = unwritten.get(key)
            if queued is not None:  # its page is being fetched: the entry is settled with it
                queued.entry_ids.append(entry.id)
                continue
            if existing is not None:
                insert_ignore(s, ArticleUrl, _alias_rows(existing, [entry.link]), "url")
                _mark_entries(s, [entry.id], status="done", article_id=existing, error=None)
                report.known += 1
                settled += 1
                continue
            if key in jobs:
                jobs[key].entry_ids.append(entry.id)
                continue
            jobs[key] = _Job(
                entry_ids=[entry.id],
                link=entry.link,
                canonical=key,
                feed_id=entry.feed_id,
                outlet=feed_name or "",
                country=feed_country or "",
                guid=entry.guid or "",
                title=entry.title or "",
                summary=entry.summary or "",
                content=entry.content or "",
                author=entry.author or "",
                published=entry.published_at,
                attempts=entry.attempts or 0,
            )
    return list(jobs.values()), last_id, settled


def count_pending(store: Store, entry_ids: list[int] | None = None) -> int:
    """How many entries (of ``entry_ids``, or all) wait for extraction."""
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(_pending_query(entry_ids).subquery())) or 0


def extract_pending(
    store: Store,
    settings: Settings,
    *,
    entry_ids: list[int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_batch: Callable[[list[int]], None] | None = None,
    fetched: threading.Event | None = None,
) -> ExtractReport:
    """Turn pending entries (all, or ``entry_ids``) into articles.

    Entries whose link already has an article are linked to it (``known``).
    Pages are fetched on threads and extracted in ``ingest.extract_workers``
    processes; results are committed every ``ingest.batch_size`` pages, each
    batch in one transaction, so an interrupted run loses only the pages it had
    not committed yet (their entries stay pending) and the next run picks them
    up. Articles are unique by canonical URL in the database: two runs racing
    store one article. Only a failure of the store raises; a page's failure is
    recorded on its entry.

    ``on_batch`` is called with the ids of the articles each committed batch
    created, while the next pages are still being fetched and extracted: the
    ingest handler clusters and classifies there, so the main process works
    while the extraction workers do.

    ``fetched``: feeds are being fetched concurrently until this event is set.
    Entries they queue are picked up as they are stored, and the stage returns
    only once the event is set and no pending entry is left: pages of the first
    feeds are extracted while the slow ones still download.
    """
    from pipeline.fetcher import Fetcher

    report = ExtractReport()
    # Read before counting: an entry stored before the fetching ended is counted.
    fetching_over = fetched is None or fetched.is_set()
    total = count_pending(store, entry_ids)
    if total == 0 and fetching_over:
        return report
    done = 0
    loaded = 0  # entries loaded so far: the progress total grows with arrivals
    batch = max(1, settings.ingest.batch_size)
    pool = ExtractionPool(settings.ingest.extract_workers, settings.ingest.extract_timeout, settings.ingest.extract_memory_mb)
    fetcher = Fetcher(settings.http)
    after_id = 0
    # Jobs queued or finished but not yet written, by canonical URL. Loading and
    # writing both happen on this thread, so an entry joining a job here is always
    # written with it.
    unwritten: dict[str, _Job] = {}

    def more_jobs() -> list[_Job] | None:
        """Jobs for the next pending entries; [] when none is pending yet but the
        feeds are still being fetched; None when no entry is left."""
        nonlocal after_id, done, loaded, total
        while True:
            # Read before looking: an entry stored before the event was set is seen below.
            arriving = fetched is not None and not fetched.is_set()
            start = after_id
            jobs, after_id, settled = _load_jobs(store, settings, entry_ids, after_id, report, unwritten)
            done += settled
            loaded += settled + sum(len(j.entry_ids) for j in jobs)
            total = max(total, loaded)
            if progress and settled:
                progress("extract", min(done, total), total)
            if jobs:
                unwritten.update((j.canonical, j) for j in jobs)
                return jobs
            if after_id == start:
                return [] if arriving else None

    try:
        with closing(_run_jobs(more_jobs, fetcher, pool, settings, batch)) as batches:
            for outcomes in batches:
                before = len(report.article_ids)
                _write(store, outcomes, settings, report)
                for o in outcomes:
                    unwritten.pop(o.job.canonical, None)
                done += sum(len(o.job.entry_ids) for o in outcomes)
                if progress:
                    progress("extract", min(done, total), total)
                if on_batch is not None and len(report.article_ids) > before:
                    on_batch(report.article_ids[before:])
    finally:
        fetcher.close()
        pool.close()
    return report


def _run_jobs(
    more_jobs: Callable[[], list[_Job] | None], fetcher: Any, pool: ExtractionPool, settings: Settings, batch: int
) -> Iterator[list[_Outcome]]:
    """Run jobs on threads; yield finished outcomes in groups of at most ``batch``.

    Jobs come from ``more_jobs`` ([]: none yet, None: there are no more), asked
    for again whenever fewer than two jobs per thread are left queued: the
    extraction workers never run dry while the next chunk of entries is loaded.
    Pages keep being fetched and extracted while the caller handles a yielded
    group; only ``threads`` pages are held in memory at a time (a finished
    outcome keeps the extracted text, not the page). Once every job is queued,
    groups get smaller (``TAIL_BATCH_DIVISOR``), so that what follows each group
    keeps pace with the last pages; with no job running, what is finished is
    yielded at once.
    """
    threads = max(1, settings.http.max_concurrency)
    tp = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="newsmon-extract")
    # Finished jobs arrive here (one wake-up per job: waiting on the set of running
    # futures instead costs a lock round on every one of them per wake-up).
    finished: queue.SimpleQueue[Future[_Outcome]] = queue.SimpleQueue()
    in_flight = 0
    exhausted = False
    buffer: list[_Outcome] = []
    try:
        while True:
            waiting_for_arrivals = False
            if not exhausted and in_flight < 2 * threads:
                jobs = more_jobs()
                if jobs is None:
                    exhausted = True
                elif jobs:
                    for job in jobs:
                        tp.submit(_process, job, fetcher, pool, settings).add_done_callback(finished.put)
                    in_flight += len(jobs)
                    continue
                else:
                    waiting_for_arrivals = True
            if not in_flight and exhausted:
                break
            try:
                futures = [finished.get(timeout=ARRIVAL_POLL if waiting_for_arrivals else None)]
            except queue.Empty:
                continue
            while True:
                try:
                    futures.append(finished.get_nowait())
                except queue.Empty:
                    break
            in_flight -= len(futures)
            buffer += [f.result() for f in futures]
            size = batch if not exhausted else max(1, batch // TAIL_BATCH_DIVISOR)
            while len(buffer) >= size:
                yield buffer[:size]
                buffer = buffer[size:]
            if buffer and not in_flight:  # nothing else is on its way (yet): no reason to hold these
                yield buffer
                buffer = []
    finally:
        # Jobs not started are dropped; running ones finish (each is bounded by the fetch
        # and extraction timeouts): the caller closes the fetcher and the pool next, and a
        # job still using them would fail with a misleading error.
        tp.shutdown(wait=True, cancel_futures=True)

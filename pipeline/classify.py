"""Relevance to relations among the United States, Pakistan and India.

The judgement is about *relations*, not mentions: an article is relevant when it reports
an interaction, dispute or statement between two of the three governments, militaries,
economies or peoples. The classifier is explainable and runs offline:

1. Text is split into sentences (the headline is one of them).
2. One compiled pattern finds, in a single pass, every actor (countries, capitals and
   metonyms, institutions, office-holders — ``data/entities.toml``), relational cue,
   speech verb, official noun, topic word and off-topic domain word (``data/cues.toml``).
3. A sentence is evidence for a dyad (US-PK, US-IN, IN-PK) when actors of both countries
   meet relational cues in it; a speech verb counts only next to an official actor.
   Reported speech ("he said") and "the two countries" inherit actors from the
   sentences before them.
4. The article's score is a logistic function of a few features: total evidence
   (headline and lead weigh more), headline and lead evidence, the share of sentences
   that are evidence, and the density of off-topic domain words (cricket, box office,
   earthquakes, share prices), which only counts when relational evidence is weak.
5. Dyads come from the country pairs that carry the evidence, topics from lexicons
   weighted by the sentences they occur in, and the strongest sentences are kept as
   evidence.

A watch profile (TOML; ``settings.classify.profile_file`` or ``data/profile.toml``)
adds include terms, mute (exclude) terms and may override the threshold. The version
string stored with each decision combines :data:`RULES_VERSION` with a hash of the data
files, the profile and the threshold, so any change there makes stored decisions stale
and ``classify_pending`` reclassifies them.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import column, func, or_, select, text, union_all, update

from pipeline.config import DATA_DIR, Settings
from pipeline.store import Article, Classification as ClassificationRow, Store, dialect_insert, utcnow
from pipeline.types import Classification, ClassifyReport, Evidence

# Bump when the rules in this module change; data and profile changes are hashed in.
RULES_VERSION = "1.0"

DYADS = ("US-PK", "US-IN", "IN-PK")  # all three together: a trilateral story

ENTITIES_FILE = DATA_DIR / "entities.toml"
CUES_FILE = DATA_DIR / "cues.toml"
DEFAULT_PROFILE_FILE = DATA_DIR / "profile.toml"

BATCH_SIZE = 500


_PAIRS = tuple((d, *d.split("-")) for d in DYADS)

# ---------------------------------------------------------------- watch profile


@dataclass(frozen=True)
class IncludeRule:
    """Terms that count as relational evidence; ``dyads`` name the countries they imply."""

    terms: tuple[str, ...]
    dyads: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    weight: float = 1.0


@dataclass(frozen=True)
class ExcludeRule:
    """Mute filter: an article with one of ``terms`` in ``scope`` is not relevant."""

    terms: tuple[str, ...]
    scope: str = "title"  # title | lead | text


@dataclass(frozen=True)
class WatchProfile:
    """What a desk tunes without code: extra terms, mute filters and the threshold."""

    threshold: float | None = None
    include: tuple[IncludeRule, ...] = ()
    exclude: tuple[ExcludeRule, ...] = ()
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> WatchProfile:
        """Read a profile file; raises ``ValueError`` with the file name on a bad profile."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"watch profile {p}: {exc}") from exc
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "") -> WatchProfile:
        def as_list(v: object, what: str) -> list:
            if v is None:
                return []
            if isinstance(v, dict):
                return [v]
            if not isinstance(v, list):
                raise ValueError(f"watch profile {source}: {what} must be a table or a list of tables")
            return v

        threshold = data.get("threshold")
        if threshold is not None:
            threshold = float(threshold)
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"watch profile {source}: threshold must be within [0, 1], got {threshold}")
        include = []
        for item in as_list(data.get("include"), "include"):
            dyads = tuple(str(d).upper() for d in item.get("dyads", ()))
            bad = [d for d in dyads if d not in DYADS]
            if bad:
                raise ValueError(f"watch profile {source}: unknown dyad(s) {bad}; use {list(DYADS)}")
            terms = tuple(str(t).strip() for t in item.get("terms", ()) if str(t).strip())
            if terms:
                include.append(
                    IncludeRule(
                        terms=terms,
                        dyads=dyads,
                        topics=tuple(str(t) for t in item.get("topics", ())),
                        weight=float(item.get("weight", 1.0)),
                    )
                )
        exclude = []
        for item in as_list(data.get("exclude"), "exclude"):
            scope = str(item.get("scope", "title"))
            if scope not in ("title", "lead", "text"):
                raise ValueError(f"watch profile {source}: exclude scope must be title, lead or text, got {scope!r}")
            terms = tuple(str(t).strip() for t in item.get("terms", ()) if str(t).strip())
            if terms:
                exclude.append(ExcludeRule(terms=terms, scope=scope))
        return cls(threshold=threshold, include=tuple(include), exclude=tuple(exclude), source=source)

    def fingerprint(self) -> str:
        return repr((self.threshold, self.include, self.exclude))


# ---------------------------------------------------------------- lexicon compilation

# Sense kinds (small ints: looked up for every match).
ACTOR, PAIR, BLOCK, OTHER, CUE, SPEECH, CARRY, OFFICIAL, ANAPHOR, NEG, TOPIC, INCLUDE, EXCLUDE, SURNAME = range(14)

# "Indian officials", "India's foreign ministry", "Pakistan's new envoy", "the government
# of India": a country word joined to an official noun is the state speaking or acting.
_OFFICIAL_AFTER = re.compile(r"(?:'s?)?(?: ([a-z]+))? ")
_OFFICIAL_BEFORE = re.compile(r" of (?:the )?")
_PLACE_BEFORE = re.compile(r"\b(?:in|at|from|near|to|of|across|around|outside) $", re.I)
PLACE_CAPITAL = 0.55
_NOT_A_MODIFIER = frozenset(
    "said says told and or to by with for in on at as that than from urged asked is was are were has had will".split()
)


def _official_next(doc: str, a: int, b: int, oa: int, ob: int) -> bool:
    """Is the official noun at [oa, ob) attached to the country word at [a, b)?"""
    if oa >= b:
        if oa - b > 16:
            return False
        m = _OFFICIAL_AFTER.fullmatch(doc, b, oa)
        return m is not None and m.group(1) not in _NOT_A_MODIFIER
    if ob <= a and a - ob <= 8:
        return _OFFICIAL_BEFORE.fullmatch(doc, ob, a) is not None
    return False


@dataclass(frozen=True, slots=True)
class Sense:
    kind: int
    label: str = ""  # canonical actor / topic slug / domain
    country: str = ""
    countries: tuple[str, ...] = ()
    weight: float = 0.0
    official: bool = False
    forms: frozenset[str] | None = None  # exact-case surface forms; None = any case
    ref: int = -1  # include/exclude rule index, or person index for surnames
    metonym: bool = False  # a capital: the government ("Islamabad said") or a place ("in Islamabad")


def _key(term: str) -> str:
    # Matching runs on a lower-cased copy of the text in which hyphens are spaces, so
    # "counter-terrorism" also finds "counter terrorism" and "India–Pakistan" finds "india pakistan".
    return re.sub(r"\s+", " ", _normalise(term).lower().replace("-", " ")).strip()


def _trie_pattern(keys: Iterable[str]) -> str:
    trie: dict = {}
    for k in keys:
        node = trie
        for ch in k:
            node = node.setdefault(ch, {})
        node[""] = True

    def build(node: dict, last: str) -> str:
        alts = [re.escape(ch) + build(child, ch) for ch, child in sorted((c, n) for c, n in node.items() if c)]
        if "" in node:
            # A term ending in a word character must end at a word boundary.
            alts.append(r"(?!\w)" if (last.isalnum() or last == "_") else "")
        if len(alts) == 1:
            return alts[0]
        return "(?:" + "|".join(alts) + ")"

    return build(trie, "")


class Lexicon:
    """All terms compiled into one pattern, with the senses of each matched key."""

    def __init__(self, entities: dict, cues: dict, profile: WatchProfile) -> None:
        self.senses: dict[str, list[Sense]] = {}
        self.people: list[tuple[str, str]] = []  # (name, country)
        strength = {k: float(v) for k, v in entities.get("strength", {}).items()}

        def add(term: str, sense: Sense) -> None:
            k = _key(term)
            if not k:
                return
            have = self.senses.setdefault(k, [])
            for o in have:  # the same term listed twice counts once
                if (o.kind, o.label, o.country, o.countries) == (sense.kind, sense.label, sense.country, sense.countries):
                    if o.forms is None or o.forms == sense.forms:
                        return
            have.append(sense)

        def exact(term: str) -> frozenset[str]:
            # Compared with the matched text with hyphens as spaces, like the keys.
            t = _normalise(term).replace("-", " ")
            return frozenset({t, t.upper()})

        # (list, its exact-case list, strength group, official)
        groups = (
            ("names", "acronyms", "name", False),
            ("capitals", None, "capital", True),
            ("institutions", "institution_acronyms", "institution", True),
            ("demonyms", None, "demonym", False),
            ("places", None, "place", False),
            ("parties", "party_acronyms", "party", False),
            ("groups", "group_acronyms", "group", False),
        )
        known = {k for g in groups for k in g[:2] if k}
        codes = {c for d in DYADS for c in d.split("-")}
        for code, spec in entities.get("countries", {}).items():
            bad = set(spec) - known
            if code not in codes or bad:
                raise ValueError(f"entities: unknown country {code!r} or keys {sorted(bad)}; keys are {sorted(known)}")
            for key, acro, group, official in groups:
                s = strength.get(group, 0.6 if group == "group" else 0.8)
                for t in spec.get(key, ()):
                    add(t, Sense(ACTOR, label=t, country=code, weight=s, official=official, metonym=group == "capital"))
                for t in spec.get(acro, ()) if acro else ():
                    add(t, Sense(ACTOR, label=t, country=code, weight=s, official=official, forms=exact(t)))
        for i, person in enumerate(entities.get("people", ())):
            code, name = person.get("country"), person.get("name")
            bad = set(person) - {"country", "name", "aliases", "surname", "official"}
            if code not in codes or not name or bad:
                raise ValueError(f"entities: bad [[people]] entry {person!r}")
            self.people.append((name, code))
            full = {name, *person.get("aliases", ())}
            official = bool(person.get("official", True))
            s = strength.get("person", 1.0) if official else strength.get("party", 0.7)
            for t in full:
                add(t, Sense(ACTOR, label=name, country=code, weight=s, official=official, forms=exact(t), ref=i))
            if person.get("surname"):
                sn = person["surname"]
                add(sn, Sense(SURNAME, label=name, country=code, weight=s, official=official, forms=exact(sn), ref=i))
        for pair in entities.get("pairs", ()):
            cs = tuple(pair.get("countries", ()))
            if len(set(cs)) != 2 or not set(cs) <= codes:
                raise ValueError(f"entities: a [[pairs]] entry needs two of {sorted(codes)}, got {list(cs)}")
            for t in pair.get("terms", ()):
                add(t, Sense(PAIR, label=t, countries=cs, weight=0.85))
            for t in pair.get("acronyms", ()):
                add(t, Sense(PAIR, label=t, countries=cs, weight=0.85, forms=exact(t)))
        for t in entities.get("blockers", {}).get("terms", ()):
            add(t, Sense(BLOCK, label=t))
        others = entities.get("others", {})
        for t in others.get("terms", ()):
            add(t, Sense(OTHER, label=t))
        for t in others.get("acronyms", ()):
            add(t, Sense(OTHER, label=t, forms=exact(t)))
        for t in others.get("list_markers", ()):
            add(t, Sense(OTHER, label="list:" + t))

        for group in cues.get("relational", ()):
            w = float(group.get("weight", 1.0))
            for t in group.get("terms", ()):
                add(t, Sense(CUE, label=t, weight=w))
        sp = cues.get("speech", {})
        for t in sp.get("terms", ()):
            add(t, Sense(SPEECH, label=t, weight=float(sp.get("weight", 0.45))))
        for t in cues.get("speech_carry", {}).get("terms", ()):
            add(t, Sense(CARRY, label=t, weight=float(sp.get("weight", 0.45))))
        for t in cues.get("official", {}).get("terms", ()):
            add(t, Sense(OFFICIAL, label=t))
        for t in cues.get("pair_anaphor", {}).get("terms", ()):
            add(t, Sense(ANAPHOR, label=t))
        for group in cues.get("negative", ()):
            dom = group["domain"]
            strong = bool(group.get("strong", False))
            for t in group.get("terms", ()):
                add(t, Sense(NEG, label=dom, weight=1.0 if strong else WEAK_OFFTOPIC))
            for t in group.get("acronyms", ()):
                add(t, Sense(NEG, label=dom, weight=1.0 if strong else WEAK_OFFTOPIC, forms=exact(t)))
        for group in cues.get("topics", ()):
            slug = group["slug"]
            for t in group.get("terms", ()):
                add(t, Sense(TOPIC, label=slug))
            for t in group.get("acronyms", ()):
                add(t, Sense(TOPIC, label=slug, forms=exact(t)))
        self.topic_slugs = tuple(g["slug"] for g in cues.get("topics", ()))

        for i, rule in enumerate(profile.include):
            cs = tuple(sorted({c for d in rule.dyads for c in d.split("-")}))
            for t in rule.terms:
                add(t, Sense(INCLUDE, label=t, countries=cs, weight=rule.weight, ref=i))
        for i, rule in enumerate(profile.exclude):
            for t in rule.terms:
                add(t, Sense(EXCLUDE, label=t, ref=i))

        # Longest keys first is implied by the trie (a longer continuation is tried first).
        self.pattern = re.compile(r"(?<!\w)" + _trie_pattern(self.senses))


# ---------------------------------------------------------------- text preparation

_REPLACE = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": " - ",
    "\u2015": " - ", "\u2212": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
}


def _normalise(text: str) -> str:
    """Straight quotes, ASCII dashes, single spaces, one newline between non-empty lines.

    Written with str methods rather than regular expressions: this runs on every
    article and dominates the cost of short ones.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
        for ch, rep in _REPLACE.items():
            if ch in text:
                text = text.replace(ch, rep)
    return "\n".join(filter(None, (" ".join(line.split()) for line in text.splitlines())))


def _lower_same_length(text: str) -> str:
    low = text.lower()
    if len(low) != len(text):  # a few characters (e.g. "İ") grow when lower-cased
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return low.replace("-", " ")


# "WASHINGTON:", "NEW DELHI, June 21 (Reuters) -", "Islamabad:": where the reporter
# is, not an actor of the story.
_DATELINE = re.compile(
    r"(?:[A-Z][A-Z.'-]+(?: [A-Z][A-Z.'-]+){0,2}"  # WASHINGTON, NEW DELHI
    r"(?:, [A-Z][a-z]{2,8}\.? \d{1,2}(?:, \d{4})?)?"  # , June 21
    r"(?: ?\([A-Za-z .&-]{2,30}\))?"  # (Reuters)
    r" ?(?::| -| \u2014) ?"
    r"|[A-Z][a-z]+(?: [A-Z][a-z]+){0,2}:$"  # "Washington:" alone on a line
    r"|[A-Z][a-z]+(?: [A-Z][a-z]+){0,2}(?:, [A-Z][a-z]{2,8}\.? \d{1,2}(?:, \d{4})?)? ?\([A-Z][A-Za-z .&-]{1,29}\)"
    r"(?: ?(?::| -| \u2014))? ?)"  # "Islamabad, Nov 17 (PTI)"
)


def _dateline_spans(body: str, base: int, max_lines: int = 12) -> list[tuple[int, int]]:
    """Datelines at the start of the first paragraphs: where the reporter is, not an actor."""
    spans = []
    pos = 0
    for _ in range(max_lines):
        m = _DATELINE.match(body, pos)
        if m and m.end() - pos < 60:
            spans.append((base + pos, base + m.end()))
        nl = body.find("\n", pos)
        if nl < 0:
            break
        pos = nl + 1
    return spans


_BOILER_LINE = re.compile(
    r"^(?:also read|read also|also see|see also|read more|read next|read:|related:|related stories|"
    r"related news|more on this|more from|recommended|watch:|watch video|also watch|click here|"
    r"subscribe|follow us|sign up|advertisement|trending|top stories|latest news|most read|"
    r"editor's picks|you may also like|don't miss|download the app|share this|copyright|\(c\) |©)",
    re.I,
)
_ABBREV = frozenset(
    """mr mrs ms dr gen lt col maj capt cdr sen rep gov st jr sr prof brig adm sgt no vs
    inc co ltd corp mt jan feb mar apr jun jul aug sep sept oct nov dec u.s u.n u.k e.g i.e
    approx dept est fig govt hon amb lt.gen maj.gen""".split()
)
# One sentence-final punctuation character first, so the search can skip ahead quickly.
_SENT_END = re.compile(r"[.!?][.!?\"')\]]* (?=[\"'(\[]?[A-Z0-9])")


def _line_weight(line: str) -> float:
    if _BOILER_LINE.match(line):
        return 0.0
    spaces = line.count(" ")
    if spaces < 3:
        return 0.3  # captions, bylines, "Logo", "Advertisement"
    if spaces < 15 and line[-1] not in ".!?\"')":
        return HEADING_WEIGHT  # subheadings and links to other stories
    return 1.0


def _split_sentences(text: str, base: int, out: list[tuple[int, int, float]]) -> None:
    """Append (start, end, position weight) for each sentence of ``text`` (offset ``base``).

    ``text`` is normalised (single spaces, one newline between paragraphs). The first
    LEAD_SENTENCES full-length sentences get the lead weight.
    """
    lead_left = LEAD_SENTENCES
    n = len(text)
    line_start = 0
    while line_start < n:
        line_end = text.find("\n", line_start)
        if line_end < 0:
            line_end = n
        line_w = _line_weight(text[line_start:line_end])
        if line_w > 0:
            start = line_start
            ends = []
            for m in _SENT_END.finditer(text, line_start, line_end):
                j = m.start()
                # "Mr. Kirby", "Gen. Munir", "John F. Kirby": not the end of a sentence.
                k = text.rfind(" ", start, j) + 1
                prev = text[k:j].lower().strip("\"'(")
                if prev in _ABBREV or (len(prev) == 1 and prev.isalpha()):
                    continue
                ends.append((start, j + 1))
                start = m.end()
            ends.append((start, line_end))
            for a, b in ends:
                w = line_w
                if w >= 1.0 and lead_left > 0:
                    w = LEAD_WEIGHT
                    lead_left -= 1
                out.append((base + a, base + b, w))
        line_start = line_end + 1


TITLE_WEIGHT = 2.0
HEADING_WEIGHT = 0.6
LEAD_WEIGHT = 1.5
LEAD_SENTENCES = 3

# ---------------------------------------------------------------- scoring constants
# A logistic over a few features; the weights were set by reasoning about typical
# cases (one incidental sentence in a long domestic story must stay well below 0.5; a
# headline naming a relation must clear it) and checked on the labelled sets in eval/.
BIAS = -4.0
W_EVIDENCE = 3.0  # log1p(total weighted evidence)
W_TITLE = 1.5  # headline evidence (0..1)
W_LEAD = 1.0  # best lead sentence (0..1)
W_SHARE = 2.0  # share of sentences that are evidence (x5, capped at 1)
W_OFFTOPIC = 1.5  # off-topic domain density, damped by evidence
EVIDENCE_SENTENCE = 0.35  # a sentence at least this strong counts as evidence
CUE_RATE = 1.2  # cue strength c → 1 - exp(-CUE_RATE * c)
DYAD_MIN = 0.6
DYAD_SHARE = 0.45
TOPIC_MIN = 1.2
TOPIC_SHARE = 0.3
MAX_TOPICS = 3
MAX_EVIDENCE = 3
WEAK_OFFTOPIC = 0.4  # a weak off-topic word counts this much of a strong one


class _Sent:
    """What one sentence contains; filled by the matching pass, scored by ``_score``."""

    __slots__ = (
        "start", "end", "pos", "actors", "mentions", "officials", "cues", "speech", "carry", "anaphor",
        "others", "neg_strong", "neg_weak", "topics", "includes", "excludes", "pair_terms", "terms",
        "evidence", "best",
    )  # fmt: skip

    def __init__(self, start: int, end: int, pos: float) -> None:
        self.start, self.end, self.pos = start, end, pos
        self.actors: dict[str, float] = {}
        self.mentions: list = []  # (start, end, country, sense, surface)
        self.officials: list = []  # (start, end) of official nouns
        self.cues: dict[str, float] = {}
        self.speech = 0.0
        self.carry = self.anaphor = False
        self.others: set[str] | None = None
        self.neg_strong = self.neg_weak = 0
        self.topics: list[str] = []
        self.includes: list = []
        self.excludes: list = []
        self.pair_terms: list = []
        self.terms: list[str] = []
        self.evidence: dict[str, float] = {}
        self.best = 0.0


@dataclass(frozen=True)
class Analysis:
    """The classification with the features behind its score (for evaluation and debugging)."""

    classification: Classification
    features: dict[str, float]
    dyad_evidence: dict[str, float]
    topic_scores: dict[str, float]
    muted_by: str | None = None


class Classifier:
    """Holds the compiled lexicon and profile; :meth:`classify` is a pure function of its input."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        profile: WatchProfile | None = None,
        entities_file: Path = ENTITIES_FILE,
        cues_file: Path = CUES_FILE,
    ) -> None:
        self.profile = profile or WatchProfile()
        self.threshold = self.profile.threshold if self.profile.threshold is not None else float(threshold)
        entities_raw = Path(entities_file).read_bytes()
        cues_raw = Path(cues_file).read_bytes()
        self.lexicon = Lexicon(tomllib.loads(entities_raw.decode()), tomllib.loads(cues_raw.decode()), self.profile)
        h = hashlib.sha256()
        for part in (entities_raw, cues_raw, self.profile.fingerprint().encode(), repr(self.threshold).encode()):
            h.update(part)
            h.update(b"\0")
        #: Stored with every decision; changes whenever rules, data, profile or threshold do.
        self.version = f"{RULES_VERSION}+{h.hexdigest()[:10]}"

    @classmethod
    def from_settings(cls, settings: Settings) -> Classifier:
        path = settings.classify.profile_file or DEFAULT_PROFILE_FILE
        return _cached_classifier(str(Path(path).resolve()), _mtime(path), float(settings.classify.threshold))

    # ------------------------------------------------------------ public API

    def classify(self, title: str, text: str) -> Classification:
        """Score one article (headline and body text) for relevance to US–Pakistan–India relations."""
        return self.analyse(title, text).classification

    def analyse(self, title: str, text: str) -> Analysis:
        """Like :meth:`classify`, with the features behind the score."""
        title = _normalise(title or "").replace("\n", " ")
        body = _normalise(text or "")
        datelines = _dateline_spans(body, len(title) + 1)
        doc = title + "\n" + body
        base = len(title) + 1

        sents_raw: list[tuple[int, int, float]] = []
        if title:
            sents_raw.append((0, len(title), TITLE_WEIGHT))
        n_title = len(sents_raw)
        _split_sentences(body, base, sents_raw)
        sents = [_Sent(a, b, w) for a, b, w in sents_raw]
        if not sents:
            return self._empty()

        low = _lower_same_length(doc)
        lex = self.lexicon
        senses_of = lex.senses
        surname_hits: list = []
        named: set[str] = set()  # people named in full
        dl_end = datelines[-1][1] if datelines else -1

        def in_dateline(a: int) -> bool:
            return any(x <= a < y for x, y in datelines)

        # Matches come in text order: walk the sentences alongside instead of searching.
        si = 0
        n_sents = len(sents)
        st = sents[0]
        next_start = sents[1].start if n_sents > 1 else len(doc) + 1
        for mt in lex.pattern.finditer(low):
            a = mt.start()
            if a >= next_start:
                while si + 1 < n_sents and sents[si + 1].start <= a:
                    si += 1
                st = sents[si]
                next_start = sents[si + 1].start if si + 1 < n_sents else len(doc) + 1
            if a < st.start or a >= st.end:
                continue  # between sentences (dropped boilerplate lines)
            b = mt.end()
            surface = None
            for sense in senses_of[mt.group()]:
                if sense.forms is not None:
                    if surface is None:
                        surface = doc[a:b]
                    if surface.replace("-", " ") not in sense.forms:
                        continue
                kind = sense.kind
                if kind == TOPIC:
                    st.topics.append(sense.label)
                elif kind == CUE:
                    st.cues[sense.label] = sense.weight
                elif kind == ACTOR:
                    if a < dl_end and in_dateline(a):
                        continue
                    if sense.ref >= 0:
                        named.add(sense.label)
                    st.mentions.append((a, b, sense.country, sense, surface or doc[a:b]))
                elif kind == SPEECH:
                    if sense.weight > st.speech:
                        st.speech = sense.weight
                elif kind == OFFICIAL:
                    st.officials.append((a, b))
                elif kind == NEG:
                    if sense.weight >= 1.0:  # a strong off-topic word
                        st.neg_strong += 1
                    else:
                        st.neg_weak += 1
                elif kind == OTHER:
                    if st.others is None:
                        st.others = set()
                    st.others.add(sense.label.lower())
                elif kind == PAIR:
                    st.pair_terms.append((a, b, sense, surface or doc[a:b]))
                elif kind == SURNAME:
                    surname_hits.append((si, a, b, surface or doc[a:b], sense))
                elif kind == CARRY:
                    if sense.weight > st.speech:
                        st.speech = sense.weight
                    st.carry = True
                elif kind == ANAPHOR:
                    st.anaphor = True
                elif kind == INCLUDE:
                    st.includes.append((sense, surface or doc[a:b]))
                elif kind == EXCLUDE:
                    st.excludes.append((sense, surface or doc[a:b]))
                # BLOCK: the match itself hides the country word inside it.

        # Surnames count once the person is named in full somewhere in the article.
        for si, a, b, surface, sense in surname_hits:
            if sense.label in named and not (a < dl_end and in_dateline(a)):
                sents[si].mentions.append((a, b, sense.country, sense, surface))

        return self._score(doc, sents, n_title)

    # ------------------------------------------------------------ scoring

    def _score(self, doc: str, sents: list[_Sent], n_title: int) -> Analysis:
        last_official: tuple[int, str] | None = None  # (sentence index, country)
        recent_pairs: list[tuple[int, frozenset[str]]] = []
        dyad_total = dict.fromkeys(DYADS, 0.0)
        total = 0.0
        n_evidence = 0
        neg_strong = neg_weak = 0
        topic_scores: dict[str, float] = {}
        profile = self.profile

        for i, st in enumerate(sents):
            actors: dict[str, float] = {}
            official_c: list[str] = []
            for a, b, c, sense, surface in st.mentions:
                q = sense.weight
                official = sense.official
                if sense.metonym and _PLACE_BEFORE.search(doc, max(0, a - 7), a):
                    q, official = PLACE_CAPITAL, False  # "in New Delhi": where, not who
                if not official and st.officials:
                    for oa, ob in st.officials:
                        if _official_next(doc, a, b, oa, ob):
                            official, q = True, max(q, 1.0)
                            break
                if official:
                    official_c.append(c)
                if q > actors.get(c, 0.0):
                    actors[c] = q
                st.terms.append(surface)
            cue = sum(st.cues.values())
            for a, b, sense, surface in st.pair_terms:
                for c in sense.countries:
                    actors[c] = max(actors.get(c, 0.0), sense.weight)
                cue += sense.weight
                st.terms.append(surface)
            cue += _compound_cue(doc, st.mentions)
            for sense, surface in st.includes:
                for c in sense.countries:
                    actors[c] = max(actors.get(c, 0.0), 1.0)
                cue += sense.weight
                st.terms.append(surface)
            # Reported speech ("he said") speaks for the last official actor.
            if st.carry and not official_c and last_official and i - last_official[0] <= 3:
                c = last_official[1]
                actors[c] = max(actors.get(c, 0.0), 0.8)
                official_c.append(c)
            # "The two countries" names the pair of the last few sentences.
            if st.anaphor:
                for j, pair in reversed(recent_pairs):
                    if i - j <= 4:
                        for c in pair:
                            actors[c] = max(actors.get(c, 0.0), 0.75)
                    break
            if official_c:
                cue += st.speech
                last_official = (i, official_c[0])
            st.actors = actors
            if len(actors) >= 2:
                recent_pairs.append((i, frozenset(actors)))

            neg_strong += st.neg_strong
            neg_weak += st.neg_weak
            if len(actors) >= 2 and cue > 0:
                g = 1.0 - math.exp(-CUE_RATE * cue)
                pen = 1.0
                if st.neg_strong:
                    pen *= 0.4
                elif st.neg_weak:
                    pen *= 0.85
                # Lists of many states (multilateral meetings, market round-ups) say
                # little about a relation between two of ours.
                # A list marker ("countries including") stands for two more states.
                n_other = sum(2 if o.startswith("list:") else 1 for o in st.others) if st.others else 0
                if n_other >= 4:
                    pen *= 0.5
                elif n_other >= 2:
                    pen *= 0.8
                for d, x, y in _PAIRS:
                    qx, qy = actors.get(x), actors.get(y)
                    if qx and qy:
                        e = math.sqrt(qx * qy) * g * pen
                        st.evidence[d] = e
                        dyad_total[d] += st.pos * e
                st.best = max(st.evidence.values(), default=0.0)
                total += st.pos * st.best
                if st.best >= EVIDENCE_SENTENCE and st.pos > 0.3:
                    n_evidence += 1
            if st.topics or st.includes:
                w = st.pos * (0.5 + st.best)
                for slug in st.topics:
                    topic_scores[slug] = topic_scores.get(slug, 0.0) + w
                for sense, _ in st.includes:
                    for slug in profile.include[sense.ref].topics:
                        topic_scores[slug] = topic_scores.get(slug, 0.0) + w * 2

        n_body = max(1, len(sents) - n_title)
        words = max(1, (len(doc) + 1) // 6)
        title_e = sents[0].best if n_title else 0.0
        lead = [s.best for s in sents[n_title : n_title + 6] if s.pos == LEAD_WEIGHT]
        lead_e = max(lead, default=0.0)
        share = min(1.0, 5.0 * n_evidence / (n_body + n_title))
        # Off-topic domain words per 100 words; a cricket report or a box-office story is
        # dense with them, while a relations story mentioning a match is not.
        offtopic = (neg_strong + WEAK_OFFTOPIC * neg_weak) * 100.0 / words
        if n_title and sents[0].neg_strong:
            offtopic += 2.0
        damp = math.exp(-total / 3.0)
        z = (
            BIAS
            + W_EVIDENCE * math.log1p(total)
            + W_TITLE * title_e
            + W_LEAD * lead_e
            + W_SHARE * share
            - W_OFFTOPIC * min(offtopic / 2.0, 1.5) * damp
        )
        score = 1.0 / (1.0 + math.exp(-z))

        muted_by = None
        # The lead, for mute filters: everything up to the last lead sentence (so
        # subheadings and captions before it count too).
        lead_end = max((i for i, st in enumerate(sents) if st.pos == LEAD_WEIGHT), default=n_title + LEAD_SENTENCES - 1)
        for st_i, st in enumerate(sents):
            for sense, surface in st.excludes:
                scope = profile.exclude[sense.ref].scope
                in_title = st_i < n_title
                in_lead = st_i <= lead_end
                if scope == "text" or (scope == "title" and in_title) or (scope == "lead" and in_lead):
                    muted_by = surface
                    break
            if muted_by:
                break

        relevant = score >= self.threshold and muted_by is None
        dyads: tuple[str, ...] = ()
        topics: tuple[str, ...] = ()
        # Labels only for relevant articles: stories aggregate their members' labels, and
        # the dyads of a cricket report would only add noise there.
        if relevant:
            top = max(dyad_total.values())
            dyads = tuple(
                d for d in DYADS if _dyad_ok(dyad_total[d], top)
            ) or (max(DYADS, key=lambda d: dyad_total[d]),)
            top_t = max(topic_scores.values(), default=0.0)
            topics = tuple(
                slug
                for slug, v in sorted(topic_scores.items(), key=lambda kv: (-kv[1], kv[0]))
                if v >= TOPIC_MIN and v >= TOPIC_SHARE * top_t
            )[:MAX_TOPICS]

        ranked = sorted(
            (s for s in sents if s.best > 0), key=lambda s: (-s.pos * s.best, s.start)
        )[:MAX_EVIDENCE]
        evidence = tuple(
            Evidence(
                sentence=_clip(doc[s.start : s.end]),
                terms=tuple(dict.fromkeys(s.terms + list(s.cues)))[:10],
                weight=round(s.pos * s.best, 3),
            )
            for s in sorted(ranked, key=lambda s: s.start)
        )
        if muted_by:
            evidence = (Evidence(sentence=f"muted by the watch profile: {muted_by!r}", terms=(muted_by,)),) + evidence
            score = 0.0
        features = {
            "evidence": round(total, 4),
            "title": round(title_e, 4),
            "lead": round(lead_e, 4),
            "share": round(share, 4),
            "offtopic": round(offtopic, 4),
            "z": round(z, 4),
        }
        cls = Classification(
            score=round(score, 4),
            relevant=relevant,
            dyads=dyads,
            topics=topics,
            evidence=evidence,
            version=self.version,
        )
        return Analysis(
            classification=cls,
            features=features,
            dyad_evidence={d: round(v, 4) for d, v in dyad_total.items()},
            topic_scores={k: round(v, 4) for k, v in topic_scores.items()},
            muted_by=muted_by,
        )

    def _empty(self) -> Analysis:
        cls = Classification(score=0.0, relevant=False, version=self.version)
        return Analysis(cls, {}, dict.fromkeys(DYADS, 0.0), {})


_COMPOUND_GAP = re.compile(r"^\s*(?:-|/|&|and|,)\s*$", re.I)


def _compound_cue(doc: str, mentions: list) -> float:
    """'India-Pakistan', 'US/India', 'between India and Pakistan': the pair is the subject."""
    if len(mentions) < 2:
        return 0.0
    best = 0.0
    ms = sorted(mentions, key=lambda m: m[0])
    for (a1, b1, c1, *_), (a2, b2, c2, *_) in zip(ms, ms[1:]):
        if c1 == c2 or a2 - b1 > 6:
            continue
        gap = doc[b1:a2]
        if not _COMPOUND_GAP.match(gap):
            continue
        if gap.strip() in ("-", "/"):
            best = max(best, 0.8)
        elif doc[max(0, a1 - 8) : a1].lower().endswith("between "):
            best = max(best, 0.8)
        else:
            best = max(best, 0.3)
    return best


def _dyad_ok(value: float, top: float) -> bool:
    return value >= DYAD_MIN and value >= DYAD_SHARE * top


def _clip(sentence: str, limit: int = 320) -> str:
    sentence = " ".join(sentence.split())
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rsplit(" ", 1)[0] + "…"


def _mtime(path: str | Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@lru_cache(maxsize=8)
def _cached_classifier(profile_path: str, mtime: float, threshold: float) -> Classifier:
    p = Path(profile_path)
    profile = WatchProfile.load(p) if p.is_file() else WatchProfile()
    if not p.is_file() and p != DEFAULT_PROFILE_FILE.resolve():
        raise ValueError(f"watch profile {p}: no such file")
    return Classifier(threshold=threshold, profile=profile)


def get_classifier(settings: Settings | None = None) -> Classifier:
    """The classifier for ``settings`` (cached; rebuilt when the profile file changes)."""
    if settings is None:
        from pipeline.config import get_settings

        settings = get_settings()
    return Classifier.from_settings(settings)


def classify(title: str, text: str, *, settings: Settings | None = None) -> Classification:
    """Classify one article with the configured classifier."""
    return get_classifier(settings).classify(title, text)


# ---------------------------------------------------------------- store stages


def _pending(version: str):
    """Articles without a decision of ``version``: never classified, or by another version.

    Index ranges on ``articles.classified_version``; ``!=`` could only be checked row by row.
    """
    v = Article.classified_version
    return or_(v.is_(None), v < version, v > version)


def _stale_versions(session, version: str) -> list[str]:
    """The classifier versions other than ``version`` on stored articles, one index probe each."""
    col = Article.classified_version
    found, w = [], session.scalar(select(func.min(col)))
    while w is not None:
        if w != version:
            found.append(w)
        w = session.scalar(select(func.min(col)).where(col > w))
    return found


def _pending_ids(session, version: str, after: int, limit: int) -> list[int]:
    """The first ``limit`` pending ids above ``after``, in id order.

    One branch per value of ``classified_version`` that is pending (NULL, then each stale
    version), each read from the index in id order and cut at ``limit``: a batch costs the
    same at 10k or 1M articles, whether few articles are pending (ingest) or all of them (after
    a profile change), where one OR of ranges would sort the whole backlog for every batch.
    """
    # SQLite's planner walks the primary key for "IS NULL" once ANALYZE has seen few distinct
    # values (and for any OR of these ranges): the whole table when little is pending. Pin the
    # index there; PostgreSQL chooses from its value statistics.
    sqlite = session.get_bind().dialect.name == "sqlite"
    source = text("articles INDEXED BY ix_articles_classified_version") if sqlite else Article.__table__
    cv, aid = column("classified_version"), column("id")
    conds = [cv.is_(None), *(cv == w for w in _stale_versions(session, version))]
    branches = [
        select(aid).select_from(source).where(c, aid > after).order_by(aid).limit(limit).subquery(f"p{i}")
        for i, c in enumerate(conds)
    ]
    q = union_all(*(select(b.c.id) for b in branches)).order_by(column("id")).limit(limit)
    return list(session.scalars(q))


def classify_pending(store: Store, settings: Settings, *, article_ids: list[int] | None = None) -> ClassifyReport:
    """Classify articles that lack a decision of the current classifier version.

    With ``article_ids``, exactly those articles are (re)classified, whatever their
    stored version. Decisions are upserted into ``classifications`` in batches; each
    batch then refreshes the derived columns of the stories it touched (through
    ``pipeline.dedupe.refresh_stories`` where available) in the same transaction.
    """
    clf = Classifier.from_settings(settings)
    if article_ids is not None:
        return _classify_ids(store, clf, sorted(set(article_ids)))
    report = ClassifyReport()
    last_id = 0
    while True:
        with store.session() as s:
            ids = _pending_ids(s, clf.version, last_id, BATCH_SIZE)
        if not ids:
            break
        last_id = ids[-1]
        _merge(report, _classify_ids(store, clf, ids))
    return report


def reclassify(
    store: Store,
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    force: bool = False,
) -> ClassifyReport:
    """Reclassify the articles published (or, undated, fetched) in ``[since, until)``.

    Without ``force`` only decisions of another classifier version (or none) are redone;
    with ``force`` every article in the range is. This is the backfill to run after a
    change of rules, data or watch profile.
    """
    for d in (since, until):
        if d is not None and d.tzinfo is None:
            raise ValueError(f"naive datetime {d!r}: use timezone-aware UTC values")
    clf = Classifier.from_settings(settings)
    when = func.coalesce(Article.published_at, Article.fetched_at)
    report = ClassifyReport()
    last_id = 0
    while True:
        q = select(Article.id).where(Article.id > last_id)
        if since is not None:
            q = q.where(when >= since)
        if until is not None:
            q = q.where(when < until)
        if not force:
            q = q.where(_pending(clf.version))
        with store.session() as s:
            ids = list(s.scalars(q.order_by(Article.id).limit(BATCH_SIZE)))
        if not ids:
            break
        last_id = ids[-1]
        _merge(report, _classify_ids(store, clf, ids))
    return report


def _merge(into: ClassifyReport, part: ClassifyReport) -> None:
    into.classified += part.classified
    into.relevant += part.relevant
    into.story_ids = sorted(set(into.story_ids) | set(part.story_ids))


def _classify_ids(store: Store, clf: Classifier, ids: Sequence[int]) -> ClassifyReport:
    report = ClassifyReport()
    for k in range(0, len(ids), BATCH_SIZE):
        chunk = list(ids[k : k + BATCH_SIZE])
        with store.session() as s:
            rows = s.execute(
                select(Article.id, Article.title, Article.text, Article.summary).where(Article.id.in_(chunk))
            ).all()
        # Classify outside any transaction: it is CPU work, and writers should not wait on it.
        now = utcnow()
        values = []
        for r in rows:
            c = clf.classify(r.title or "", r.text or r.summary or "")
            values.append(
                {
                    "article_id": r.id,
                    "version": c.version,
                    "score": c.score,
                    "relevant": c.relevant,
                    "dyads": list(c.dyads),
                    "topics": list(c.topics),
                    "evidence": [
                        {"sentence": e.sentence, "terms": list(e.terms), "weight": e.weight} for e in c.evidence
                    ],
                    "classified_at": now,
                }
            )
        if not values:
            continue
        with store.session() as s:
            # Articles deleted since they were read are skipped (the FK would refuse them).
            alive = set(s.scalars(select(Article.id).where(Article.id.in_([v["article_id"] for v in values]))))
            values = [v for v in values if v["article_id"] in alive]
            if not values:
                continue
            _upsert(s, values)
            story_ids = sorted(
                set(s.scalars(select(Article.story_id).where(Article.id.in_(alive), Article.story_id.is_not(None))))
            )
            _refresh_stories(s, story_ids)
        report.classified += len(values)
        report.relevant += sum(1 for v in values if v["relevant"])
        report.story_ids = sorted(set(report.story_ids) | set(story_ids))
    return report


def _upsert(session, values: list[dict]) -> None:
    """Store decisions and mirror their versions onto ``articles.classified_version``."""
    stmt = dialect_insert(session, ClassificationRow).values(values)
    cols = ("version", "score", "relevant", "dyads", "topics", "evidence", "classified_at")
    session.execute(
        stmt.on_conflict_do_update(index_elements=["article_id"], set_={c: stmt.excluded[c] for c in cols})
    )
    # Same transaction, one statement: the pending queue never disagrees with the decisions.
    # Articles are written before stories (refresh_stories), in the order dedupe uses.
    articles, decisions = Article.__table__, ClassificationRow.__table__
    session.execute(
        update(articles)
        .where(articles.c.id.in_([v["article_id"] for v in values]))
        .values(
            classified_version=select(decisions.c.version)
            .where(decisions.c.article_id == articles.c.id)
            .scalar_subquery()
        )
    )


def _refresh_stories(session, story_ids: list[int]) -> None:
    if not story_ids:
        return
    from pipeline import dedupe

    refresh = getattr(dedupe, "refresh_stories", None)
    if refresh is not None:
        refresh(session, story_ids)

"""Same article, near-duplicate copies, same story.

Every article ends in exactly one story. On its way there it is checked, in order:

1. **same article** — another stored article reached by the same canonical URL or
   alias, the same feed GUID, or the same normalised text (``content_hash``):
   recorded as another source of that article (``duplicate_of_id``);
2. **near-duplicate copy** — the same text with other boilerplate, another
   headline or a paragraph more or less. Candidates come from MinHash LSH bands
   (``minhash_bands``, looked up by ``(band, hash)``) and are verified on the
   exact word-shingle sets: Jaccard ≥ ``near_duplicate_threshold`` or containment
   ≥ ``containment_threshold``. A copy joins its original's story;
3. **same story** — a different write-up of the same event inside
   ``story_window_hours``. Candidates come from ``story_keys`` (hashed quotation
   shingles, proper names, figures and headline terms, looked up by ``(key, at)``
   inside the window, so the cost does not grow with the store). Each candidate is
   scored on shared quotations, shared names and content similarity, weighted by
   document frequency (:class:`DfTable`); the article joins the best story scoring
   at least ``story_threshold``, or starts a new one.

The in-memory :func:`cluster_documents` (used by ``python -m pipeline cluster`` and
the evaluation) runs the very same decision code against an in-memory index, so
the command line and the store agree. docs/dedupe.md has the measurements behind
the thresholds.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Protocol

import numpy as np
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from pipeline import text as T
from pipeline.config import DedupeSettings, Settings
from pipeline.store import (
    Article,
    ArticleUrl,
    Classification,
    Store,
    Story,
    chunked,
    lock,
    utcnow,
)
from pipeline.types import DedupeReport, StoryAssignment

log = logging.getLogger(__name__)

__all__ = [
    "ClusterResult",
    "DfTable",
    "Document",
    "Features",
    "assign_pending",
    "cluster_documents",
    "featurize",
    "pair_score",
    "refresh_stories",
]

# ----------------------------------------------------------------------------- key kinds

KIND_QUOTE, KIND_NAME, KIND_NUMBER, KIND_TITLE = 1, 2, 3, 4
# How many keys of each kind an article stores (bounded rows per article).
_KEY_CAPS = {KIND_QUOTE: 16, KIND_NAME: 24, KIND_NUMBER: 6, KIND_TITLE: 10}
# How many of them a new article looks up (the rarest; see Features.lookup_keys).
_LOOKUP_CAPS = {KIND_QUOTE: 8, KIND_NAME: 12, KIND_NUMBER: 4, KIND_TITLE: 6}
# How strongly a shared key of each kind suggests a candidate (ranking only).
_KEY_WEIGHTS = {KIND_QUOTE: 3.0, KIND_NAME: 1.0, KIND_NUMBER: 0.7, KIND_TITLE: 0.8}
QUOTE_SHINGLE = 4
# Title terms count this many times in the content vector: the headline names the event.
TITLE_WEIGHT = 2

# Pair score: base = (W_NAMES·names + W_CONTENT·content) / (W_NAMES + W_CONTENT); a shared
# quotation lifts it to W_QUOTE·quote + (1 − W_QUOTE)·base. eval/clustering.py measures each
# part's separating power (docs/dedupe.md): content and names carry most of it.
W_QUOTE, W_NAMES, W_CONTENT = 0.5, 0.4, 0.6


# ----------------------------------------------------------------------------- features


@dataclass(frozen=True)
class Document:
    """One text to cluster in memory (a file, a labelled example)."""

    id: str
    text: str
    title: str = ""
    published: datetime | None = None
    outlet: str = ""


@dataclass(frozen=True, eq=False)
class Features:
    """What dedupe compares, computed once per article by :func:`featurize`."""

    content_hash: str
    n_words: int
    shingles: frozenset[int]
    quotes: frozenset[int]
    names: Counter
    terms: Counter
    numbers: frozenset[str]
    title_terms: tuple[str, ...]
    # Weighted vectors for the current document frequencies (see _vectors).
    _vectors: dict = field(default_factory=dict, repr=False)

    def keys(self) -> list[tuple[int, int]]:
        """The (kind, key) pairs stored in ``story_keys`` for candidate lookup."""
        # A consistent sample of the quotation 4-grams: two articles sharing a quotation share sampled keys.
        out = [
            (KIND_QUOTE, T.key_hash("q", q.to_bytes(4, "big"))) for q in T.bottom_k(self.quotes, _KEY_CAPS[KIND_QUOTE])
        ]
        # Frequent names first: what the article is about, not who it mentions once.
        top_names = [n for n, _ in sorted(self.names.items(), key=lambda kv: (-kv[1], kv[0]))][: _KEY_CAPS[KIND_NAME]]
        out += [(KIND_NAME, T.key_hash("n", n)) for n in top_names]
        out += [(KIND_NUMBER, T.key_hash("d", n)) for n in sorted(self.numbers)[: _KEY_CAPS[KIND_NUMBER]]]
        out += [(KIND_TITLE, T.key_hash("t", t)) for t in sorted(set(self.title_terms))[: _KEY_CAPS[KIND_TITLE]]]
        seen: set[int] = set()
        return [(k, v) for k, v in out if not (v in seen or seen.add(v))]

    def lookup_keys(self, df: DfTable) -> list[tuple[int, int]]:
        """The subset of :meth:`keys` worth looking up: quotations and the rarest names, figures and headline terms.

        Common keys ("pakistan") fill their posting limit with unrelated articles
        and only cost time; the document frequencies rank them last.
        """
        out = [
            (KIND_QUOTE, T.key_hash("q", q.to_bytes(4, "big")))
            for q in T.bottom_k(self.quotes, _LOOKUP_CAPS[KIND_QUOTE])
        ]
        stored = [n for n, _ in sorted(self.names.items(), key=lambda kv: (-kv[1], kv[0]))][: _KEY_CAPS[KIND_NAME]]
        rare = sorted(stored, key=lambda n: (-df.name_idf(n), n))[: _LOOKUP_CAPS[KIND_NAME]]
        out += [(KIND_NAME, T.key_hash("n", n)) for n in rare]
        out += [
            (KIND_NUMBER, T.key_hash("d", n))
            for n in sorted(self.numbers)[: _KEY_CAPS[KIND_NUMBER]][: _LOOKUP_CAPS[KIND_NUMBER]]
        ]
        titles = sorted(set(self.title_terms))[: _KEY_CAPS[KIND_TITLE]]
        out += [
            (KIND_TITLE, T.key_hash("t", t))
            for t in sorted(titles, key=lambda t: (-df.idf(t), t))[: _LOOKUP_CAPS[KIND_TITLE]]
        ]
        seen: set[int] = set()
        return [(k, v) for k, v in out if not (v in seen or seen.add(v))]


def featurize(title: str, body: str, shingle_size: int = 5) -> Features:
    """Compute the comparison features of one article (title and clean body text)."""
    # Folded once here; words, names and numbers fold their input again, a no-op on this.
    folded = T.fold(body)
    toks = T.words(folded)
    quotes: set[int] = set()
    for q in T.quotations(body):  # the raw text: typographic single quotes mark quotations
        quotes |= T.shingles(q, QUOTE_SHINGLE)
    title_terms = tuple(T.content_terms(title))
    terms = Counter(T.content_terms(toks))
    for t in title_terms:
        terms[t] += TITLE_WEIGHT
    names = Counter(T.names(f"{T.fold(title)}\n{folded}" if title and title not in body[:400] else folded))
    return Features(
        content_hash=T.content_hash(toks),
        n_words=len(toks),
        shingles=frozenset(T.shingles(toks, shingle_size)),
        quotes=frozenset(quotes),
        names=names,
        terms=terms,
        numbers=frozenset(T.numbers(folded)),
        title_terms=title_terms,
    )


# MinHash, datasketch's "affine32" scheme with seed 1, bit for bit (a test holds them equal:
# the stored band hashes depend on it): each shingle id is mixed once with the MurmurHash3
# finalizer, then permuted by h -> a*h + b mod 2^32 (a odd, a bijection), and each
# permutation keeps its minimum. Written out here because importing datasketch pulls in
# scipy and redis for its LSH classes: 0.4 s of CPU in every process that clusters.
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))


@lru_cache(maxsize=8)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(1)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def minhash(shingles: Iterable[int], num_perm: int) -> np.ndarray:
    """The ``num_perm`` MinHash values (uint32) of a set of 32-bit shingle ids."""
    hv = np.fromiter(shingles, dtype=np.uint32).reshape(-1, 1)
    a, b = _permutations(num_perm)
    if not hv.size:
        return np.full(num_perm, np.uint32(0xFFFFFFFF), dtype=np.uint32)
    s1, m1, s2, m2, s3 = _FMIX32
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    hv = hv ^ (hv >> s3)
    return (hv * a + b).min(axis=0)  # uint32 arithmetic: the wraparound is the modulo


def band_hashes(shingles: Iterable[int], num_perm: int, bands: int) -> list[tuple[int, int]]:
    """LSH band signatures [(band, hash)] of a shingle set (:func:`minhash`, ``bands`` × rows)."""
    values = list(shingles)
    if not values:
        return []
    hv = minhash(values, num_perm)
    rows = num_perm // bands
    return [(b, T.key_hash("b", hv[b * rows : (b + 1) * rows].tobytes())) for b in range(bands)]


# Names and words found in nearly every article this product reads. They seed the
# document frequencies with pseudo-documents so that a handful of files clustered
# on their own (no store to learn from) does not treat "India" or "talks" as
# evidence; in the store, thousands of real articles soon outweigh them.
DOMAIN_COMMON_NAMES = frozenset(
    """
    us usa america american americans united states washington india indian indians new delhi delhi pakistan pakistani
    pakistanis islamabad state department white house pentagon foreign office ministry external affairs mea kashmir
    afghanistan afghan china chinese un united nations prime minister president minister secretary government army
    reuters ap afp pti ians app
    """.split()
) | {
    "united states",
    "new delhi",
    "state department",
    "white house",
    "foreign office",
    "prime minister",
    "united nations",
    "external affairs",
}
DOMAIN_COMMON_TERMS = frozenset(
    T.stem(w)
    for w in """
    official officials government minister ministry country countries talk talks relation relations bilateral
    security foreign spokesperson spokesman statement press briefing reporters question issue issues meeting
    cooperation dialogue region regional support partnership national military army border president prime state
    department secretary united states india indian pakistan pakistani washington delhi islamabad news report
    reported week international leaders leader minister policy people public part continue important work
    """.split()
)
PRIOR_DOCS = 20


class DfTable:
    """Document frequencies of content terms and names over a reference sample.

    The sample is the collection being clustered (in memory) or the most recent
    stored articles (in the store), so "Pakistan" weighs little in a store of
    South Asia news, a rarely named official a lot. ``PRIOR_DOCS`` pseudo-documents
    holding the domain's everyday names and words are counted too, which matters
    only while the sample is small. Unseen terms get the highest weight.
    """

    def __init__(self, smoothing: int = 4, prior_docs: int = PRIOR_DOCS) -> None:
        self.version = 0  # bumped on every change: weighted vectors are cached per version
        self.n = prior_docs
        self.df: Counter = Counter()
        self.smoothing = smoothing
        # Weights of the terms seen since the last change: one batch's articles and
        # their candidates share most of their vocabulary.
        self._idf: dict[str, float] = {}
        if prior_docs:
            for t in DOMAIN_COMMON_TERMS:
                self.df[t] = prior_docs
            for n in DOMAIN_COMMON_NAMES:
                self.df["\x00" + n] = prior_docs

    def add(self, f: Features) -> None:
        self.version += 1
        self.n += 1
        self.df.update(f.terms.keys())
        self.df.update("\x00" + n for n in f.names)
        self._idf.clear()

    def idf(self, term: str) -> float:
        w = self._idf.get(term)
        if w is None:
            n = self.n + self.smoothing
            w = self._idf[term] = math.log((n + 1) / (self.df.get(term, 0) + 1)) + 1.0
        return w

    def name_idf(self, name: str) -> float:
        return self.idf("\x00" + name)


def _cosine(a: _Vector, b: _Vector) -> float:
    (va, na), (vb, nb) = a, b
    if not va or not vb:
        return 0.0
    if len(va) > len(vb):
        va, vb = vb, va
    dot = sum(v * vb[k] for k, v in va.items() if k in vb)
    return dot / math.sqrt(na * nb) if dot else 0.0


@dataclass(frozen=True)
class PairScore:
    score: float
    quote: float
    names: float
    content: float


# A weighted vector and its squared norm (computed once: one article is compared with many).
_Vector = tuple[dict[str, float], float]


def _vector(weights: dict[str, float]) -> _Vector:
    return weights, sum(v * v for v in weights.values())


_TF_TABLE = [0.0] + [1.0 + math.log(c) for c in range(1, 64)]


def _tf(count: int) -> float:
    """Sublinear term frequency, 1 + ln(count) (a table for the usual small counts)."""
    return _TF_TABLE[count] if count < 64 else 1.0 + math.log(count)


def _vectors(f: Features, df: DfTable) -> tuple[_Vector, _Vector]:
    """Sublinear tf × idf vectors of content terms and names, cached on the features per df version."""
    key = (id(df), df.version)
    hit = f._vectors.get(key)
    if hit is None:
        idf = df.idf
        terms = _vector({t: _tf(c) * idf(t) for t, c in f.terms.items()})
        names = _vector({n: _tf(c) * idf("\x00" + n) for n, c in f.names.items()})
        f._vectors.clear()
        hit = f._vectors[key] = (terms, names)
    return hit


def pair_score(a: Features, b: Features, df: DfTable) -> PairScore:
    """How likely ``a`` and ``b`` report the same event (0–1), with its parts.

    * quote: shared quotation 4-grams over the shorter article's quotation
      4-grams, damped while fewer than six are shared (one stock phrase is not
      a shared quotation);
    * names: idf-weighted cosine of proper names;
    * content: idf-weighted cosine of content terms (headline terms counted twice).
    """
    shared_q = len(a.quotes & b.quotes)
    quote = 0.0
    if shared_q:
        quote = shared_q / min(len(a.quotes), len(b.quotes)) * min(1.0, shared_q / 6)
    va, vb = _vectors(a, df), _vectors(b, df)
    content = _cosine(va[0], vb[0])
    names = _cosine(va[1], vb[1])
    if a.names and b.names:
        base = (W_NAMES * names + W_CONTENT * content) / (W_NAMES + W_CONTENT)
    else:  # no names to compare (a headline, a wire brief): content alone decides
        base = content
    # Shared quotations only ever add: many write-ups of one event paraphrase
    # rather than quote, so their absence is no evidence against.
    score = max(base, W_QUOTE * quote + (1 - W_QUOTE) * base)
    return PairScore(score, quote, names, content)


def near_duplicate(a: Features, b: Features, cfg: DedupeSettings) -> float:
    """Similarity of two texts as copies (0 when they are not near-duplicates).

    Jaccard of word shingles, or containment of the shorter in the longer when
    the shorter is long enough to be an article rather than a shared paragraph.
    """
    if not a.shingles or not b.shingles:
        return 0.0
    inter = len(a.shingles & b.shingles)
    if not inter:
        return 0.0
    jac = inter / (len(a.shingles) + len(b.shingles) - inter)
    if jac >= cfg.near_duplicate_threshold:
        return jac
    small = min(len(a.shingles), len(b.shingles))
    if small >= cfg.min_containment_shingles and inter / small >= cfg.containment_threshold:
        return inter / small
    return 0.0


# ----------------------------------------------------------------------------- decision core


@dataclass
class Candidate:
    """A stored article as the decision code sees it."""

    ref: object
    features: Features
    story: object
    root: object  # the article it is a copy of, or itself
    at: datetime | None
    story_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    story: object | None  # None = new story
    duplicate_of: object | None
    reason: str
    similarity: float


@dataclass
class Lookup:
    """What one article's candidate lookup found in an index."""

    same: object | None  # a stored article with the same normalised text
    bands: set  # articles sharing a MinHash band
    postings: dict[int, list[object]]  # key → the articles holding it inside the window, newest first


class _Index(Protocol):
    def lookup(
        self,
        content_hash: str | None,
        bands: list[tuple[int, int]],
        keys: list[tuple[int, int]],
        lo: datetime | None,
        hi: datetime | None,
        cap: int,
    ) -> Lookup: ...
    def load(self, refs: Iterable[object]) -> list[Candidate]: ...
    def story_of(self, ref: object) -> object: ...


def _window(at: datetime | None, hours: float) -> tuple[datetime | None, datetime | None]:
    if at is None:
        return None, None
    w = timedelta(hours=hours)
    return at - w, at + w


def _story_score(scores: list[float]) -> float:
    """A story's score from its members' scores: the best link, tempered by the second best.

    Pure single link lets one loose link chain unrelated stories together; a
    second member that also matches is strong support, a second that does not
    pulls the score down a little.
    """
    scores = sorted(scores, reverse=True)
    if len(scores) == 1:
        return scores[0]
    return 0.75 * scores[0] + 0.25 * scores[1]


def _diverse_top(votes: Counter, k: int, story_of, per_story: int = 3) -> list:
    """The ``k`` best-voted articles, at most ``per_story`` from one story, so one big story cannot crowd out the rest."""
    out, taken = [], Counter()
    for r, _ in votes.most_common():
        st = story_of(r)
        if taken[st] >= per_story:
            continue
        taken[st] += 1
        out.append(r)
        if len(out) >= k:
            break
    return out


def decide(
    f: Features,
    at: datetime | None,
    index: _Index,
    df: DfTable,
    cfg: DedupeSettings,
    bands: list[tuple[int, int]],
) -> Decision:
    """Where one article belongs, given what ``index`` already holds."""
    dup_lo, _ = _window(at, cfg.duplicate_window_days * 24)
    lo, hi = _window(at, cfg.story_window_hours)
    keys = f.lookup_keys(df)
    # All candidate lookups at once: against a database server that is one round trip.
    found = index.lookup(f.content_hash if f.n_words else None, bands, keys, lo, hi, cfg.max_key_postings)
    if found.same is not None:
        same = next(iter(index.load([found.same])), None)
        if same is not None and (dup_lo is None or same.at is None or same.at >= dup_lo):
            return Decision(same.story, same.root, "hash", 1.0)

    kind_of = dict((k, kind) for kind, k in keys)
    votes: Counter = Counter()
    for k, refs in found.postings.items():
        # A key held by many articles in the window says little; its most recent
        # postings still count a little (a big story's own names are common).
        w = _KEY_WEIGHTS[kind_of[k]] * (1.0 + math.log((cfg.max_key_postings + 1) / len(refs)))
        for r in set(refs):
            votes[r] += w
    ranked = _diverse_top(votes, cfg.max_candidates, index.story_of)
    cands = index.load(list(dict.fromkeys([*found.bands, *ranked])))

    # Copies first: the most similar verified copy inside the duplicate window.
    best_dup, best_dup_sim = None, 0.0
    for c in cands:
        if dup_lo is not None and c.at is not None and c.at < dup_lo:
            continue
        sim = near_duplicate(f, c.features, cfg)
        if sim > best_dup_sim:
            best_dup, best_dup_sim = c, sim
    if best_dup is not None:
        return Decision(best_dup.story, best_dup.root, "near-duplicate", round(best_dup_sim, 4))

    # Same story: the story whose members inside the window score best.
    per_story: dict[object, list[float]] = {}
    for c in cands:
        if c.ref not in votes:
            continue
        if at is not None and c.story_at is not None and abs(at - c.story_at) > timedelta(hours=cfg.story_window_hours):
            continue
        score = pair_score(f, c.features, df).score
        if at is not None and c.at is not None and cfg.time_bonus:
            # Write-ups of one event cluster within hours; a same-topic twin is days away.
            hours = abs((at - c.at).total_seconds()) / 3600
            score += cfg.time_bonus * max(0.0, 1.0 - hours / cfg.time_bonus_hours)
        per_story.setdefault(c.story, []).append(score)
    best_story, best = None, 0.0
    for story, scores in per_story.items():
        s = _story_score(scores)
        if s > best:
            best_story, best = story, s
    if best_story is not None and best >= cfg.story_threshold:
        return Decision(best_story, None, "story", round(best, 4))
    return Decision(None, None, "new", round(best, 4))


# ----------------------------------------------------------------------------- in memory


@dataclass(frozen=True)
class DocAssignment:
    id: str
    story: int  # index into ClusterResult.stories
    duplicate_of: str | None
    reason: str
    similarity: float


@dataclass(frozen=True)
class ClusterResult:
    """Stories (lists of document ids) and near-duplicate pairs (copy, original)."""

    stories: tuple[tuple[str, ...], ...]
    duplicates: tuple[tuple[str, str], ...]
    assignments: tuple[DocAssignment, ...] = field(default=())

    def story_of(self) -> dict[str, int]:
        return {a.id: a.story for a in self.assignments}


class _MemoryIndex:
    def __init__(self) -> None:
        self.docs: dict[int, Candidate] = {}
        self.hashes: dict[str, int] = {}
        self.bands: dict[tuple[int, int], list[int]] = {}
        self.keys: dict[int, list[tuple[datetime | None, int]]] = {}
        self.story_at: dict[int, datetime | None] = {}

    def lookup(self, content_hash, bands, keys, lo, hi, cap) -> Lookup:
        band_refs: set = set()
        for b in bands:
            band_refs.update(self.bands.get(b, ()))
        same = self.hashes.get(content_hash) if content_hash else None
        return Lookup(same, band_refs, self._postings(keys, lo, hi, cap))

    def _postings(self, keys, lo, hi, cap):
        out = {}
        for _, k in keys:
            refs = []
            for at, r in reversed(self.keys.get(k, ())):
                if lo is None or at is None or lo <= at <= hi:
                    refs.append(r)
                    if len(refs) > cap:
                        break
            if refs:
                out[k] = refs
        return out

    def story_of(self, ref):
        return self.docs[ref].story

    def load(self, refs):
        out = []
        for r in refs:
            c = self.docs[r]
            c.story_at = self.story_at.get(c.story)
            out.append(c)
        return out

    def add(self, i: int, f: Features, at, story: int, root: int, bands) -> None:
        self.docs[i] = Candidate(i, f, story, root, at)
        self.hashes.setdefault(f.content_hash, i)
        for b in bands:
            self.bands.setdefault(b, []).append(i)
        for _, k in f.keys():
            self.keys.setdefault(k, []).append((at, i))
        prev = self.story_at.get(story)
        if story not in self.story_at or (at is not None and (prev is None or at < prev)):
            self.story_at[story] = at


def cluster_documents(docs: Sequence[Document], settings: DedupeSettings | None = None) -> ClusterResult:
    """Cluster documents into stories in memory, exactly as :func:`assign_pending` would.

    Documents are taken in time order (input order where they carry no time); a
    document without a time is compared without a time window. Document
    frequencies come from the whole collection.
    """
    cfg = settings or DedupeSettings()
    feats = [featurize(d.title, d.text, cfg.shingle_size) for d in docs]
    df = DfTable()
    for f in feats:
        df.add(f)
    order = sorted(
        range(len(docs)),
        key=lambda i: (docs[i].published is None, docs[i].published or datetime.min.replace(tzinfo=timezone.utc), i),
    )
    index = _MemoryIndex()
    stories: list[list[int]] = []
    assigned: dict[int, DocAssignment] = {}
    for i in order:
        f, at = feats[i], docs[i].published
        bands = band_hashes(f.shingles, cfg.num_perm, cfg.lsh_bands)
        d = decide(f, at, index, df, cfg, bands)
        if d.story is None:
            story = len(stories)
            stories.append([])
        else:
            story = d.story
        stories[story].append(i)
        root = d.duplicate_of if d.duplicate_of is not None else i
        index.add(i, f, at, story, root, bands)
        dup = docs[d.duplicate_of].id if d.duplicate_of is not None else None
        assigned[i] = DocAssignment(docs[i].id, story, dup, d.reason, d.similarity)
    return ClusterResult(
        stories=tuple(tuple(docs[i].id for i in sorted(s)) for s in stories),
        duplicates=tuple((a.id, a.duplicate_of) for i, a in sorted(assigned.items()) if a.duplicate_of),
        assignments=tuple(assigned[i] for i in range(len(docs))),
    )


# ----------------------------------------------------------------------------- the store


def article_time(a: Article) -> datetime:
    """The time an article is placed at: its published time unless implausible, else when it was fetched."""
    if a.published_at is not None and a.published_at <= a.fetched_at + timedelta(days=1):
        return a.published_at
    return a.fetched_at


class _FeatureCache:
    """Features of stored articles, bounded; keyed by id and text fingerprint."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self.data: OrderedDict[tuple[int, str], Features] = OrderedDict()

    def get(self, key: tuple[int, str]) -> Features | None:
        f = self.data.get(key)
        if f is not None:
            self.data.move_to_end(key)
        return f

    def put(self, key: tuple[int, str], f: Features) -> None:
        self.data[key] = f
        if len(self.data) > self.size:
            self.data.popitem(last=False)


_FEATURES = _FeatureCache()


def _article_features(a_id: int, title: str, body: str, cfg: DedupeSettings, chash: str | None = None) -> Features:
    """Features of a stored article, from the process's cache when ``chash`` (its stored
    fingerprint) is given and they were computed for it; cached under the fingerprint
    they carry. Articles not clustered yet have none: dedupe sets it."""
    if chash:
        f = _FEATURES.get((a_id, chash))
        if f is not None:
            return f
    f = featurize(title, body, cfg.shingle_size)
    _FEATURES.put((a_id, f.content_hash), f)
    return f


def _parse_dt(v) -> datetime | None:
    # Raw driver rows: SQLite hands back the stored text, PostgreSQL an aware datetime.
    if v is None or isinstance(v, datetime):
        return (
            v.astimezone(timezone.utc)
            if isinstance(v, datetime) and v.tzinfo
            else (v.replace(tzinfo=timezone.utc) if isinstance(v, datetime) else None)
        )
    return datetime.fromisoformat(v).replace(tzinfo=timezone.utc)


_LOAD_SQL = (
    "SELECT a.id, a.content_hash, a.story_id, a.duplicate_of_id, a.published_at, a.fetched_at, "
    "s.first_published_at FROM articles a LEFT JOIN stories s ON s.id = a.story_id"
)
# Band matches read per lookup: more is a page of copies, and the closest are among any 200.
BAND_MATCHES = 200
# One round trip per lookup on PostgreSQL: the same-text article (part 0), the band matches
# (part 1) and the newest postings of each key inside the window with their times (part 2,
# a LATERAL join).
_PG_LOOKUP = (
    "SELECT 0, NULL::bigint, h.id, NULL::integer, NULL::timestamptz FROM (SELECT id FROM articles "
    "WHERE content_hash = $1 AND story_id IS NOT NULL ORDER BY id LIMIT 1) h "
    "UNION ALL SELECT 1, NULL::bigint, b.article_id, NULL::integer, NULL::timestamptz FROM (SELECT DISTINCT m.article_id "
    f"FROM unnest($2, $3) AS u(band, hash) JOIN minhash_bands m ON m.band = u.band AND m.hash = u.hash "
    f"LIMIT {BAND_MATCHES}) b "
    "UNION ALL SELECT 2, u.key, p.article_id, p.story_id, p.at FROM unnest($4) AS u(key) CROSS JOIN LATERAL "
    "(SELECT article_id, story_id, at FROM story_keys WHERE key = u.key{window} ORDER BY at DESC LIMIT $5) p"
)
# A batch's band signatures and story keys, both tables in one statement of column arrays.
_PG_INDEX = (
    "WITH b AS (INSERT INTO minhash_bands (band, hash, article_id) SELECT * FROM unnest($1, $2, $3)) "
    "INSERT INTO story_keys (key, kind, at, article_id, story_id) SELECT * FROM unnest($4, $5, $6, $7, $8)"
)
# An article's new story (the derived columns are filled by refresh_stories), and its
# assignment: written per article, so plain driver-level SQL like the lookups.
_STORY_SQL = (
    "INSERT INTO stories (title, first_seen_at, first_published_at, updated_at, lead_article_id, article_count, "
    "outlet_count, score, relevant, dyads, topics) VALUES (?, ?, ?, ?, ?, 0, 0, 0.0, false, '[]', '[]') RETURNING id"
)
_ASSIGN_COLUMNS = (
    "story_id", "duplicate_of_id", "dedupe_reason", "similarity", "clustered_at", "content_hash", "word_count",
)  # fmt: skip
_ASSIGN_SQL = (
    "UPDATE articles SET story_id = ?, duplicate_of_id = ?, dedupe_reason = ?, similarity = ?, clustered_at = ?, "
    "content_hash = ?, word_count = ? WHERE id = ?"
)


def _numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders as PostgreSQL's ``$1, $2, …`` (for PREPARE)."""
    return sql.replace("?", "$%d") % tuple(range(1, sql.count("?") + 1))


_PG_STATEMENTS = {
    "newsmon_dedupe_lookup": ("text, smallint[], bigint[], bigint[], integer", _PG_LOOKUP.format(window="")),
    "newsmon_dedupe_lookup_window": (
        "text, smallint[], bigint[], bigint[], integer, timestamptz, timestamptz",
        _PG_LOOKUP.format(window=" AND at BETWEEN $6 AND $7"),
    ),
    "newsmon_dedupe_load": ("integer[]", f"{_LOAD_SQL} WHERE a.id = ANY($1) AND a.story_id IS NOT NULL"),
    "newsmon_dedupe_index": (
        "smallint[], bigint[], integer[], bigint[], smallint[], timestamptz[], integer[], integer[]", _PG_INDEX
    ),
    "newsmon_dedupe_story": ("text, timestamptz, timestamptz, timestamptz, integer", _numbered(_STORY_SQL)),
    "newsmon_dedupe_assign": (
        "integer, integer, text, double precision, timestamptz, text, integer, integer", _numbered(_ASSIGN_SQL)
    ),
}


class _StoreIndex:
    """The candidate lookups against the store.

    These run for every new article, so they are plain driver-level SQL on the
    session's connection (no statement compilation), each one an index lookup:
    ``(content_hash)``, ``(band, hash)``, ``(key, at)`` with a per-key limit,
    and primary keys.
    """

    def __init__(self, session: Session, cfg: DedupeSettings) -> None:
        self.s = session
        self.cfg = cfg
        self._story: dict[int, int | None] = {}
        self.sqlite = session.get_bind().dialect.name == "sqlite"
        self._planned = False
        # PostgreSQL: the batch's own band and key rows, held here until :meth:`flush`
        # writes them in one statement; lookups read them along with the stored ones.
        self._bands: dict[tuple[int, int], list[int]] = {}
        self._keys: dict[int, list[tuple[datetime, int, int]]] = {}
        self._rows: tuple[list, ...] = ([], [], [], [], [], [], [], [])

    def _sql(self, sql: str, params: list) -> list:
        if self.sqlite:
            # The driver's cursor on the session's connection (same transaction): these run
            # several times per article, and SQLAlchemy's result layer costs as much as the query.
            cur = self.s.connection().connection.cursor()
            try:
                return cur.execute(sql, params).fetchall()
            finally:
                cur.close()
        result = self.s.connection().exec_driver_sql(sql.replace("?", "%s"), tuple(params))
        return result.fetchall() if result.returns_rows else []

    def _dt(self, d: datetime | None):
        if self.sqlite and d is not None:  # the text format UTCDateTime stores
            return d.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")
        return d

    def lookup(self, content_hash, bands, keys, lo, hi, cap) -> Lookup:
        if self.sqlite:
            rows = self._lookup_sqlite(content_hash, bands, keys, lo, hi, cap)
        else:
            rows = self._lookup_pg(content_hash, bands, keys, lo, hi, cap)
        same, band_refs, postings = None, set(), {}
        for part, k, a, st, *_ in rows:  # PostgreSQL's rows also carry the posting's time
            if part == 0:
                same = a
            elif part == 1:
                band_refs.add(a)
            else:
                postings.setdefault(k, []).append(a)
                self._story[a] = st
        return Lookup(same, band_refs, postings)

    def _lookup_sqlite(self, content_hash, bands, keys, lo, hi, cap) -> list:
        # In-process: separate statements cost nothing extra, and each keeps its simple index plan.
        rows: list = []
        if content_hash:
            rows += [
                (0, None, r[0], None)
                for r in self._sql(
                    "SELECT id FROM articles WHERE content_hash = ? AND story_id IS NOT NULL ORDER BY id LIMIT 1",
                    [content_hash],
                )
            ]
        if bands:  # an OR of index lookups (SQLite's multi-index OR plan)
            where = " OR ".join("(band = ? AND hash = ?)" for _ in bands)
            rows += [
                (1, None, r[0], None)
                for r in self._sql(
                    f"SELECT DISTINCT article_id FROM minhash_bands WHERE {where} LIMIT {BAND_MATCHES}",
                    [x for bh in bands for x in bh],
                )
            ]
        if keys:
            window = " AND at BETWEEN ? AND ?" if lo is not None else ""
            part = (
                f"SELECT * FROM (SELECT key, article_id, story_id FROM story_keys WHERE key = ?{window} "
                f"ORDER BY at DESC LIMIT {cap + 1}) AS p"
            )
            sql = " UNION ALL ".join(f"{part}{i}" for i in range(len(keys)))
            params: list = []
            bounds = [self._dt(lo), self._dt(hi)] if lo is not None else []
            for _, k in keys:
                params += [k, *bounds]
            rows += [(2, k, a, st) for k, a, st in self._sql(sql, params)]
        return rows

    def _lookup_pg(self, content_hash, bands, keys, lo, hi, cap) -> list:
        params = [content_hash, [b for b, _ in bands], [h for _, h in bands], [k for _, k in keys], cap + 1]
        if lo is not None:
            rows = self._execute("newsmon_dedupe_lookup_window", [*params, lo, hi])
        else:
            rows = self._execute("newsmon_dedupe_lookup", params)
        if not self._bands and not self._keys:
            return rows
        # With the batch's unwritten rows: what the statement would have found had they been
        # stored (band matches added; per key, the newest cap + 1 postings of both).
        out = [r for r in rows if r[0] != 2]
        seen = {r[2] for r in out if r[0] == 1}
        for bh in bands:
            for a in self._bands.get(bh, ()):
                if a not in seen and len(seen) < BAND_MATCHES:
                    seen.add(a)
                    out.append((1, None, a, None))
        postings: dict[int, list[tuple[datetime, int, int | None]]] = {}
        for _, k, a, st, at in (r for r in rows if r[0] == 2):
            postings.setdefault(k, []).append((at, a, st))
        for _, k in keys:
            mine = [(at, a, st) for at, a, st in self._keys.get(k, ()) if lo is None or lo <= at <= hi]
            if mine:
                postings[k] = sorted(postings.get(k, []) + mine, key=lambda p: p[0], reverse=True)[: cap + 1]
        out += [(2, k, a, st) for k, ps in postings.items() for _, a, st in ps]
        return out

    def _prepared(self, name: str, params: list) -> str:
        """The EXECUTE of one of :data:`_PG_STATEMENTS` (prepared once per database
        connection: planning these cost about as much as running them, and
        PostgreSQL keeps a prepared statement across transactions, rolled back or not)."""
        conn = self.s.connection()
        prepared = conn.info.setdefault("newsmon_prepared", set())
        if name not in prepared:
            types, body = _PG_STATEMENTS[name]
            conn.exec_driver_sql(f"PREPARE {name} ({types}) AS {body}")
            prepared.add(name)
        return f"EXECUTE {name} ({', '.join(['%s'] * len(params))})"

    def _execute(self, name: str, params: list) -> list:
        """Run one of the prepared lookups."""
        conn = self.s.connection()
        sql = self._prepared(name, params)
        if not self._planned:
            # The planner's generic estimate per key is a handful of rows, so it picks a bitmap
            # scan and sorts every posting of a hot key; the ordered index scan it should use
            # stops after cap + 1 rows (0.3 ms against 17 ms measured). Sent with the first
            # lookup (same round trip) and scoped to this transaction, which only does dedupe.
            sql = "SET LOCAL enable_bitmapscan = off; " + sql
            self._planned = True
        result = conn.exec_driver_sql(sql, tuple(params))
        return result.fetchall() if result.returns_rows else []

    def new_story(self, title: str, at: datetime, now: datetime, lead: int) -> int:
        """Open a story for the article ``lead`` published ``at``; its id."""
        params = [title, self._dt(now), self._dt(at), self._dt(now), lead]
        rows = self._sql(_STORY_SQL, params) if self.sqlite else self._execute("newsmon_dedupe_story", params)
        return rows[0][0]

    def assign(self, article_id: int, values: dict) -> None:
        """Write an article's decision, the columns of :data:`_ASSIGN_COLUMNS` (the next
        articles' lookups read it)."""
        params = [self._dt(values[c]) if c == "clustered_at" else values[c] for c in _ASSIGN_COLUMNS]
        params.append(article_id)
        if self.sqlite:
            self._sql(_ASSIGN_SQL, params)
        else:
            self._execute("newsmon_dedupe_assign", params)

    def story_of(self, ref):
        return self._story.get(ref)

    def add(
        self, article_id: int, story_id: int, at: datetime, bands: list[tuple[int, int]], keys: list[tuple[int, int]]
    ) -> None:
        """Index an assigned article's band signatures and story keys, where the next
        articles' lookups (same transaction) find them. SQLite: written at once, on the
        driver's cursor (through SQLAlchemy's executemany they cost twice as much).
        PostgreSQL: held here and read by :meth:`lookup` until :meth:`flush` writes the
        batch's rows in one statement of column arrays; one statement per article cost
        about 1 ms of server time, mostly the statement's own, not its forty rows."""
        if not self.sqlite:
            band_col, hash_col, band_art, key_col, kind_col, at_col, key_art, key_story = self._rows
            for bh in bands:
                self._bands.setdefault(bh, []).append(article_id)
                band_col.append(bh[0])
                hash_col.append(bh[1])
                band_art.append(article_id)
            for kind, k in keys:
                self._keys.setdefault(k, []).append((at, article_id, story_id))
                key_col.append(k)
                kind_col.append(kind)
                at_col.append(at)
                key_art.append(article_id)
                key_story.append(story_id)
            return
        cur = self.s.connection().connection.cursor()
        try:
            if bands:
                cur.executemany(
                    "INSERT INTO minhash_bands (band, hash, article_id) VALUES (?, ?, ?)",
                    [(b, h, article_id) for b, h in bands],
                )
            if keys:
                at_text = self._dt(at)
                cur.executemany(
                    "INSERT INTO story_keys (key, kind, at, article_id, story_id) VALUES (?, ?, ?, ?, ?)",
                    [(k, kind, at_text, article_id, story_id) for kind, k in keys],
                )
        finally:
            cur.close()

    def flush(self) -> None:
        """Write the rows :meth:`add` holds back (PostgreSQL; SQLite writes them at once)."""
        if not self._rows[0] and not self._rows[3]:
            return
        params = [list(col) for col in self._rows]
        sql = self._prepared("newsmon_dedupe_index", params)
        cur = self.s.connection().connection.cursor()
        try:
            cur.execute(sql, params)
        finally:
            cur.close()
        self._bands.clear()
        self._keys.clear()
        for col in self._rows:
            col.clear()

    def load(self, refs):
        refs = list(refs)
        if not refs:
            return []
        if self.sqlite:
            marks = ",".join("?" * len(refs))
            rows = self._sql(f"{_LOAD_SQL} WHERE a.id IN ({marks}) AND a.story_id IS NOT NULL", refs)
        else:
            rows = self._execute("newsmon_dedupe_load", [refs])
        feats = {r[0]: _FEATURES.get((r[0], r[1])) for r in rows}
        missing = [i for i, f in feats.items() if f is None]
        if missing:
            # Only articles not featurised yet by this worker are read in full.
            marks = ",".join("?" * len(missing))
            for aid, title, body, chash in self._sql(
                f"SELECT id, title, text, content_hash FROM articles WHERE id IN ({marks})", missing
            ):
                feats[aid] = _article_features(aid, title or "", body or "", self.cfg, chash)
        out = []
        for aid, _, story, dup, pub, fetched, story_at in rows:
            pub, fetched = _parse_dt(pub), _parse_dt(fetched)
            at = pub if pub is not None and pub <= fetched + timedelta(days=1) else fetched
            out.append(Candidate(aid, feats[aid], story, dup or aid, at, _parse_dt(story_at)))
        return out


_DF_CACHE: dict[str, tuple[float, int, DfTable]] = {}
DF_REFRESH_SECONDS = 3600.0


def _df_table(session: Session, store_key: str, cfg: DedupeSettings) -> DfTable:
    """Document frequencies over the most recent stored articles (cached for an hour)."""
    hit = _DF_CACHE.get(store_key)
    if hit and time.monotonic() - hit[0] < DF_REFRESH_SECONDS:
        return hit[2]
    df = DfTable()
    # Clustered articles only: pending ones are counted as they are assigned.
    rows = session.execute(
        select(Article.id, Article.title, Article.text, Article.content_hash)
        .where(Article.story_id.is_not(None))
        .order_by(Article.id.desc())
        .limit(cfg.df_sample_size)
    ).all()
    for r in rows:
        df.add(_article_features(r.id, r.title or "", r.text or "", cfg, r.content_hash or None))
    _DF_CACHE[store_key] = (time.monotonic(), rows[0].id if rows else 0, df)
    return df


class _SameArticle:
    """Same-article lookups (canonical URL, alias, feed GUID) for one batch of pending articles.

    A few queries for the whole batch find the clustered articles any of them
    could be; the batch's own articles are added as they are assigned, so a later
    one can match an earlier one.
    """

    def __init__(self, s: Session, pending: Sequence[Article]) -> None:
        self.urls: dict[int, set[str]] = {a.id: {a.canonical_url} for a in pending}
        for ids in chunked(self.urls):
            q = select(ArticleUrl.article_id, ArticleUrl.url).where(ArticleUrl.article_id.in_(ids))
            for aid, url in s.execute(q):
                self.urls[aid].add(url)
        # url → (id, story, copy of) of a clustered article; canonical URLs first, then aliases.
        self.by_url: dict[str, tuple[int, int, int | None]] = {}
        all_urls = sorted(set().union(*self.urls.values())) if self.urls else []
        for chunk in chunked(all_urls):
            q = select(Article.canonical_url, Article.id, Article.story_id, Article.duplicate_of_id).where(
                Article.canonical_url.in_(chunk), Article.story_id.is_not(None)
            )
            for url, *hit in s.execute(q.order_by(Article.id)):
                self.by_url.setdefault(url, tuple(hit))
        for chunk in chunked(all_urls):
            q = (
                select(ArticleUrl.url, Article.id, Article.story_id, Article.duplicate_of_id)
                .join(Article, Article.id == ArticleUrl.article_id)
                .where(ArticleUrl.url.in_(chunk), Article.story_id.is_not(None))
            )
            for url, *hit in s.execute(q.order_by(Article.id)):
                self.by_url.setdefault(url, tuple(hit))
        # guid → [(id, site, story, copy of)] in id order.
        self.by_guid: dict[str, list[tuple[int, str, int, int | None]]] = {}
        guids = sorted({g for g in (self._guid(a) for a in pending) if g})
        for chunk in chunked(guids):
            q = select(Article.guid, Article.id, Article.site, Article.story_id, Article.duplicate_of_id).where(
                Article.guid.in_(chunk), Article.story_id.is_not(None)
            )
            for guid, *hit in s.execute(q.order_by(Article.id)):
                self.by_guid.setdefault(guid, []).append(tuple(hit))

    @staticmethod
    def _guid(a: Article) -> str:
        guid = (a.guid or "").strip()
        # Short GUIDs ("1", "post-12") are only unique inside one feed.
        return guid if len(guid) >= 12 else ""

    def find(self, a: Article) -> Decision | None:
        """The clustered article this one is, by URL or feed GUID, as a decision."""
        for url in sorted(self.urls.get(a.id, ())):
            hit = self.by_url.get(url)
            if hit is not None and hit[0] != a.id:
                return Decision(hit[1], hit[2] or hit[0], "url", 1.0)
        guid = self._guid(a)
        if guid:
            global_id = guid.startswith(("http://", "https://", "tag:", "urn:"))
            for aid, site, story, dup in self.by_guid.get(guid, ()):
                if aid != a.id and (global_id or site == a.site):
                    return Decision(story, dup or aid, "guid", 1.0)
        return None

    def add(self, a: Article) -> None:
        hit = (a.id, a.story_id, a.duplicate_of_id)
        for url in self.urls.get(a.id, ()):
            self.by_url.setdefault(url, hit)
        guid = self._guid(a)
        if guid:
            self.by_guid.setdefault(guid, []).append((a.id, a.site or "", a.story_id, a.duplicate_of_id))


def assign_pending(store: Store, settings: Settings, *, article_ids: list[int] | None = None) -> DedupeReport:
    """Give every unclustered article (``story_id`` NULL) a story; mark copies with ``duplicate_of_id``.

    Articles are taken in time order in batches, each batch one transaction under
    the ``dedupe`` lock, so concurrent workers never open two stories for copies
    of one article. With ``article_ids`` only those (if still unclustered) are
    assigned. Returns counts and the stories that changed.
    """
    cfg = settings.dedupe
    report = DedupeReport()
    touched: set[int] = set()
    batch = max(1, settings.ingest.batch_size * 4)
    done: set[int] = set()
    while True:
        with store.session() as s:
            lock(s, "dedupe")
            q = select(Article).where(Article.story_id.is_(None))
            if article_ids is not None:
                q = q.where(Article.id.in_(article_ids))
            pending = list(
                s.scalars(q.order_by(func.coalesce(Article.published_at, Article.fetched_at), Article.id).limit(batch))
            )
            if not pending or all(a.id in done for a in pending):
                break
            df = _df_table(s, store.url, cfg)
            feats = {
                a.id: _article_features(a.id, a.title or "", a.text or a.summary or "", cfg, a.content_hash or None)
                for a in pending
            }
            # The batch counts in the document frequencies from the start, as the
            # whole collection does in cluster_documents.
            for f in feats.values():
                df.add(f)
            index = _StoreIndex(s, cfg)
            same = _SameArticle(s, pending)
            changed: set[int] = set()
            for a in pending:
                done.add(a.id)
                result = _assign_one(a, feats[a.id], index, same, df, cfg)
                report.assigned += 1
                report.duplicates += result.duplicate_of is not None
                report.stories_new += result.new_story
                changed.add(result.story_id)
            index.flush()
            refresh_stories(s, sorted(changed))
            touched |= changed
        if len(pending) < batch:
            break
    report.story_ids = sorted(touched)
    if report.assigned:
        log.info(
            "dedupe: %d articles assigned, %d copies, %d new stories, %d stories changed",
            report.assigned, report.duplicates, report.stories_new, len(report.story_ids),
        )
    return report


def _assign_one(
    a: Article, f: Features, index: _StoreIndex, same: _SameArticle, df: DfTable, cfg: DedupeSettings
) -> StoryAssignment:
    at = article_time(a)
    bands = band_hashes(f.shingles, cfg.num_perm, cfg.lsh_bands)
    d = same.find(a) or decide(f, at, index, df, cfg, bands)
    now = utcnow()
    new_story = d.story is None
    story_id = index.new_story(a.title or "", at, now, a.id) if new_story else int(d.story)
    values = {
        "story_id": story_id,
        "duplicate_of_id": int(d.duplicate_of) if d.duplicate_of is not None else None,
        "dedupe_reason": d.reason,
        "similarity": d.similarity,
        "clustered_at": now,
        "content_hash": f.content_hash,
        "word_count": a.word_count or f.n_words,
    }
    index.assign(a.id, values)
    for name, value in values.items():  # the loaded object agrees with its row, and is not dirty
        set_committed_value(a, name, value)
    same.add(a)
    index.add(a.id, story_id, at, bands, f.keys())
    return StoryAssignment(
        article_id=a.id,
        story_id=story_id,
        duplicate_of=a.duplicate_of_id,
        new_story=new_story,
        similarity=d.similarity,
        reason=d.reason,
    )


def refresh_stories(session: Session, story_ids: Iterable[int]) -> None:
    """Recompute the derived columns of ``story_ids`` from their members.

    Lead article: the most complete original (most words; earliest on a tie).
    Title: the lead's. Counts: members and distinct outlets. Times: earliest
    fetch and publication; ``updated_at`` = when the last member joined.
    Score/relevant/dyads/topics: the best member score, any member relevant,
    union of members' labels (classified members only).
    """
    ids = sorted(set(story_ids))
    for chunk in chunked(ids):
        members: dict[int, list] = {}
        rows = session.execute(
            select(
                Article.id,
                Article.story_id,
                Article.title,
                Article.word_count,
                Article.duplicate_of_id,
                Article.outlet,
                Article.site,
                Article.published_at,
                Article.fetched_at,
                Article.clustered_at,
                Classification.score,
                Classification.relevant,
                Classification.dyads,
                Classification.topics,
            )
            .outerjoin(Classification, Classification.article_id == Article.id)
            .where(Article.story_id.in_(chunk))
        ).all()
        for r in rows:
            members.setdefault(r.story_id, []).append(r)
        values = []
        for sid in chunk:
            ms = members.get(sid)
            if not ms:
                continue
            originals = [m for m in ms if m.duplicate_of_id is None] or ms
            lead = min(originals, key=lambda m: (-(m.word_count or 0), article_time_row(m), m.id))
            classified = [m for m in ms if m.score is not None]
            values.append(
                {
                    "b_id": sid,
                    "lead_article_id": lead.id,
                    "title": lead.title or "",
                    "article_count": len(ms),
                    "outlet_count": len({(m.outlet or m.site or "").lower() for m in ms} - {""}) or 1,
                    "first_seen_at": min(m.fetched_at for m in ms),
                    "first_published_at": min(article_time_row(m) for m in ms),
                    "updated_at": max((m.clustered_at or m.fetched_at) for m in ms),
                    "score": max((m.score for m in classified), default=0.0),
                    "relevant": any(m.relevant for m in classified),
                    "dyads": sorted({d for m in classified for d in (m.dyads or [])}),
                    "topics": sorted({t for m in classified for t in (m.topics or [])}),
                }
            )
        if values:
            # One statement executed for every story (executemany), not one per story.
            session.connection().execute(_STORY_REFRESH, values)


_STORY_REFRESH = (
    Story.__table__.update()
    .where(Story.__table__.c.id == bindparam("b_id"))
    .values({c: bindparam(c) for c in (
        "lead_article_id", "title", "article_count", "outlet_count", "first_seen_at", "first_published_at",
        "updated_at", "score", "relevant", "dyads", "topics",
    )})
)  # fmt: skip


def article_time_row(m) -> datetime:
    if m.published_at is not None and m.published_at <= m.fetched_at + timedelta(days=1):
        return m.published_at
    return m.fetched_at

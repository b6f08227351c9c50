"""A synthetic but realistic news workload, served from loopback.

:func:`generate` builds ``feeds × entries_per_feed`` feed entries from a seed:
outlets with their own page layouts (navigation menus, ad slots, inline CSS and
scripts, JSON-LD, share bars, related links, reader comments, footers), article
pages of 50–150 KB like real news sites, and RSS 2.0 or Atom feeds. Texts are
composed procedurally from the vocabularies below (nothing is copied from real
articles); the same seed gives the same workload.

The article mix mirrors what the product reads:

* a share of **relevant** stories (relations among the United States, Pakistan
  and India: trade, defence, water, the border, visits, aid, visas, mediation),
  the rest **other news** (cricket, weather, markets, technology, culture, health,
  domestic politics — some of it naming the same countries);
* **syndicated copies**: the same text carried by another outlet, in that
  outlet's page furniture, under another headline, sometimes trimmed or with a
  credit line;
* **rewrites**: the same event written up again by another outlet, sharing the
  quotations, names and figures but not the sentences;
* a few links listed in two section feeds of one outlet (same URL).

:class:`LoopbackSite` serves the workload from ``ThreadingHTTPServer`` instances
on 127.0.0.x (one address per outlet where the host allows, else 127.0.0.1), with
gzip and conditional GET (``ETag``/``If-None-Match``, ``Last-Modified``/
``If-Modified-Since`` → 304), so a second feed pass measures the 304 path.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

__all__ = [
    "Article",
    "FeedDoc",
    "LoopbackSite",
    "Outlet",
    "Workload",
    "WorkloadSpec",
    "generate",
    "OUTLETS",
]


# ----------------------------------------------------------------------------- specification


@dataclass(frozen=True)
class WorkloadSpec:
    feeds: int = 24
    entries_per_feed: int = 25
    seed: int = 20241124
    relevant_share: float = 0.3
    # Of the new articles: syndicated copies of an earlier article, and rewrites of an earlier story.
    copy_share: float = 0.15
    rewrite_share: float = 0.20
    # Feed entries that repeat a link already listed in another feed of the same outlet.
    overlap_share: float = 0.04
    page_kb: tuple[int, int] = (50, 150)
    # Events happen in the hours before "now"; copies follow within hours.
    span_hours: float = 60.0


@dataclass(frozen=True)
class Outlet:
    slug: str
    name: str
    country: str
    layout: int  # page layout family, 0..3
    atom: bool = False  # Atom feed instead of RSS 2.0
    full_content: bool = False  # feed carries the whole article (content:encoded / atom:content)
    jsonld_body: bool = False  # JSON-LD repeats the article body
    guid_tag: bool = False  # GUIDs are tag: URIs rather than permalinks
    sections: tuple[str, ...] = ("latest", "world", "national", "business")


# Fictional outlets; layouts, feed formats and habits vary the way real ones do.
OUTLETS: tuple[Outlet, ...] = (
    Outlet("indus-ledger", "The Indus Ledger", "PK", 0, guid_tag=True),
    Outlet("margalla-post", "Margalla Post", "PK", 1, full_content=True),
    Outlet("karachi-evening", "Karachi Evening Star", "PK", 2, atom=True),
    Outlet("deccan-courier", "Deccan Courier", "IN", 3, jsonld_body=True),
    Outlet("ganga-herald", "Ganga Herald", "IN", 0, atom=True, guid_tag=True),
    Outlet("coromandel-times", "Coromandel Times", "IN", 2),
    Outlet("potomac-daily", "Potomac Daily", "US", 1),
    Outlet("lakeshore-tribune", "Lakeshore Tribune", "US", 3, full_content=True),
    Outlet("capital-wire", "Capital Wire Service", "US", 0, jsonld_body=True),
    Outlet("gulf-observer", "Gulf Observer", "QA", 2),
    Outlet("thames-chronicle", "Thames Chronicle", "GB", 1, atom=True),
    Outlet("asia-bulletin", "Asia Bulletin", "SG", 3, guid_tag=True),
)


@dataclass
class Article:
    """One article page of the workload, with its ground truth."""

    id: int
    outlet: Outlet
    url: str
    path: str
    title: str
    summary: str
    paragraphs: list[str]
    author: str
    published: datetime
    section: str
    story: int
    relevant: bool
    kind: str  # "original" | "copy" | "rewrite"
    copy_of: int | None = None
    html: bytes = b""

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)


@dataclass
class FeedDoc:
    id: int
    outlet: Outlet
    section: str
    url: str
    path: str
    article_ids: list[int]
    body: bytes = b""
    content_type: str = "application/rss+xml; charset=utf-8"


@dataclass
class Workload:
    spec: WorkloadSpec
    anchor: datetime
    articles: list[Article]
    feeds: list[FeedDoc]
    entries: int  # feed entries in total (links listed in two feeds count twice)
    stories: int
    generation_seconds: float = 0.0

    @property
    def pages(self) -> list[bytes]:
        return [a.html for a in self.articles]

    def feed_bodies(self) -> list[bytes]:
        return [f.body for f in self.feeds]

    def summary(self) -> dict:
        kinds = Counter(a.kind for a in self.articles)
        sizes = sorted(len(a.html) for a in self.articles)
        feed_sizes = sorted(len(f.body) for f in self.feeds)
        return {
            "feeds": len(self.feeds),
            "entries": self.entries,
            "articles": len(self.articles),
            "stories": self.stories,
            "relevant_articles": sum(a.relevant for a in self.articles),
            "originals": kinds["original"],
            "copies": kinds["copy"],
            "rewrites": kinds["rewrite"],
            "page_kb": {
                "min": round(sizes[0] / 1024, 1),
                "median": round(sizes[len(sizes) // 2] / 1024, 1),
                "max": round(sizes[-1] / 1024, 1),
            },
            "feed_kb_median": round(feed_sizes[len(feed_sizes) // 2] / 1024, 1),
            "words_median": sorted(len(a.text.split()) for a in self.articles)[len(self.articles) // 2],
            "seed": self.spec.seed,
            "generation_seconds": round(self.generation_seconds, 2),
        }


# ----------------------------------------------------------------------------- vocabularies
# Our own lists; people are fictional, institutions and places are real nouns so the
# classifier sees what real coverage names.

FIRST = {
    "US": "Daniel Karen Marcus Elaine Trevor Janet Dwight Colleen Russell Megan Grant Holly Warren Denise Spencer".split(),
    "PK": "Ahsan Farah Tariq Saima Bilal Nadia Kamran Rabia Usman Hina Faisal Zainab Junaid Amna Shahzad".split(),
    "IN": "Arjun Meera Rohit Kavita Sanjay Priya Vikram Anjali Nikhil Deepa Rajesh Sunita Karthik Pooja Harish".split(),
    "XX": "Tomas Ingrid Omar Leila Henrik Amara Lucas Sofia Kenji Mariam".split(),
}
LAST = {
    "US": "Whitfield Donovan Castillo Hargrove Pemberton Lindqvist Okafor Brennan Tolliver Ashby Kessler Morrow".split(),
    "PK": "Qureshi Malik Siddiqui Haider Abbasi Chaudhry Niazi Rana Bukhari Gillani Durrani Tareen".split(),
    "IN": "Sharma Iyer Menon Kulkarni Bhattacharya Reddy Chauhan Nair Deshpande Banerjee Rathore Pillai".split(),
    "XX": "Lindgren Haddad Osei Nakamura Fischer Moreau Petrov Santos Kowalski Ibrahim".split(),
}
FIRST_SYLLABLES = {
    "US": ("Da Ka Mar El Tre Ja Dor Co Ru Me Gra Ho Wil Ste Lau Bri".split(), "niel ren cus aine vor net ris leen sell gan ton lly da phen ra an".split()),
    "PK": ("Ah Fa Ta Sai Bi Na Kam Ra Us Hi Fai Zai Ju Am Sha Ar".split(), "san rah riq ma lal dia ran bia man na sal nab naid na zad sal".split()),
    "IN": ("Ar Mee Ro Ka San Pri Vik Anj Nik Dee Raj Su Kar Poo Ha Am".split(), "jun ra hit vita jay ya ram ali hil pa esh nita thik ja rish it".split()),
    "XX": ("To In O Lei Hen A Lu So Ken Ma".split(), "mas grid mar la rik mara cas fia ji riam".split()),
}
SYLLABLES = {
    "US": ("Hal Brad Cor Ster Wes Mar Pen Rut Lang Hol Dun Kel".split(), "ford wick ley son man ton well ridge by er ham".split()),
    "PK": ("Qa Sid Hai Ab Chau Ni Ra Bu Gil Dur Ta Ja".split(), "reshi diqui der basi dhry azi na khari lani rani reen fri".split()),
    "IN": ("Shar Ay Men Kul Bhat Red Chau Nai Desh Baner Rath Pil".split(), "ma yar on karni tacharya dy han r pande jee ore lai".split()),
    "XX": ("Lind Had Os Naka Fisch Mor Pet San Kow Ibra".split(), "gren dad ei mura er eau rov tos ski him".split()),
}
COUNTRY = {
    "US": {
        "name": "the United States", "short": "US", "capital": "Washington", "demonym": "American",
        "institutions": ["State Department", "Pentagon", "White House", "Commerce Department",
                         "US Trade Representative", "Treasury Department", "US Senate"],
        "titles": ["State Department spokesperson", "deputy secretary of state", "US ambassador",
                   "assistant secretary of state for South and Central Asia", "US trade representative",
                   "Pentagon press secretary", "senior White House official", "US commerce secretary"],
    },
    "PK": {
        "name": "Pakistan", "short": "Pakistan", "capital": "Islamabad", "demonym": "Pakistani",
        "institutions": ["Foreign Office", "Ministry of Finance", "State Bank of Pakistan",
                         "National Assembly", "Ministry of Commerce", "Inter-Services Public Relations"],
        "titles": ["Foreign Office spokesperson", "Pakistani foreign minister", "finance minister",
                   "Pakistan's ambassador", "adviser on commerce", "Pakistani defence minister",
                   "foreign secretary"],
    },
    "IN": {
        "name": "India", "short": "India", "capital": "New Delhi", "demonym": "Indian",
        "institutions": ["Ministry of External Affairs", "Ministry of Defence", "Reserve Bank of India",
                         "Lok Sabha", "Ministry of Commerce and Industry", "National Security Council Secretariat"],
        "titles": ["External Affairs Ministry spokesperson", "Indian external affairs minister",
                   "commerce and industry minister", "India's ambassador", "Indian defence minister",
                   "national security adviser", "foreign secretary"],
    },
}

# Relevant event types: (dyad, key noun phrases, headline templates, fact sentences).
EVENTS = [
    {
        "pair": ("US", "IN"), "topic": "trade",
        "noun": ["trade talks", "tariff negotiations", "market access talks", "trade agreement"],
        "heads": ["{A} and {B} open new round of {noun} in {place}",
                  "{B} seeks relief on tariffs as {noun} with {A} resume",
                  "{A_dem} and {B_dem} negotiators near deal on {goods}",
                  "{noun_cap} between {A} and {B} stall over {goods}"],
        "facts": ["Negotiators from {A} and {B} met in {place} for {days} days of {noun} focused on {goods}.",
                  "Bilateral trade between the two countries reached {amount} billion dollars last year, officials said.",
                  "{B} has asked {A} to lower tariffs of {pct} percent on {goods}, according to a draft seen by reporters.",
                  "The {A_inst} said the two sides agreed to meet again within {weeks} weeks.",
                  "Exporters in {B} have warned that the duties could cut shipments of {goods} by a fifth."],
    },
    {
        "pair": ("US", "PK"), "topic": "security",
        "noun": ["counterterrorism dialogue", "security talks", "defence consultations", "military cooperation"],
        "heads": ["{A} and {B} hold {noun} in {place}",
                  "{B} presses {A} for support as {noun} conclude",
                  "{A_dem} officials praise {B_dem} role in {noun}",
                  "{noun_cap}: {A} and {B} agree on next steps"],
        "facts": ["Officials from {A} and {B} concluded {days} days of {noun} in {place}.",
                  "The {B_inst} said the talks covered border security, {goods} and the exchange of information.",
                  "{A} announced {amount} million dollars in security assistance for training programmes in {B}.",
                  "A joint statement issued by the {A_inst} described the relationship as a partnership of {weeks} decades.",
                  "Both sides condemned recent attacks and agreed to cooperate against armed groups operating near the border."],
    },
    {
        "pair": ("IN", "PK"), "topic": "border",
        "noun": ["ceasefire", "Line of Control tensions", "border talks", "military hotline talks"],
        "heads": ["{A} and {B} trade accusations over {noun}",
                  "{B} summons {A_dem} envoy after firing along the Line of Control",
                  "{A} rejects {B_dem} claims on {noun}",
                  "Director generals of military operations of {A} and {B} speak on {noun}"],
        "facts": ["The {A_inst} accused {B} of violating the ceasefire along the Line of Control on {weekday}.",
                  "{B} summoned the {A_dem} deputy high commissioner in {place} to lodge a strong protest.",
                  "Military officials said {num} civilians were injured in shelling near the border.",
                  "The two countries agreed in {year} to observe the ceasefire, a commitment both sides say the other has broken.",
                  "Residents of border villages said schools had been closed for {days} days."],
    },
    {
        "pair": ("IN", "PK"), "topic": "water",
        "noun": ["Indus Waters Treaty", "water dispute", "hydropower dispute", "treaty talks"],
        "heads": ["{B} objects to {A_dem} dam project under the {noun}",
                  "{A} and {B} fail to agree on {noun} at commission meeting",
                  "{A} seeks changes to the {noun}, {B} says it will resist",
                  "Neutral expert to hear {A}–{B} {noun}"],
        "facts": ["The Permanent Indus Commission met in {place} to discuss the {noun}.",
                  "{B} says the design of a {mw} megawatt hydropower plant breaches the treaty signed in 1960.",
                  "{A} has notified {B} that it wants to renegotiate parts of the treaty within {days} days.",
                  "The {B_inst} said it would take the matter to the Court of Arbitration if talks failed.",
                  "Farmers downstream rely on the river for irrigation of {amount} million acres, officials said."],
    },
    {
        "pair": ("US", "PK"), "topic": "economy",
        "noun": ["IMF programme", "financial assistance", "debt talks", "economic partnership"],
        "heads": ["{A} backs {B} in talks on new {noun}",
                  "{B_dem} finance team in {place} for {noun} with {A_dem} officials",
                  "{A} pledges support as {B} seeks {noun}",
                  "{noun_cap}: {B} and {A} discuss reforms"],
        "facts": ["A delegation from {B} led by the finance minister held meetings in {place} on the {noun}.",
                  "{B} is seeking a loan of {amount} billion dollars over {weeks} years.",
                  "The {A_inst} said {A} supported reforms that would widen the tax base in {B}.",
                  "Officials said inflation in {B} fell to {pct} percent last month.",
                  "{A} remains the largest export market for textiles from {B}, worth {amount} billion dollars a year."],
    },
    {
        "pair": ("US", "IN"), "topic": "defence",
        "noun": ["defence deal", "jet engine agreement", "military exercise", "defence partnership"],
        "heads": ["{A} and {B} sign {noun} worth {amount} billion dollars",
                  "{A_dem} and {B_dem} troops begin joint exercise near {place}",
                  "{B} clears purchase of {goods} from {A}",
                  "{noun_cap} deepens {A}–{B} ties, officials say"],
        "facts": ["Defence officials from {A} and {B} signed the {noun} in {place} on {weekday}.",
                  "The agreement covers the co-production of {goods} over {weeks} years.",
                  "About {num} hundred troops are taking part in the exercise, the {B_inst} said.",
                  "The {A_inst} called {B} a major defence partner and said more agreements would follow.",
                  "Analysts said the deal reflected shared concerns about security in the Indian Ocean."],
    },
    {
        "pair": ("US", "IN"), "topic": "migration",
        "noun": ["visa rules", "work visa changes", "student visa backlog", "deportation flights"],
        "heads": ["{B} raises {noun} with {A_dem} officials",
                  "{A} announces {noun}; {B_dem} students worried",
                  "{B_dem} envoy meets {A_dem} officials on {noun}",
                  "{noun_cap} dominate {A}–{B} consular talks"],
        "facts": ["The {B_inst} said it had raised the {noun} with the {A_inst}.",
                  "More than {num} hundred thousand students from {B} are enrolled at universities in {A}.",
                  "Officials said waiting times for appointments had fallen to {days} days in {place}.",
                  "The new rules take effect in {weeks} weeks and apply to applications filed after that date.",
                  "Industry groups in {B} said the changes would raise costs for technology companies."],
    },
    {
        "pair": ("US", "PK"), "topic": "diplomacy",
        "noun": ["official visit", "strategic dialogue", "bilateral consultations", "foreign ministers meeting"],
        "heads": ["{B_dem} foreign minister in {A} for {noun}",
                  "{A} and {B} agree to expand cooperation after {noun}",
                  "{A_dem} envoy meets {B_dem} leaders in {place}",
                  "{noun_cap}: {A} and {B} discuss trade, security and climate"],
        "facts": ["The foreign minister of {B} arrived in {place} on {weekday} for a {days}-day {noun}.",
                  "The two sides discussed trade, energy, climate finance and regional security, the {B_inst} said.",
                  "{A} and {B} established diplomatic relations in 1947 and mark the anniversary each year.",
                  "The {A_inst} said the meeting reaffirmed a shared interest in stability in the region.",
                  "A working group on investment will meet in {weeks} weeks, according to a joint statement."],
    },
    {
        "pair": ("US", "PK", "IN"), "topic": "diplomacy",
        "noun": ["mediation offer", "call for restraint", "de-escalation effort", "crisis diplomacy"],
        "heads": ["{A} urges {B} and {C} to show restraint",
                  "{A_dem} officials call leaders of {B} and {C} in {noun}",
                  "{C} rejects third-party role after {A_dem} {noun}",
                  "{B} welcomes {A_dem} {noun}; {C} says issues are bilateral"],
        "facts": ["The {A_inst} said officials had spoken to leaders in {place} and {place2} on {weekday}.",
                  "{A} urged {B} and {C} to resolve their differences through direct dialogue.",
                  "{C} said all issues with {B} were bilateral and there was no room for mediation.",
                  "{B} welcomed the offer and said it was ready for talks on all outstanding issues.",
                  "Markets in both countries fell by {pct} percent as tensions rose during the week."],
    },
]

OTHER = [
    {
        "topic": "cricket", "country": "PK",
        "heads": ["{team} beat {team2} by {num} wickets in {place}", "Captain {person} leads {team} to series win",
                  "Rain halts play as {team} chase {runs} against {team2}"],
        "facts": ["{team} chased down a target of {runs} runs with {num} overs to spare in {place}.",
                  "Captain {person} scored {num}0 runs off {balls} balls before being caught at deep midwicket.",
                  "The series moves to {place2} for the final match on {weekday}.",
                  "Selectors said the squad for the tour would be announced within {days} days.",
                  "The pitch offered turn from the second session, and spinners took {num} wickets."],
        "terms": {"team": ["Pakistan", "the visitors", "Lahore Lions", "Karachi Kings XI"],
                  "team2": ["Australia", "New Zealand", "England", "the hosts"]},
    },
    {
        "topic": "weather", "country": "IN",
        "heads": ["Heavy rain lashes {place} as monsoon advances", "Heatwave grips {region}; schools shut for {days} days",
                  "Weather office warns of flooding in {region}"],
        "facts": ["The weather office forecast heavy rain over {region} for the next {days} days.",
                  "Temperatures in {place} reached {temp} degrees Celsius on {weekday}.",
                  "Authorities moved {num} thousand people from low-lying areas near the river.",
                  "Trains were delayed by up to {num} hours and several flights were diverted.",
                  "The monsoon has brought {pct} percent more rain than normal this season."],
        "terms": {"region": ["Maharashtra", "Kerala", "the northern plains", "Assam", "coastal Karnataka"]},
    },
    {
        "topic": "markets", "country": "US",
        "heads": ["Stocks close higher as {sector} shares rally", "Oil falls {pct} percent on supply worries",
                  "Central bank holds rates; {sector} stocks slip"],
        "facts": ["The benchmark index rose {pct} percent to close at a record high on {weekday}.",
                  "Shares of {sector} companies led the gains after strong quarterly earnings.",
                  "Bond yields eased as investors weighed comments from central bank officials.",
                  "Trading volumes were {pct} percent below the monthly average.",
                  "Analysts expect volatility ahead of inflation figures due in {days} days."],
        "terms": {"sector": ["technology", "energy", "banking", "retail", "pharmaceutical"]},
    },
    {
        "topic": "technology", "country": "IN",
        "heads": ["{company} raises {amount} million dollars to expand {product}",
                  "{company} unveils {product} for small businesses", "Start-up {company} plans listing next year"],
        "facts": ["{company}, founded in {year}, said the funding round was led by domestic investors.",
                  "The company plans to hire {num} hundred engineers in {place} over the next year.",
                  "Its {product} is used by more than {num} million customers, according to the company.",
                  "Chief executive {person} said the firm would reach profitability within {weeks} quarters.",
                  "Competition in the sector has intensified as larger firms cut prices."],
        "terms": {"company": ["Nimbus Ledger", "Kiranaware", "Saffron Cloud", "Pixelfarm", "Tideline Pay"],
                  "product": ["payments app", "logistics platform", "accounting software", "crop insurance service"]},
    },
    {
        "topic": "culture", "country": "PK",
        "heads": ["{film} opens to packed cinemas in {place}", "Literature festival in {place} draws record crowds",
                  "Director {person} on the making of {film}"],
        "facts": ["The festival in {place} featured {num}0 sessions over {days} days.",
                  "{film} earned {amount} million rupees in its opening weekend.",
                  "Director {person} said the story was drawn from family histories of the old city.",
                  "Organisers said ticket sales rose {pct} percent from last year.",
                  "The cast will tour {num} cities before the film is released abroad."],
        "terms": {"film": ["The Salt Road", "Monsoon Letters", "Qissa of the River", "Lanterns in Lahore"]},
    },
    {
        "topic": "health", "country": "US",
        "heads": ["Health officials expand {disease} vaccination drive", "Hospitals in {place} report rise in {disease} cases",
                  "New study links sleep to {disease} risk"],
        "facts": ["Health officials said {num} thousand doses had been delivered to clinics in {place}.",
                  "Cases of {disease} rose {pct} percent compared with the same week last year.",
                  "The study followed {num} thousand adults over {weeks} years.",
                  "Doctors urged older residents to get vaccinated before the winter.",
                  "The health department will publish updated figures in {days} days."],
        "terms": {"disease": ["influenza", "measles", "dengue", "heart disease", "type 2 diabetes"]},
    },
    {
        "topic": "politics", "country": "IN",
        "heads": ["Opposition walks out of {assembly} over farm bill", "State elections in {region}: turnout tops {pct} percent",
                  "Chief minister {person} expands cabinet"],
        "facts": ["Voting took place at {num} thousand polling stations across {region}.",
                  "Chief minister {person} inducted {num} new ministers at a ceremony in {place}.",
                  "Opposition members walked out of the {assembly} demanding a debate on crop prices.",
                  "Results will be declared in {days} days, the election commission said.",
                  "The ruling party holds {num}0 of the seats in the house."],
        "terms": {"assembly": ["state assembly", "legislative council", "upper house"],
                  "region": ["Punjab", "Tamil Nadu", "Bihar", "Gujarat", "West Bengal"]},
    },
    {
        "topic": "politics", "country": "US",
        "heads": ["Governor {person} signs budget after late-night vote", "City council in {place} approves transit plan",
                  "Senate race in {region} tightens, poll shows"],
        "facts": ["The budget of {amount} billion dollars passed the state legislature by {num} votes.",
                  "Governor {person} said the plan would fund roads, schools and water systems.",
                  "The transit plan adds {num} bus routes and extends service hours in {place}.",
                  "A poll released on {weekday} showed the race within {pct} percentage points.",
                  "Opponents said the measure would raise property taxes within {weeks} years."],
        "terms": {"region": ["Ohio", "Arizona", "Georgia", "Wisconsin", "Nevada"]},
    },
]

PLACES = ["Washington", "Islamabad", "New Delhi", "Lahore", "Karachi", "Mumbai", "Bengaluru", "Chennai",
          "New York", "Geneva", "Doha", "Dubai", "Rawalpindi", "Kolkata", "Hyderabad", "Peshawar", "Vienna"]
GOODS = ["steel and aluminium", "generic medicines", "textiles", "farm produce", "jet engines", "drones",
         "solar panels", "semiconductors", "dairy products", "almonds and apples", "helicopters",
         "naval patrol vessels", "cotton yarn", "information technology services"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# Building blocks of background and analysis sentences: enough choice that two
# stories rarely share five words in a row, as in real coverage.
SUBJ = ["Analysts in {place}", "Several former diplomats", "Business leaders", "Officials familiar with the matter",
        "Economists at a local research group", "Opposition lawmakers", "Observers", "Industry representatives",
        "Security experts", "Academics who follow the region", "Senior civil servants", "Trade unions",
        "Local commentators", "A retired general", "Two people briefed on the discussions", "Legal scholars"]
VERB = ["said", "noted", "argued", "cautioned", "pointed out", "suggested", "warned", "told reporters",
        "wrote in a commentary", "stressed", "acknowledged", "observed"]
CLAIM = [
    "that the {adj} {thing} would take {time} to {outcome}",
    "that {thing2} had {changed} since {period}",
    "that any {adj} {thing} depended on {condition}",
    "that the {thing} reflected {cause} rather than {cause2}",
    "that {period} had shown how quickly {thing2} could {outcome}",
    "that the public mood on {thing2} remained {mood}",
    "that the figures on {thing2} were {mood} but incomplete",
]
ADJ = ["proposed", "latest", "long-delayed", "ambitious", "modest", "interim", "revised", "broader", "narrow",
       "fragile", "overdue", "expected", "informal", "formal", "tentative", "sweeping", "limited", "phased"]
THING = ["framework", "arrangement", "package", "road map", "settlement", "understanding", "timeline",
         "compromise", "reform plan", "review", "mechanism", "consultation process", "working group", "budget"]
THING2 = ["investor confidence", "public opinion", "the balance of payments", "supply chains", "shipping costs",
          "energy prices", "the security situation", "relations with neighbours", "domestic politics",
          "the currency", "youth unemployment", "food prices", "cross-border travel", "private investment"]
TIME = ["several months", "at least a year", "weeks rather than months", "two budget cycles", "most of the decade",
        "longer than planned", "one more round of talks", "the rest of the year"]
OUTCOME = ["produce results", "win parliamentary approval", "reach ordinary people", "settle", "take hold",
           "show up in the data", "change behaviour", "recover", "be tested", "pay off"]
CHANGED = ["shifted noticeably", "barely moved", "improved slowly", "deteriorated", "become harder to predict",
           "stabilised", "grown more complicated", "recovered in part"]
PERIOD = ["the last election", "the pandemic", "the start of the year", "the previous government",
          "the floods two years ago", "the last round of talks", "the budget in June", "the spring"]
CONDITION = ["steady political support", "financing from abroad", "a calm border", "lower oil prices",
             "agreement in the cabinet", "the courts", "the weather", "how quickly officials act"]
CAUSE = ["long-term planning", "domestic pressure", "a change of leadership", "market conditions",
         "electoral calculations", "pressure from donors", "a shift in priorities", "legal constraints"]
MOOD = ["divided", "cautiously hopeful", "sceptical", "impatient", "broadly supportive", "uncertain", "weary"]
# Each story draws its own small lexicon from these (modifier × head nouns), so unrelated
# stories share generic news words but not their subject matter, as real coverage does.
MODIFIERS = (
    "rice wheat cotton sugar cement steel fertiliser pension port railway power-grid water fuel coal gas tourism "
    "garment textile pharmaceutical software telecom shipping aviation banking insurance housing mining fishing "
    "dairy poultry tea spice solar wind hydro nuclear border customs visa refugee student labour remittance "
    "dam canal highway metro airport tax tariff subsidy budget bond currency credit debt reserve"
).split()
HEADS = (
    "prices exports imports subsidies output tariffs investment demand shortages contracts quotas permits revenues "
    "reforms licences arrears payments shipments inspections audits bottlenecks auctions projects standards"
).split()
LEX_FACTS = [
    "{L0} fell {pct} percent last quarter, according to figures released in {place}.",
    "Officials said {L1} and {L2} would be reviewed by a panel within {weeks} weeks.",
    "The row over {L0} has already held up {L3} in three provinces.",
    "Traders in {place2} reported that {L1} doubled after the announcement on {weekday}.",
    "A draft memo lists {L2}, {L4} and {L5} as the main areas of concern.",
    "Local groups have campaigned for years on {L3}, and on {L4} in particular.",
    "Records show {L5} rose from {num} to {days} times the level of {year}.",
    "{L4} were last renegotiated in {year}, when {L1} were half what they are now.",
]
LEX_HEADS = ["Questions over {L} in {place}", "New figures on {L} raise concern", "Officials review {L}"]
QUOTE_WHO = ["We", "Our government", "My office", "Both sides", "The ministry", "Our negotiators", "Everyone here",
             "Our partners", "This government", "The committee", "Our embassy", "My colleagues"]
QUOTE_STANCE = ["have raised", "will not accept", "strongly support", "are watching", "expect progress on",
                "cannot ignore", "welcome", "want clarity on", "remain worried about", "have settled",
                "asked about", "will revisit", "put forward", "objected to", "agreed on"]
QUOTE_CONN = ["and", "because", "but", "so", "while", "although", "since"]
QUOTE_PRED = ["must come first", "needs {time}", "is {mood} now", "cannot wait", "looks {mood}",
              "will follow in {place2}", "matters most", "depends on {condition}", "stays {adj}", "moved again"]
QUOTE_OPEN = [
    "We have made it clear that {thing2} matters to both sides",
    "This is a {adj} step and we expect more to follow",
    "Nobody should expect a {adj} {thing} to solve everything overnight",
    "Our position on {thing2} has not changed and will not change",
    "The discussions were frank, detailed and, I would say, productive",
    "We will judge this by what happens on the ground in {time}",
    "There is a real opportunity here if both sides keep talking",
    "We told our counterparts that {thing2} cannot wait for {time}",
    "The {thing} is not perfect, but it is a serious basis for work",
]
QUOTE_LINK = ["we believe", "I am convinced", "frankly", "my sense is that", "everyone here knows",
              "we have been told", "the evidence shows", "our partners accept"]
QUOTE_CLOSE = ["", " and we said so plainly", " and we are ready to work on it", ", whatever others may claim",
               " over the coming weeks", ", as we have said many times", " and that is what people want"]

COMMENT_LINES = [
    "Finally some good news, but let us wait and see.", "Same promises every year.", "Well written, thank you.",
    "Who will pay for all this?", "The article misses the bigger picture.", "Great reporting as always.",
    "This will not change anything for ordinary people.", "Excellent analysis, please do a follow-up.",
    "Why is nobody talking about prices?", "I remember when this was discussed ten years ago.",
    "Hope the leaders listen this time.", "Please fix the comments section, it keeps reloading.",
    "Balanced piece, rare these days.", "Read it twice, still not sure what was agreed.",
]
NAV_SECTIONS = ["Home", "Latest", "National", "World", "Business", "Markets", "Opinion", "Editorial", "Sport",
                "Cricket", "Technology", "Science", "Health", "Culture", "Lifestyle", "Travel", "Food",
                "Education", "Weather", "Videos", "Podcasts", "Photos", "Magazine", "Archive", "Epaper"]
NAV_SUB = ["Politics", "Courts", "Cities", "Provinces", "Asia", "Middle East", "Europe", "Americas", "Africa",
           "Economy", "Energy", "Companies", "Banking", "Columns", "Letters", "Cartoons", "Football",
           "Tennis", "Hockey", "Gadgets", "Startups", "Climate", "Wellness", "Books", "Film", "Music"]


# ----------------------------------------------------------------------------- text composition


class _Text:
    """Sentence and paragraph composition from the vocabularies, driven by one RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def fill(self, template: str, slots: dict) -> str:
        values_cause = self.pick(CAUSE)
        lex = slots.get("lex")
        values = {
            "adj": self.pick(ADJ), "thing": self.pick(THING),
            "thing2": self.pick(lex) if lex and self.r.random() < 0.7 else self.pick(THING2),
            "time": self.pick(TIME), "outcome": self.pick(OUTCOME), "changed": self.pick(CHANGED),
            "period": self.pick(PERIOD), "condition": self.pick(CONDITION), "cause": values_cause,
            "cause2": self.pick([c for c in CAUSE if c != values_cause]), "mood": self.pick(MOOD), "place": self.pick(PLACES),
        }
        values.update(slots)
        return template.format(**values)

    def analysis(self, slots: dict) -> str:
        subj = self.fill(self.pick(SUBJ), slots)
        return f"{subj} {self.pick(VERB)} {self.fill(self.pick(CLAIM), slots)}."

    def paragraph(self, slots: dict, n: tuple[int, int] = (2, 4)) -> str:
        return " ".join(self.analysis(slots) for _ in range(self.r.randint(*n)))

    def quote(self, slots: dict) -> str:
        # Short fixed pieces between story-specific words: two stories' quotations rarely share
        # four words in a row, as real quotations do not.
        lex = slots.get("lex") or THING2
        first = f"{self.pick(QUOTE_WHO)} {self.pick(QUOTE_STANCE)} {self.pick(lex)}"
        second = f"{self.pick(QUOTE_CONN)} {self.pick(lex)} {self.fill(self.pick(QUOTE_PRED), slots)}"
        third = f"{self.pick(QUOTE_WHO).lower() if self.r.random() < 0.5 else 'the ' + self.pick(lex)} " \
                f"{self.pick(QUOTE_STANCE)} {self.pick(lex)} in {slots.get('place', self.pick(PLACES))}"
        return f"{first}, {second}, {third}"

    def person(self, country: str) -> str:
        c = country if country in FIRST else "XX"
        if self.r.random() < 0.15:
            return f"{self.pick(FIRST[c])} {self.pick(LAST[c])}"
        # Composed names: tens of thousands of people, so unrelated stories rarely share one.
        a, b = SYLLABLES.get(c, SYLLABLES["XX"])
        fa, fb = FIRST_SYLLABLES.get(c, FIRST_SYLLABLES["XX"])
        return f"{self.pick(fa)}{self.pick(fb)} {self.pick(a)}{self.pick(b)}"


@dataclass
class _Story:
    id: int
    relevant: bool
    topic: str
    heads: list[str]
    facts: list[str]  # filled fact sentences
    quotes: list[tuple[str, str, str]]  # (quote, speaker, title)
    slots: dict
    at: datetime
    country: str


def _story(sid: int, relevant: bool, t: _Text, at: datetime) -> _Story:
    r = t.r
    if relevant:
        ev = t.pick(EVENTS)
        pair = ev["pair"]
        a, b = pair[0], pair[1]
        c = pair[2] if len(pair) > 2 else None
        ca, cb = COUNTRY[a], COUNTRY[b]
        noun = t.pick(ev["noun"])
        slots = {
            "A": ca["short"] if a == "US" else ca["name"], "B": cb["name"], "C": COUNTRY[c]["name"] if c else "",
            "A_dem": ca["demonym"], "B_dem": cb["demonym"],
            "A_inst": t.pick(ca["institutions"]), "B_inst": t.pick(cb["institutions"]),
            "noun": noun, "noun_cap": noun[:1].upper() + noun[1:], "goods": t.pick(GOODS),
            "place": t.pick([ca["capital"], cb["capital"]] + PLACES[:3]), "place2": t.pick(PLACES),
            "days": r.randint(2, 5), "weeks": r.randint(2, 12), "amount": f"{r.randint(2, 190)}.{r.randint(1, 9)}",
            "pct": r.randint(3, 60), "num": r.randint(2, 9), "mw": r.randint(3, 18) * 100,
            "year": r.randint(1999, 2021), "weekday": t.pick(WEEKDAYS),
        }
        speakers = [(t.person(a), t.pick(ca["titles"])), (t.person(b), t.pick(cb["titles"]))]
        if c:
            speakers.append((t.person(c), t.pick(COUNTRY[c]["titles"])))
        heads, facts, topic, country = ev["heads"], ev["facts"], ev["topic"], b
    else:
        ev = t.pick(OTHER)
        slots = {k: t.pick(v) for k, v in ev.get("terms", {}).items()}
        slots.update({
            "place": t.pick(PLACES), "place2": t.pick(PLACES), "person": t.person(ev["country"]),
            "days": r.randint(2, 9), "weeks": r.randint(2, 12), "amount": f"{r.randint(2, 900)}",
            "pct": r.randint(2, 40), "num": r.randint(2, 9), "runs": r.randint(140, 340), "balls": r.randint(40, 160),
            "temp": r.randint(38, 49), "year": r.randint(1995, 2022), "weekday": t.pick(WEEKDAYS),
        })
        speakers = [(t.person(ev["country"]), t.pick(["spokesperson", "chief executive", "official", "coach",
                                                        "director", "chairman", "researcher"]))
                    for _ in range(2)]
        heads, facts, topic, country = ev["heads"], ev["facts"], ev["topic"], ev["country"]
    # The story's own subject matter (used by its facts, filler and quotations), and its own
    # quotations: the strongest shared signal between write-ups of one event. Only some of the
    # event type's stock facts are used, so two stories of one type are not near copies.
    lex = []
    while len(lex) < 6:
        term = f"{t.pick(MODIFIERS)} {t.pick(HEADS)}"
        if term not in lex:
            lex.append(term)
    slots["lex"] = lex
    slots.update({f"L{i}": term for i, term in enumerate(lex)})
    chosen = r.sample(facts, 2) + [f[:1].upper() + f[1:] if f.startswith("{L") else f
                                    for f in r.sample(LEX_FACTS, 6)]
    heads = [h for h in heads] + [h.replace("{L}", lex[0]) for h in LEX_HEADS]
    quotes = [(t.quote(slots), name, title) for name, title in speakers for _ in range(r.randint(1, 2))]
    return _Story(sid, relevant, topic, heads, [t.fill(f, slots) for f in chosen], quotes, slots, at, country)


def _write_up(story: _Story, t: _Text, place_line: bool) -> tuple[str, list[str], str]:
    """A write-up of the story in this outlet's words: (headline, paragraphs, summary)."""
    r = t.r
    head = t.fill(t.pick(story.heads), story.slots)
    facts = story.facts[:]
    r.shuffle(facts)
    paras: list[str] = []
    lead = facts.pop(0)
    dateline = f"{story.slots.get('place', 'Islamabad').upper()}: " if place_line else ""
    paras.append(dateline + lead + " " + t.analysis(story.slots))
    quotes = story.quotes[:]
    r.shuffle(quotes)
    for q, name, title in quotes:
        form = r.randrange(3)
        if form == 0:
            paras.append(f"“{q},” {name}, the {title}, said.")
        elif form == 1:
            paras.append(f"{name}, the {title}, told reporters: “{q}.”")
        else:
            paras.append(f"“{q},” said {name}. " + t.analysis(story.slots))
        if facts and r.random() < 0.8:
            paras.append(facts.pop(0) + " " + t.analysis(story.slots))
        if r.random() < 0.7:
            paras.append(t.paragraph(story.slots))
    for f in facts:
        paras.append(f)
    for _ in range(r.randint(1, 3)):
        paras.append(t.paragraph(story.slots, (2, 3)))
    summary = lead if len(lead) > 80 else lead + " " + paras[1][:160]
    return head, paras, summary


# ----------------------------------------------------------------------------- page markup


def _css(r: random.Random, layout: int, size: int) -> str:
    rules = []
    props = ["margin", "padding", "color", "background", "font-size", "line-height", "border", "display",
             "grid-template-columns", "flex", "gap", "max-width", "letter-spacing", "transition"]
    vals = ["0", "1rem", "#1a1a1a", "#f4f4f2", "0.875rem", "1.6", "1px solid #ddd", "flex", "repeat(3,1fr)",
            "1 1 auto", "12px", "1200px", ".02em", "opacity .2s ease-in-out", "none", "block", "inherit"]
    n = 0
    while n < size:
        sel = f".l{layout}-{r.choice(['hd', 'nav', 'art', 'ad', 'rel', 'cm', 'ft', 'sb', 'btn', 'card'])}" \
              f"{r.choice(['', '__item', '__title', '--active', ':hover', ' a', ' > li', '__meta'])}"
        body = ";".join(f"{r.choice(props)}:{r.choice(vals)}" for _ in range(r.randint(2, 6)))
        rule = f"{sel}{{{body}}}"
        rules.append(rule)
        n += len(rule)
    return "".join(rules)


def _script(r: random.Random, size: int, name: str) -> str:
    parts = [f"window.{name}=window.{name}||{{}};"]
    n = len(parts[0])
    i = 0
    while n < size:
        i += 1
        kind = r.randrange(3)
        if kind == 0:
            s = (f"function _{name}{i}(e,t){{var n=e&&e.dataset?e.dataset.slot:'{r.randrange(9999)}';"
                 f"if(!n)return null;for(var r=0;r<t.length;r++){{if(t[r].id===n)return t[r]}}return t[0]}}")
        elif kind == 1:
            cfg = {"slot": f"div-gpt-{r.randrange(99999)}", "sizes": [[300, 250], [728, 90]],
                   "targeting": {"sec": r.choice(NAV_SECTIONS).lower(), "pos": r.choice(["top", "mid", "btf"])},
                   "refresh": r.randint(30, 90)}
            s = f"window.{name}.s{i}={json.dumps(cfg, separators=(',', ':'))};"
        else:
            s = (f"document.addEventListener('DOMContentLoaded',function(){{var q=document.querySelectorAll("
                 f"'.x{r.randrange(999)}');for(var k=0;k<q.length;k++){{q[k].classList.add('is-ready')}}}});")
        parts.append(s)
        n += len(s)
    return "".join(parts)


def _nav(o: Outlet, base: str, r: random.Random) -> str:
    items = []
    for sec in NAV_SECTIONS:
        subs = r.sample(NAV_SUB, r.randint(4, 9))
        sub = "".join(
            f'<li class="menu__sub-item"><a href="{base}/{o.slug}/{sec.lower()}/{s.lower().replace(" ", "-")}/">{s}</a></li>'
            for s in subs
        )
        items.append(
            f'<li class="menu__item"><a class="menu__link" href="{base}/{o.slug}/{sec.lower()}/">{sec}</a>'
            f'<ul class="menu__sub">{sub}</ul></li>'
        )
    return f'<nav class="main-menu" aria-label="Main"><ul class="menu">{"".join(items)}</ul></nav>'


def _ad(r: random.Random, pos: str) -> str:
    sid = r.randrange(10**6)
    return (
        f'<div class="ad-slot ad-slot--{pos}" id="ad-{pos}-{sid}" data-slot="{sid}">'
        f'<span class="ad-label">Advertisement</span>'
        f'<ins class="adsbygoogle" style="display:block" data-ad-client="ca-pub-{sid:010d}" data-ad-slot="{sid}"'
        f' data-ad-format="auto"></ins><script>(adsbygoogle=window.adsbygoogle||[]).push({{}});</script></div>'
    )


def _cards(items: list[tuple[str, str, str]], cls: str, teaser: bool) -> str:
    out = []
    for title, url, blurb in items:
        t = f'<p class="{cls}__teaser">{html.escape(blurb)}</p>' if teaser else ""
        out.append(
            f'<li class="{cls}__item"><a class="{cls}__link" href="{url}">'
            f'<img class="{cls}__img" src="{url}.thumb.jpg" alt="" loading="lazy" width="320" height="180">'
            f'<h3 class="{cls}__title">{html.escape(title)}</h3></a>{t}</li>'
        )
    return "".join(out)


def _page(a: Article, base: str, related: list[tuple[str, str, str]], r: random.Random, target: int) -> bytes:
    o = a.outlet
    L = o.layout
    t = _Text(r)
    esc = html.escape
    pub = a.published.isoformat(timespec="seconds").replace("+00:00", "Z")
    desc = esc(a.summary[:200])
    jsonld = {
        "@context": "https://schema.org", "@type": "NewsArticle", "headline": a.title,
        "datePublished": pub, "dateModified": pub, "author": [{"@type": "Person", "name": a.author}],
        "publisher": {"@type": "Organization", "name": o.name, "logo": {"@type": "ImageObject",
                                                                          "url": f"{base}/{o.slug}/logo.png"}},
        "mainEntityOfPage": a.url, "articleSection": a.section.title(), "description": a.summary[:200],
        "image": [f"{base}/{o.slug}/images/{a.id}-1200.jpg"],
    }
    if o.jsonld_body:
        jsonld["articleBody"] = a.text
    crumbs = {"@context": "https://schema.org", "@type": "BreadcrumbList", "itemListElement": [
        {"@type": "ListItem", "position": i + 1, "name": n, "item": f"{base}/{o.slug}/{n.lower()}/"}
        for i, n in enumerate(["Home", a.section.title()])]}
    comments = []
    for _ in range(r.randint(3, 18)):
        who = t.person(r.choice(["US", "PK", "IN", "XX"]))
        body = " ".join(r.sample(COMMENT_LINES, r.randint(1, 3)))
        comments.append(
            f'<li class="comment"><div class="comment__meta"><span class="comment__author">{who}</span>'
            f'<time class="comment__time">{r.randint(1, 23)} hours ago</time></div>'
            f'<p class="comment__body">{esc(body)}</p><div class="comment__actions">'
            f'<button class="like">Like {r.randint(0, 90)}</button><button class="reply">Reply</button>'
            f'<button class="report">Report</button></div></li>'
        )
    # Body paragraphs, with the furniture real pages put between them.
    body = []
    mid = max(2, len(a.paragraphs) // 2)
    for i, p in enumerate(a.paragraphs):
        # Paragraph markup differs by CMS generation: clean <p>, wrapped <p>, div soup, <br>-separated text.
        if L == 0:
            body.append(f"<p>{esc(p)}</p>")
        elif L == 1:
            body.append(f'<div class="para-wrap" data-block="{i}"><p class="para">{esc(p)}</p></div>')
        elif L == 2:
            body.append(f'<div class="story-text"><div class="txt" id="p{i}">{esc(p)}</div></div>')
        else:
            body.append(f'<span class="dropcap-off">{esc(p)}</span><br><br>')
        if i == 1:
            body.append(
                f'<figure class="article__figure"><img src="{base}/{o.slug}/images/{a.id}-800.jpg" alt=""'
                f' width="800" height="450"><figcaption>{esc(a.title)}. — Photo: {o.name} file</figcaption></figure>'
            )
        if i == mid:
            body.append(_ad(r, "inarticle"))
        if i == mid + 2 and related:
            rt, ru, _ = related[0]
            body.append(f'<p class="also-read"><strong>Also read:</strong> <a href="{ru}">{esc(rt)}</a></p>')
    tags = "".join(f'<li><a href="{base}/{o.slug}/tag/{w.lower()}/">{w}</a></li>'
                   for w in r.sample(NAV_SUB, 5))
    icon = "".join(f"{r.choice('MLCQ')}{r.randint(0, 24)}.{r.randint(0, 99)} {r.randint(0, 24)}.{r.randint(0, 99)}"
                   for _ in range(40))
    share = "".join(f'<a class="share__btn share__btn--{s}" href="#" rel="nofollow" data-network="{s}">'
                    f'<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true"><path d="{icon}"/></svg>'
                    f'<span class="visually-hidden">Share on {s.title()}</span></a>'
                    for s in ("facebook", "x", "whatsapp", "linkedin", "email"))
    footer_links = "".join(
        f'<li><a href="{base}/{o.slug}/{w.lower().replace(" ", "-")}/">{w}</a></li>'
        for w in NAV_SECTIONS + ["About us", "Contact", "Advertise", "Careers", "Privacy policy", "Terms of use",
                                 "Code of ethics", "Corrections", "RSS feeds", "Newsletters", "Subscribe"]
    )
    most_read = _cards(related[1:6], "most-read", False)
    rel = _cards(related, "related", True)
    head_meta = (
        f'<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(a.title)} | {o.name}</title>"
        f'<meta name="description" content="{desc}"><link rel="canonical" href="{a.url}">'
        f'<meta property="og:type" content="article"><meta property="og:title" content="{esc(a.title)}">'
        f'<meta property="og:description" content="{desc}"><meta property="og:url" content="{a.url}">'
        f'<meta property="og:site_name" content="{o.name}">'
        f'<meta property="og:image" content="{base}/{o.slug}/images/{a.id}-1200.jpg">'
        f'<meta property="article:published_time" content="{pub}">'
        f'<meta property="article:section" content="{a.section.title()}">'
        f'<meta name="author" content="{esc(a.author)}"><meta name="twitter:card" content="summary_large_image">'
        f'<link rel="preconnect" href="https://cdn.{o.slug}.example"><link rel="icon" href="/{o.slug}/favicon.ico">'
        f'<script type="application/ld+json">{json.dumps(jsonld, ensure_ascii=False)}</script>'
        f'<script type="application/ld+json">{json.dumps(crumbs)}</script>'
    )
    tag = "article" if L < 2 else "div"
    article = (
        f'<{tag} class="article l{L}-art"><header class="article__header">'
        f'<ol class="breadcrumb"><li><a href="{base}/{o.slug}/">Home</a></li>'
        f'<li><a href="{base}/{o.slug}/{a.section}/">{a.section.title()}</a></li></ol>'
        f'<h1 class="article__title">{esc(a.title)}</h1>'
        f'<p class="article__standfirst">{esc(a.summary[:220])}</p>'
        f'<div class="article__meta"><span class="byline">By <a href="{base}/{o.slug}/author/'
        f'{a.author.lower().replace(" ", "-")}/">{esc(a.author)}</a></span>'
        f'<time datetime="{pub}">{a.published.strftime("%B %d, %Y %H:%M")}</time>'
        f'<span class="reading-time">{max(2, len(a.text.split()) // 220)} min read</span></div>'
        f'<div class="share">{share}</div></header>'
        f'<div class="article__body"><div class="l{L}-body-inner">{"".join(body)}</div></div>'
        f'<ul class="article__tags">{tags}</ul>'
        f'<div class="newsletter"><h4>Get the morning briefing</h4><form><input type="email" '
        f'placeholder="Your email"><button>Sign up</button></form></div></{tag}>'
    )
    aside = (
        f'<aside class="sidebar l{L}-sb">{_ad(r, "sidebar")}<section class="most-read"><h2>Most read</h2>'
        f'<ol>{most_read}</ol></section>{_ad(r, "sidebar2")}</aside>'
    )
    related_block = f'<section class="related l{L}-rel"><h2>Related stories</h2><ul>{rel}</ul></section>'
    comments_block = (
        f'<section class="comments l{L}-cm" id="comments"><h2>Comments ({len(comments)})</h2>'
        f'<p class="comments__policy">Comments are moderated and appear after review.</p>'
        f'<ol class="comments__list">{"".join(comments)}</ol></section>'
    )
    footer = (
        f'<footer class="site-footer l{L}-ft"><ul class="footer__links">{footer_links}</ul>'
        f'<p class="copyright">© {a.published.year} {o.name}. All rights reserved. '
        f"Reproduction without permission is prohibited.</p></footer>"
    )
    header = (
        f'<header class="site-header l{L}-hd"><a class="logo" href="{base}/{o.slug}/">{o.name}</a>'
        f'<div class="ticker"><span>Breaking</span> {esc(related[-1][0]) if related else ""}</div>'
        f'{_nav(o, base, r)}</header>{_ad(r, "top")}'
    )
    # Layout families order the blocks differently, as real templates do.
    if L == 0:
        main = f'<main class="l0-main">{article}{related_block}{comments_block}</main>{aside}'
    elif L == 1:
        main = f'<div class="l1-grid"><main>{article}{comments_block}</main>{aside}</div>{related_block}'
    elif L == 2:
        main = f'<div class="l2-wrap">{aside}<main><div class="l2-col">{article}</div></main></div>' \
               f"{related_block}{comments_block}"
    else:
        main = f'<main class="l3-main"><div class="l3-inner">{article}</div>{related_block}</main>{aside}' \
               f"{comments_block}"
    core = header + main + footer
    fixed = len(head_meta) + len(core) + 600
    # Stylesheets and scripts take what remains of the page's size, as on real sites.
    room = max(4000, target - fixed)
    css = _css(r, L, int(room * 0.35))
    js1 = _script(r, int(room * 0.40), f"__{o.slug.split('-')[0]}Ads")
    js2 = _script(r, int(room * 0.25), "__analytics")
    doc = (
        f'<!DOCTYPE html><html lang="en"><head>{head_meta}<style>{css}</style>'
        f"<script>{js1}</script></head><body class=\"l{L}\">{core}"
        f'<script async src="https://cdn.{o.slug}.example/static/app.{r.randrange(16**8):08x}.js"></script>'
        f"<script>{js2}</script></body></html>"
    )
    return doc.encode("utf-8")


# ----------------------------------------------------------------------------- feeds


def _rfc822(d: datetime) -> str:
    return format_datetime(d.astimezone(timezone.utc), usegmt=True)


def _feed_xml(f: FeedDoc, base: str, arts: list[Article], now: datetime) -> bytes:
    o = f.outlet
    esc = html.escape
    home = f"{base}/{o.slug}/"
    items = []
    for a in arts:
        guid = f"tag:{o.slug}.example,{a.published:%Y}:article-{a.id}" if o.guid_tag else a.url
        summary = f"<p>{esc(a.summary)}</p>"
        content = "".join(f"<p>{esc(p)}</p>" for p in a.paragraphs) if o.full_content else ""
        if o.atom:
            items.append(
                f"<entry><title>{esc(a.title)}</title><link rel=\"alternate\" href=\"{a.url}\"/>"
                f"<id>{esc(guid)}</id><published>{a.published.isoformat()}</published>"
                f"<updated>{a.published.isoformat()}</updated><author><name>{esc(a.author)}</name></author>"
                f"<category term=\"{a.section}\"/><summary type=\"html\">{esc(summary)}</summary>"
                + (f"<content type=\"html\">{esc(content)}</content>" if content else "")
                + "</entry>"
            )
        else:
            perma = "false" if o.guid_tag else "true"
            items.append(
                f"<item><title>{esc(a.title)}</title><link>{a.url}</link>"
                f"<guid isPermaLink=\"{perma}\">{esc(guid)}</guid><pubDate>{_rfc822(a.published)}</pubDate>"
                f"<dc:creator>{esc(a.author)}</dc:creator><category>{a.section.title()}</category>"
                f"<description>{esc(summary)}</description>"
                + (f"<content:encoded><![CDATA[{content}]]></content:encoded>" if content else "")
                + "</item>"
            )
    if o.atom:
        f.content_type = "application/atom+xml; charset=utf-8"
        doc = (
            f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{esc(o.name)} — {f.section.title()}</title><link rel=\"alternate\" href=\"{home}\"/>"
            f'<link rel="self" href="{f.url}"/><id>{f.url}</id><updated>{now.isoformat()}</updated>'
            + "".join(items) + "</feed>"
        )
    else:
        doc = (
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:atom="http://www.w3.org/2005/Atom"><channel>'
            f"<title>{esc(o.name)} — {f.section.title()}</title><link>{home}</link>"
            f'<atom:link href="{f.url}" rel="self" type="application/rss+xml"/>'
            f"<description>{esc(o.name)} {f.section} news</description><language>en</language>"
            f"<lastBuildDate>{_rfc822(now)}</lastBuildDate><ttl>15</ttl>" + "".join(items) + "</channel></rss>"
        )
    return doc.encode("utf-8")


# ----------------------------------------------------------------------------- generation


def generate(spec: WorkloadSpec, base_for: Callable[[Outlet], str] | None = None,
             now: datetime | None = None) -> Workload:
    """Build the workload for ``spec``; ``base_for(outlet)`` gives each outlet's origin
    (``http://127.0.0.x:port``). Times are placed before ``now`` (default: the current hour)."""
    import time as _time

    t0 = _time.perf_counter()
    base_for = base_for or (lambda o: "http://127.0.0.1:8")
    now = now or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(spec.seed)
    t = _Text(rng)
    outlets = list(OUTLETS)
    feeds: list[FeedDoc] = []
    for i in range(spec.feeds):
        o = outlets[i % len(outlets)]
        section = o.sections[(i // len(outlets)) % len(o.sections)]
        if i >= len(outlets) * len(o.sections):
            section = f"{section}-{i // (len(outlets) * len(o.sections))}"
        path = f"/{o.slug}/feeds/{section}.{'atom' if o.atom else 'xml'}"
        feeds.append(FeedDoc(i, o, section, base_for(o) + path, path, []))

    articles: list[Article] = []
    stories: list[_Story] = []
    by_outlet: dict[str, list[int]] = {}

    def new_article(o: Outlet, section: str) -> Article:
        aid = len(articles)
        roll = rng.random()
        # Copies and rewrites need an earlier article from another outlet.
        others = [x for x in articles if x.outlet.slug != o.slug]
        if others and roll < spec.copy_share:
            src = rng.choice([x for x in others if x.kind != "copy"] or others)
            story = stories[src.story]
            paras = list(src.paragraphs)
            if rng.random() < 0.4 and len(paras) > 6:
                paras = paras[: len(paras) - rng.randint(1, 2)]  # trimmed for space
            if rng.random() < 0.5:
                paras.append(f"This article first appeared in {src.outlet.name} and is republished by arrangement.")
            title = src.title if rng.random() < 0.4 else t.fill(rng.choice(story.heads), story.slots)
            kind, copy_of, summary = "copy", src.id, src.summary
            published = min(now - timedelta(minutes=5), src.published + timedelta(minutes=rng.randint(10, 400)))
        elif others and roll < spec.copy_share + spec.rewrite_share:
            src = rng.choice(others)
            story = stories[src.story]
            title, paras, summary = _write_up(story, t, rng.random() < 0.5)
            kind, copy_of = "rewrite", None
            published = min(now - timedelta(minutes=5), story.at + timedelta(minutes=rng.randint(20, 600)))
        else:
            at = now - timedelta(minutes=rng.randint(30, int(spec.span_hours * 60)))
            story = _story(len(stories), rng.random() < spec.relevant_share, t, at)
            stories.append(story)
            title, paras, summary = _write_up(story, t, rng.random() < 0.5)
            kind, copy_of, published = "original", None, at
        day = published
        slug = "-".join(re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-").split("-")[:9])
        path = f"/{o.slug}/{section}/{day:%Y/%m/%d}/{slug}-{aid}.html"
        author = t.person(o.country if o.country in FIRST else "XX")
        a = Article(aid, o, base_for(o) + path, path, title, summary, paras, author, published, section,
                    story.id, story.relevant, kind, copy_of)
        articles.append(a)
        by_outlet.setdefault(o.slug, []).append(aid)
        return a

    entries = 0
    # Round-robin over feeds so copies and rewrites come from other outlets' earlier articles.
    for _ in range(spec.entries_per_feed):
        for f in feeds:
            own = [i for i in by_outlet.get(f.outlet.slug, []) if i not in f.article_ids]
            if own and rng.random() < spec.overlap_share:
                f.article_ids.append(rng.choice(own))
            else:
                f.article_ids.append(new_article(f.outlet, f.section.split("-")[0]).id)
            entries += 1

    # Pages: related links point at other articles of the same outlet, like real "more from" blocks.
    for a in articles:
        pool = [articles[i] for i in by_outlet[a.outlet.slug] if i != a.id] or articles
        rel = [(x.title, x.url, x.summary[:140]) for x in rng.sample(pool, min(10, len(pool)))]
        target = rng.randint(spec.page_kb[0] * 1024, spec.page_kb[1] * 1024)
        a.html = _page(a, base_for(a.outlet), rel, random.Random(rng.random()), target)
    for f in feeds:
        arts = sorted((articles[i] for i in f.article_ids), key=lambda x: x.published, reverse=True)
        f.body = _feed_xml(f, base_for(f.outlet), arts, now)
    return Workload(spec, now, articles, feeds, entries, len(stories), _time.perf_counter() - t0)


# ----------------------------------------------------------------------------- loopback server


@dataclass
class _Resource:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str
    last_modified: str
    modified_at: datetime


@dataclass
class SiteStats:
    requests: int = 0
    not_modified: int = 0
    bytes_sent: int = 0
    pages: int = 0
    feeds: int = 0


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # clients closing kept-alive connections
        pass


class _Server:
    """The HTTP side: route table, handlers and counters (lives in the server process)."""

    def __init__(self) -> None:
        self.routes: dict[str, _Resource] = {}
        self.stats = SiteStats()
        self.lock = threading.Lock()
        self.httpds: list[ThreadingHTTPServer] = []

    def handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                res = srv.routes.get(self.path.split("?", 1)[0])
                try:
                    if res is None:
                        body = b"not found"
                        self.send_response(404)
                        self.send_header("Content-Type", "text/plain")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        with srv.lock:
                            srv.stats.requests += 1
                        return
                    inm = self.headers.get("If-None-Match")
                    ims = self.headers.get("If-Modified-Since")
                    fresh = False
                    if inm is not None:
                        fresh = res.etag in [v.strip() for v in inm.split(",")] or inm.strip() == "*"
                    elif ims:
                        try:
                            fresh = parsedate_to_datetime(ims) >= res.modified_at
                        except (TypeError, ValueError):
                            fresh = False
                    if fresh:
                        self.send_response(304)
                        self.send_header("ETag", res.etag)
                        self.send_header("Last-Modified", res.last_modified)
                        self.end_headers()
                        with srv.lock:
                            srv.stats.requests += 1
                            srv.stats.not_modified += 1
                        return
                    gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
                    body = res.gzipped if gz else res.body
                    self.send_response(200)
                    self.send_header("Content-Type", res.content_type)
                    if gz:
                        self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("ETag", res.etag)
                    self.send_header("Last-Modified", res.last_modified)
                    self.send_header("Cache-Control", "max-age=60")
                    self.send_header("Vary", "Accept-Encoding")
                    self.end_headers()
                    self.wfile.write(body)
                    with srv.lock:
                        srv.stats.requests += 1
                        srv.stats.bytes_sent += len(body)
                        if "/feeds/" in self.path:
                            srv.stats.feeds += 1
                        else:
                            srv.stats.pages += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def bind(self, hosts: list[str]) -> list[str]:
        bases = []
        for h in hosts:
            httpd = _QuietServer((h, 0), self.handler())
            self.httpds.append(httpd)
            threading.Thread(target=httpd.serve_forever, name=f"bench-site-{h}", daemon=True).start()
            bases.append(f"http://{h}:{httpd.server_address[1]}")
        return bases

    def close(self) -> None:
        for httpd in self.httpds:
            httpd.shutdown()
            httpd.server_close()
        self.httpds.clear()


def _server_main(conn, hosts: list[str]) -> None:
    """Server process: bind, report the origins, then serve; commands come over ``conn``."""
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    srv = _Server()
    try:
        try:
            bases = srv.bind(hosts)
        except OSError:  # a host without the whole 127/8 on loopback: one address for all outlets
            srv.close()
            bases = srv.bind(["127.0.0.1"]) * len(hosts)
        conn.send(bases)
        while True:
            try:
                cmd, arg = conn.recv()
            except (EOFError, OSError):
                return
            if cmd == "stop":
                return
            if cmd == "publish":
                with open(arg, "rb") as f:
                    srv.routes = pickle.load(f)
                conn.send(len(srv.routes))
            elif cmd == "stats":
                with srv.lock:
                    conn.send(vars(srv.stats).copy())
                    if arg:
                        srv.stats = SiteStats()
    finally:
        srv.close()


class LoopbackSite:
    """Serves a workload on 127.0.0.x (one address per outlet where the host allows).

    The HTTP servers run in a process of their own, as a remote site would: their
    request handling never competes with the measured pipeline for its interpreter.
    Usage: ``site = LoopbackSite().start()``; ``wl = generate(spec, site.base_for)``;
    ``site.publish(wl)``; … ``site.stop()`` (or ``with LoopbackSite() as site``).
    Responses are gzip-encoded when the client accepts it; feeds and pages carry
    ``ETag`` and ``Last-Modified`` and are answered 304 to a matching conditional request.
    """

    def __init__(self, multi_host: bool = True) -> None:
        self.multi_host = multi_host
        self._bases: dict[str, str] = {}
        self._proc = None
        self._conn = None
        self._lock = threading.Lock()

    def start(self) -> LoopbackSite:
        import multiprocessing

        hosts = [f"127.0.0.{10 + i}" for i in range(len(OUTLETS))] if self.multi_host else ["127.0.0.1"] * len(OUTLETS)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_server_main, args=(child, sorted(set(hosts), key=hosts.index)),
                                 name="bench-site", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(60):
            self.stop()
            raise RuntimeError("the loopback site did not start")
        bases = self._conn.recv()
        if not self.multi_host:
            bases = bases * len(OUTLETS)
        self._bases = {o.slug: b for o, b in zip(OUTLETS, bases)}
        return self

    def _call(self, cmd: str, arg=None):
        with self._lock:
            self._conn.send((cmd, arg))
            return self._conn.recv()

    def base_for(self, outlet: Outlet) -> str:
        return self._bases[outlet.slug]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def hosts(self) -> int:
        return len(set(self._bases.values()))

    def publish(self, wl: Workload) -> None:
        import os
        import pickle
        import tempfile

        routes: dict[str, _Resource] = {}
        for a in wl.articles:
            routes[a.path] = _resource(a.html, "text/html; charset=utf-8", a.published)
        for f in wl.feeds:
            routes[f.path] = _resource(f.body, f.content_type, wl.anchor)
        fd, path = tempfile.mkstemp(prefix="newsmon-bench-site-", suffix=".pickle")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(routes, fh, protocol=pickle.HIGHEST_PROTOCOL)
            self._call("publish", path)
        finally:
            os.unlink(path)

    def stats(self, reset: bool = False) -> SiteStats:
        return SiteStats(**self._call("stats", reset))

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            with self._lock:
                self._conn.send(("stop", None))
        except (OSError, ValueError):
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()
        self._proc = None

    def __enter__(self) -> LoopbackSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _resource(body: bytes, ctype: str, modified: datetime) -> _Resource:
    etag = '"' + hashlib.blake2b(body, digest_size=10).hexdigest() + '"'
    modified = modified.replace(microsecond=0)
    return _Resource(body, gzip.compress(body, 6), ctype, etag, _rfc822(modified), modified)

"""URL canonicalisation: one key for every way the same article is linked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.urls import InvalidURL, canonical_url, is_fetchable, site_of

SAME_ARTICLE = [
    # scheme and host case, default port, fragment, trailing slash
    "HTTPS://WWW.Ledger.EXAMPLE:443/news/1234/us-backs-talks/#comments",
    "http://ledger.example:80/news/1234/us-backs-talks",
    # tracking parameters
    "https://www.ledger.example/news/1234/us-backs-talks?utm_source=twitter&utm_medium=social&utm_campaign=x",
    "https://ledger.example/news/1234/us-backs-talks?fbclid=IwAR0abc&gclid=Cj0KCQ&msclkid=9&mc_cid=1&_ga=2.1",
    "https://ledger.example/news/1234/us-backs-talks?ref=rss&src=feed&at_medium=rss",
    # mobile and AMP variants
    "https://m.ledger.example/news/1234/us-backs-talks",
    "https://amp.ledger.example/news/1234/us-backs-talks",
    "https://www.ledger.example/news/1234/us-backs-talks/amp",
    "https://www.ledger.example/news/1234/us-backs-talks/amp/",
    "https://www.ledger.example/amp/news/1234/us-backs-talks",
    "https://www.ledger.example/news/1234/us-backs-talks?amp",
    "https://www.ledger.example/news/1234/us-backs-talks?outputType=amp",
    # AMP caches and viewers wrapping the publisher's URL
    "https://www-ledger-example.cdn.ampproject.org/c/s/www.ledger.example/news/1234/us-backs-talks/amp",
    "https://www.google.com/amp/s/www.ledger.example/news/1234/us-backs-talks/amp",
    # doubled slashes, protocol-relative link, surrounding space
    "https://ledger.example//news//1234/us-backs-talks",
    "//www.ledger.example/news/1234/us-backs-talks",
    "  https://ledger.example/news/1234/us-backs-talks  ",
]


@pytest.mark.parametrize("url", SAME_ARTICLE)
def test_variants_of_one_article_share_a_key(url):
    assert canonical_url(url) == "https://ledger.example/news/1234/us-backs-talks"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # content parameters are kept, in a stable order
        ("https://x.example/story.php?id=5&b=2&a=1", "https://x.example/story.php?a=1&b=2&id=5"),
        ("https://x.example/story?cid=77&utm_source=x", "https://x.example/story?cid=77"),
        ("https://x.example/x?output=json", "https://x.example/x?output=json"),
        ("https://x.example/?p=123", "https://x.example/?p=123"),
        # path case is kept (many sites route on it); index pages fold
        ("https://x.example/World/Story-ABC", "https://x.example/World/Story-ABC"),
        ("https://x.example/a/index.html", "https://x.example/a"),
        ("https://x.example/story.amp.html", "https://x.example/story.html"),
        # a path that merely starts with "amp" is not an AMP variant
        ("https://x.example/amplifier-review", "https://x.example/amplifier-review"),
        ("https://x.example/amp-stories/x", "https://x.example/amp-stories/x"),
        # non-default ports are part of the key; IDN hosts are punycoded
        ("https://x.example:8443/a", "https://x.example:8443/a"),
        ("https://bücher.example/a", "https://xn--bcher-kva.example/a"),
        # percent-encoding is normalised
        ("https://x.example/a%20b", "https://x.example/a%20b"),
        ("https://x.example/a b", "https://x.example/a%20b"),
        ("https://x.example/", "https://x.example"),
    ],
)
def test_canonical_forms(url, expected):
    assert canonical_url(url) == expected


def test_different_articles_keep_different_keys():
    keys = {
        canonical_url(u)
        for u in [
            "https://ledger.example/news/1234",
            "https://ledger.example/news/1235",
            "https://ledger.example/news/1234?page=2",
            "https://other.example/news/1234",
            "https://ledger.example:8080/news/1234",
        ]
    }
    assert len(keys) == 5


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "ftp://x.example/a",
        "javascript:alert(1)",
        "mailto:desk@x.example",
        "http://",
        "https:///path",
        "news.example/no-scheme",
        "http://[::1/bad",
    ],
)
def test_invalid_urls_raise(url):
    with pytest.raises(InvalidURL):
        canonical_url(url)
    assert not is_fetchable(url)


def test_site_of():
    assert site_of("https://www.Ledger.example/news/1") == "ledger.example"
    assert site_of("https://m.ledger.example/news/1") == "ledger.example"
    assert site_of("not a url") == ""


_segment = st.text(alphabet="abcXYZ019-_.~%", min_size=0, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    host=st.sampled_from(["ledger.example", "WWW.Ledger.example", "m.ledger.example", "amp.news.example", "x.example"]),
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    port=st.sampled_from(["", ":80", ":443", ":8080"]),
    segments=st.lists(_segment, max_size=4),
    params=st.lists(
        st.tuples(st.sampled_from(["id", "utm_source", "p", "fbclid", "amp", "page"]), _segment), max_size=4
    ),
    fragment=st.sampled_from(["", "#top", "#"]),
)
def test_canonical_url_is_idempotent(host, scheme, port, segments, params, fragment):
    query = "&".join(f"{k}={v}" for k, v in params)
    url = f"{scheme}://{host}{port}/{'/'.join(segments)}" + (f"?{query}" if query else "") + fragment
    key = canonical_url(url)
    assert canonical_url(key) == key
    assert key.startswith("https://") and "#" not in key and "utm_" not in key and "fbclid" not in key

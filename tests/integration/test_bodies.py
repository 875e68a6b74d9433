"""Upstream bodies: content decoding, size limits (bombs too), body modes, response
headers, and strict framing: every malformed response is `protocol`."""

import base64
import gzip
import json

import pytest

from upstream import JSON_DOC, UTF8_TEXT, binary_bytes, bomb, text_bytes


def test_gzip_is_decoded(daemon, upstream):
    d = daemon()
    r = d.batch([upstream.url("/gzip/5000")])[0]
    assert r["status"] == 200 and r["bytes"] == 5000
    assert r["body_encoding"] == "text" and r["body"] == text_bytes(5000).decode()
    assert upstream.reqs()[0].header_all("Accept-Encoding") == ["gzip, deflate"]


def test_deflate_is_decoded(daemon, upstream):
    d = daemon()
    r = d.batch([upstream.url("/deflate/5000")])[0]
    assert r["status"] == 200 and r["bytes"] == 5000 and r["body"] == text_bytes(5000).decode()


def test_own_accept_encoding_is_sent_and_the_body_left_alone(daemon, upstream):
    d = daemon()
    r = d.batch([{"url": upstream.url("/gzip/5000"), "headers": {"Accept-Encoding": "gzip"}}])[0]
    assert upstream.reqs()[0].header_all("Accept-Encoding") == ["gzip"]
    assert r["status"] == 200 and r["body_encoding"] == "base64"
    raw = base64.b64decode(r["body"])
    assert gzip.decompress(raw) == text_bytes(5000) and r["bytes"] == len(raw)


def test_own_accept_encoding_in_options_headers(daemon, upstream):
    d = daemon()
    d.batch([upstream.url("/ok")], {"headers": {"accept-encoding": "identity"}})
    assert upstream.reqs()[0].header_all("Accept-Encoding") == ["identity"]


def test_max_body_bytes(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/text/1001"), upstream.url("/text/1000"), upstream.url("/chunked?n=11&size=100")],
                 {"max_body_bytes": 1000})
    assert bs.kinds() == ["too_large", None, "too_large"]
    assert bs[1]["bytes"] == 1000


def test_config_max_body_bytes_is_the_default(daemon, upstream):
    d = daemon(max_body_bytes=1000)
    assert d.batch([upstream.url("/bytes/2000")]).kinds() == ["too_large"]


def test_decoded_size_counts_against_the_limit(daemon, upstream):
    # 20000 bytes compress to a few hundred: the decoded size is what is capped.
    d = daemon()
    bs = d.batch([upstream.url("/gzip/20000"), upstream.url("/deflate/20000")], {"max_body_bytes": 10000})
    assert bs.kinds() == ["too_large", "too_large"]


def test_gzip_bomb_is_too_large(daemon, upstream):
    assert len(bomb(16)) < 100000  # tiny on the wire, 16 MiB decoded
    d = daemon()
    bs = d.batch([upstream.url("/bomb/16")], {"max_body_bytes": 1 << 20})
    assert bs.kinds() == ["too_large"]
    assert bs.summary["elapsed_ms"] < 5000


def test_header_block_over_max_header_bytes(daemon, upstream):
    d = daemon(max_header_bytes=4096)
    bs = d.batch([upstream.url("/bigheader/8000"), upstream.url("/bigheader/1000")])
    assert bs.kinds() == ["protocol", None]
    assert len(bs[1]["headers"]["x-big"]) == 1000


@pytest.mark.parametrize("kind", ["te_cl", "dup_cl", "bad_chunk", "bare_lf", "garbage_status", "bad_status_code",
                                  "truncated", "truncated_chunked"])
def test_malformed_response_is_protocol(daemon, upstream, kind):
    d = daemon()
    bs = d.batch([upstream.url("/malformed/" + kind), upstream.url("/ok")])
    assert bs.kinds() == ["protocol", None], bs.arrival
    assert upstream.count("/malformed") == 1  # not retried


def test_chunked_body(daemon, upstream):
    d = daemon()
    r = d.batch([upstream.url("/chunked?n=5&size=10")])[0]
    assert r["bytes"] == 50 and r["body"] == (text_bytes(10) * 5).decode()


def test_head_response_has_no_body(daemon, upstream):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/ok"), "method": "HEAD"}, upstream.url("/ok")], {"concurrency": 1})
    assert bs[0]["status"] == 200 and bs[0]["bytes"] == 0
    assert bs[1]["status"] == 200 and bs[1]["body"] == "ok\n"


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses(daemon, upstream, status):
    d = daemon()
    bs = d.batch([upstream.url("/status/%d" % status), upstream.url("/ok")], {"concurrency": 1})
    assert bs[0]["status"] == status and bs[0]["bytes"] == 0
    assert bs[1]["body"] == "ok\n"


def test_error_statuses_are_responses(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/status/%d" % s) for s in (400, 404, 418, 500)])
    assert [r["status"] for r in bs.results_by_index] == [400, 404, 418, 500]
    assert bs.summary["errors"] == 0


def test_response_headers(daemon, upstream):
    d = daemon()
    h = d.batch([upstream.url("/headers")])[0]["headers"]
    assert all(k == k.lower() for k in h)
    assert h["x-dup"] == "one, two"
    assert h["x-mixed-case"] == "Value"
    assert h["set-cookie"] == ["a=1; Path=/", "b=2, c=3"]
    assert h["content-type"] == "text/plain"


def test_long_header_names_are_whole(daemon, upstream):
    # Names are bounded by max_header_bytes only: two 1000-byte names that differ
    # in their last byte stay two keys, whole and lower-cased.
    d = daemon()
    h = d.batch([upstream.url("/longnames/1000")])[0]["headers"]
    stem = "x-" + "n" * 997
    assert h[stem + "1"] == "one" and h[stem + "2"] == "two", sorted(k[:8] + ".." + k[-4:] for k in h)


def test_single_set_cookie_is_still_an_array(daemon, upstream):
    d = daemon()
    h = d.batch([upstream.url("/cookie")])[0]["headers"]
    assert h["set-cookie"] == ["only=1"]


# --- body modes -------------------------------------------------------------------------

def results_for(d, upstream, mode, paths):
    opts = {} if mode is None else {"body": mode}
    bs = d.batch([upstream.url(p) for p in paths], opts)
    return [(r["body_encoding"], r.get("body")) for r in bs.results_by_index]


PATHS = ["/json", "/utf8", "/bytes/100", "/notjson", "/ok"]
B64 = base64.b64encode(binary_bytes(100)).decode()


def test_body_auto(daemon, upstream):
    d = daemon()
    for mode in (None, "auto"):
        assert results_for(d, upstream, mode, PATHS) == [
            ("json", JSON_DOC), ("text", UTF8_TEXT), ("base64", B64), ("text", "{not json"), ("text", "ok\n")]


def test_body_text(daemon, upstream):
    d = daemon()
    got = results_for(d, upstream, "text", PATHS)
    assert got[0][0] == "text" and json.loads(got[0][1]) == JSON_DOC
    assert got[1:] == [("text", UTF8_TEXT), ("base64", B64), ("text", "{not json"), ("text", "ok\n")]


def test_body_base64(daemon, upstream):
    d = daemon()
    got = results_for(d, upstream, "base64", ["/ok", "/bytes/100", "/utf8"])
    assert got == [("base64", "b2sK"), ("base64", B64),
                   ("base64", base64.b64encode(UTF8_TEXT.encode()).decode())]


def test_body_json(daemon, upstream):
    d = daemon()
    got = results_for(d, upstream, "json", ["/json", "/notjson", "/bytes/100", "/text/10"])
    assert got == [("json", JSON_DOC), ("text", "{not json"), ("base64", B64), ("text", text_bytes(10).decode())]


def test_body_none(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/ok"), upstream.url("/json")], {"body": "none"})
    for r in bs.arrival:
        assert r["body_encoding"] == "none" and "body" not in r
    assert bs[0]["bytes"] == 3


# In body mode "none" the rest of a plain-HTTP Content-Length body is dropped
# in the kernel (recv with MSG_TRUNC); the bytes still count, the framing still
# holds and the connection is still reused.
def test_body_none_counts_a_body_that_comes_after_its_head(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/trickle/20?interval=5"), upstream.url("/bytes/300000"), upstream.url("/ok")],
                 {"body": "none", "concurrency": 1, "per_host": 1})
    got = [bs[i] for i in range(3)]
    assert [(r["status"], r["bytes"]) for r in got] == [(200, 20), (200, 300000), (200, 3)]
    assert [r["reused"] for r in got] == [False, True, True]
    assert upstream.connections == 1


def test_body_none_bytes_past_the_body_are_not_a_response(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/overrun/100000"), upstream.url("/ok")],
                 {"body": "none", "concurrency": 1, "per_host": 1})
    assert (bs[0]["status"], bs[0]["bytes"]) == (200, 100000)
    assert (bs[1]["status"], bs[1]["reused"]) == (200, False), bs.arrival
    assert upstream.connections == 2


def test_body_none_still_enforces_max_body_bytes(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/trickle/50?interval=2"), upstream.url("/ok")],
                 {"body": "none", "max_body_bytes": 10})
    assert bs.kinds() == ["too_large", None]


@pytest.mark.parametrize("kind", ["truncated", "truncated_chunked"])
def test_body_none_body_cut_short_is_protocol(daemon, upstream, kind):
    d = daemon()
    bs = d.batch([upstream.url("/malformed/" + kind), upstream.url("/ok")], {"body": "none"})
    assert bs.kinds() == ["protocol", None], bs.arrival
    assert "before end of body" in bs[0]["error"]["message"]

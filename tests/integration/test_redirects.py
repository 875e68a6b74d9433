"""Redirects (codes, relative Locations, method rewriting, limits, policy on every hop)
and retries (which statuses, which methods, Retry-After, connect failures)."""

import json
from urllib.parse import quote

import pytest

from upstream import closed_port


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_followed(daemon, upstream, code):
    d = daemon()
    url = upstream.url("/redirect/1?code=%d" % code)
    bs = d.batch([url])
    r = bs[0]
    assert r["status"] == 200, r
    assert r["url"] == url
    assert r["final_url"] == upstream.url("/redirect/0?code=%d" % code)
    assert r["body"]["method"] == "GET" and r["body"]["target"] == "/redirect/0?code=%d" % code
    assert [q.target for q in upstream.reqs()] == ["/redirect/1?code=%d" % code, "/redirect/0?code=%d" % code]


def test_relative_locations_resolved_along_a_chain(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/redirect/3")])
    assert bs[0]["status"] == 200
    assert bs[0]["final_url"] == upstream.url("/redirect/0?code=302")
    assert [q.path for q in upstream.reqs()] == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


def test_absolute_location_to_another_origin(daemon, upstreams):
    a, b = upstreams(2)
    d = daemon()
    target = b.url("/ok?from=a")
    bs = d.batch([a.url("/redirect-to?url=" + quote(target, safe=""))])
    assert bs[0]["status"] == 200 and bs[0]["body"] == "ok\n"
    assert bs[0]["final_url"] == target
    assert b.reqs()[0].header_all("Host") == [b.authority]
    assert b.reqs()[0].target == "/ok?from=a"


CREDENTIALS = {"Authorization": "Bearer s3cret", "cookie": "session=1"}  # names compared case-insensitively
PROXY_CREDENTIALS = {"Proxy-Authorization": "Basic cDpx"}  # from options.headers


def credentialed(url):
    return {"url": url, "headers": dict(CREDENTIALS, **{"X-Other": "kept"})}


def test_credentials_are_dropped_on_a_redirect_to_another_origin(daemon, upstreams):
    a, b = upstreams(2)  # one host, two ports: two origins
    d = daemon()
    target = b.url("/echo")
    bs = d.batch([credentialed(a.url("/redirect-to?url=" + quote(target, safe="")))],
                 {"headers": PROXY_CREDENTIALS})
    assert bs[0]["status"] == 200 and bs[0]["final_url"] == target
    first, hop = a.reqs()[0], b.reqs()[0]
    for name, value in dict(CREDENTIALS, **PROXY_CREDENTIALS).items():
        assert first.header_all(name) == [value], (name, first.raw_head)
        assert hop.header_all(name) == [], (name, hop.raw_head)
    assert hop.header_all("X-Other") == ["kept"]


def test_credentials_are_kept_on_a_same_origin_redirect(daemon, upstream):
    d = daemon()
    bs = d.batch([credentialed(upstream.url("/redirect/2"))], {"headers": PROXY_CREDENTIALS})
    assert bs[0]["status"] == 200
    assert len(upstream.reqs()) == 3
    for req in upstream.reqs():
        for name, value in dict(CREDENTIALS, **PROXY_CREDENTIALS).items():
            assert req.header_all(name) == [value], (name, req.raw_head)


def test_redirect_to_a_name_is_resolved(daemon, upstream, dns):
    d = daemon()
    target = upstream.url("/ok", host="c.test")
    bs = d.batch([upstream.url("/redirect-to?url=" + quote(target, safe=""))])
    assert bs[0]["status"] == 200 and bs[0]["final_url"] == target
    assert upstream.reqs()[1].header_all("Host") == ["c.test:%d" % upstream.port]
    assert dns.count("c.test") == 1


def test_303_turns_post_into_get_without_body(daemon, upstream):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/redirect/1?code=303"), "method": "POST", "body": "data"}])
    assert bs[0]["status"] == 200
    first, second = upstream.reqs()
    assert (first.method, first.body) == ("POST", b"data")
    assert (second.method, second.body) == ("GET", b"")
    assert second.header("Content-Length", "0") == "0" and second.header("Content-Type") is None


@pytest.mark.parametrize("code", [301, 302])
def test_301_302_after_post_become_get(daemon, upstream, code):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/redirect/1?code=%d" % code), "method": "POST", "json": {"a": 1}}])
    assert bs[0]["status"] == 200
    first, second = upstream.reqs()
    assert first.method == "POST" and json.loads(first.body) == {"a": 1}
    assert second.method == "GET" and second.body == b"" and second.header("Content-Type") is None


@pytest.mark.parametrize("code", [307, 308])
def test_307_308_keep_method_and_body(daemon, upstream, code):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/redirect/1?code=%d" % code), "method": "POST", "body": "data",
                   "headers": {"X-Keep": "k"}}])
    assert bs[0]["status"] == 200
    assert bs[0]["body"]["method"] == "POST" and bs[0]["body"]["body"] == "data"
    second = upstream.reqs()[1]
    assert second.method == "POST" and second.body == b"data" and second.header("X-Keep") == "k"


def test_redirect_loop(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/loop")])
    assert bs.kinds() == ["redirects"]
    assert 1 <= upstream.count() <= 6  # stopped by loop detection or by the default limit of 5


def test_too_many_redirects(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/redirect/5")], {"follow_redirects": 2})
    assert bs.kinds() == ["redirects"]
    assert [q.path for q in upstream.reqs()] == ["/redirect/5", "/redirect/4", "/redirect/3"]


def test_exactly_the_allowed_number_of_redirects(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/redirect/2")], {"follow_redirects": 2})
    assert bs[0]["status"] == 200


def test_config_follow_redirects_is_the_default(daemon, upstream):
    d = daemon(follow_redirects=1)
    bs = d.batch([upstream.url("/redirect/2"), upstream.url("/redirect/1")])
    assert bs.kinds() == ["redirects", None]


def test_follow_redirects_zero_returns_the_redirect(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/redirect/1?code=301")], {"follow_redirects": 0})
    r = bs[0]
    assert r["status"] == 301 and r["headers"]["location"] == "0?code=301"
    assert "final_url" not in r
    assert upstream.count() == 1


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "javascript:alert(1)", "file:///etc/passwd"])
def test_redirect_to_another_scheme(daemon, upstream, location):
    d = daemon()
    bs = d.batch([upstream.url("/redirect-to?url=" + quote(location, safe=""))])
    assert bs.kinds() == ["redirects"]
    assert upstream.count() == 1


def test_every_hop_is_checked_against_the_policy(daemon, upstreams):
    (a,) = upstreams(1)
    (denied,) = upstreams(1, host="127.0.0.2")
    d = daemon(deny="127.0.0.2/32")
    bs = d.batch([a.url("/redirect-to?url=" + quote(denied.url("/ok"), safe="")),
                  a.url("/redirect-to?url=" + quote("http://blocked.test:%d/ok" % denied.port, safe=""))])
    assert bs.kinds() == ["blocked", "blocked"]
    assert denied.stats()["connections"] == 0


# --- retries ----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_status_then_success(daemon, upstream, status):
    d = daemon()
    bs = d.batch([upstream.url("/flaky/1?key=k&status=%d" % status)], {"retries": 2})
    assert bs[0]["status"] == 200 and bs[0]["attempts"] == 2
    assert upstream.count() == 2


def test_retries_exhausted_gives_the_last_response(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/status/503")], {"retries": 2, "timeout_ms": 5000})
    assert bs[0]["status"] == 503 and bs[0]["attempts"] == 3
    assert upstream.count() == 3


def test_no_retries_by_default(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/flaky/1?key=k")])
    assert bs[0]["status"] == 503 and bs[0]["attempts"] == 1
    assert upstream.count() == 1


def test_500_is_not_retried(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/flaky/1?key=k&status=500")], {"retries": 2})
    assert bs[0]["status"] == 500 and bs[0]["attempts"] == 1
    assert upstream.count() == 1


@pytest.mark.parametrize("method,retried", [("POST", False), ("PATCH", False), ("PUT", True), ("DELETE", True),
                                            ("HEAD", True), ("OPTIONS", True)])
def test_only_idempotent_methods_are_retried(daemon, upstream, method, retried):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/flaky/1?key=k"), "method": method}], {"retries": 2})
    if retried:
        assert bs[0]["status"] == 200 and bs[0]["attempts"] == 2
        assert upstream.count() == 2
    else:
        assert bs[0]["status"] == 503 and bs[0]["attempts"] == 1
        assert upstream.count() == 1


def test_retry_after_is_honoured(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/flaky/1?key=k&retry_after=1")], {"retries": 1, "timeout_ms": 5000})
    assert bs[0]["status"] == 200 and bs[0]["attempts"] == 2
    first, second = upstream.reqs()
    assert second.t_start - first.t_end >= 0.9


def test_retry_after_beyond_the_remaining_time_is_not_waited_for(daemon, upstream):
    # Without origin backoff a retry sleeps Retry-After itself, on timeout_ms. (With
    # it, the pause is queue time and the retry waits it: test_throttle.py.)
    d = daemon(backoff=0)
    bs = d.batch([upstream.url("/flaky/1?key=k&retry_after=30")], {"retries": 1, "timeout_ms": 1000})
    r = bs[0]
    assert bs.summary["elapsed_ms"] < 1500
    assert r.get("status") == 503 or r["error"]["kind"] == "timeout", r
    assert upstream.count() == 1


def test_connect_refused_is_retried(daemon):
    d = daemon()
    bs = d.batch(["http://127.0.0.1:%d/ok" % closed_port()], {"retries": 2, "timeout_ms": 5000})
    assert bs[0]["error"]["kind"] == "connect" and bs[0]["attempts"] == 3

"""Error kinds reachable over plain HTTP, the address policy, and that one request's
error never disturbs the others. (`cancelled` is in test_shutdown.py.)"""

from urllib.parse import quote

from upstream import closed_port


def test_every_kind_in_one_batch(daemon, upstreams, blackhole):
    (up,) = upstreams(1)
    (denied,) = upstreams(1, host="127.0.0.2")
    d = daemon(deny="127.0.0.2/32", max_header_bytes=4096)
    reqs = [
        ("invalid_request", "ftp://127.0.0.1/x"),
        ("blocked", denied.url("/ok")),
        ("dns", "http://nx-kinds.test:%d/ok" % up.port),
        ("connect", "http://127.0.0.1:%d/ok" % closed_port()),
        ("timeout", {"url": up.url("/delay/5000"), "timeout_ms": 300}),
        ("timeout", {"url": blackhole.url(), "timeout_ms": 300}),
        ("too_large", up.url("/bomb/16")),
        ("protocol", up.url("/malformed/bad_chunk")),
        ("protocol", up.url("/bigheader/8000")),
        ("redirects", up.url("/loop")),
        ("deadline", up.url("/wait/never")),
        (None, up.url("/ok")),
    ]
    bs = d.batch([r for _, r in reqs], {"deadline_ms": 1500, "max_body_bytes": 1 << 20, "connect_timeout_ms": 1000})
    assert bs.kinds() == [k for k, _ in reqs]
    assert bs.summary["complete"] is False  # the deadline cut one
    assert denied.stats()["connections"] == 0


def test_error_results_carry_attempts_and_timing(daemon):
    d = daemon()
    url = "http://127.0.0.1:%d/ok" % closed_port()
    bs = d.batch([{"url": url, "id": "x"}])
    r = bs[0]
    assert r["error"]["kind"] == "connect" and r["url"] == url and r["id"] == "x"
    assert r["attempts"] == 1 and set(r["timing"]) >= {"queue_ms", "dns_ms", "connect_ms", "total_ms"}


def test_deny_literal_address(daemon, upstreams):
    (ok,) = upstreams(1)
    (denied,) = upstreams(1, host="127.0.0.2")
    d = daemon(deny="127.0.0.2/32")
    bs = d.batch([denied.url("/ok"), ok.url("/ok")])
    assert bs.kinds() == ["blocked", None]
    assert denied.stats()["connections"] == 0


def test_deny_checked_on_the_resolved_address(daemon, upstreams, dns):
    (denied,) = upstreams(1, host="127.0.0.2")
    d = daemon(deny="127.0.0.2/32")
    bs = d.batch(["http://blocked.test:%d/ok" % denied.port])
    assert bs.kinds() == ["blocked"]
    assert dns.count("blocked.test") == 1
    assert denied.stats()["connections"] == 0


def test_deny_is_repeatable(daemon, upstreams):
    (a,) = upstreams(1, host="127.0.0.2")
    (b,) = upstreams(1, host="127.0.0.3")
    (c,) = upstreams(1)
    d = daemon(deny=["127.0.0.2/32", "127.0.0.3/32"])
    assert d.batch([a.url("/ok"), b.url("/ok"), c.url("/ok")]).kinds() == ["blocked", "blocked", None]


def test_deny_ipv6(daemon, upstreams):
    (v6,) = upstreams(1, host="::1")
    d = daemon(deny="::1/128")
    assert d.batch([v6.url("/ok")]).kinds() == ["blocked"]
    assert v6.stats()["connections"] == 0


def test_allow_list_admits_only_its_ranges(daemon, upstreams):
    (inside,) = upstreams(1)
    (outside,) = upstreams(1, host="127.0.0.2")
    d = daemon(allow="127.0.0.1/32")
    assert d.batch([inside.url("/ok"), outside.url("/ok")]).kinds() == [None, "blocked"]
    assert outside.stats()["connections"] == 0


def test_deny_wins_inside_an_allowed_range(daemon, upstreams):
    (a,) = upstreams(1)
    (b,) = upstreams(1, host="127.0.0.2")
    d = daemon(allow="127.0.0.0/8", deny="127.0.0.2/32")
    assert d.batch([a.url("/ok"), b.url("/ok")]).kinds() == [None, "blocked"]


def test_blocked_redirect_target_keeps_other_results(daemon, upstreams):
    (a,) = upstreams(1)
    (denied,) = upstreams(1, host="127.0.0.2")
    d = daemon(deny="127.0.0.2/32")
    bs = d.batch([a.url("/redirect-to?url=" + quote(denied.url("/ok"), safe="")), a.url("/ok")])
    assert bs.kinds() == ["blocked", None]


def test_connection_refused(daemon):
    d = daemon()
    bs = d.batch(["http://127.0.0.1:%d/ok" % closed_port()])
    assert bs.kinds() == ["connect"]
    assert bs.summary["complete"] is True


def test_errors_do_not_disturb_the_rest(daemon, upstream):
    d = daemon()
    bad = ["http://127.0.0.1:%d/ok" % closed_port(), upstream.url("/malformed/te_cl"), "ftp://x/"]
    good = [upstream.url("/ok?i=%d" % i) for i in range(20)]
    bs = d.batch(bad + good, {"concurrency": 4})
    assert bs.kinds() == ["connect", "protocol", "invalid_request"] + [None] * 20
    assert bs.summary["responses"] == 20 and bs.summary["errors"] == 3

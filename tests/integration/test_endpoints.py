"""/healthz, /metrics, and the batch-level error answers (404, 405, 503 overloaded)."""

import json
import time

from client import parse_metrics


def error_of(resp):
    assert resp.content_type == "application/json", resp.headers
    return json.loads(resp.body)["error"]


def test_healthz(daemon):
    d = daemon()
    r = d.client().get("/healthz")
    assert r.status == 200 and r.content_type == "application/json"
    assert json.loads(r.body) == {"status": "ok"}


def test_unknown_path_is_404(daemon):
    d = daemon()
    for target in ("/nope", "/v1/batch/extra", "/v2/batch", "/"):
        r = d.client().get(target)
        assert r.status == 404, target
        assert error_of(r)["kind"] == "not_found"


def test_wrong_method_is_405(daemon, upstream):
    d = daemon()
    c = d.client()
    for method, target in (("GET", "/v1/batch"), ("PUT", "/v1/batch"), ("POST", "/healthz"), ("DELETE", "/metrics")):
        r = c.request(method, target, body=b"{}" if method in ("PUT", "POST") else b"")
        assert r.status == 405, (method, target, r.status)
        assert error_of(r)["kind"] == "method_not_allowed"
        assert r.header("Allow"), r.headers
    assert upstream.count() == 0


def test_metrics_format_and_names(daemon, upstream):
    d = daemon()
    d.batch([upstream.url("/ok")])
    r = d.client().get("/metrics")
    assert r.status == 200 and r.content_type == "text/plain"
    totals, samples = parse_metrics(r.body.decode())
    names = {n for n, _, _ in samples}
    assert names and all(n.startswith("fanoutd_") for n in names), sorted(names)
    for n in ("fanoutd_requests_total", "fanoutd_batches_total", "fanoutd_upstream_connections_opened_total",
              "fanoutd_upstream_connections_reused_total", "fanoutd_dns_cache_hits_total",
              "fanoutd_dns_cache_misses_total", "fanoutd_dns_queries_total",
              "fanoutd_request_duration_seconds_bucket", "fanoutd_request_duration_seconds_sum",
              "fanoutd_request_duration_seconds_count"):
        assert n in names, n
    text = r.body.decode()
    assert "# TYPE fanoutd_request_duration_seconds histogram" in text
    assert "# TYPE fanoutd_requests_total counter" in text
    assert any(n == "fanoutd_request_duration_seconds_bucket" and 'le="+Inf"' in l for n, l, _ in samples)


def test_metrics_move(daemon, upstream):
    d = daemon()
    before = d.metrics()
    d.batch([upstream.url("/ok?i=%d" % i) for i in range(3)], {"concurrency": 1})
    mid = d.metrics()
    assert mid["fanoutd_requests_total"] - before.get("fanoutd_requests_total", 0) == 3
    assert mid["fanoutd_batches_total"] - before.get("fanoutd_batches_total", 0) == 1
    assert mid["fanoutd_upstream_connections_opened_total"] - before.get(
        "fanoutd_upstream_connections_opened_total", 0) == 1
    assert mid["fanoutd_upstream_connections_reused_total"] - before.get(
        "fanoutd_upstream_connections_reused_total", 0) == 2
    assert mid["fanoutd_request_duration_seconds_count"] - before.get("fanoutd_request_duration_seconds_count", 0) == 3
    d.batch([upstream.url("/ok")])
    after = d.metrics()
    assert after["fanoutd_upstream_connections_reused_total"] == mid["fanoutd_upstream_connections_reused_total"] + 1
    assert after["fanoutd_upstream_connections_opened_total"] == mid["fanoutd_upstream_connections_opened_total"]
    assert upstream.stats()["connections"] == 1


def test_dns_metrics_move(daemon, upstream, dns):
    d = daemon()
    before = d.metrics()
    d.batch([upstream.url("/ok?close=1", host="a.test")])  # close=1: the next batch must resolve again
    mid = d.metrics()
    assert mid["fanoutd_dns_cache_misses_total"] > before.get("fanoutd_dns_cache_misses_total", 0)
    assert mid["fanoutd_dns_queries_total"] - before.get("fanoutd_dns_queries_total", 0) == dns.count("a.test") == 1
    d.batch([upstream.url("/ok?close=1", host="a.test")])
    after = d.metrics()
    assert after["fanoutd_dns_cache_hits_total"] > mid.get("fanoutd_dns_cache_hits_total", 0)
    assert after["fanoutd_dns_queries_total"] == mid["fanoutd_dns_queries_total"]


def test_overloaded_is_503_with_retry_after(daemon, upstream):
    d = daemon(max_batches=1)
    bs = d.stream([upstream.url("/wait/hold")])
    assert upstream.wait_for(lambda u: u.inflight == 1, 5)
    second = d.client().stream_batch([upstream.url("/ok")])
    assert second.status == 503
    assert int(second.header("Retry-After")) >= 1
    assert second.error()["error"]["kind"] == "overloaded"
    assert upstream.count() == 1
    # /healthz and /metrics are not batches: still served.
    assert d.client().get("/healthz").status == 200
    upstream.release("hold")
    bs.finish()
    assert bs[0]["status"] == 200
    # The slot is free again once the daemon has finished with the first batch, which may
    # be a moment after its last byte reached us: retry 503s for a bounded time.
    deadline = time.monotonic() + 3
    while True:
        again = d.batch([upstream.url("/ok")])
        if again.status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert again.status == 200 and again[0]["status"] == 200

"""Time limits: connect_timeout_ms, per-request timeout_ms (slow head, trickling body),
and the batch's deadline_ms. Every limit that ends a request is `timeout` naming the
phase, except the batch deadline, which is `deadline`."""

import pytest


def peer_closed_within(upstream, n, timeout=3):
    return upstream.wait_for(lambda u: len(u.peer_closes) >= n, timeout)


def test_connect_timeout(daemon, blackhole, upstream):
    d = daemon()
    bs = d.batch([blackhole.url(), upstream.url("/ok")], {"connect_timeout_ms": 200})
    err = bs[0]["error"]
    assert err["kind"] == "timeout" and "connect" in err["message"], err
    assert 150 <= bs[0]["timing"]["total_ms"] < 2000, bs[0]["timing"]
    assert bs[1]["status"] == 200
    assert bs.summary["elapsed_ms"] < 2000 and bs.summary["complete"] is True


def test_config_connect_timeout_is_the_default(daemon, blackhole):
    d = daemon(connect_timeout_ms=200)
    bs = d.batch([blackhole.url()])
    assert bs[0]["error"]["kind"] == "timeout" and "connect" in bs[0]["error"]["message"]
    assert bs.summary["elapsed_ms"] < 2000


def test_slow_response_headers_time_out(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/delay/3000")], {"timeout_ms": 300})
    err = bs[0]["error"]
    assert err["kind"] == "timeout" and "response headers" in err["message"], err
    assert 250 <= bs[0]["timing"]["total_ms"] < 2000
    assert peer_closed_within(upstream, 1)  # the daemon hung up on the slow upstream


@pytest.mark.parametrize("body", ["auto", "none"])  # "none" drops the body in the kernel
def test_trickling_body_is_cut_at_timeout(daemon, upstream, body):
    # One byte every 100 ms: every read makes progress, but the total is what counts.
    d = daemon()
    bs = d.batch([upstream.url("/trickle/100?interval=100")], {"timeout_ms": 500, "body": body})
    err = bs[0]["error"]
    assert err["kind"] == "timeout" and "body" in err["message"], err
    assert 450 <= bs[0]["timing"]["total_ms"] < 1500, bs[0]["timing"]
    assert peer_closed_within(upstream, 1)


def test_request_timeout_field_applies_to_that_request(daemon, upstream):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/delay/3000"), "timeout_ms": 300}, upstream.url("/delay/100")])
    assert bs.kinds() == ["timeout", None]
    assert bs.summary["elapsed_ms"] < 2000


def test_request_timeout_overrides_the_batch_option(daemon, upstream):
    # options.timeout_ms is a default: a request's own value may be longer.
    d = daemon()
    bs = d.batch([{"url": upstream.url("/delay/1000"), "timeout_ms": 3000}, upstream.url("/delay/1000?b")],
                 {"timeout_ms": 400})
    assert bs.kinds() == [None, "timeout"]
    assert bs[0]["status"] == 200


def test_configured_timeout_caps_a_requests_own(daemon, upstream):
    d = daemon(timeout_ms=300)
    bs = d.batch([{"url": upstream.url("/delay/1000"), "timeout_ms": 3000}])
    assert bs.kinds() == ["timeout"]
    assert bs[0]["timing"]["total_ms"] < 900, bs[0]["timing"]


def test_config_timeout_is_the_default(daemon, upstream):
    d = daemon(timeout_ms=300)
    bs = d.batch([upstream.url("/delay/3000")])
    assert bs.kinds() == ["timeout"]


def test_waiting_in_the_queue_does_not_count(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/delay/150?i=%d" % i) for i in range(3)], {"concurrency": 1, "timeout_ms": 400})
    assert bs.kinds() == [None, None, None]
    assert max(r["timing"]["queue_ms"] for r in bs.arrival) >= 200
    assert upstream.stats()["peak"] == 1


def test_batch_deadline(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/ok"), upstream.url("/delay/3000"), upstream.url("/wait/never")],
                 {"deadline_ms": 400})
    assert bs.kinds() == [None, "deadline", "deadline"]
    assert bs.summary["complete"] is False
    assert bs.summary["responses"] == 1 and bs.summary["errors"] == 2
    assert 350 <= bs.summary["elapsed_ms"] < 2000
    assert peer_closed_within(upstream, 2)  # both unfinished requests were abandoned


def test_deadline_also_ends_queued_requests(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/delay/300?i=%d" % i) for i in range(5)], {"concurrency": 1, "deadline_ms": 500})
    assert bs.kinds() == [None] + ["deadline"] * 4
    assert bs.summary["complete"] is False
    assert upstream.count() == 2  # the third was never dispatched


def test_config_deadline_is_the_default(daemon, upstream):
    d = daemon(deadline_ms=300)
    bs = d.batch([upstream.url("/delay/3000")])
    assert bs.kinds() == ["deadline"] and bs.summary["complete"] is False


def test_deadline_in_ndjson_keeps_the_stream_well_formed(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/wait/never"), upstream.url("/ok")], {"deadline_ms": 300}, ndjson=True)
    assert bs.kinds() == ["deadline", None]
    assert bs.summary["complete"] is False

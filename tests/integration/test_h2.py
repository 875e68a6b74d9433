"""HTTP/2 upstreams against a scriptable python3-h2 server (h2upstream.py) over TLS with the
test CA: ALPN, multiplexing within per_host and the server's SETTINGS, batches sharing a
connection, unprocessed streams sent again, resets ending their own request only, and the
per-request guarantees (timeouts, body cap, decoding, redirects, retries) kept per stream.
Connections and concurrent streams are counted at the server."""

import pytest


@pytest.fixture
def h2d(daemon, pki):
    def start(**keys):
        keys.setdefault("ca_file", pki.ca_file)
        return daemon(**keys)
    return start


@pytest.fixture
def h2(h2upstreams):
    (u,) = h2upstreams(1)
    return u


def statuses(bs):
    return [r.get("status", r.get("error", {}).get("kind")) for r in bs.results_by_index]


def test_h2_is_negotiated_and_multiplexed_on_one_connection(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/delay/300?i=%d" % i) for i in range(100)], {"per_host": 8, "concurrency": 256})
    assert statuses(bs) == [200] * 100
    assert {r["protocol"] for r in bs.arrival} == {"h2"}
    st = h2.stats()
    assert st["connections"] == 1 and st["over_limit"] == 0, st
    assert st["peak_streams"] >= 90, st  # one round trip, not per_host at a time
    assert sorted(r["reused"] for r in bs.arrival) == [False] + [True] * 99
    (c,) = h2.conn_records()
    assert c.alpn == "h2"
    assert c.client_settings.get("enable_push") == 0


def test_h2_server_stream_limit_is_kept(h2d, h2upstreams):
    (u,) = h2upstreams(1, max_concurrent_streams=3)
    d = h2d()
    bs = d.batch([u.url("/delay/100?i=%d" % i) for i in range(12)], {"per_host": 1})
    assert statuses(bs) == [200] * 12
    st = u.stats()
    assert st["over_limit"] == 0 and st["peak_streams"] <= 3 and st["connections"] == 1, st


def test_h2_max_streams_configured_is_kept(h2d, h2):
    d = h2d(max_streams=4)
    bs = d.batch([h2.url("/delay/100?i=%d" % i) for i in range(12)], {"per_host": 1})
    assert statuses(bs) == [200] * 12
    st = h2.stats()
    assert st["peak_streams"] <= 4 and st["connections"] == 1, st


def test_h2_more_connections_only_when_streams_are_full(h2d, h2upstreams):
    (u,) = h2upstreams(1, max_concurrent_streams=5)
    d = h2d()
    bs = d.batch([u.url("/delay/200?i=%d" % i) for i in range(20)], {"per_host": 8})
    assert statuses(bs) == [200] * 20
    st = u.stats()
    assert st["over_limit"] == 0 and 2 <= st["connections"] <= 4, st
    assert all(c.peak_streams <= 5 for c in u.conn_records())


def test_h2_batches_share_a_connection(h2d, h2):
    d = h2d()
    first = d.stream([h2.url("/wait/go?b=1")])
    try:
        assert h2.wait_for(lambda u: u.count("/wait/go") == 1)
        second = d.batch([h2.url("/ok?b=2")])
        assert second[0]["status"] == 200 and second[0]["reused"] is True
        m = d.metrics()
        assert m["fanoutd_upstream_connections_h2"] == 1 and m["fanoutd_h2_streams"] == 1, m
        h2.release("go")
        first.finish()
    finally:
        first.close()
    assert first[0]["status"] == 200
    assert h2.stats()["connections"] == 1
    m = d.metrics()
    assert m["fanoutd_h2_streams"] == 0 and m["fanoutd_upstream_connections_h2"] == 1, m  # idle


def test_h2_http2_off_uses_http11(h2d, h2upstreams):
    (u,) = h2upstreams(1, alpn=("h2", "http/1.1"))
    d = h2d()
    bs = d.batch([u.url("/ok")], {"http2": False})
    assert bs[0]["status"] == 200 and bs[0]["protocol"] == "http/1.1"


def test_h2_refused_stream_is_sent_again(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/refuse?n=2"), h2.url("/ok")], {"retries": 0})
    assert statuses(bs) == [200, 200]
    assert bs[0]["attempts"] == 1  # not a retry
    assert h2.stats()["refused"] == 2


def test_h2_goaway_sends_unprocessed_streams_elsewhere(h2d, h2):
    d = h2d()
    bs = d.batch([{"url": h2.url("/goaway"), "method": "POST", "body": "x"}])
    assert statuses(bs) == [200]  # even a POST: the server never processed it
    assert bs[0]["attempts"] == 1
    st = h2.stats()
    assert st["goaways_sent"] == 1 and st["connections"] == 2, st
    assert [r.outcome for r in h2.reqs("/goaway")] == ["goaway_unprocessed", "responded"]


def test_h2_reset_ends_its_request_only(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/rst?code=INTERNAL_ERROR")] + [h2.url("/delay/100?i=%d" % i) for i in range(5)])
    err = bs[0]["error"]
    assert err["kind"] == "protocol" and err["message"] == "stream reset by server: INTERNAL_ERROR", err
    assert statuses(bs)[1:] == [200] * 5
    assert h2.stats()["connections"] == 1


def test_h2_stalled_stream_times_out_alone(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/stall"), h2.url("/delay/100")], {"timeout_ms": 500})
    err = bs[0]["error"]
    assert err["kind"] == "timeout" and "body" in err["message"], err
    assert bs[1]["status"] == 200
    assert h2.wait_for(lambda u: any(r.error_code == 8 for r in u.resets_received))  # CANCEL
    assert h2.stats()["connections"] == 1


def test_h2_big_body_with_flow_control(h2d, h2):
    d = h2d()
    n = 5_000_000
    bs = d.batch([h2.url("/big/%d" % n)], {"body": "none", "max_body_bytes": 8_000_000})
    assert bs[0]["status"] == 200 and bs[0]["bytes"] == n
    (c,) = h2.conn_records()
    assert c.window_conn > 0 and sum(c.window_streams.values()) > 0


def test_h2_body_over_the_cap_resets_its_stream(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/big/1000000"), h2.url("/ok")], {"max_body_bytes": 100_000})
    assert bs[0]["error"]["kind"] == "too_large"
    assert bs[1]["status"] == 200
    assert h2.wait_for(lambda u: len(u.resets_received) == 1)


def test_h2_gzip_is_decoded(h2d, h2):
    d = h2d()
    r = d.batch([h2.url("/gzip/5000")])[0]
    assert r["status"] == 200 and r["bytes"] == 5000 and r["headers"]["content-encoding"] == "gzip"


def test_h2_response_headers_as_on_http11(h2d, h2):
    d = h2d()
    h = d.batch([h2.url("/headers")])[0]["headers"]
    assert h["set-cookie"] == ["a=1; Path=/", "b=2, c=3"]
    assert h["x-dup"] == "one, two"
    assert not any(k.startswith(":") for k in h)


def test_h2_request_fields(h2d, h2):
    d = h2d()
    bs = d.batch([{"url": h2.url("/echo?q=1"), "method": "POST", "body": "hello",
                   "headers": {"X-Caller": "A", "Connection": "close", "Transfer-Encoding": "x",
                               "Keep-Alive": "1", "Upgrade": "h2c", "TE": "gzip"}}])
    e = bs[0]["body"]
    assert e["method"] == "POST" and e["path"] == "/echo?q=1" and e["body"] == "hello"
    assert e["authority"] == h2.authority and e["scheme"] == "https"
    names = [n for n, _ in e["headers"]]
    assert "x-caller" in names and all(n == n.lower() for n in names)
    for banned in ("connection", "transfer-encoding", "keep-alive", "upgrade", "te", "host"):
        assert banned not in names, names
    assert dict(e["headers"])["content-length"] == "5"


def test_h2_redirect_and_retry_per_stream(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/redirect/2"), h2.url("/flaky/1?key=r")], {"retries": 1})
    assert statuses(bs) == [200, 200]
    assert bs[0]["final_url"].startswith(h2.url("/redirect/0"))
    assert bs[1]["attempts"] == 2
    assert h2.stats()["connections"] == 1


def test_h2_connection_closed_under_a_stream(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/close")])
    err = bs[0]["error"]
    assert err["kind"] == "protocol" and "connection closed" in err["message"], err


def test_h2_origin_speaking_http11_is_learnt(h2d, upstreams, pki):
    # An https origin that answers http/1.1: the first handshake is waited for,
    # then requests open connections straight away, within per_host.
    (u,) = upstreams(1, tls=pki.context_factory("good"))
    d = h2d()
    bs = d.batch([u.url("/delay/100?i=%d" % i, host="a.test") for i in range(12)], {"per_host": 4})
    assert statuses(bs) == [200] * 12
    assert {r["protocol"] for r in bs.arrival} == {"http/1.1"}
    assert u.stats()["connections"] <= 4



def test_h2_fair_share_keeps_one_connection_per_origin(h2d, h2upstreams):
    # 4 origins x 40 requests, 40 in flight, 10 streams a connection: 10 each is the
    # batch's fair share, one connection's worth. The origin whose handshake ends first
    # must not fill its connection and open a second while the others' handshakes end.
    ups = h2upstreams(4)
    d = h2d(max_streams=10)
    urls = [u.url("/delay/100?i=%d" % i) for i in range(40) for u in ups]
    bs = d.batch(urls, {"concurrency": 40, "per_host": 8})
    assert bs.summary["responses"] == 160
    assert [u.stats()["connections"] for u in ups] == [1, 1, 1, 1]


def test_h2_response_headers_timeout_ends_its_stream(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/wait/never"), h2.url("/ok")], {"timeout_ms": 300})
    err = bs[0]["error"]
    assert err["kind"] == "timeout" and "response headers" in err["message"], err
    assert bs[1]["status"] == 200
    assert h2.wait_for(lambda u: any(r.error_code == 8 for r in u.resets_received))  # CANCEL


def test_h2_tls_session_is_resumed(h2d, h2):
    # A connection closed when idle (idle_timeout_s 0); the next one resumes.
    d = h2d(idle_timeout_s=0)
    for i in range(2):
        assert d.batch([h2.url("/ok?b=%d" % i)])[0]["protocol"] == "h2"
    assert h2.wait_for(lambda u: u.stats()["handshakes"] == 2)
    assert [c.resumed for c in h2.conn_records()] == [False, True]


# --- the HTTP/1.1 guarantees, per stream ---------------------------------------------

def test_h2_decoding_and_body_modes(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/deflate/3000"), h2.url("/bomb/16"), h2.url("/json"), h2.url("/bytes/100"),
                  h2.url("/trailers")], {"max_body_bytes": 1_000_000})
    deflate, bomb, js, raw, trailers = bs.results_by_index
    assert deflate["bytes"] == 3000 and deflate["body_encoding"] == "text"
    assert bomb["error"]["kind"] == "too_large"  # 16 MiB of zeros stop at the cap
    assert js["body_encoding"] == "json" and isinstance(js["body"], dict)
    assert raw["body_encoding"] == "base64" and raw["bytes"] == 100
    assert trailers["body"] == "t\n" and "x-checksum" not in trailers["headers"]


def test_h2_header_block_over_max_header_bytes(h2d, h2):
    d = h2d(max_header_bytes=4096)
    bs = d.batch([h2.url("/bigheader/8000"), h2.url("/bigheader/1000")])
    assert bs[0]["error"] == {"kind": "protocol", "message": "response header block over 4096 bytes"}
    assert bs[1]["status"] == 200 and len(bs[1]["headers"]["x-big"]) == 1000


def test_h2_credentials_dropped_on_a_redirect_to_another_origin(h2d, h2upstreams):
    a, b = h2upstreams(2)
    d = h2d()
    target = b.url("/echo")
    bs = d.batch([{"url": a.url("/redirect-to?url=" + target), "headers": {"Authorization": "Bearer x",
                                                                             "Cookie": "s=1", "X-Other": "y"}}])
    assert bs[0]["status"] == 200 and bs[0]["protocol"] == "h2"
    first, hop = a.reqs()[0], b.reqs()[0]
    assert first.header("authorization") == "Bearer x" and first.header("cookie") == "s=1"
    assert hop.header("authorization") is None and hop.header("cookie") is None
    assert hop.header("x-other") == "y"


def test_h2_batch_deadline_resets_streams(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/ok"), h2.url("/wait/never"), h2.url("/stall")], {"deadline_ms": 400})
    assert bs.kinds() == [None, "deadline", "deadline"]
    assert h2.wait_for(lambda u: len(u.resets_received) == 2)
    assert h2.stats()["connections"] == 1


def test_h2_address_policy(h2d, h2upstreams):
    (u,) = h2upstreams(1)
    d = h2d(deny="127.0.0.1/32")
    bs = d.batch([u.url("/ok")])
    assert bs.kinds() == ["blocked"]
    assert u.stats()["connections"] == 0


def test_h2_slow_caller_keeps_stream_windows_shut(h2d, h2):
    # The caller reads nothing: the first result fills the output past
    # output_buffer_bytes, the batch pauses, and the second stream's window is no
    # longer opened, so the server stops one window in. Reading resumes it.
    d = h2d(output_buffer_bytes=65536)
    n = 8_000_000
    bs = d.stream([h2.url("/bytes/1000000"), h2.url("/big/%d" % n)],
                  {"body": "base64", "max_body_bytes": 10_000_000})
    try:
        assert h2.wait_for(lambda u: u.count("/big") == 1)
        big = h2.reqs("/big")[0]
        assert not h2.wait_for(lambda u: big.bytes_sent >= n, timeout=1.5), big.bytes_sent
        assert big.outcome == "responding"
        bs.finish()
    finally:
        bs.close()
    r = bs[1]
    assert r["status"] == 200 and r["bytes"] == n


def test_h2_redirect_rules(h2d, h2):
    d = h2d()
    bs = d.batch([{"url": h2.url("/redirect/1?code=303"), "method": "POST", "body": "data"},
                  h2.url("/loop"), h2.url("/redirect/9")], {"follow_redirects": 3})
    see_other, loop, many = bs.results_by_index
    assert see_other["status"] == 200 and see_other["body"]["method"] == "GET"
    assert see_other["body"]["body"] == ""
    assert loop["error"]["kind"] == "redirects" and "loop" in loop["error"]["message"]
    assert many["error"]["kind"] == "redirects"
    assert h2.stats()["connections"] == 1


def test_h2_retry_after_is_honoured(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/retry-after/1")], {"retries": 1, "timeout_ms": 5000})
    r = bs[0]
    assert r["status"] == 200 and r["attempts"] == 2
    first, second = h2.reqs("/retry-after")
    assert second.t_start - first.t_start >= 0.9  # Retry-After: 1 is a floor


def test_h2_order_input(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/delay/300"), h2.url("/ok"), h2.url("/delay/100")], {"order": "input"},
                 ndjson=True)
    assert [r["index"] for r in bs.arrival] == [0, 1, 2]


def test_h2_interim_response_is_skipped(h2d, h2):
    # A 103 before the final head: skipped, and (under ASan) nothing leaks.
    d = h2d()
    r = d.batch([h2.url("/status/103")])[0]
    assert r.get("status") == 200 and r["protocol"] == "h2", r


@pytest.mark.parametrize("cert,why", [("expired", "certificate has expired"),
                                      ("other", "hostname mismatch")])
def test_h2_tls_is_verified(h2d, h2upstreams, cert, why):
    (u,) = h2upstreams(1, cert=cert)
    d = h2d()
    bs = d.batch([u.url("/ok", host="a.test")])
    err = bs[0]["error"]
    assert err["kind"] == "tls" and why in err["message"], err
    assert u.count() == 0


def test_h2_connection_reset_and_goaway_with_an_error(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/close?rst=1")])
    assert bs[0]["error"]["kind"] == "protocol" and "connection" in bs[0]["error"]["message"]
    bs = d.batch([h2.url("/goaway?code=INTERNAL_ERROR"), h2.url("/ok?after")])
    assert [r["status"] for r in bs.results_by_index] == [200, 200]  # not processed: sent again


# --- hostile and broken servers (found by review) -----------------------------------

def test_h2_settings_after_goaway_on_an_idle_connection(h2d, h2):
    # The GOAWAY closes the idle connection from inside the session's read; the
    # SETTINGS behind it in the same read must not reach it (was a use-after-free).
    d = h2d()
    assert d.batch([h2.url("/goaway-settings?ms=200")])[0]["status"] == 200
    assert h2.wait_for(lambda u: u.stats()["closed_conns"] == 1)  # the daemon let it go
    assert d.batch([h2.url("/ok?after")])[0]["status"] == 200


def test_h2_protocol_error_ends_the_streams_at_once(h2d, h2):
    d = h2d()
    r = d.batch([h2.url("/protoerr")], {"timeout_ms": 4000})[0]
    assert r["error"]["kind"] == "protocol" and r["timing"]["total_ms"] < 2000, r


def test_h2_reset_with_no_error_before_the_end_is_not_a_response(h2d, h2):
    d = h2d()
    bs = d.batch([h2.url("/rst?code=NO_ERROR&after=data"), h2.url("/rst?code=NO_ERROR&after=headers")])
    for r in bs.results_by_index:
        assert r["error"]["kind"] == "protocol" and "NO_ERROR before the end" in r["error"]["message"], r


def test_h2_order_input_does_not_hold_the_awaited_stream(h2d, h2):
    # Later results wait in slots; the one they wait for must not be held back.
    d = h2d(output_buffer_bytes=65536)
    urls = [h2.url("/big/2000000")] + [h2.url("/bytes/100000?i=%d" % i) for i in range(5)]
    bs = d.batch(urls, {"order": "input", "timeout_ms": 3000, "body": "base64",
                        "max_body_bytes": 5_000_000})
    assert bs.kinds() == [None] * 6


def test_h2_connection_window_survives_bodies_over_the_cap(h2d, h2):
    # Each too_large stream leaves bytes taken in but never passed on; they must go
    # back to the connection's window, or 16 MiB of them wedge the connection.
    d = h2d()
    bs = d.batch([h2.url("/bytes/60000?i=%d" % i) for i in range(600)],
                 {"max_body_bytes": 1000, "concurrency": 50, "per_host": 1, "body": "none",
                  "timeout_ms": 3000})
    assert bs.kinds() == ["too_large"] * 600
    assert d.batch([h2.url("/bytes/100")])[0]["status"] == 200
    assert h2.stats()["connections"] == 1
    m = d.metrics()
    assert m["fanoutd_upstream_bytes_in_total"] < 60000 * 600 * 1.1  # counted once

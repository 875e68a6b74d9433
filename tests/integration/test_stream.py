"""Streaming: results reach the caller as they finish (JSON document and NDJSON), in
completion or input order; backpressure from a caller that does not read; a caller
hanging up cancels its batch."""

import pytest

from client import BatchStream, Response


def responded(u, path):
    return sum(1 for r in u.requests if r.path == path and r.outcome == "responded")


@pytest.mark.parametrize("mode", ["json", "ndjson-accept", "ndjson-query"])
def test_first_result_is_read_before_the_slow_upstream_answers(daemon, upstream, mode):
    d = daemon()
    kw = {"json": {}, "ndjson-accept": {"ndjson": True}, "ndjson-query": {"query": "?format=ndjson"}}[mode]
    bs = d.stream([upstream.url("/wait/slow"), upstream.url("/ok")], **kw)
    first = bs.next_result()  # blocks until the first result is on the wire
    assert first["index"] == 1 and first["status"] == 200
    # The slow request may reach the upstream only now; it is then parked on its
    # event, so its answer cannot have been sent.
    assert upstream.wait_for(lambda u: any(r.path == "/wait/slow" for r in u.requests), 5)
    (slow,) = upstream.reqs("/wait")
    assert slow.outcome is None and upstream.stats()["inflight"] == 1
    upstream.release("slow")
    bs.finish()
    assert [r["index"] for r in bs.arrival] == [1, 0]
    assert bs[0]["status"] == 200 and bs[0]["body"] == "released slow\n"
    assert bs.summary["complete"] is True and bs.summary["total"] == 2
    assert bs.resp.chunked


def test_ndjson_shape(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/ok?i=%d" % i) for i in range(50)], ndjson=True)
    assert bs.header("Content-Type").startswith("application/x-ndjson")
    assert bs.raw.endswith(b"\n") and bs.raw.count(b"\n") == 51
    lines = bs.raw.decode().splitlines()
    assert lines[-1].startswith('{"summary"')
    assert bs.summary["total"] == 50 and bs.summary["responses"] == 50


def test_json_document_shape(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/ok?i=%d" % i) for i in range(50)])
    assert bs.header("Content-Type").startswith("application/json")
    assert set(bs.doc) == {"results", "summary"}
    assert bs.summary["total"] == 50


def test_order_input_holds_results_back(daemon, upstream):
    d = daemon()
    bs = d.stream([upstream.url("/wait/slow"), upstream.url("/ok?i=1"), upstream.url("/ok?i=2")],
                  {"order": "input"})
    assert upstream.wait_for(lambda u: responded(u, "/ok") == 2, 5)
    upstream.release("slow")
    bs.finish()
    assert [r["index"] for r in bs.arrival] == [0, 1, 2]


def test_order_completion_is_the_default(daemon, upstream):
    d = daemon()
    bs = d.stream([upstream.url("/wait/slow"), upstream.url("/ok")])
    assert bs.next_result()["index"] == 1
    upstream.release("slow")
    bs.finish()


def test_include_headers(daemon, upstream):
    d = daemon()
    with_h = d.batch([upstream.url("/ok")])
    assert with_h[0]["headers"]["content-type"] == "text/plain"
    without = d.batch([upstream.url("/ok")], {"include_headers": False})
    assert "headers" not in without[0] and without[0]["status"] == 200


def test_backpressure_stops_dispatch_while_the_caller_does_not_read(daemon, upstream):
    d = daemon(output_buffer_bytes=65536)
    n, size = 100, 131072
    sock = d.client(timeout=60).start_batch([upstream.url("/text/%d?i=%d" % (size, i)) for i in range(n)],
                                            {"concurrency": 4, "body": "text"})
    assert upstream.wait_for(lambda u: len(u.requests) >= 1, 5)
    # ~13 MB of results against a 64 KiB output buffer and a ~200 KiB socket buffer:
    # while nobody reads, the daemon must stop asking the upstream for more.
    assert not upstream.wait_for(lambda u: len(u.requests) >= n // 4, 1.0), upstream.stats()
    stalled = upstream.count()
    bs = BatchStream(Response(sock, 60), n, False)
    bs.finish()
    bs.close()
    assert bs.summary["responses"] == n
    assert all(r["bytes"] == size and len(r["body"]) == size for r in bs.arrival)
    assert upstream.count() == n and stalled < n // 4


def test_caller_disconnect_cancels_the_batch(daemon, upstream):
    d = daemon()
    sock = d.client().start_batch([upstream.url("/wait/hold?i=%d" % i) for i in range(20)], {"concurrency": 4})
    assert upstream.wait_for(lambda u: u.inflight == 4, 5)
    sock.close()
    # The in-flight requests' connections are closed by the daemon...
    assert upstream.wait_for(lambda u: len(u.peer_closes) >= 4 and u.inflight == 0, 3), upstream.stats()
    # ...and nothing more is dispatched.
    assert not upstream.wait_for(lambda u: len(u.requests) > 4, 0.5)
    assert all(r.outcome == "peer_closed" for r in upstream.reqs())
    # The daemon goes on serving.
    upstream.release("hold")
    assert d.client().get("/healthz").status == 200
    assert d.batch([upstream.url("/ok")])[0]["status"] == 200


def test_caller_disconnect_while_results_are_pending(daemon, upstream):
    # Hang up after having read part of the stream.
    d = daemon()
    bs = d.stream([upstream.url("/ok")] + [upstream.url("/wait/hold?i=%d" % i) for i in range(10)],
                  {"concurrency": 3})
    assert bs.next_result()["index"] == 0
    assert upstream.wait_for(lambda u: u.inflight == 3, 5)
    bs.close()
    assert upstream.wait_for(lambda u: u.inflight == 0, 3)
    assert not upstream.wait_for(lambda u: len(u.requests) > 4, 0.5)


def test_many_results_stream_intact(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/text/%d" % (i * 37 % 4000)) for i in range(500)], {"concurrency": 16})
    assert bs.summary["responses"] == 500
    assert all(r["bytes"] == r["index"] * 37 % 4000 for r in bs.arrival)

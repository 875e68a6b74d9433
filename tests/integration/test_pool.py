"""Keep-alive: reuse within and across batches, measured at the upstream, and recovery
when an upstream closed a kept-alive connection behind the daemon's back."""


def test_reuse_within_a_batch(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/ok?i=%d" % i) for i in range(20)], {"concurrency": 2})
    assert bs.summary["responses"] == 20
    st = upstream.stats()
    assert st["requests"] == 20 and st["connections"] <= 2
    assert sum(r["reused"] for r in bs.arrival) == 20 - st["connections"]
    assert {r["remote"] for r in bs.arrival} == {"127.0.0.1:%d" % upstream.port}
    # A reused connection has no connect phase.
    for r in bs.arrival:
        if r["reused"]:
            assert r["timing"]["connect_ms"] == 0, r["timing"]


def test_second_batch_reuses_the_first_ones_connections(daemon, upstream):
    d = daemon()
    first = d.batch([upstream.url("/ok?b=1&i=%d" % i) for i in range(5)], {"concurrency": 1})
    assert first[0]["reused"] is False
    assert upstream.stats()["connections"] == 1
    second = d.batch([upstream.url("/ok?b=2&i=%d" % i) for i in range(5)], {"concurrency": 1})
    assert [r["reused"] for r in second.results_by_index] == [True] * 5
    st = upstream.stats()
    assert st["connections"] == 1 and st["requests"] == 10
    assert {r.conn_id for r in upstream.reqs()} == {1}


def test_separate_origins_separate_connections(daemon, upstreams):
    a, b = upstreams(2)
    d = daemon()
    bs = d.batch([u.url("/ok?i=%d" % i) for i in range(3) for u in (a, b)], {"concurrency": 1})
    assert bs.summary["responses"] == 6
    assert a.stats()["connections"] == 1 and b.stats()["connections"] == 1
    assert a.count() == 3 and b.count() == 3


def test_upstream_closing_after_response_then_next_batch_succeeds(daemon, upstream):
    d = daemon()
    first = d.batch([upstream.url("/closeidle")])
    assert first[0]["status"] == 200
    assert upstream.wait_for(lambda u: u.closed_conns == 1, 5)  # the server hung up
    second = d.batch([upstream.url("/ok")])
    assert second[0]["status"] == 200, second[0]
    assert second[0]["reused"] is False
    assert upstream.stats()["connections"] == 2
    assert [r.outcome for r in upstream.reqs()] == ["responded", "responded"]


def test_stale_reused_connection_is_retried_once_on_a_fresh_one(daemon, upstream):
    # The upstream keeps the connection open after /closeidle?mode=onreuse, then drops
    # the next request sent on it without a byte of answer: the race between an idle
    # close and reuse. The daemon must resend on a new connection, retries or not.
    d = daemon()
    first = d.batch([upstream.url("/closeidle?mode=onreuse")])
    assert first[0]["status"] == 200
    second = d.batch([upstream.url("/ok")], {"retries": 0})
    r = second[0]
    assert r.get("status") == 200, r
    assert r["reused"] is False
    reqs = upstream.reqs()
    assert [(q.path, q.outcome) for q in reqs] == [("/closeidle", "responded"), ("/ok", "dropped"),
                                                   ("/ok", "responded")]
    assert reqs[1].conn_id == reqs[0].conn_id and reqs[2].conn_id != reqs[0].conn_id
    assert upstream.stats()["connections"] == 2


def test_body_delimited_by_close_is_not_reused(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/nocl"), upstream.url("/ok")], {"concurrency": 1, "order": "input"})
    assert bs[0]["status"] == 200 and bs[0]["bytes"] == 100
    assert bs[1]["status"] == 200 and bs[1]["reused"] is False
    assert upstream.stats()["connections"] == 2


def test_connection_after_error_is_not_reused(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/malformed/dup_cl"), upstream.url("/ok")], {"concurrency": 1})
    assert bs.kinds() == ["protocol", None]
    assert bs[1]["reused"] is False
    assert upstream.stats()["connections"] == 2


def test_idle_connections_closed_after_idle_timeout(daemon, upstream):
    d = daemon(idle_timeout_s=1)
    assert d.batch([upstream.url("/ok")])[0]["status"] == 200
    assert not upstream.wait_for(lambda u: u.peer_closes, 0.5)  # still kept
    assert upstream.wait_for(lambda u: u.peer_closes, 3) == [(1, "idle")]

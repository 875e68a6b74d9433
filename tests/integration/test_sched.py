"""Scheduling limits, measured where they matter: concurrent requests at the upstream.

Requests park on /wait/NAME until the test releases them, so "the limit is reached and
not exceeded" is a pair of waits: one that must succeed, one that must time out."""

import threading

HOLD = 0.3  # how long a limit must hold before the test lets the requests go


def run_in_thread(fn):
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # reported by join_result
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def join_result(timeout=20):
        t.join(timeout)
        assert not t.is_alive(), "batch did not finish"
        if "error" in out:
            raise out["error"]
        return out["value"]

    return join_result


def test_batch_concurrency_limit(daemon, upstream):
    d = daemon()
    done = run_in_thread(lambda: d.batch([upstream.url("/wait/go?i=%d" % i) for i in range(12)],
                                         {"concurrency": 4}))
    assert upstream.wait_for(lambda u: u.inflight == 4, 5), upstream.stats()
    assert not upstream.wait_for(lambda u: u.inflight > 4, HOLD)
    upstream.release("go")
    bs = done()
    assert bs.summary["responses"] == 12
    assert upstream.stats()["peak"] == 4 and upstream.count() == 12
    assert max(r["timing"]["queue_ms"] for r in bs.arrival) > 0


def test_per_host_limit_per_origin(daemon, upstreams):
    a, b = upstreams(2)
    d = daemon()
    reqs = [u.url("/wait/go?i=%d" % i) for i in range(8) for u in (a, b)]
    done = run_in_thread(lambda: d.batch(reqs, {"concurrency": 10, "per_host": 2}))
    assert upstreams.wait_for(lambda: a.inflight == 2 and b.inflight == 2, 5)
    assert not upstreams.wait_for(lambda: a.inflight > 2 or b.inflight > 2, HOLD)
    a.release("go")
    b.release("go")
    assert done().summary["responses"] == 16
    assert a.stats()["peak"] == 2 and b.stats()["peak"] == 2
    assert a.stats()["connections"] <= 2 and b.stats()["connections"] <= 2


def test_per_host_option_capped_by_max_per_host(daemon, upstream):
    d = daemon(max_per_host=3)
    done = run_in_thread(lambda: d.batch([upstream.url("/wait/go?i=%d" % i) for i in range(10)],
                                         {"concurrency": 20, "per_host": 10}))
    assert upstream.wait_for(lambda u: u.inflight == 3, 5)
    assert not upstream.wait_for(lambda u: u.inflight > 3, HOLD)
    upstream.release("go")
    assert done().summary["responses"] == 10
    assert upstream.stats()["peak"] == 3


def test_config_per_host_and_concurrency_are_defaults(daemon, upstreams):
    a, b = upstreams(2)
    d = daemon(per_host=2, concurrency=3)
    reqs = [u.url("/wait/go?i=%d" % i) for i in range(6) for u in (a, b)]
    done = run_in_thread(lambda: d.batch(reqs))
    assert upstreams.wait_for(lambda: a.inflight + b.inflight == 3, 5)
    assert not upstreams.wait_for(lambda: a.inflight + b.inflight > 3 or a.inflight > 2 or b.inflight > 2, HOLD)
    a.release("go")
    b.release("go")
    assert done().summary["responses"] == 12


def test_max_per_host_across_batches(daemon, upstream):
    d = daemon(max_per_host=2)
    first = run_in_thread(lambda: d.batch([upstream.url("/wait/go?b=1&i=%d" % i) for i in range(4)],
                                          {"per_host": 2}))
    second = run_in_thread(lambda: d.batch([upstream.url("/wait/go?b=2&i=%d" % i) for i in range(4)],
                                           {"per_host": 2}))
    assert upstream.wait_for(lambda u: u.inflight == 2, 5)
    assert not upstream.wait_for(lambda u: u.inflight > 2, HOLD)
    upstream.release("go")
    assert first().summary["responses"] == 4 and second().summary["responses"] == 4
    assert upstream.stats()["peak"] == 2


def test_max_connections_across_batches(daemon, upstream):
    d = daemon(max_connections=3)
    first = run_in_thread(lambda: d.batch([upstream.url("/wait/go?b=1&i=%d" % i) for i in range(5)],
                                          {"per_host": 8}))
    second = run_in_thread(lambda: d.batch([upstream.url("/wait/go?b=2&i=%d" % i) for i in range(5)],
                                           {"per_host": 8}))
    assert upstream.wait_for(lambda u: u.inflight == 3, 5)
    assert not upstream.wait_for(lambda u: u.inflight > 3, HOLD)
    upstream.release("go")
    assert first().summary["responses"] == 5 and second().summary["responses"] == 5
    assert upstream.stats()["peak"] == 3


def test_concurrency_capped_by_max_connections(daemon, upstreams):
    a, b = upstreams(2)
    d = daemon(max_connections=2)
    reqs = [u.url("/wait/go?i=%d" % i) for i in range(4) for u in (a, b)]
    done = run_in_thread(lambda: d.batch(reqs, {"concurrency": 50, "per_host": 2}))
    assert upstreams.wait_for(lambda: a.inflight + b.inflight == 2, 5)
    assert not upstreams.wait_for(lambda: a.inflight + b.inflight > 2, HOLD)
    a.release("go")
    b.release("go")
    assert done().summary["responses"] == 8


def test_two_batches_share_an_origin_fairly(daemon, upstream):
    # A big batch holds the origin's two slots with a long queue behind them; a small
    # batch started later must not wait for the whole big one.
    d = daemon(max_per_host=2)
    big = run_in_thread(lambda: d.batch([upstream.url("/delay/50?b=A&i=%d" % i) for i in range(40)],
                                        {"per_host": 2}))
    assert upstream.wait_for(lambda u: u.inflight == 2, 5)
    small = d.batch([upstream.url("/delay/50?b=B&i=%d" % i) for i in range(2)], {"per_host": 2})
    served_a = sum(1 for r in upstream.reqs("/delay") if r.query["b"] == "A")
    assert small.summary["responses"] == 2
    assert served_a <= 30, "the small batch waited for %d of the big one's 40 requests" % served_a
    assert big().summary["responses"] == 40
    assert upstream.stats()["peak"] <= 2

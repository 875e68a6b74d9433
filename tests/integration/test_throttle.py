"""Rate limits and origin backoff (issue 12): the batch options rate_per_host and rate_burst,
the configured rate_limit lines (exact origins and *.domain patterns, shared by every batch),
the origin pause after a 429 or a 503 with Retry-After and the slow restart after it, the
throttled wait as queue time (timing.throttle_ms, not timeout_ms, ended by deadline_ms),
GET /v1/origins and the /metrics additions.

Everything is measured where it happens: the upstream records when each request arrived
(Request.t_start, monotonic; t_wall for HTTP-dates) and when it answered (t_answer). A
request takes its token when it is dispatched, so its arrival is dispatch + connect: the
checks allow half a token interval of jitter where arrivals are compared with each other,
and never let an arrival come before the moment the limit or pause allows (EARLY: timer
rounding only); SLACK bounds how late, so that a limit stricter than asked fails too.
"""

import json
import math
import re
import signal
import time
from datetime import datetime, timezone

import pytest

from client import parse_metrics
from harness import config_text

EARLY = 0.02  # how much earlier than allowed an arrival may be seen (clock and timer rounding)
SLACK = 0.6  # how much later than due a throttled request may go, on a loaded 2-core machine


# --- helpers ------------------------------------------------------------------------------

def arrivals(up, prefix=None):
    return sorted(r.t_start for r in up.reqs(prefix))


def max_in_window(ts, width):
    """The most arrivals in any closed window [t, t + width]."""
    ts = sorted(ts)
    best = j = 0
    for i, t in enumerate(ts):
        while t - ts[j] > width:
            j += 1
        best = max(best, i - j + 1)
    return best


def check_rate(ts, rate, burst, what="arrivals"):
    """Arrival times kept by a token bucket of `rate` per second and `burst`, starting full:
    the burst arrives at once, then no more than `rate` per sliding second, and the whole run
    takes (n - burst) / rate seconds (not much less, not much more).

    The sliding window is 1 s less half a token interval, so that a dispatch-to-arrival jitter
    under that cannot add an arrival to a window; a bucket that lets one request too many in
    per second still exceeds the bound (n arrivals in a window shorter than 1 s need
    n < rate + burst)."""
    ts = sorted(ts)
    n = len(ts)
    jit = 0.5 / rate
    assert n > burst, "%s: too few to measure a rate" % what
    assert ts[burst - 1] - ts[0] < jit, "%s: the burst of %d did not go at once: %r" % (
        what, burst, [round(t - ts[0], 3) for t in ts])
    limit = math.ceil(rate) + burst - 1
    worst = max_in_window(ts, 1.0 - jit)
    assert worst <= limit, "%s: %d arrivals within %.3f s (at most %d at %s/s, burst %d): %r" % (
        what, worst, 1.0 - jit, limit, rate, burst, [round(t - ts[0], 3) for t in ts])
    span, due = ts[-1] - ts[0], (n - burst) / rate
    assert span >= due - EARLY, "%s: %d arrivals in %.3f s, the limit needs %.3f s: %r" % (
        what, n, span, due, [round(t - ts[0], 3) for t in ts])
    assert span <= due + SLACK, "%s: %d arrivals took %.3f s, %.3f s at %s/s burst %d: %r" % (
        what, n, span, due, rate, burst, [round(t - ts[0], 3) for t in ts])


def timing(r):
    t = r["timing"]
    assert "throttle_ms" in t, "no timing.throttle_ms: %r" % r
    assert isinstance(t["throttle_ms"], (int, float)) and t["throttle_ms"] >= 0, r
    assert t["queue_ms"] >= t["throttle_ms"] - 0.5, "throttle_ms is a part of queue_ms: %r" % t
    return t


def statuses(bs):
    return [r.get("status", r.get("error", {}).get("kind")) for r in bs.results_by_index]


def poll(fn, timeout, interval=0.02):
    """Asks the daemon again until fn() is true (bounded); returns fn()'s last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)  # between two questions to the daemon, not instead of one


def origins(d):
    """GET /v1/origins -> {origin: entry}."""
    r = d.client().get("/v1/origins")
    assert r.status == 200, (r.status, r.body)
    assert r.content_type == "application/json", r.headers
    doc = json.loads(r.body)
    assert set(doc) == {"origins"} and isinstance(doc["origins"], list), doc
    out = {}
    for o in doc["origins"]:
        assert re.fullmatch(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+):\d+", o["origin"]), o
        assert o["origin"] not in out, "origin listed twice: %r" % doc
        out[o["origin"]] = o
    return out


def origin_key(up, host=None):
    return "%s://%s:%d" % (up.scheme, host or up.host, up.port)


def metrics_samples(d):
    r = d.client().get("/metrics")
    assert r.status == 200
    text = r.body.decode()
    totals, samples = parse_metrics(text)
    return text, totals, {(n, l): v for n, l, v in samples}


def pauses(d, status):
    return metrics_samples(d)[2].get(("fanoutd_origin_pauses_total", '{status="%d"}' % status))


def rewrite_conf(d, **changes):
    keys = dict(d.keys, **changes)
    with open(d.conf, "w") as f:
        f.write(config_text(keys))
    d.keys = keys


def reload(d):
    """SIGHUP, then waits for the READY=1 that ends the reload (the reload is done)."""
    before = len(d.drain_notify())
    d.send_signal(signal.SIGHUP)
    for _ in range(50):  # 50 x 0.1 s at most
        after = [line for m in d.drain_notify()[before:] for line in m.split("\n")]
        if "RELOADING=1" in after and "READY=1" in after[after.index("RELOADING=1"):]:
            return
        d.wait_notify("never", timeout=0.1)
    raise AssertionError("no READY=1 after RELOADING=1; stderr:\n" + d.stderr()[-2000:])


def one(up, prefix):
    rs = up.reqs(prefix)
    assert len(rs) == 1, (prefix, rs)
    return rs[0]


# --- the test upstream's new knobs -------------------------------------------------------

def test_upstream_retry_after_date_and_wait_status(upstream):
    """Self-check (no daemon): retry_after_date sends an HTTP-date S s after the next whole
    second and records it; /wait answers the status it is given; arrival and answer times
    and statuses are recorded."""
    import email.utils
    import http.client

    c = http.client.HTTPConnection(upstream.host, upstream.port, timeout=5)
    c.request("GET", "/status/429?retry_after_date=2")
    r = c.getresponse()
    r.read()
    req = one(upstream, "/status/429")
    assert r.status == 429 and req.status == 429
    sent = email.utils.parsedate_to_datetime(r.getheader("Retry-After")).timestamp()
    assert sent == req.retry_after_until
    assert req.t_wall + 2 <= sent <= req.t_wall + 3.01
    assert req.t_start <= req.t_answer
    c.request("GET", "/wait/w?status=503&retry_after=7")
    assert upstream.wait_for(lambda u: u.count("/wait/w") == 1)
    assert upstream.reqs("/wait/w")[0].t_answer is None  # held until released
    upstream.release("w")
    r = c.getresponse()
    r.read()
    assert r.status == 503 and r.getheader("Retry-After") == "7"
    c.request("GET", "/flaky/1?key=f&status=429&retry_after_date=0")
    r = c.getresponse()
    r.read()
    assert r.status == 429 and email.utils.parsedate_to_datetime(r.getheader("Retry-After"))
    c.request("GET", "/wait/x")  # without status: 200 as before
    upstream.release("x")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"released x\n")
    c.close()


# --- rate limits ---------------------------------------------------------------------------

@pytest.mark.parametrize("rate,burst,n", [(10, 3, 13), (2.5, 1, 4)])
def test_rate_per_host_paces_arrivals(daemon, upstream, rate, burst, n):
    d = daemon()
    before = d.metrics()
    bs = d.batch([upstream.url("/ok?i=%d" % i) for i in range(n)],
                 {"rate_per_host": rate, "rate_burst": burst, "concurrency": 64})
    assert statuses(bs) == [200] * n
    check_rate(arrivals(upstream), rate, burst)
    thr = sorted(timing(r)["throttle_ms"] for r in bs.arrival)
    assert thr[:burst] == [0.0] * burst, thr  # the burst did not wait
    assert all(t > 0 for t in thr[burst:]), thr  # every other request did
    due = (n - burst) / rate * 1000
    assert due - 50 <= thr[-1] <= due + SLACK * 1000, thr
    after = d.metrics()
    assert after["fanoutd_throttled_requests_total"] - before["fanoutd_throttled_requests_total"] == n - burst
    waited = after["fanoutd_throttle_seconds_total"] - before["fanoutd_throttle_seconds_total"]
    assert abs(waited - sum(thr) / 1000) <= 0.05 + 0.1 * sum(thr) / 1000, (waited, thr)


def test_configured_limit_is_shared_by_concurrent_batches(daemon, upstream):
    d = daemon(rate_limit="http://127.0.0.1:%d 10 2" % upstream.port)
    a = d.stream([upstream.url("/ok?b=a&i=%d" % i) for i in range(6)])
    b = d.stream([upstream.url("/ok?b=b&i=%d" % i) for i in range(6)])
    ra, rb = a.finish(), b.finish()
    assert statuses(ra) == [200] * 6 and statuses(rb) == [200] * 6
    # One bucket for both: 12 requests at 10/s after a burst of 2 take a second (two
    # buckets would take 0.4 s).
    check_rate(arrivals(upstream), 10, 2, "both batches together")
    waited = [timing(r)["throttle_ms"] > 0 for r in ra.arrival + rb.arrival]
    assert waited.count(True) == 10, waited


def test_a_big_batch_does_not_starve_a_small_one_on_a_shared_limit(daemon, upstream):
    d = daemon(rate_limit="http://127.0.0.1:%d 10 1" % upstream.port)
    big = d.stream([upstream.url("/ok?big=%d" % i) for i in range(30)])
    assert upstream.wait_for(lambda u: u.count("/ok") >= 2)
    t0 = time.monotonic()
    small = d.batch([upstream.url("/ok?small")])
    assert statuses(small) == [200]
    (r,) = [r for r in upstream.reqs() if "small" in r.query]
    # Batches take turns for the tokens: the small one waits a token or two, not for 28.
    assert r.t_start - t0 < 0.35, "the small batch waited %.3f s" % (r.t_start - t0)
    assert upstream.count("/ok") < 10
    big.close()  # the caller goes: the big batch is cancelled


@pytest.mark.parametrize("source", ["option", "config"])
def test_a_second_origin_in_the_batch_is_not_held(daemon, upstreams, source):
    slow, fast = upstreams(2)
    if source == "option":  # every origin has a bucket of its own: 4/s, burst 2
        d = daemon()
        opts, rate, burst, nfast = {"rate_per_host": 4, "rate_burst": 2}, 4, 2, 2
    else:  # only the slow origin is limited
        d = daemon(rate_limit="http://127.0.0.1:%d 4 2" % slow.port)
        opts, rate, burst, nfast = {}, 4, 2, 6
    # The fast origin's requests come last: they must not queue behind the throttled ones.
    urls = [slow.url("/ok?i=%d" % i) for i in range(6)] + [fast.url("/ok?j=%d" % j) for j in range(nfast)]
    bs = d.batch(urls, dict(opts, concurrency=64))
    assert statuses(bs) == [200] * (6 + nfast)
    check_rate(arrivals(slow), rate, burst, "the limited origin")
    f, s0 = arrivals(fast), arrivals(slow)[0]
    assert len(f) == nfast and f[-1] - s0 < 0.5 / rate, (
        "the other origin waited: %r" % [round(t - s0, 3) for t in f])
    assert [timing(bs[i])["throttle_ms"] for i in range(6, 6 + nfast)] == [0.0] * nfast


def test_the_stricter_of_the_batch_and_configured_limits_applies(daemon, upstreams):
    strict, lax = upstreams(2)
    d = daemon(rate_limit=["http://127.0.0.1:%d 4 1" % strict.port, "http://127.0.0.1:%d 50 10" % lax.port])
    urls = [strict.url("/ok?i=%d" % i) for i in range(3)] + [lax.url("/ok?j=%d" % j) for j in range(6)]
    bs = d.batch(urls, {"rate_per_host": 10, "rate_burst": 3, "concurrency": 64})
    assert statuses(bs) == [200] * 9
    check_rate(arrivals(strict), 4, 1, "configured 4/s under a batch's 10/s")
    check_rate(arrivals(lax), 10, 3, "the batch's 10/s under a configured 50/s")


def test_rate_limit_patterns(daemon, upstream):
    p = upstream.port
    d = daemon(rate_limit=[
        "http://*.test:%d 4 1" % p,  # a.test and b.test, a bucket each
        "http://*.a.test:%d 1 1" % p,  # strictly below a.test: not a.test itself
        "http://c.test:%d 50 5" % p,  # an exact origin wins over a pattern
        "http://*.test 1 1",  # no port: port 80, another origin
    ])
    urls = ([upstream.url("/ok?h=a&i=%d" % i, host="a.test") for i in range(3)]
            + [upstream.url("/ok?h=b&i=%d" % i, host="b.test") for i in range(3)]
            + [upstream.url("/ok?h=c&i=%d" % i, host="c.test") for i in range(5)]
            + [upstream.url("/ok?h=ip&i=%d" % i) for i in range(3)])
    bs = d.batch(urls, {"concurrency": 64})
    assert statuses(bs) == [200] * 14
    by = {h: sorted(r.t_start for r in upstream.reqs() if r.query["h"] == h) for h in ("a", "b", "c", "ip")}
    check_rate(by["a"], 4, 1, "a.test under *.test")
    check_rate(by["b"], 4, 1, "b.test under *.test")
    assert abs(by["a"][0] - by["b"][0]) < 0.125, "a.test and b.test share a bucket"
    assert by["c"][-1] - by["c"][0] < 0.1, "c.test's own line (burst 5) did not win"
    assert by["ip"][-1] - by["ip"][0] < 0.1, "127.0.0.1 is not below .test"
    o = origins(d)
    assert o["http://a.test:%d" % p]["rate_limit"] == {"rate": 4, "burst": 1}
    assert o["http://b.test:%d" % p]["rate_limit"] == {"rate": 4, "burst": 1}
    assert o["http://c.test:%d" % p]["rate_limit"] == {"rate": 50, "burst": 5}
    assert o["http://127.0.0.1:%d" % p]["rate_limit"] is None


def test_redirect_hops_and_retries_take_tokens(daemon, upstreams):
    r_up, f_up = upstreams(2)
    d = daemon()
    bs = d.batch([r_up.url("/redirect/2"), f_up.url("/flaky/2?key=f&status=502")],
                 {"rate_per_host": 3, "rate_burst": 1, "retries": 2, "timeout_ms": 5000})
    assert statuses(bs) == [200, 200]
    assert bs[1]["attempts"] == 3
    for up, what in ((r_up, "redirect hops"), (f_up, "retries")):
        ts = arrivals(up)
        assert len(ts) == 3, (what, ts)
        gaps = [round(b - a, 3) for a, b in zip(ts, ts[1:])]
        # 1/3 s a token; a retry's own backoff (at most 200 ms for the second) is shorter.
        assert all(g >= 1 / 3 - EARLY for g in gaps), (what, gaps)
        assert all(g <= 1 / 3 + SLACK for g in gaps), (what, gaps)
    # The throttled waits are queue time, not part of total_ms. The hops follow at once: the
    # whole 2/3 s is throttled. A retry first sleeps its own backoff (50..100 ms, then
    # 100..200 ms, counted against timeout_ms as before), then waits for the rest.
    t = timing(bs[0])
    assert t["throttle_ms"] >= 2000 / 3 - 50 and t["total_ms"] < 300, t
    t = timing(bs[1])
    assert t["throttle_ms"] >= 2000 / 3 - 300 - 50 and t["total_ms"] < 450, t
    assert t["queue_ms"] + t["total_ms"] >= 2000 / 3 - 50, t


def test_timeout_ms_does_not_run_while_throttled(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/ok?i=%d" % i) for i in range(3)],
                 {"rate_per_host": 4, "rate_burst": 1, "timeout_ms": 150})
    assert statuses(bs) == [200] * 3
    assert max(timing(r)["throttle_ms"] for r in bs.arrival) >= 450
    assert all(r["timing"]["total_ms"] < 150 for r in bs.arrival)
    # And while the origin is paused.
    assert statuses(d.batch([upstream.url("/status/429?retry_after=1")])) == [429]
    bs = d.batch([upstream.url("/ok?after=pause")], {"timeout_ms": 200})
    assert statuses(bs) == [200]
    assert timing(bs[0])["throttle_ms"] >= 800, bs[0]["timing"]


def test_deadline_ends_throttled_waits(daemon, upstreams):
    up, paused = upstreams(2)
    d = daemon()
    bs = d.batch([up.url("/ok?i=%d" % i) for i in range(3)], {"rate_per_host": 1, "deadline_ms": 400})
    assert sorted(statuses(bs), key=str) == [200, "deadline", "deadline"], statuses(bs)
    assert bs.summary["complete"] is False
    assert 350 <= bs.summary["elapsed_ms"] < 900, bs.summary
    assert up.count() == 1
    # Their whole wait since the first request took the token was for a token:
    # throttle_ms says so. (Before that the batch was starting, which a loaded
    # machine can stretch: the first request's own queue_ms.)
    started = min(timing(r)["queue_ms"] for r in bs.arrival if "error" not in r)
    for r in bs.arrival:
        if "error" in r:
            t = timing(r)
            assert t["throttle_ms"] >= 400 - started - 100 and t["throttle_ms"] <= t["queue_ms"], r
    # A pause is ended the same way.
    assert statuses(d.batch([paused.url("/status/429?retry_after=30")])) == [429]
    bs = d.batch([paused.url("/ok")], {"deadline_ms": 300})
    assert statuses(bs) == ["deadline"]
    assert 250 <= bs.summary["elapsed_ms"] < 900, bs.summary
    assert paused.count() == 1
    assert timing(bs[0])["throttle_ms"] >= 200, bs[0]


# --- the origin pause ------------------------------------------------------------------

def test_429_with_retry_after_pauses_the_origin_for_every_batch_then_restarts_slowly(daemon, upstreams):
    up, other = upstreams(2)
    d = daemon()
    # A request of another batch in flight when the 429 comes goes on.
    c = d.stream([up.url("/wait/inflight")])
    assert up.wait_for(lambda u: u.count("/wait/inflight") == 1)
    bs = d.batch([up.url("/status/429?retry_after=2")])
    assert statuses(bs) == [429] and bs[0]["attempts"] == 1  # the 429 is that request's result
    t429 = one(up, "/status/429").t_answer
    b = d.stream([up.url("/wait/s%d" % i) for i in range(8)] + [other.url("/ok")])
    assert other.wait_for(lambda u: u.count("/ok") == 1, 1.0), "another origin was held"
    up.release("inflight")
    assert statuses(c.finish()) == [200]
    assert time.monotonic() < t429 + 2, "the request in flight was not answered during the pause"
    o = origins(d)[origin_key(up)]
    assert o["pause"]["status"] == 429 and o["queued"] == 8, o

    def arrived():
        return sorted(up.reqs("/wait/s"), key=lambda r: r.t_start)

    def window():
        return origins(d)[origin_key(up)]["restart"]

    # Nothing before the pause ends; then one request at a time.
    assert up.wait_for(lambda u: u.count("/wait/s") >= 1, 4)
    first = arrived()[0]
    assert t429 + 2 - EARLY <= first.t_start <= t429 + 2 + SLACK, first.t_start - t429
    assert window() == {"window": 1}
    assert not up.wait_for(lambda u: u.count("/wait/s") >= 2, 0.3), "slow restart: more than 1 in flight"
    # Each success doubles the window: 2 ...
    up.release(first.path.rsplit("/", 1)[1])
    assert up.wait_for(lambda u: u.count("/wait/s") >= 3, 2)
    assert window() == {"window": 2}
    assert not up.wait_for(lambda u: u.count("/wait/s") >= 4, 0.3), "window 2: more than 2 in flight"
    # ... then 4: with one of the two answered, three more go.
    up.release(arrived()[1].path.rsplit("/", 1)[1])
    assert up.wait_for(lambda u: u.count("/wait/s") >= 6, 2)
    assert window() == {"window": 4}
    assert not up.wait_for(lambda u: u.count("/wait/s") >= 7, 0.3), "window 4: more than 4 in flight"
    for i in range(8):
        up.release("s%d" % i)
    rb = b.finish()
    assert statuses(rb) == [200] * 9
    for i in range(8):
        assert timing(rb[i])["throttle_ms"] >= 1800, rb[i]["timing"]
    assert timing(rb[8])["throttle_ms"] == 0.0


def test_retry_after_http_date(daemon, upstream):
    # A 503 pauses only with a valid Retry-After, so the date must have been understood.
    d = daemon()
    # The 503 leaves half-way through a wall-clock second: a pause counted from the whole
    # second would end half a second after the date, and is caught.
    deadline = time.monotonic() + 2
    while not 0.5 <= time.time() % 1 < 0.6:
        assert time.monotonic() < deadline
        time.sleep(0.005)  # waiting for the wall clock to get there, not for the daemon
    assert statuses(d.batch([upstream.url("/status/503?retry_after_date=1")])) == [503]
    r503 = one(upstream, "/status/503")
    until = r503.retry_after_until
    assert 0.5 <= r503.t_wall % 1 < 0.8, "the test could not send the 503 when it meant to"
    bs = d.batch([upstream.url("/ok")])
    assert statuses(bs) == [200]
    got = one(upstream, "/ok").t_wall
    assert until - EARLY <= got <= until + 0.3, "arrived %.3f s after the date" % (got - until)
    assert timing(bs[0])["throttle_ms"] >= 1000


def test_429_without_retry_after_pauses_1s_doubling_until_a_success(daemon, upstream):
    d = daemon()

    def go(path, expect):
        bs = d.batch([upstream.url(path)])
        assert statuses(bs) == [expect], (path, bs.arrival)
        (r,) = [r for r in upstream.reqs() if r.target == path]
        return r

    r1 = go("/status/429?i=1", 429)
    r2 = go("/status/429?i=2", 429)  # sent after the first pause began: the next is 2 s
    assert r1.t_answer + 1 - EARLY <= r2.t_start <= r1.t_answer + 1 + SLACK, r2.t_start - r1.t_answer
    r3 = go("/ok?i=3", 200)  # resets the doubling
    assert r2.t_answer + 2 - EARLY <= r3.t_start <= r2.t_answer + 2 + SLACK, r3.t_start - r2.t_answer
    r4 = go("/status/429?i=4", 429)
    assert r4.t_start - r3.t_answer < 0.3
    r5 = go("/ok?i=5", 200)
    assert r4.t_answer + 1 - EARLY <= r5.t_start <= r4.t_answer + 1 + SLACK, r5.t_start - r4.t_answer


def test_429s_of_requests_in_flight_together_count_as_one(daemon, upstream):
    d = daemon()
    bs = d.stream([upstream.url("/wait/x?status=429&i=%d" % i) for i in range(3)])
    assert upstream.wait_for(lambda u: u.count("/wait/x") == 3)
    upstream.release("x")
    assert statuses(bs.finish()) == [429] * 3
    last = max(r.t_answer for r in upstream.reqs("/wait/x"))
    first = min(r.t_answer for r in upstream.reqs("/wait/x"))
    assert statuses(d.batch([upstream.url("/ok")])) == [200]
    got = one(upstream, "/ok").t_start
    # 1 s from the first (or a renewal from the last), not 2 or 4 s.
    assert first + 1 - EARLY <= got <= last + 1 + SLACK, (got - first, got - last)


def test_max_backoff_s_caps_pauses(daemon, upstream):
    d = daemon(max_backoff_s=1)
    prev = None
    # Retry-After 30, then two 429s without it (the second would pause 2 s): 1 s each.
    for path in ("/status/429?retry_after=30", "/status/429?n=1", "/status/429?n=2", "/ok"):
        bs = d.batch([upstream.url(path)])
        assert statuses(bs) == [200 if path == "/ok" else 429], path
        (r,) = [r for r in upstream.reqs() if r.target == path]
        if prev is not None:
            assert prev.t_answer + 1 - EARLY <= r.t_start <= prev.t_answer + 1 + SLACK, (
                path, r.t_start - prev.t_answer)
        prev = r


def test_503_pauses_only_with_retry_after(daemon, upstream):
    d = daemon()
    assert statuses(d.batch([upstream.url("/status/503")])) == [503]
    t = one(upstream, "/status/503").t_answer
    bs = d.batch([upstream.url("/ok?i=1")])
    assert statuses(bs) == [200] and timing(bs[0])["throttle_ms"] == 0.0
    assert one(upstream, "/ok").t_start - t < 0.3
    assert origins(d)[origin_key(upstream)]["pause"] is None
    assert pauses(d, 503) == 0
    assert statuses(d.batch([upstream.url("/status/503?retry_after=1")])) == [503]
    t = [r for r in upstream.reqs("/status/503") if r.query.get("retry_after")][0].t_answer
    assert pauses(d, 503) == 1
    bs = d.batch([upstream.url("/ok?i=2")])
    assert statuses(bs) == [200]
    got = [r for r in upstream.reqs("/ok") if r.query["i"] == "2"][0].t_start
    assert t + 1 - EARLY <= got <= t + 1 + SLACK, got - t


def test_backoff_0_never_pauses(daemon, upstreams):
    up, other = upstreams(2)
    d = daemon(backoff=0)
    for path in ("/status/429?retry_after=5", "/status/429", "/status/503?retry_after=5"):
        assert statuses(d.batch([up.url(path)])) == [int(path[8:11])]
        t = [r for r in up.reqs() if r.target == path][0].t_answer
        bs = d.batch([up.url("/ok?after=%s" % path[8:11])])
        assert statuses(bs) == [200] and timing(bs[0])["throttle_ms"] == 0.0
        assert up.reqs("/ok")[-1].t_start - t < 0.3, path
    assert origins(d)[origin_key(up)]["pause"] is None
    assert pauses(d, 429) == 0 and pauses(d, 503) == 0
    # A retry sleeps Retry-After on its own, as before: counted in total_ms, and no other
    # request to the origin waits meanwhile.
    s = d.stream([other.url("/flaky/1?key=k&status=429&retry_after=1")], {"retries": 1, "timeout_ms": 5000})
    assert other.wait_for(lambda u: u.count("/flaky") == 1)
    t0 = other.reqs("/flaky")[0].t_answer
    assert statuses(d.batch([other.url("/ok")])) == [200]
    assert other.reqs("/ok")[0].t_start - t0 < 0.5
    r = s.finish()[0]
    assert r["status"] == 200 and r["attempts"] == 2
    a, b = other.reqs("/flaky")
    assert b.t_start - a.t_answer >= 1 - EARLY
    assert timing(r)["throttle_ms"] == 0.0 and r["timing"]["total_ms"] >= 950, r["timing"]


@pytest.mark.parametrize("backoff,status", [(1, 429), (1, 503), (0, 429)])
def test_a_retry_waits_the_pause_as_queue_time(daemon, upstream, backoff, status):
    d = daemon(backoff=backoff)
    bs = d.batch([upstream.url("/flaky/1?key=k&status=%d&retry_after=1" % status)],
                 {"retries": 1, "timeout_ms": 700})
    r = bs[0]
    if backoff:
        # The pause is queue time: timeout_ms (700) does not run while the retry waits 1 s.
        assert r.get("status") == 200 and r["attempts"] == 2, r
        a, b = upstream.reqs("/flaky")
        assert a.t_answer + 1 - EARLY <= b.t_start <= a.t_answer + 1 + SLACK, b.t_start - a.t_answer
        t = timing(r)
        assert t["throttle_ms"] >= 900 and t["total_ms"] < 700, t
    else:
        # Without backoff a Retry-After beyond the request's remaining time is not waited for.
        assert r.get("status") == status and r["attempts"] == 1, r
        assert upstream.count("/flaky") == 1
        assert bs.summary["elapsed_ms"] < 1000


# --- configuration ---------------------------------------------------------------------

def test_reload_changes_the_limits(daemon, upstream):
    p = upstream.port
    d = daemon(rate_limit="http://127.0.0.1:%d 20 5" % p)
    bs = d.batch([upstream.url("/ok?phase=1&i=%d" % i) for i in range(5)])
    assert statuses(bs) == [200] * 5
    ts = sorted(r.t_start for r in upstream.reqs() if r.query["phase"] == "1")
    assert ts[-1] - ts[0] < 0.1  # the burst of 5
    rewrite_conf(d, rate_limit="http://127.0.0.1:%d 2 1" % p)
    reload(d)
    bs = d.batch([upstream.url("/ok?phase=2&i=%d" % i) for i in range(3)])
    assert statuses(bs) == [200] * 3
    check_rate([r.t_start for r in upstream.reqs() if r.query["phase"] == "2"], 2, 1, "after the reload")
    assert origins(d)[origin_key(upstream)]["rate_limit"] == {"rate": 2, "burst": 1}
    # No limit and no backoff any more.
    rewrite_conf(d, rate_limit=None, backoff=0)
    reload(d)
    bs = d.batch([upstream.url("/ok?phase=3&i=%d" % i) for i in range(5)] + [upstream.url("/status/429?phase=3")],
                 {"concurrency": 1})
    assert statuses(bs) == [200] * 5 + [429]
    bs = d.batch([upstream.url("/ok?phase=4")])
    assert statuses(bs) == [200] and timing(bs[0])["throttle_ms"] == 0.0
    ts = sorted(r.t_start for r in upstream.reqs() if r.query["phase"] in ("3", "4"))
    assert ts[-1] - ts[0] < 0.5, [round(t - ts[0], 3) for t in ts]
    assert origins(d)[origin_key(upstream)]["rate_limit"] is None


BAD_OPTIONS = [
    ("rate_per_host", 0), ("rate_per_host", -1), ("rate_per_host", -0.5), ("rate_per_host", "10"),
    ("rate_per_host", 1000001), ("rate_per_host", 1e12), ("rate_per_host", True), ("rate_per_host", [1]),
    ("rate_burst", 0), ("rate_burst", -1), ("rate_burst", "2"), ("rate_burst", 1000001), ("rate_burst", 1.5),
    ("rate_burst", True),
]


def test_bad_rate_options_are_400_naming_the_option(daemon, upstream):
    d = daemon()
    for name, value in BAD_OPTIONS:
        opts = {"rate_per_host": 5, name: value}
        bs = d.client().stream_batch([upstream.url("/ok")], opts)
        assert bs.status == 400, (name, value, bs.status)
        err = bs.error()["error"]
        assert err["kind"] == "bad_request" and name in err["message"], (name, value, err)
    assert upstream.count() == 0
    # The bounds themselves, and fractions of a request a second, are accepted.
    for opts in ({"rate_per_host": 0.5, "rate_burst": 2}, {"rate_per_host": 1000000, "rate_burst": 1000000},
                 {"rate_per_host": 1, "rate_burst": 2}):
        bs = d.batch([upstream.url("/ok?a"), upstream.url("/ok?b")], opts)
        assert statuses(bs) == [200, 200], opts


BAD_LINES = [
    ("bad scheme", ["rate_limit = ftp://a.test 10"], 2),
    ("no scheme", ["rate_limit = a.test 10"], 2),
    ("path present", ["rate_limit = http://a.test/api 10"], 2),
    ("query present", ["rate_limit = http://a.test?x=1 10"], 2),
    ("credentials", ["rate_limit = http://u@a.test 10"], 2),
    ("port 0", ["rate_limit = http://a.test:0 10"], 2),
    ("port too big", ["rate_limit = http://a.test:70000 10"], 2),
    ("v6 without brackets", ["rate_limit = http://::1 10"], 2),
    ("wildcard inside", ["rate_limit = http://a.*.test 10"], 2),
    ("wildcard alone", ["rate_limit = http://* 10"], 2),
    ("no rate", ["rate_limit = http://a.test"], 2),
    ("rate 0", ["rate_limit = http://a.test 0"], 2),
    ("rate 0.0", ["rate_limit = http://a.test 0.0"], 2),
    ("negative rate", ["rate_limit = http://a.test -5"], 2),
    ("rate not a number", ["rate_limit = http://a.test ten"], 2),
    ("rate too big", ["rate_limit = http://a.test 1000001"], 2),
    ("burst 0", ["rate_limit = http://a.test 10 0"], 2),
    ("burst fractional", ["rate_limit = http://a.test 10 1.5"], 2),
    ("burst too big", ["rate_limit = http://a.test 10 1000001"], 2),
    ("extra field", ["rate_limit = http://a.test 10 5 7"], 2),
    ("garbage", ["rate_limit = garbage"], 2),
    ("empty", ["rate_limit ="], 2),
    ("duplicate origin", ["rate_limit = http://a.test 10", "rate_limit = http://a.test 5"], 3),
    ("duplicate by the default port", ["rate_limit = http://a.test 10", "rate_limit = http://a.test:80 5"], 3),
    ("duplicate pattern", ["rate_limit = https://*.a.test 10", "rate_limit = https://*.a.test:443 5"], 3),
    ("backoff 2", ["backoff = 2"], 2),
    ("max_backoff_s 0", ["max_backoff_s = 0"], 2),
    ("max_backoff_s too big", ["max_backoff_s = 86401"], 2),
]


@pytest.mark.parametrize("name,lines,bad", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_check_flag_names_the_bad_line(fanoutd, name, lines, bad):
    # Line 2 is a good rate_limit line: only the bad one (bad + 1) is reported.
    p = fanoutd(["-t"], config="# rate limits\nrate_limit = http://good.test:8080 5\n" + "\n".join(lines) + "\n")
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    errs = p.stderr.strip().splitlines()
    assert any("fanoutd.conf:%d:" % (bad + 1) in l for l in errs), errs
    assert not any("fanoutd.conf:%d:" % n in l for l in errs for n in range(1, bad + 1)), errs


def test_check_flag_accepts_good_rate_limits(fanoutd):
    p = fanoutd(["-t"], config="\n".join([
        "rate_limit = http://a.test/ 10",  # a bare "/" may follow (doc/config.md)
        "rate_limit = https://a.test 0.5 3",  # another scheme: another origin
        "rate_limit = http://a.test:8080 20 1",  # another port
        "rate_limit = http://127.0.0.1:9000 1000000 1000000",
        "rate_limit = http://[::1]:8080 20",
        "rate_limit = https://*.example.com 5 2",
        "rate_limit = https://*.api.example.com 1",
        "rate_limit = https://api.example.com 7",  # the exact origin beside the patterns
        "backoff = 0",
        "max_backoff_s = 86400",
    ]) + "\n")
    assert (p.returncode, p.stdout.strip()) == (0, "configuration ok"), p.stderr
    p = fanoutd(["-t"], config="backoff = 1\nmax_backoff_s = 1\n")
    assert p.returncode == 0, p.stderr


def test_check_flag_reports_every_bad_rate_limit_line(fanoutd):
    p = fanoutd(["-t"], config="rate_limit = http://a.test 0\nrate_limit = http://b.test 5\n"
                               "rate_limit = http://c.test/x 5\nrate_limit = http://b.test 6\n")
    assert p.returncode == 2
    errs = p.stderr.strip().splitlines()
    for n in (1, 3, 4):
        assert any("fanoutd.conf:%d:" % n in l for l in errs), (n, errs)
    assert not any("fanoutd.conf:2:" in l for l in errs), errs


# --- GET /v1/origins and /metrics --------------------------------------------------------

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_origins_endpoint(daemon, upstreams, h2upstreams):
    up, other = upstreams(2)
    (h2,) = h2upstreams(1)
    d = daemon(rate_limit="http://127.0.0.1:%d 20 1" % up.port)
    assert d.client().request("POST", "/v1/origins", body=b"{}").status == 405
    s = d.stream([up.url("/wait/o1"), up.url("/wait/o2"), up.url("/ok?queued"), other.url("/ok"),
                  h2.url("/wait/h1"), h2.url("/wait/h2")], {"per_host": 2})
    assert up.wait_for(lambda u: u.count("/wait/o") == 2)
    assert other.wait_for(lambda u: u.count("/ok") == 1)
    assert h2.wait_for(lambda u: u.count("/wait/h") == 2)

    def settled():
        o = origins(d)
        return o if o.get(origin_key(other), {}).get("in_flight") == 0 else None

    o = poll(settled, 2)
    assert o, origins(d)
    assert o[origin_key(up)] == {
        "origin": "http://127.0.0.1:%d" % up.port,
        "connections": {"total": 2, "http/1.1": 2, "h2": 0, "idle": 0},
        "streams": 0, "in_flight": 2, "queued": 1,
        "rate_limit": {"rate": 20, "burst": 1}, "pause": None, "restart": None}, o[origin_key(up)]
    assert o[origin_key(other)] == {
        "origin": "http://127.0.0.1:%d" % other.port,
        "connections": {"total": 1, "http/1.1": 1, "h2": 0, "idle": 1},
        "streams": 0, "in_flight": 0, "queued": 0,
        "rate_limit": None, "pause": None, "restart": None}, o[origin_key(other)]
    h = o["https://127.0.0.1:%d" % h2.port]
    assert h["connections"] == {"total": 1, "http/1.1": 0, "h2": 1, "idle": 0}, h
    assert (h["streams"], h["in_flight"], h["queued"]) == (2, 2, 0), h
    for name in ("o1", "o2"):
        up.release(name)
    h2.release("h1")
    h2.release("h2")
    assert statuses(s.finish()) == [200] * 6
    o = origins(d)[origin_key(up)]
    assert (o["in_flight"], o["queued"]) == (0, 0) and o["connections"]["idle"] == o["connections"]["total"] >= 1, o
    # An idle origin still shows its configured limit once its bucket has refilled (one
    # token is 50 ms; this watches for 200 ms that it never turns null).
    assert not poll(lambda: origins(d)[origin_key(up)]["rate_limit"] != {"rate": 20, "burst": 1}, 0.2), (
        origins(d)[origin_key(up)])
    # Pauses: with Retry-After, and without (retry_after_ms null).
    assert statuses(d.batch([up.url("/status/429?retry_after=3"), other.url("/status/429")])) == [429, 429]
    now = datetime.now(timezone.utc)
    o = origins(d)
    p = o[origin_key(up)]["pause"]
    assert set(p) == {"until", "remaining_ms", "status", "retry_after_ms"}, p
    assert (p["status"], p["retry_after_ms"]) == (429, 3000), p
    assert 2000 < p["remaining_ms"] <= 3000, p
    assert RFC3339_MS.fullmatch(p["until"]), p
    until = datetime.strptime(p["until"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs((until - now).total_seconds() * 1000 - p["remaining_ms"]) < 500, (p, now)
    q = o[origin_key(other)]["pause"]
    assert (q["status"], q["retry_after_ms"]) == (429, None) and 0 < q["remaining_ms"] <= 1000, q
    assert o[origin_key(up)]["restart"] is None  # not before the pause has ended


def test_metrics_lines(daemon, upstreams):
    up, other, third = upstreams(3)
    d = daemon()
    text, totals, samples = metrics_samples(d)
    for name, kind in (("fanoutd_throttled_requests_total", "counter"),
                       ("fanoutd_throttle_seconds_total", "counter"),
                       ("fanoutd_origin_pauses_total", "counter"),
                       ("fanoutd_origins_paused", "gauge")):
        assert "# TYPE %s %s" % (name, kind) in text, name
    assert samples[("fanoutd_throttled_requests_total", "")] == 0
    assert samples[("fanoutd_throttle_seconds_total", "")] == 0
    assert samples[("fanoutd_origin_pauses_total", '{status="429"}')] == 0
    assert samples[("fanoutd_origin_pauses_total", '{status="503"}')] == 0
    assert samples[("fanoutd_origins_paused", "")] == 0
    bs = d.batch([up.url("/status/429?retry_after=1"), other.url("/status/503?retry_after=1")])
    assert statuses(bs) == [429, 503]
    _, _, samples = metrics_samples(d)
    assert samples[("fanoutd_origin_pauses_total", '{status="429"}')] == 1
    assert samples[("fanoutd_origin_pauses_total", '{status="503"}')] == 1
    assert samples[("fanoutd_origins_paused", "")] == 2
    assert poll(lambda: metrics_samples(d)[2][("fanoutd_origins_paused", "")] == 0, 3), "pauses never ended"
    bs = d.batch([third.url("/ok?i=%d" % i) for i in range(3)], {"rate_per_host": 10})
    assert statuses(bs) == [200] * 3
    _, _, samples = metrics_samples(d)
    assert samples[("fanoutd_throttled_requests_total", "")] == 2
    waited = sum(timing(r)["throttle_ms"] for r in bs.arrival) / 1000
    assert 0.25 <= samples[("fanoutd_throttle_seconds_total", "")] <= waited + 0.05, (samples, waited)

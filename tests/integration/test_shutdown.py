"""SIGTERM/SIGINT: stop accepting, let batches in flight run up to drain_timeout_s,
cancel what is left, close every document properly and exit 0."""

import signal

import pytest

from client import FramingError


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_cuts_a_running_batch(daemon, upstream, sig):
    d = daemon(drain_timeout_s=1)
    bs = d.stream([upstream.url("/wait/never"), upstream.url("/ok")])
    assert bs.next_result()["index"] == 1
    assert upstream.wait_for(lambda u: u.inflight == 1, 5)
    d.send_signal(sig)
    bs.finish()
    assert bs.kinds() == ["cancelled", None]
    assert bs.summary["complete"] is False
    assert d.wait_exit(10) == 0
    assert upstream.wait_for(lambda u: u.inflight == 0 and u.peer_closes, 3)


def test_queued_requests_are_cancelled_too(daemon, upstream):
    d = daemon(drain_timeout_s=1)
    bs = d.stream([upstream.url("/wait/never?i=%d" % i) for i in range(3)], {"concurrency": 1})
    assert upstream.wait_for(lambda u: u.inflight == 1, 5)
    d.send_signal(signal.SIGTERM)
    bs.finish()
    assert bs.kinds() == ["cancelled"] * 3
    assert bs.summary == dict(bs.summary, complete=False, responses=0, errors=3)
    assert upstream.count() == 1
    assert d.wait_exit(10) == 0


def test_batch_finishing_within_the_drain_completes(daemon, upstream):
    d = daemon(drain_timeout_s=5)
    bs = d.stream([upstream.url("/delay/300?i=%d" % i) for i in range(3)], {"concurrency": 1})
    assert upstream.wait_for(lambda u: u.inflight == 1, 5)
    d.send_signal(signal.SIGTERM)
    bs.finish()
    assert bs.kinds() == [None, None, None]
    assert bs.summary["complete"] is True
    assert d.wait_exit(10) == 0


def test_ndjson_document_closed_properly_on_shutdown(daemon, upstream):
    d = daemon(drain_timeout_s=1)
    bs = d.stream([upstream.url("/wait/never")], ndjson=True)
    assert upstream.wait_for(lambda u: u.inflight == 1, 5)
    d.send_signal(signal.SIGTERM)
    bs.finish()
    assert bs.kinds() == ["cancelled"] and bs.summary["complete"] is False
    assert d.wait_exit(10) == 0


def test_no_new_batches_once_shutting_down(daemon, upstream):
    d = daemon(drain_timeout_s=2)
    bs = d.stream([upstream.url("/wait/hold")])
    assert upstream.wait_for(lambda u: u.inflight == 1, 5)
    d.send_signal(signal.SIGTERM)
    assert d.wait_notify("STOPPING=1"), d.notify_msgs  # the daemon has acted on the signal
    # A new caller is refused (listener closed), left unanswered (accepting paused) or
    # told 503; never served.
    try:
        late = d.client(timeout=1).stream_batch([upstream.url("/ok")])
        assert late.status == 503, late.status
        late.close()
    except (ConnectionRefusedError, FileNotFoundError, ConnectionResetError, BrokenPipeError, FramingError,
            TimeoutError):
        pass
    upstream.release("hold")
    bs.finish()
    assert bs[0]["status"] == 200 and bs.summary["complete"] is True
    assert d.wait_exit(10) == 0
    assert upstream.count("/ok") == 0


def test_idle_daemon_exits_at_once(daemon):
    d = daemon(drain_timeout_s=10)
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(3) == 0


def test_notify_stopping(daemon):
    d = daemon()
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0
    msgs = "\n".join(d.drain_notify()).split("\n")
    assert "READY=1" in msgs and "STOPPING=1" in msgs

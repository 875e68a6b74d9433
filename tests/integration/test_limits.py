"""Running out of file descriptors: requests wait for one instead of failing, and
accepting callers pauses instead of spinning. The daemon's limit is lowered from
outside (prlimit) after it has started, so its own sizing cannot avoid the wall."""

import os
import resource
import socket
import time


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def squeeze(d, spare):
    """Leaves the daemon `spare` descriptors above what it holds now."""
    limit = open_fds(d.proc.pid) + spare
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
    return limit


def wait_stderr(d, text, timeout):
    """Polls the daemon's log (a file) for text: a condition, bounded in time."""
    deadline = time.monotonic() + timeout
    while text not in d.stderr():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_requests_queue_when_descriptors_run_out(daemon, upstream):
    d = daemon()
    squeeze(d, 6)  # one for this caller, about five for upstream connections
    n = 60
    bs = d.batch([upstream.url("/delay/20?i=%d" % i) for i in range(n)],
                 {"concurrency": 40, "per_host": 40})
    assert bs.kinds() == [None] * n, [r["error"] for r in bs.arrival if "error" in r][:3]
    assert all(r["status"] == 200 for r in bs.arrival)
    assert upstream.stats()["peak"] <= 6
    assert "out of file descriptors" in d.stderr()


def test_accept_pauses_and_recovers_when_descriptors_run_out(daemon, upstream):
    d = daemon()
    squeeze(d, 4)
    # Fill the daemon's table with idle callers; the ones past the limit wait in the
    # backlog while accept() fails with EMFILE.
    idle = []
    try:
        for _ in range(12):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(d.sock)
            idle.append(s)
        assert wait_stderr(d, "accept: Too many open files; pausing", 5)
    finally:
        for s in idle:
            s.close()
    bs = d.batch([upstream.url("/ok")])
    assert bs[0]["status"] == 200

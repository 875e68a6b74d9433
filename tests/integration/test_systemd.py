"""fanoutd as a systemd service: socket activation (driven by Debian's
systemd-socket-activate), sd_notify messages (a datagram socket of the test's
own as NOTIFY_SOCKET), reload on SIGHUP and journal-style logging."""
import os
import shutil
import signal
import socket
import time

import pytest

from client import Client
from harness import config_text, free_port

ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate not installed")


def wait_stderr(d, line, timeout=5.0):
    """Polls the process's stderr for a line (the launcher says when it listens)."""
    deadline = time.monotonic() + timeout
    while line not in d.stderr().splitlines():
        assert time.monotonic() < deadline, "no %r in stderr: %s" % (line, d.stderr())
        time.sleep(0.01)


def messages(d):
    """Every sd_notify line so far, in arrival order."""
    return [line for m in d.drain_notify() for line in m.split("\n") if line]


def rewrite_conf(d, **changes):
    keys = dict(d.keys, **changes)
    with open(d.conf, "w") as f:
        f.write(config_text(keys))


def reload(d):
    """SIGHUP, then waits for the READY=1 that ends the reload."""
    before = len(messages(d))
    d.send_signal(signal.SIGHUP)
    assert d.wait_notify("RELOADING=1")
    for _ in range(50):
        after = messages(d)[before:]
        if "RELOADING=1" in after and "READY=1" in after[after.index("RELOADING=1"):]:
            return after
        d.wait_notify("never", timeout=0.1)
    raise AssertionError("no READY=1 after RELOADING=1: %r" % messages(d)[before:])


# --- socket activation -------------------------------------------------------

@needs_activate
def test_socket_activation_serves_passed_tcp_and_unix_sockets(daemon, upstream, sockdir):
    port = free_port()
    path = os.path.join(sockdir, "act.sock")
    configured = os.path.join(sockdir, "configured.sock")
    d = daemon(wait_ready=False, listen="unix:" + configured,
               wrapper=[ACTIVATE, "-l", "127.0.0.1:%d" % port, "-l", path, "--fdname=tcp:local"])
    wait_stderr(d, "Listening on %s as 4." % path)  # the launcher's own line: both listen
    # The first connection makes systemd-socket-activate start the daemon; it
    # waits in the backlog meanwhile.
    bs = Client(("127.0.0.1", port)).batch([upstream.url("/ok"), upstream.url("/json")])
    assert bs.summary["responses"] == 2
    d.wait_ready()
    bs = Client(path).batch([upstream.url("/ok")])
    assert bs[0]["status"] == 200
    err = d.stderr()
    assert "127.0.0.1:%d (fd 3, tcp, from the service manager)" % port in err
    assert "unix:%s (fd 4, local, from the service manager)" % path in err
    assert not os.path.exists(configured)  # the listen line was not used
    assert d.stop() == 0
    assert os.path.exists(path)  # the manager's socket file is not ours to remove


@needs_activate
def test_socket_activation_refuses_a_datagram_socket(daemon, sockdir):
    port = free_port(socket.AF_INET)
    d = daemon(wait_ready=False, wrapper=[ACTIVATE, "--datagram", "-l", "127.0.0.1:%d" % port])
    d.expect_rc = 2
    wait_stderr(d, "Listening on 127.0.0.1:%d as 3." % port)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"wake up", ("127.0.0.1", port))  # what starts the daemon
    u.close()
    assert d.wait_exit(10) == 2
    err = d.stderr().strip().splitlines()
    assert err[-1] == ("fanoutd: socket activation: fd 3 (unknown): not a stream socket "
                       "(ListenStream= is needed, not ListenDatagram=)"), err


def test_listen_fds_for_another_process_are_ignored(daemon, upstream):
    # LISTEN_PID names another process: the sockets are not ours (sd_listen_fds).
    d = daemon(env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert d.batch([upstream.url("/ok")])[0]["status"] == 200


# --- notification -----------------------------------------------------------

def test_notify_sequence_with_status_and_watchdog(daemon, upstream):
    d = daemon(env={"WATCHDOG_USEC": "200000"})  # a ping every 100 ms
    assert d.wait_notify("WATCHDOG=1", timeout=2)
    bs = d.batch([upstream.url("/ok?close=1&i=%d" % i) for i in range(3)])
    assert bs.summary["responses"] == 3
    # The status line is refreshed once a second when a figure changed.
    assert d.wait_notify("STATUS=0 batches, 0 requests in flight, 0 queued, 3 done; upstream "
                         "connections: 0 HTTP/1.1, 0 HTTP/2 with 0 streams", timeout=3), messages(d)
    reload(d)
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0
    seq = [m for m in messages(d) if m.split("=")[0] in ("READY", "RELOADING", "STOPPING")]
    assert seq == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], seq
    lines = messages(d)
    assert lines.count("WATCHDOG=1") >= 2
    assert lines.index("READY=1") < lines.index("WATCHDOG=1")
    assert any(m.startswith("MONOTONIC_USEC=") for m in lines)
    assert lines[-1].startswith("STATUS=draining: ")
    assert "watchdog: pinging every 100 ms" in d.stderr()


def test_a_manager_that_reads_nothing_does_not_stop_the_loop(daemon, upstream):
    """sd_notify() blocks once the manager's queue is full; fanoutd's own non-blocking
    sends drop what does not fit. Pings every 10 ms fill the queue within a batch of
    one request lasting (qlen + 20) x 10 ms: the batch must end, and so must the daemon,
    at SIGTERM."""
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        qlen = int(f.read())  # the kernel's 10, or 512 where systemd booted the machine
    if qlen > 1000:
        pytest.skip("net.unix.max_dgram_qlen is %d: too many pings to fill it" % qlen)
    d = daemon(env={"WATCHDOG_USEC": "20000"})  # a ping every 10 ms; nothing read from here
    bs = d.batch([upstream.url("/delay/%d" % ((qlen + 20) * 10))], timeout=30)
    assert bs.summary["responses"] == 1
    queued = d.drain_notify()
    assert len(queued) - queued.index("READY=1") - 1 >= qlen, queued  # it was full
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0

def test_no_watchdog_pings_unless_asked(daemon):
    d = daemon()
    assert not d.wait_notify("WATCHDOG=1", timeout=1.5)
    assert any(m.startswith("STATUS=") for m in messages(d))


# --- reload -----------------------------------------------------------------

def test_reload_applies_new_limits_to_the_next_batch(daemon, upstream):
    d = daemon(max_batch=10)
    three = [upstream.url("/ok?i=%d" % i) for i in range(3)]
    assert d.batch(three).summary["responses"] == 3
    rewrite_conf(d, max_batch=2)
    reload(d)
    r = d.client().request("POST", "/v1/batch", Client.batch_body(three))
    assert r.status == 413 and b"too_large" in r.body
    assert "reload: %s applied to new batches" % d.conf in d.stderr()


def test_reload_applies_the_address_policy(daemon, upstream):
    d = daemon()
    assert d.batch([upstream.url("/ok")])[0]["status"] == 200
    rewrite_conf(d, deny="127.0.0.0/8")
    reload(d)
    assert d.batch([upstream.url("/ok")]).kinds() == ["blocked"]


def test_reload_applies_a_new_trust_store(daemon, upstreams, pki):
    up = upstreams(1, tls=pki.context_factory("good"))[0]  # its certificate names 127.0.0.1
    d = daemon(ca_file=pki.cert("otherca"))
    bs = d.batch([up.url("/ok")])
    assert bs.kinds() == ["tls"] and "unable to get local issuer" in bs[0]["error"]["message"], bs.arrival
    rewrite_conf(d, ca_file=pki.ca_file)
    reload(d)
    assert d.batch([up.url("/ok")])[0]["status"] == 200


def test_reload_refuses_a_missing_ca_file(daemon, upstream):
    d = daemon(max_batch=10)
    rewrite_conf(d, ca_file="/nonexistent/ca.pem", max_batch=2)
    reload(d)
    assert "keeping the running configuration" in d.stderr()
    assert d.batch([upstream.url("/ok?i=%d" % i) for i in range(3)]).summary["responses"] == 3


def test_reload_renews_the_resolver_and_forgets_its_answers(daemon, upstream, dns):
    d = daemon()
    url = upstream.url("/ok", host="a.test")
    for _ in range(2):
        assert d.batch([url])[0]["status"] == 200
    assert dns.count("a.test") == 1
    reload(d)
    assert d.batch([url])[0]["status"] == 200
    assert dns.count("a.test") == 2


def test_reload_with_a_broken_file_keeps_the_running_settings(daemon, upstream):
    d = daemon(max_batch=10)
    with open(d.conf, "a") as f:
        f.write("max_batch = many\n")
    reload(d)
    err = d.stderr()
    assert "%s:" % d.conf in err and "max_batch" in err
    assert "reload: %s: the file has errors (above); keeping the running configuration" % d.conf in err
    assert d.batch([upstream.url("/ok?i=%d" % i) for i in range(3)]).summary["responses"] == 3


def test_batch_in_flight_keeps_the_settings_it_started_with(daemon, upstream):
    d = daemon()
    s = d.stream([upstream.url("/wait/a"), upstream.url("/ok")], {"concurrency": 1})
    assert upstream.wait_for(lambda u: u.count("/wait/a") == 1)
    rewrite_conf(d, deny="127.0.0.0/8")
    reload(d)
    upstream.release("a")
    bs = s.finish()
    assert [bs[0]["status"], bs[1]["status"]] == [200, 200]  # queued under the old policy
    assert d.batch([upstream.url("/ok")]).kinds() == ["blocked"]


def test_batch_across_a_reload_keeps_its_connections(daemon, upstream):
    d = daemon()
    urls = [upstream.url("/ok?i=0"), upstream.url("/wait/k")] + [upstream.url("/ok?i=%d" % i) for i in range(1, 6)]
    s = d.stream(urls, {"concurrency": 1, "per_host": 1})
    assert upstream.wait_for(lambda u: u.count("/wait/k") == 1)
    reload(d)
    upstream.release("k")
    bs = s.finish()
    assert [bs[i]["status"] for i in range(7)] == [200] * 7
    assert [bs[i]["reused"] for i in range(7)] == [False] + [True] * 6
    assert upstream.connections == 1
    # Its connection is not handed to a batch of the new configuration.
    assert d.batch([upstream.url("/ok")])[0]["reused"] is False
    assert upstream.connections == 2


# --- logging ------------------------------------------------------------------

def test_log_lines_carry_priorities_only_on_the_journal_stream(daemon):
    plain = daemon()
    journal = daemon(journal=True)
    assert "fanoutd: info: fanoutd 0.1.0 started" in plain.stderr().splitlines()
    assert "<6>info: fanoutd 0.1.0 started" in journal.stderr().splitlines()
    # The variable alone is not enough: it must name the stream stderr is.
    other = daemon(env={"JOURNAL_STREAM": "1:1"})
    assert "fanoutd: info: fanoutd 0.1.0 started" in other.stderr().splitlines()


def test_reload_is_ignored_while_stopping(daemon, upstream):
    d = daemon(drain_timeout_s=10)
    s = d.stream([upstream.url("/wait/h")])
    assert upstream.wait_for(lambda u: u.count("/wait/h") == 1)
    d.send_signal(signal.SIGTERM)
    assert d.wait_notify("STOPPING=1")
    d.send_signal(signal.SIGHUP)
    upstream.release("h")
    assert s.finish()[0]["status"] == 200
    assert d.wait_exit(10) == 0
    assert "reload: ignored while stopping" in d.stderr()
    seq = [m for m in messages(d) if m.split("=")[0] in ("READY", "RELOADING", "STOPPING")]
    assert seq == ["READY=1", "STOPPING=1"], seq

"""Self-checks of the HTTP/2 test upstream (h2upstream.py), driven by real HTTP/2 clients
(curl with nghttp2, h2load and nghttp from nghttp2-client) over TLS with the test PKI, without
fanoutd: if these fail, the daemon's HTTP/2 tests mean nothing. Assertions are on what the
server recorded; waits are bounded wait_for calls, never sleeps."""

import gzip
import json
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from h2upstream import PREFACE, ErrorCodes, GoAway
from upstream import JSON_DOC, binary_bytes, text_bytes


def curl(pki, *args, timeout=10):
    """curl over HTTP/2 (ALPN h2,http/1.1) trusting the test CA; returns the CompletedProcess."""
    return subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.ca_file] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def curl_bg(pki, *args):
    return subprocess.Popen(["curl", "-sS", "--http2", "--cacert", pki.ca_file] + list(args),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s is not installed (Debian package nghttp2-client)" % name, pytrace=False)
    return path


def split_response(out):
    """curl -i output of one response: (status line, [(name, value)], body)."""
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]], body


# --- basics ---------------------------------------------------------------------

def test_h2_alpn_and_records(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, "-w", "%{http_version}", u.url("/ok"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"ok\n2"
    assert u.wait_for(lambda s: s.conns and s.conns[0].closed == "peer", 3)
    c = u.conn(1)
    assert (c.protocol, c.alpn, c.resumed) == ("h2", "h2", False)
    assert c.tls.ok and c.tls.hello.alpn == ["h2", "http/1.1"]
    assert c.client_settings.get("enable_push") == 0 and c.client_settings["initial_window_size"] > 0
    assert c.settings_acked and c.streams == 1 and c.peak_streams == 1 and c.open_streams == 0
    (r,) = u.reqs()
    assert (r.conn_id, r.stream_id, r.method, r.path, r.scheme, r.authority) == (1, 1, "GET", "/ok", "https",
                                                                                 u.authority)
    assert (r.status, r.outcome, r.complete, r.http_version) == (200, "responded", True, "2")
    assert r.headers[:4] == [(":method", "GET"), (":path", "/ok"), (":scheme", "https"), (":authority", u.authority)]
    st = u.stats()
    assert (st["connections"], st["requests"], st["open_streams"], st["peak_streams"]) == (1, 1, 0, 1)


def test_h2_echo_pseudo_headers_and_body(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, "-H", "x-test: v", "--data-binary", "hello", u.url("/echo?a=1"))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (doc["method"], doc["path"], doc["authority"], doc["scheme"]) == ("POST", "/echo?a=1", u.authority, "https")
    assert [":path", "/echo?a=1"] in doc["headers"] and ["x-test", "v"] in doc["headers"]
    assert doc["body"] == "hello" and doc["stream_id"] == 1
    (r,) = u.reqs("/echo")
    assert r.query == {"a": "1"} and r.body == b"hello" and r.header("X-Test") == "v"
    assert r.header(":method") == "POST" and r.header("content-length") == "5"


def test_h2_large_request_body_is_acknowledged(h2upstreams, pki, tmp_path):
    """1 MB up through 64 KiB windows: the server must hand the windows back as it reads."""
    (u,) = h2upstreams()
    data = os.urandom(1 << 20)
    f = tmp_path / "up.bin"
    f.write_bytes(data)
    p = curl(pki, "--data-binary", "@%s" % f, u.url("/ok"))
    assert p.returncode == 0 and p.stdout == b"ok\n", p.stderr
    (r,) = u.reqs()
    assert r.body == data and r.complete and r.outcome == "responded"
    assert u.conn(1).bytes_received == len(data)


def test_h2_bodies_and_headers(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, "-i", u.url("/gzip/1000"))
    status, hdrs, body = split_response(p.stdout)
    assert status.startswith("HTTP/2 200") and ("content-encoding", "gzip") in hdrs
    assert gzip.decompress(body) == text_bytes(1000)
    p = curl(pki, "-i", u.url("/headers"))
    status, hdrs, body = split_response(p.stdout)
    assert [v for n, v in hdrs if n == "set-cookie"] == ["a=1; Path=/", "b=2, c=3"]
    assert [v for n, v in hdrs if n == "x-dup"] == ["one", "two"]
    assert json.loads(curl(pki, u.url("/json")).stdout) == JSON_DOC
    p = curl(pki, "-i", u.url("/redirect-to?url=https%3A%2F%2Fb.test%2Fx&code=307"))
    status, hdrs, _ = split_response(p.stdout)
    assert status.startswith("HTTP/2 307") and ("location", "https://b.test/x") in hdrs
    p = curl(pki, "-i", u.url("/status/503?retry_after=2"))
    status, hdrs, _ = split_response(p.stdout)
    assert status.startswith("HTTP/2 503") and ("retry-after", "2") in hdrs
    codes = [curl(pki, "-o", "/dev/null", "-w", "%{http_code}", u.url("/flaky/1?key=f")).stdout for _ in range(2)]
    assert codes == [b"503", b"200"]
    assert [r.outcome for r in u.reqs()] == ["responded"] * 7


# --- flow control -----------------------------------------------------------------

def test_h2_5mb_download_is_whole(h2upstreams, pki, tmp_path):
    (u,) = h2upstreams()
    out = tmp_path / "big.bin"
    p = curl(pki, "-o", str(out), "-w", "%{size_download}", u.url("/bytes/5000000"))
    assert p.returncode == 0 and p.stdout == b"5000000", p.stderr
    assert out.read_bytes() == binary_bytes(5000000)
    (r,) = u.reqs()
    assert (r.outcome, r.bytes_sent) == ("responded", 5000000)


def test_h2_big_body_waits_for_window_updates(h2upstreams):
    """h2load with 64 KiB stream and connection windows (-w16 -W16): the server must stop
    at every empty window and go on when WINDOW_UPDATE comes, and the client's increments
    never cover more than the server had sent (it opens windows as it consumes)."""
    (u,) = h2upstreams()
    p = subprocess.run([tool("h2load"), "-n1", "-c1", "-w16", "-W16", u.url("/big/5000000")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and "1 succeeded" in p.stdout, p.stdout + p.stderr
    assert "5000000) data" in p.stdout
    (r,) = u.reqs()
    c = u.conn(1)
    assert (r.outcome, r.bytes_sent, c.bytes_sent) == ("responded", 5000000, 5000000)
    assert c.client_settings.get("initial_window_size", 65535) == 65535
    assert r.window_waits > 10  # 5 MB through 64 KiB windows
    assert 5000000 - 65535 <= r.window_increments <= 5000000
    assert 5000000 - 65535 <= c.window_conn <= 5000000
    totals = {}
    for sid, inc, sent in c.window_log:
        totals[sid] = totals.get(sid, 0) + inc
        assert totals[sid] <= sent, (sid, totals[sid], sent)


# --- concurrency ------------------------------------------------------------------

def test_h2_concurrent_streams_on_one_connection(h2upstreams, pki):
    (u,) = h2upstreams()
    urls = [u.url("/delay/300?i=%d" % i) for i in range(10)]
    p = curl(pki, "--parallel", "--parallel-max", "10", *sum((["-o", "/dev/null", x] for x in urls), []))
    assert p.returncode == 0, p.stderr
    st = u.stats()
    assert st["connections"] == 1 and st["requests"] == 10 and st["peak_streams"] == 10, st
    assert u.conn(1).peak_streams == 10
    reqs = u.reqs()
    assert {r.outcome for r in reqs} == {"responded"}
    # overlap as the server saw it: every request arrived before the first one was answered
    assert max(r.t_start for r in reqs) < min(r.t_end for r in reqs)
    assert sorted(r.stream_id for r in reqs) == list(range(1, 21, 2))


def test_h2_waiting_stream_does_not_block_others(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl_bg(pki, "--parallel", "-o", "/dev/null", u.url("/wait/go"), "-o", "/dev/null", u.url("/ok"))
    try:
        assert u.wait_for(lambda s: [r.outcome for r in s.requests if r.path == "/ok"] == ["responded"], 5)
        (w,) = u.reqs("/wait")
        assert w.outcome is None and u.stats()["open_streams"] == 1
        u.release("go")
        assert p.wait(5) == 0
    finally:
        p.kill()
    assert [(r.conn_id, r.outcome) for r in u.reqs("/wait")] == [(1, "responded")]
    assert u.stats()["connections"] == 1


def test_h2_max_concurrent_streams_is_advertised_and_kept(h2upstreams, pki):
    """The configured SETTINGS reach the client; no connection ever has more than 2 streams
    open. A client may open streams before it has seen the SETTINGS (curl and h2load do, up to
    their default of 100): those are refused (REFUSED_STREAM, outcome "over_limit") and are
    always from before the client acknowledged our SETTINGS."""
    (u,) = h2upstreams(max_concurrent_streams=2, initial_window_size=1 << 20, max_frame_size=1 << 15)
    p = subprocess.run([tool("nghttp"), "-nv", u.url("/ok")], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    recv = p.stdout.split("recv SETTINGS frame", 1)[1].split("send", 1)[0]
    assert "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):2]" in recv
    assert "[SETTINGS_INITIAL_WINDOW_SIZE(0x04):1048576]" in recv
    assert "[SETTINGS_MAX_FRAME_SIZE(0x05):32768]" in recv
    urls = [u.url("/delay/100?i=%d" % i) for i in range(6)]
    curl(pki, "--parallel", "--parallel-max", "6", *sum((["-o", "/dev/null", x] for x in urls), []))
    conns = u.conn_records()
    assert all(c.peak_streams <= 2 for c in conns), conns
    assert max(c.peak_streams for c in conns) == 2
    assert all(not acked for c in conns for _, acked in c.over_limit)
    for r in u.reqs("/delay"):
        assert r.outcome in ("responded", "over_limit"), r
        if r.outcome == "over_limit":
            assert r.reset_code == ErrorCodes.REFUSED_STREAM


def test_h2_shared_condition(h2upstreams, pki):
    a, b = h2upstreams(2)
    assert a.cond is b.cond and a.port != b.port
    p = curl(pki, "--parallel", "-o", "/dev/null", a.url("/ok"), "-o", "/dev/null", b.url("/ok"))
    assert p.returncode == 0, p.stderr
    assert h2upstreams.wait_for(lambda: a.count() == 1 and b.count() == 1, 3)


# --- HTTP/2 behaviours ---------------------------------------------------------------

def test_h2_refuse_records_refused_stream(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, u.url("/refuse?n=1&key=r"))
    reqs = u.reqs("/refuse")
    assert reqs[0].outcome == "refused" and reqs[0].reset_code == ErrorCodes.REFUSED_STREAM
    assert u.stats()["refused"] == 1
    if p.returncode == 0:  # curl sent it again (on a new connection): answered this time
        assert p.stdout == b"ok after 1\n" and [r.outcome for r in reqs] == ["refused", "responded"]


def test_h2_goaway_records(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, u.url("/goaway"))
    assert p.returncode != 0  # curl 7.88 does not send it again: "Error in the HTTP2 framing layer"
    assert u.goaways_sent == [GoAway(1, ErrorCodes.NO_ERROR, 0, None)]
    (r,) = u.reqs()
    assert r.outcome == "goaway_unprocessed" and r.status is None
    assert u.wait_for(lambda s: s.conns[0].closed in ("goaway", "peer"), 3)
    # a second hit (a client sending it again) is answered
    p = curl(pki, u.url("/goaway"))
    assert p.returncode == 0 and p.stdout == b"ok after 1\n"


def test_h2_goaway_lets_older_streams_finish(h2upstreams):
    """nghttp sends /wait/go (stream 1) and /goaway (stream 3) on one connection: GOAWAY(last=1)
    leaves stream 1 to be answered, then the connection closes."""
    (u,) = h2upstreams()
    p = subprocess.Popen([tool("nghttp"), "-n", "--no-dep", u.url("/wait/go"), u.url("/goaway")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert u.wait_for(lambda s: s.goaways_sent, 5)
        (g,) = u.goaways_sent
        (gr,) = u.reqs("/goaway")
        assert g.last_stream_id == gr.stream_id - 2 and gr.outcome == "goaway_unprocessed"
        u.release("go")
        p.wait(5)
    finally:
        p.kill()
    assert u.wait_for(lambda s: s.conns[0].closed is not None, 3)
    assert u.stats()["connections"] == 1
    for r in u.reqs():
        assert r.outcome == ("responded" if r.stream_id <= g.last_stream_id else "goaway_unprocessed"), r


def test_h2_goaway_after_sends_newer_requests_elsewhere(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, u.url("/goaway-after"), u.url("/ok"))
    assert p.returncode == 0 and p.stdout == b"ok\nok\n", p.stderr
    assert u.goaways_sent == [GoAway(1, ErrorCodes.NO_ERROR, 1, None)]
    assert [(r.path, r.conn_id, r.outcome) for r in u.reqs()] == [("/goaway-after", 1, "responded"),
                                                                  ("/ok", 2, "responded")]


def test_h2_rst_and_close(h2upstreams, pki):
    (u,) = h2upstreams()
    for after in ("headers", "none", "data"):
        p = curl(pki, u.url("/rst?after=%s" % after))
        assert p.returncode == 92, p.stderr  # "stream 1 was not closed cleanly: INTERNAL_ERROR"
    assert [(r.outcome, r.reset_code, r.status) for r in u.reqs("/rst")] == [
        ("reset", ErrorCodes.INTERNAL_ERROR, 200), ("reset", ErrorCodes.INTERNAL_ERROR, None),
        ("reset", ErrorCodes.INTERNAL_ERROR, 200)]
    p = curl(pki, u.url("/close"))
    assert p.returncode != 0
    (r,) = u.reqs("/close")
    assert r.outcome == "closed"
    assert u.wait_for(lambda s: s.conns[r.conn_id - 1].closed == "route /close", 3)
    assert u.conn(r.conn_id).goaway_sent is None


def test_h2_client_reset_is_recorded(h2upstreams, pki):
    """curl gives up on /stall after 300 ms while a trickle keeps the connection in use, so it
    resets the stream instead of closing the connection (curl 7.88 sends the RST_STREAM the
    next time it services the connection: the trickle's bytes make sure it does)."""
    (u,) = h2upstreams()
    p = curl_bg(pki, "--parallel", "-o", "/dev/null", u.url("/trickle/100?interval=50"),
                "--next", "--http2", "--cacert", pki.ca_file, "-m", "0.3", u.url("/stall"))
    try:
        assert u.wait_for(lambda s: s.resets_received, 5)
        (stall,) = u.reqs("/stall")
        assert stall.outcome == "reset_by_client" and stall.status == 200
        assert u.resets_received[0][:2] == (stall.conn_id, stall.stream_id)
        assert stall.reset_code == u.resets_received[0].error_code
        (trickle,) = u.reqs("/trickle")
        assert trickle.outcome == "responding" and trickle.conn_id == stall.conn_id
        u.release_all()  # ends the trickle (RST_STREAM CANCEL)
        p.wait(5)
    finally:
        p.kill()
    assert [r.outcome for r in u.reqs("/trickle")] == ["aborted"] and u.stats()["connections"] == 1


def test_h2_trickle_paces_data(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, u.url("/trickle/4?interval=100"))
    assert p.returncode == 0 and p.stdout == b"xxxx"
    (r,) = u.reqs()
    assert r.outcome == "responded" and 0.25 < r.t_end - r.t_start < 1.5


def test_h2_release_all_aborts_held_streams(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl_bg(pki, "--parallel", "-o", "/dev/null", u.url("/stall"), "-o", "/dev/null", u.url("/delay/5000"),
                "-o", "/dev/null", u.url("/wait/w"))
    try:
        assert u.wait_for(lambda s: s.open_streams == 3, 5)
        u.release_all()
        assert u.wait_for(lambda s: s.open_streams == 0, 3)
        p.wait(5)
    finally:
        p.kill()
    outcomes = {r.path: (r.outcome, r.reset_code) for r in u.reqs()}
    assert outcomes == {"/stall": ("aborted", ErrorCodes.CANCEL), "/delay/5000": ("aborted", ErrorCodes.CANCEL),
                        "/wait/w": ("responded", None)}


def test_h2_protocol_error_is_recorded(h2upstreams, pki):
    (u,) = h2upstreams()
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", u.port), timeout=3), server_hostname="127.0.0.1") as s:
        # the preface, an empty SETTINGS, then DATA on stream 0 (a connection error)
        s.sendall(PREFACE + b"\0\0\0\x04\0\0\0\0\0" + b"\0\0\x01\0\0\0\0\0\0x")
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    assert got[-17:-8] == b"\0\0\x08\x07\0\0\0\0\0" and got[-4:] == b"\0\0\0\x01"  # GOAWAY(PROTOCOL_ERROR)
    assert u.wait_for(lambda s: s.conns[0].closed == "protocol_error", 3)
    assert len(u.protocol_errors) == 1 and "Stream ID must be non-zero" in u.conn(1).error


def test_h2_client_goaway_and_tls_resumption_are_recorded(h2upstreams, pki):
    """A raw client: preface, SETTINGS, GOAWAY(NO_ERROR); the second connection resumes the
    first one's TLS session."""
    (u,) = h2upstreams()
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    ctx.set_alpn_protocols(["h2"])
    session = None
    for _ in range(2):
        raw = socket.create_connection(("127.0.0.1", u.port), timeout=3)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as s:
            s.sendall(PREFACE + b"\0\0\0\x04\0\0\0\0\0" + b"\0\0\x08\x07\0\0\0\0\0" + b"\0" * 8)
            assert s.recv(65536)  # the server's SETTINGS, after its session tickets
            session = s.session
    assert u.wait_for(lambda s: len(s.conns) == 2 and all(c.closed for c in s.conns), 3)
    assert [c.resumed for c in u.conn_records()] == [False, True]
    assert [(g.conn_id, g.error_code, g.last_stream_id) for g in u.goaways_received] == [
        (1, ErrorCodes.NO_ERROR, 0), (2, ErrorCodes.NO_ERROR, 0)]
    assert u.conn(2).goaways_received == [u.goaways_received[1]] and u.count() == 0


# --- ALPN ------------------------------------------------------------------------------

def test_h2_http11_fallback_when_offered(h2upstreams, pki):
    (u,) = h2upstreams(alpn=("h2", "http/1.1"))
    p = curl(pki, "-i", "--http1.1", u.url("/anything"))
    status, hdrs, body = split_response(p.stdout)
    assert status == "HTTP/1.1 200 OK" and ("x-protocol", "http/1.1") in hdrs and body == b"ok\n"
    (r,) = u.reqs()
    assert (r.http_version, r.path, r.stream_id, r.outcome) == ("1.1", "/anything", None, "responded")
    c = u.conn(1)
    assert (c.alpn, c.protocol) == ("http/1.1", "http/1.1")
    assert curl(pki, "-w", "%{http_version}", u.url("/ok")).stdout == b"ok\n2"


def test_h2_only_server_closes_http11_client(h2upstreams, pki):
    (u,) = h2upstreams()
    p = curl(pki, "--http1.1", u.url("/ok"))
    assert p.returncode == 52  # empty reply
    assert u.wait_for(lambda s: s.conns and s.conns[0].closed == "not h2", 3)
    assert u.conn(1).alpn is None and u.count() == 0

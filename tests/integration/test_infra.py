"""Self-checks of the test infrastructure (upstream server, dnsmasq, blackhole, client),
without fanoutd: if these fail, the daemon tests' verdicts mean nothing."""

import gzip
import http.client
import json
import os
import shutil
import socket
import threading
import time
import zlib

import pytest

import harness
from client import Client, FramingError, validate
from upstream import binary_bytes, closed_port, text_bytes


def raw_get(up, path, headers=None, conn=None):
    c = conn or http.client.HTTPConnection(up.host, up.port, timeout=5)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return c, r, r.read()


def raw_exchange(port, data, timeout=3.0):
    """Sends bytes, reads until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return out


# --- upstream -----------------------------------------------------------------

def test_upstream_keepalive_and_records(upstream):
    c, r, body = raw_get(upstream, "/ok")
    assert (r.status, body) == (200, b"ok\n")
    c, r, body = raw_get(upstream, "/echo?x=1", {"X-Test": "v"}, conn=c)
    doc = json.loads(body)
    assert doc["method"] == "GET" and doc["target"] == "/echo?x=1"
    assert ["X-Test", "v"] in doc["headers"]
    c.close()
    assert upstream.wait_for(lambda u: u.peer_closes, 2)
    st = upstream.stats()
    assert st["connections"] == 1 and st["requests"] == 2 and st["inflight"] == 0
    r0, r1 = upstream.reqs()
    assert (r0.seq, r1.seq, r0.conn_id) == (0, 1, r1.conn_id)
    assert r1.query == {"x": "1"} and r1.header("x-test") == "v"
    assert b"X-Test: v" in r1.raw_head
    assert upstream.peer_closes == [(1, "idle")]


def test_upstream_bodies(upstream):
    _, r, body = raw_get(upstream, "/gzip/1000")
    assert r.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == text_bytes(1000)
    _, r, body = raw_get(upstream, "/deflate/1000")
    assert r.getheader("Content-Encoding") == "deflate" and zlib.decompress(body) == text_bytes(1000)
    _, r, body = raw_get(upstream, "/bomb/16")
    assert len(body) < 100000 and len(gzip.decompress(body)) == 16 << 20
    _, r, body = raw_get(upstream, "/bytes/300")
    assert body == binary_bytes(300)
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    _, r, body = raw_get(upstream, "/chunked?n=3&size=7")
    assert r.getheader("Transfer-Encoding") == "chunked" and body == text_bytes(7) * 3
    _, r, body = raw_get(upstream, "/headers")
    assert r.msg.get_all("Set-Cookie") == ["a=1; Path=/", "b=2, c=3"]
    _, r, body = raw_get(upstream, "/bigheader/5000")
    assert len(r.getheader("X-Big")) == 5000
    _, r, body = raw_get(upstream, "/notjson")
    assert r.getheader("Content-Type") == "application/json" and body == b"{not json"
    out = raw_exchange(upstream.port, b"GET /nocl HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.endswith(b"\r\n\r\n" + text_bytes(100))


def test_upstream_redirects_and_flaky(upstream):
    _, r, _ = raw_get(upstream, "/redirect/3?code=307")
    assert r.status == 307 and r.getheader("Location") == "2?code=307"
    _, r, _ = raw_get(upstream, "/redirect/1?code=301&abs=1")
    assert r.getheader("Location") == "http://%s/redirect/0?code=301&abs=1" % upstream.authority
    _, r, body = raw_get(upstream, "/redirect/0")
    assert json.loads(body)["target"] == "/redirect/0"
    _, r, _ = raw_get(upstream, "/redirect-to?url=ftp%3A%2F%2Fx%2F")
    assert r.getheader("Location") == "ftp://x/"
    c, r, _ = raw_get(upstream, "/flaky/2?key=k&status=502&retry_after=1")
    assert r.status == 502 and r.getheader("Retry-After") == "1"
    c, r, _ = raw_get(upstream, "/flaky/2?key=k&status=502", conn=c)
    assert r.status == 502
    c, r, _ = raw_get(upstream, "/flaky/2?key=k&status=502", conn=c)
    assert r.status == 200
    c, r, _ = raw_get(upstream, "/retry-after/1", conn=c)
    assert r.status == 503 and r.getheader("Retry-After") == "1"
    c, r, _ = raw_get(upstream, "/retry-after/1", conn=c)
    assert r.status == 200


def test_upstream_close_param(upstream):
    out = raw_exchange(upstream.port, b"GET /ok?close=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"\r\nConnection: close\r\n" in out and out.endswith(b"ok\n")


def test_upstream_malformed_bytes_verbatim(upstream):
    out = raw_exchange(upstream.port, b"GET /malformed/bare_lf HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out == b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\nhello"
    out = raw_exchange(upstream.port, b"GET /malformed/truncated HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.endswith(b"only ten b")


def test_upstream_wait_counts_inflight_and_peak(upstream):
    results = []

    def get():
        _, r, body = raw_get(upstream, "/wait/go")
        results.append(body)

    threads = [threading.Thread(target=get) for _ in range(3)]
    for t in threads:
        t.start()
    assert upstream.wait_for(lambda u: u.inflight == 3, 5)
    assert not upstream.wait_for(lambda u: u.inflight < 3, 0.1)
    upstream.release("go")
    for t in threads:
        t.join(5)
    assert results == [b"released go\n"] * 3
    assert upstream.stats()["peak"] == 3 and upstream.stats()["inflight"] == 0


def test_upstream_sees_peer_close_while_delaying(upstream):
    s = socket.create_connection(("127.0.0.1", upstream.port), timeout=3)
    s.sendall(b"GET /delay/5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert upstream.wait_for(lambda u: u.inflight == 1, 3)
    t0 = time.monotonic()
    s.close()
    assert upstream.wait_for(lambda u: u.peer_closes and u.inflight == 0, 3)
    assert time.monotonic() - t0 < 1
    assert upstream.peer_closes == [(1, "inflight")] and upstream.reqs()[0].outcome == "peer_closed"


def test_upstream_trickle_paces_bytes(upstream):
    s = socket.create_connection(("127.0.0.1", upstream.port), timeout=3)
    t0 = time.monotonic()
    s.sendall(b"GET /trickle/4?interval=100 HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"xxxx"):
        d = s.recv(100)
        assert d
        data += d
    assert 0.25 < time.monotonic() - t0 < 1.5
    s.close()


def test_upstream_closeidle_modes(upstream):
    out = raw_exchange(upstream.port, b"GET /closeidle HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" not in out
    s = socket.create_connection(("127.0.0.1", upstream.port), timeout=3)
    s.sendall(b"GET /closeidle?mode=onreuse HTTP/1.1\r\nHost: x\r\n\r\n")
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"ok\n")
    s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(4096) == b""  # dropped without an answer
    s.close()
    assert [r.outcome for r in upstream.reqs()] == ["responded", "responded", "dropped"]


def test_upstream_on_other_loopback_address(upstreams):
    up = upstreams(1, host="127.0.0.2")[0]
    _, r, body = raw_get(up, "/ok")
    assert body == b"ok\n" and up.url("/x") == "http://127.0.0.2:%d/x" % up.port


def test_upstream_ipv6(upstreams):
    up = upstreams(1, host="::1")[0]
    assert up.url("/ok") == "http://[::1]:%d/ok" % up.port
    c = http.client.HTTPConnection("::1", up.port, timeout=5)
    c.request("GET", "/ok")
    assert c.getresponse().read() == b"ok\n"


def test_blackhole_connect_hangs(blackhole):
    s = socket.socket()
    s.settimeout(0.3)
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        s.connect(("127.0.0.1", blackhole.port))
    assert time.monotonic() - t0 >= 0.29
    s.close()


def test_closed_port_refuses():
    s = socket.socket()
    with pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", closed_port()))
    s.close()


# --- dnsmasq ------------------------------------------------------------------

def test_dnsmasq_answers_and_logs(dns, dnsmasq):
    assert harness.dns_query(dnsmasq.addr, "a.test") == (0, [(1, socket.inet_aton("127.0.0.1"))])
    assert harness.dns_query(dnsmasq.addr, "a.test", "AAAA") == (0, [])  # NODATA, not NXDOMAIN
    assert harness.dns_query(dnsmasq.addr, "blocked.test")[1] == [(1, socket.inet_aton("127.0.0.2"))]
    assert harness.dns_query(dnsmasq.addr, "v6.test", "AAAA")[1] == [(28, socket.inet_pton(socket.AF_INET6, "::1"))]
    assert harness.dns_query(dnsmasq.addr, "nx.test")[0] == 3
    harness.dns_query(dnsmasq.addr, "a.test")
    assert dns.count("a.test") == 3
    assert dns.count("a.test", types=("A",)) == 2
    assert dns.count("nx.test") == 1 and dns.count("b.test") == 0


# --- the fanoutd client, against a scripted fake -------------------------------

class FakeServer:
    """Accepts one connection on a Unix socket and sends scripted pieces; a None piece
    waits for the `go` event first."""

    def __init__(self, pieces):
        self.dir = harness.short_tmpdir("fo-fake-")
        self.path = os.path.join(self.dir, "f.sock")
        self.ls = socket.socket(socket.AF_UNIX)
        self.ls.bind(self.path)
        self.ls.listen(1)
        self.go = threading.Event()
        self.request = b""
        self.t = threading.Thread(target=self.run, args=(pieces,), daemon=True)
        self.t.start()

    def run(self, pieces):
        c, _ = self.ls.accept()
        while b"\r\n\r\n" not in self.request:
            self.request += c.recv(65536)
        for p in pieces:
            if p is None:
                self.go.wait(5)
            else:
                c.sendall(p)
        c.close()

    def close(self):
        self.t.join(5)
        self.ls.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def chunk(s):
    b = s.encode() if isinstance(s, str) else s
    return b"%x\r\n%s\r\n" % (len(b), b)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
R0 = {"index": 0, "url": "http://x/", "status": 200, "headers": {}, "body": "a", "body_encoding": "text",
      "bytes": 1, "attempts": 1, "remote": "127.0.0.1:1", "reused": False, "protocol": "http/1.1",
      "timing": {k: 0 for k in ("queue_ms", "dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms")}}
R1 = {"index": 1, "url": "http://y/", "error": {"kind": "timeout", "message": "no response"}, "attempts": 1,
      "timing": R0["timing"]}
SUMMARY = {"total": 2, "responses": 1, "errors": 1, "complete": True, "elapsed_ms": 1.5}


def test_client_streams_document_incrementally():
    r1 = json.dumps(R1)
    pieces = [HEAD, chunk('{"results":[\n' + json.dumps(R0)), None,
              chunk(",\n" + r1[:10]), chunk(r1[10:]), chunk('],"summary":' + json.dumps(SUMMARY) + "}"), chunk(b"")]
    f = FakeServer(pieces)
    bs = Client(f.path, 5).stream_batch(["http://x/", "http://y/"])
    assert bs.next_result() == R0  # arrived while the server still holds the rest
    assert not f.go.is_set()
    f.go.set()
    bs.finish()
    assert bs.arrival == [R0, R1] and bs.summary == SUMMARY
    assert b'"requests": ["http://x/", "http://y/"]' in f.request
    f.close()


def test_client_ndjson():
    body = "".join(json.dumps(x) + "\n" for x in (R1, R0, {"summary": SUMMARY}))
    pieces = [HEAD.replace(b"application/json", b"application/x-ndjson"), chunk(body[:30]), chunk(body[30:]),
              chunk(b"")]
    f = FakeServer(pieces)
    bs = Client(f.path, 5).batch(["a", "b"], ndjson=True)
    assert [r["index"] for r in bs.arrival] == [1, 0] and bs.summary == SUMMARY
    assert b"Accept: application/x-ndjson" in f.request
    f.close()


@pytest.mark.parametrize("bad", [
    b"5\r\nhello\r\n0\r\n\r\n",            # not the document
    b"zz\r\n",                             # bad chunk size
    b"3\r\nabcd\r\n",                      # chunk longer than its size
])
def test_client_rejects_bad_framing_or_json(bad):
    f = FakeServer([HEAD, bad])
    with pytest.raises(AssertionError):
        Client(f.path, 5).batch(["a"])
    f.close()


def test_client_rejects_missing_terminal_chunk():
    doc = json.dumps({"results": [R0, R1], "summary": SUMMARY})
    f = FakeServer([HEAD, chunk(doc)])  # then close without "0\r\n\r\n"
    with pytest.raises(FramingError):
        Client(f.path, 5).batch(["a", "b"])
    f.close()


def test_validate_catches_contract_violations():
    validate({"results": [R0, R1], "summary": SUMMARY}, 2)
    with pytest.raises(AssertionError):
        validate({"results": [R0], "summary": SUMMARY}, 2)
    with pytest.raises(AssertionError):
        validate({"results": [R0, dict(R1, index=0)], "summary": SUMMARY}, 2)
    with pytest.raises(AssertionError):
        validate({"results": [R0, R1], "summary": dict(SUMMARY, errors=0)}, 2)
    with pytest.raises(AssertionError):
        validate({"results": [R0, dict(R1, error={"kind": "oops", "message": "x"})], "summary": SUMMARY}, 2)
    with pytest.raises(AssertionError):  # every response says its protocol
        validate({"results": [{k: v for k, v in R0.items() if k != "protocol"}, R1], "summary": SUMMARY}, 2)


def test_client_error_response_with_content_length():
    body = b'{"error":{"kind":"bad_request","message":"requests: missing"}}'
    f = FakeServer([b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body])
    bs = Client(f.path, 5).batch([])
    assert bs.status == 400 and bs.error()["error"]["kind"] == "bad_request"
    f.close()

"""The caller-facing HTTP/1.1 server (server.c, h1_parse_request), from the caller's side over
raw sockets: the Unix socket of the `daemon` fixture, and TCP where the transport matters.

What is checked: client_timeout_s against a slow head and a slow document (408 `timeout`,
JSON, closed) and against an idle connection (closed without a word); max_clients (503
`overloaded` with Retry-After, closed; a slot frees when a connection closes); the strict
parsing of RFC 9112 (each refused form answered 400, 431 or 505 with the JSON error object
and the connection closed, nothing pipelined behind it answered); max_request_bytes (413,
at once under `Expect: 100-continue`); `Expect` (100 then the answer, 417 for an unknown
expectation); HTTP/1.0 (no chunking, delimited by the close); keep-alive and pipelining;
half-closed callers (TCP and Unix) receiving their whole answer; JSON on every error.

Streamed batches (NDJSON in) are test_stream_in.py's."""

import json
import re
import select
import socket
import time

import pytest

from client import FramingError, Wire, connect, validate
from harness import free_port

TIMEOUT = 10.0


# --- a raw connection, its answers parsed strictly ------------------------------------

class Answer:
    def __init__(self, version, status, reason, headers, body, chunked, close_delimited):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.chunked = chunked
        self.close_delimited = close_delimited

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def content_type(self):
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Answer %s %d %r %r>" % (self.version, self.status, self.headers, self.body[:200])


class Conn:
    """One caller connection: raw bytes out, answers read one after the other from a shared
    buffer (so pipelined answers are not lost between two reads)."""

    def __init__(self, addr, timeout=TIMEOUT, rcvbuf=None):
        if rcvbuf is None:
            self.sock = connect(addr, timeout)
        else:  # set before connecting, so that TCP's window starts small
            fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(addr)
        self.wire = Wire(self.sock, timeout)

    def send(self, data):
        self.sock.sendall(data)

    def shut_wr(self):
        self.sock.shutdown(socket.SHUT_WR)

    def answer(self, method="GET"):
        """Reads one answer (an interim 1xx included) and checks its framing."""
        w = self.wire
        head = w.until(b"\r\n\r\n", limit=65536, what="answer head")
        if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
            raise FramingError("bare CR or LF in answer head: %r" % head)
        lines = head.decode("latin-1").split("\r\n")
        m = re.fullmatch(r"HTTP/(1\.[01]) (\d{3}) (.*)", lines[0])
        if not m:
            raise FramingError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise FramingError("bad header line %r" % line)
            headers.append((name, value.strip()))
        status = int(m.group(2))
        a = Answer(m.group(1), status, m.group(3), headers, b"", False, False)
        te, cl = a.header_all("Transfer-Encoding"), a.header_all("Content-Length")
        if te and cl:
            raise FramingError("both Transfer-Encoding and Content-Length: %r" % headers)
        if len(cl) > 1 or len(te) > 1:
            raise FramingError("repeated framing headers: %r" % headers)
        if status < 200 or method == "HEAD":
            return a
        if te:
            if te[0].lower() != "chunked":
                raise FramingError("Transfer-Encoding %r" % te[0])
            a.chunked = True
            a.body = self._chunked()
        elif cl:
            a.body = w.exact(int(cl[0]), "answer body")
        else:
            a.close_delimited = True
            while w.fill():
                pass
            a.body, w.buf = w.buf, b""
        return a

    def _chunked(self):
        w, out = self.wire, []
        while True:
            line = w.until(b"\r\n", limit=1024, what="chunk size line")
            if not re.fullmatch(rb"[0-9a-f]+", line):
                raise FramingError("bad chunk size line %r" % line)
            size = int(line, 16)
            if size == 0:
                if w.until(b"\r\n", limit=1024, what="trailer") != b"":
                    raise FramingError("unexpected trailer")
                return b"".join(out)
            out.append(w.exact(size, "chunk"))
            if w.exact(2, "chunk end") != b"\r\n":
                raise FramingError("chunk not followed by CRLF")

    def at_eof(self):
        """True when the daemon has closed (or shut its sending side) with nothing more said;
        raises if it says something else."""
        w = self.wire
        while not w.eof:
            if not w.fill():
                break
        if w.buf:
            raise AssertionError("bytes after the last answer: %r" % w.buf[:300])
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def conns():
    """Factory: conns(addr) -> Conn, all closed after the test."""
    made = []

    def make(addr, timeout=TIMEOUT, rcvbuf=None):
        c = Conn(addr, timeout, rcvbuf)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def req(method, target, body=b"", headers=(), version="1.1", host="fanoutd"):
    """A request's bytes: headers exactly as given, plus Host (on 1.1, unless host is None)
    and Content-Length when there is a body and no framing header."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/%s" % (method, target, version)]
    if host is not None and version == "1.1":
        lines.append("Host: %s" % host)
    names = {n.lower() for n, _ in headers}
    lines += ["%s: %s" % h for h in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def batch_doc(urls):
    return json.dumps({"requests": urls}).encode()


def batch_req(urls, headers=(), version="1.1"):
    return req("POST", "/v1/batch", batch_doc(urls), [("Content-Type", "application/json")] + list(headers),
               version)


def assert_json_error(a, status, kind):
    assert a.status == status, a
    assert a.content_type == "application/json", a
    e = a.json()
    assert set(e) == {"error"}, e
    assert e["error"]["kind"] == kind, e
    assert isinstance(e["error"]["message"], str) and e["error"]["message"], e
    return e["error"]


def assert_batch_ok(a, n):
    """A 200 batch answer (JSON document) with n results, every one status 200."""
    assert a.status == 200, a
    assert a.content_type == "application/json", a
    doc = a.json()
    validate(doc, n)
    assert [r.get("status") for r in doc["results"]] == [200] * n, doc
    assert doc["summary"]["complete"] is True, doc
    return doc


def slow_send(conn, data, answer_by):
    """Sends data one byte a second (the slow caller is the point: the pause between two
    bytes is the test), stopping as soon as the daemon answers or closes. Returns how many
    bytes were sent. Bounded by len(data) and answer_by seconds."""
    start = time.monotonic()
    for i in range(len(data)):
        left = answer_by - (time.monotonic() - start)
        assert left > 0, "no answer within %.1f s after %d bytes" % (answer_by, i)
        try:
            conn.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return i
        r, _, _ = select.select([conn.sock], [], [], min(1.0, left))
        if r:
            return i + 1
    return len(data)


@pytest.fixture
def both(daemon, sockdir):
    """A daemon listening on a Unix socket and on TCP loopback; extra keys as keywords."""
    def start(**keys):
        return daemon(listen=["unix:%s/s.sock" % sockdir, "127.0.0.1:%d" % free_port()], **keys)
    return start


# --- client_timeout_s ----------------------------------------------------------------

def test_slow_head_is_408_at_client_timeout(daemon, conns):
    d = daemon(client_timeout_s=2)
    c = conns(d.addrs()[0])
    t0 = time.monotonic()
    sent = slow_send(c, req("GET", "/healthz"), answer_by=6)
    a = c.answer()
    elapsed = time.monotonic() - t0
    assert_json_error(a, 408, "timeout")
    assert a.header("Connection") == "close"
    assert c.at_eof()
    assert 1.8 <= elapsed <= 4.0, elapsed
    assert 1 <= sent <= 4, sent
    assert d.client().get("/healthz").status == 200


def test_slow_document_is_408_at_client_timeout(daemon, upstream, conns):
    d = daemon(client_timeout_s=2)
    body = batch_doc([upstream.url("/ok")])
    c = conns(d.addrs()[0])
    t0 = time.monotonic()
    c.send(req("POST", "/v1/batch", headers=[("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body)))]))
    sent = slow_send(c, body, answer_by=6)
    a = c.answer()
    elapsed = time.monotonic() - t0
    assert_json_error(a, 408, "timeout")
    assert a.header("Connection") == "close"
    assert c.at_eof()
    assert 1.8 <= elapsed <= 4.0, elapsed
    assert sent < len(body)
    assert upstream.count() == 0


def test_slow_head_over_tcp_is_408(both, conns):
    d = both(client_timeout_s=1)
    c = conns(d.addrs()[1])
    slow_send(c, req("GET", "/healthz"), answer_by=5)
    assert_json_error(c.answer(), 408, "timeout")
    assert c.at_eof()


def test_idle_connections_close_silently_at_client_timeout(daemon, conns):
    d = daemon(client_timeout_s=1)
    silent = conns(d.addrs()[0])
    kept = conns(d.addrs()[0])
    kept.send(req("GET", "/healthz"))
    assert kept.answer().status == 200
    t0 = time.monotonic()
    # Nothing sent on the first, nothing more on the second: both closed, no 408.
    assert silent.at_eof() and kept.at_eof()
    assert time.monotonic() - t0 <= 3.0


# --- max_clients ------------------------------------------------------------------------

def test_max_clients_then_503_and_a_slot_frees(daemon, conns):
    d = daemon(max_clients=3)
    addr = d.addrs()[0]
    held = []
    for _ in range(3):  # accepted and counted once each has been answered
        c = conns(addr)
        c.send(req("GET", "/healthz"))
        assert c.answer().status == 200
        held.append(c)
    over = conns(addr)
    a = over.answer()
    e = assert_json_error(a, 503, "overloaded")
    assert "max_clients" in e["message"]
    assert int(a.header("Retry-After")) >= 1
    assert a.header("Connection") == "close"
    assert over.at_eof()
    over.close()
    # The three held connections still serve.
    held[0].send(req("GET", "/healthz"))
    assert held[0].answer().status == 200
    # One closes: a slot frees once the daemon has seen the close (a moment later).
    held[1].close()
    deadline = time.monotonic() + 3
    for _ in range(100):
        c = conns(addr)
        c.send(req("GET", "/healthz"))
        a = c.answer()
        if a.status == 200 or time.monotonic() > deadline:
            break
        c.close()
        time.sleep(0.02)
    assert a.status == 200, a


# --- strict parsing ----------------------------------------------------------------------

DOC = b'{"requests": []}'
BATCH_HEAD = "POST /v1/batch HTTP/1.1\r\nHost: f\r\nContent-Type: application/json\r\n"
STRICT = [
    ("cl_differing", BATCH_HEAD + "Content-Length: 16\r\nContent-Length: 17\r\n\r\n", DOC, 400),
    ("cl_twice_equal", BATCH_HEAD + "Content-Length: 16\r\nContent-Length: 16\r\n\r\n", DOC, 400),
    ("cl_list", BATCH_HEAD + "Content-Length: 16, 16\r\n\r\n", DOC, 400),
    ("cl_plus", BATCH_HEAD + "Content-Length: +16\r\n\r\n", DOC, 400),
    ("cl_suffix", BATCH_HEAD + "Content-Length: 16x\r\n\r\n", DOC, 400),
    ("cl_negative", BATCH_HEAD + "Content-Length: -1\r\n\r\n", DOC, 400),
    ("space_before_colon", BATCH_HEAD + "Content-Length : 16\r\n\r\n", DOC, 400),
    ("obs_fold_space", "GET /healthz HTTP/1.1\r\nHost: f\r\nX-A: b\r\n c\r\n\r\n", b"", 400),
    ("obs_fold_tab", "GET /healthz HTTP/1.1\r\nHost: f\r\nX-A: b\r\n\tc\r\n\r\n", b"", 400),
    ("te_gzip", BATCH_HEAD + "Transfer-Encoding: gzip\r\n\r\n", DOC, 400),
    ("te_gzip_chunked", BATCH_HEAD + "Transfer-Encoding: gzip, chunked\r\n\r\n", b"10\r\n" + DOC + b"\r\n0\r\n\r\n",
     400),
    ("te_and_cl", BATCH_HEAD + "Transfer-Encoding: chunked\r\nContent-Length: 16\r\n\r\n",
     b"10\r\n" + DOC + b"\r\n0\r\n\r\n", 400),
    ("te_in_http10", "POST /v1/batch HTTP/1.0\r\nContent-Type: application/json\r\n"
     "Transfer-Encoding: chunked\r\n\r\n", b"10\r\n" + DOC + b"\r\n0\r\n\r\n", 400),
    ("bad_chunk_size", BATCH_HEAD + "Transfer-Encoding: chunked\r\n\r\n", b"zz\r\n" + DOC + b"\r\n0\r\n\r\n", 400),
    ("chunk_without_crlf", BATCH_HEAD + "Transfer-Encoding: chunked\r\n\r\n", b"10\r\n" + DOC + b"XX0\r\n\r\n", 400),
    ("bare_lf_head", "GET /healthz HTTP/1.1\nHost: f\n\n", b"", 400),
    ("bare_lf_one_line", "GET /healthz HTTP/1.1\r\nHost: f\nX: y\r\n\r\n", b"", 400),
    ("bare_cr", "GET /healthz HTTP/1.1\r\nHost: f\rX: y\r\n\r\n", b"", 400),
    ("two_spaces_request_line", "GET  /healthz HTTP/1.1\r\nHost: f\r\n\r\n", b"", 400),
    ("trailing_space_request_line", "GET /healthz HTTP/1.1 \r\nHost: f\r\n\r\n", b"", 400),
    ("http09", "GET /healthz\r\n\r\n", b"", 400),
    ("lowercase_version", "GET /healthz http/1.1\r\nHost: f\r\n\r\n", b"", 400),
    ("control_char_in_value", "GET /healthz HTTP/1.1\r\nHost: f\r\nX: a\x01b\r\n\r\n", b"", 400),
    ("no_host", "GET /healthz HTTP/1.1\r\n\r\n", b"", 400),
    ("two_hosts", "GET /healthz HTTP/1.1\r\nHost: f\r\nHost: f\r\n\r\n", b"", 400),
    ("http2", "GET /healthz HTTP/2.0\r\nHost: f\r\n\r\n", b"", 505),
    ("http12", "GET /healthz HTTP/1.2\r\nHost: f\r\n\r\n", b"", 505),
    ("h2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"", 505),
    ("target_not_a_path", "GET healthz HTTP/1.1\r\nHost: f\r\n\r\n", b"", 400),
    ("target_authority", "GET fanoutd:80 HTTP/1.1\r\nHost: f\r\n\r\n", b"", 400),
    ("target_asterisk", "OPTIONS * HTTP/1.1\r\nHost: f\r\n\r\n", b"", 400),
    ("target_query_only", "GET ?x=1 HTTP/1.1\r\nHost: f\r\n\r\n", b"", 400),
]


@pytest.mark.parametrize("name,head,body,status", STRICT, ids=[s[0] for s in STRICT])
def test_strict_parsing_refuses_with_json_and_closes(daemon, upstream, conns, name, head, body, status):
    d = daemon()
    c = conns(d.addrs()[0])
    # A well-formed request pipelined behind the bad one is never answered.
    c.send(head.encode("latin-1") + body + req("GET", "/healthz"))
    a = c.answer()
    assert_json_error(a, status, "bad_request")
    assert a.header("Connection") == "close"
    assert c.at_eof()
    assert upstream.count() == 0
    assert d.client().get("/healthz").status == 200  # and the daemon goes on


def test_70_kib_head_is_431(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    head = "GET /healthz HTTP/1.1\r\nHost: f\r\n" + "".join("X-Pad-%d: %s\r\n" % (i, "a" * 990) for i in range(70))
    c.send(head.encode() + b"\r\n")
    a = c.answer()
    assert_json_error(a, 431, "too_large")
    assert a.header("Connection") == "close"
    assert c.at_eof()


def test_one_huge_header_line_is_431(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(b"GET /healthz HTTP/1.1\r\nHost: f\r\nX-Big: " + b"b" * (70 * 1024) + b"\r\n\r\n")
    assert_json_error(c.answer(), 431, "too_large")
    assert c.at_eof()


def test_too_many_header_fields_is_431(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(b"GET /healthz HTTP/1.1\r\nHost: f\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"\r\n")
    assert_json_error(c.answer(), 431, "too_large")
    assert c.at_eof()


@pytest.mark.parametrize("n", [1, 2, 8])
def test_leading_empty_lines_are_skipped(daemon, conns, n):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(b"\r\n" * n + req("GET", "/healthz", headers=[("Connection", "close")]))
    a = c.answer()
    assert a.status == 200 and a.json() == {"status": "ok"}
    assert c.at_eof()


@pytest.mark.parametrize("n", [9, 64])
def test_many_leading_empty_lines_are_answered(daemon, conns, n):
    """More empty lines than h1_parse_request skips at once: answered (either served or
    refused with JSON), never a crash."""
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(b"\r\n" * n + req("GET", "/healthz", headers=[("Connection", "close")]))
    a = c.answer()
    if a.status != 200:
        assert_json_error(a, 400, "bad_request")
    assert c.at_eof()
    assert d.client().get("/healthz").status == 200


def test_absolute_form_target_is_accepted(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(req("GET", "http://fanoutd/healthz"))
    a = c.answer()
    assert a.status == 200 and a.json() == {"status": "ok"}


def test_http10_without_host_is_accepted(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert c.answer().status == 200


# --- max_request_bytes and Expect ------------------------------------------------------

def big_doc(upstream, size):
    urls, doc = [], b""
    while len(doc) <= size:
        urls.append(upstream.url("/ok?pad=%d" % len(urls)))
        doc = batch_doc(urls)
    return doc


def test_content_length_over_max_request_bytes_is_413(daemon, upstream, conns):
    d = daemon(max_request_bytes=1024)
    body = big_doc(upstream, 1500)
    c = conns(d.addrs()[0])
    c.send(req("POST", "/v1/batch", body, [("Content-Type", "application/json")]))
    a = c.answer()
    e = assert_json_error(a, 413, "too_large")
    assert "max_request_bytes" in e["message"]
    assert a.header("Connection") == "close"
    assert c.at_eof()
    assert upstream.count() == 0


def test_chunked_document_over_max_request_bytes_is_413(daemon, upstream, conns):
    d = daemon(max_request_bytes=1024)
    body = big_doc(upstream, 1500)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 200]), body[i:i + 200]) for i in range(0, len(body), 200))
    c = conns(d.addrs()[0])
    c.send(req("POST", "/v1/batch", headers=[("Content-Type", "application/json"),
                                               ("Transfer-Encoding", "chunked")]) + chunks + b"0\r\n\r\n")
    assert_json_error(c.answer(), 413, "too_large")
    assert c.at_eof()
    assert upstream.count() == 0


def test_expect_100_continue_over_max_request_bytes_is_413_at_once(daemon, upstream, conns):
    d = daemon(max_request_bytes=1024)
    c = conns(d.addrs()[0], timeout=5)
    # The head alone: the 413 comes without the body ever being sent, and no 100 before it.
    c.send(req("POST", "/v1/batch", headers=[("Content-Type", "application/json"), ("Content-Length", "5000"),
                                               ("Expect", "100-continue")]))
    a = c.answer()
    assert_json_error(a, 413, "too_large")
    assert a.header("Connection") == "close"
    assert c.at_eof()
    assert upstream.count() == 0


def test_expect_100_continue_then_the_answer(daemon, upstream, conns):
    d = daemon()
    body = batch_doc([upstream.url("/ok"), upstream.url("/ok")])
    c = conns(d.addrs()[0])
    c.send(req("POST", "/v1/batch", headers=[("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body))), ("Expect", "100-continue")]))
    interim = c.answer()
    assert interim.status == 100 and interim.version == "1.1", interim
    assert upstream.count() == 0
    c.send(body)
    assert_batch_ok(c.answer("POST"), 2)
    assert upstream.count() == 2


def test_unknown_expectation_is_417(daemon, upstream, conns):
    d = daemon()
    body = batch_doc([upstream.url("/ok")])
    c = conns(d.addrs()[0])
    c.send(req("POST", "/v1/batch", body, [("Content-Type", "application/json"), ("Expect", "200-ok")]))
    a = c.answer()
    assert_json_error(a, 417, "bad_request")
    assert c.at_eof()
    assert upstream.count() == 0


# --- HTTP/1.0 -------------------------------------------------------------------------------

def test_http10_healthz_is_not_chunked_and_closes(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    a = c.answer()
    assert a.status == 200 and a.json() == {"status": "ok"}
    assert not a.chunked and a.header("Transfer-Encoding") is None
    assert a.header("Connection") == "close"
    assert c.at_eof()


def test_http10_keep_alive_still_closes(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    a = c.answer()
    assert a.status == 200 and a.header("Connection") == "close"
    assert c.at_eof()


def test_http10_batch_is_delimited_by_the_close(daemon, upstream, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(batch_req([upstream.url("/ok"), upstream.url("/chunked")], version="1.0"))
    a = c.answer("POST")
    assert a.version == "1.0"
    assert a.close_delimited and not a.chunked, a
    assert a.header("Transfer-Encoding") is None and a.header("Content-Length") is None
    assert_batch_ok(a, 2)
    assert c.wire.eof


def test_http10_ndjson_batch_is_delimited_by_the_close(daemon, upstream, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(batch_req([upstream.url("/ok")], [("Accept", "application/x-ndjson")], version="1.0"))
    a = c.answer("POST")
    assert a.status == 200 and a.close_delimited and not a.chunked, a
    lines = a.body.decode().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["status"] == 200 and "summary" in json.loads(lines[1])


# --- keep-alive and pipelining ---------------------------------------------------------------

def test_keep_alive_two_batches_on_one_connection(daemon, upstream, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(batch_req([upstream.url("/ok")]))
    a = c.answer("POST")
    assert a.chunked and a.header("Connection") is None
    assert_batch_ok(a, 1)
    c.send(batch_req([upstream.url("/ok"), upstream.url("/ok")]))
    assert_batch_ok(c.answer("POST"), 2)
    c.send(req("GET", "/healthz", headers=[("Connection", "close")]))
    assert c.answer().status == 200
    assert c.at_eof()
    assert upstream.count() == 3


def test_errors_keep_the_connection_when_the_request_was_read(daemon, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(req("GET", "/nope"))
    assert_json_error(c.answer(), 404, "not_found")
    c.send(req("GET", "/v1/batch"))
    a = c.answer()
    assert_json_error(a, 405, "method_not_allowed")
    assert a.header("Allow") == "POST"
    c.send(req("HEAD", "/healthz"))
    a = c.answer("HEAD")
    assert a.status == 200 and int(a.header("Content-Length")) > 0
    c.send(req("GET", "/healthz"))
    assert c.answer().status == 200


def test_pipelined_healthz_batch_metrics_in_one_send(daemon, upstream, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(req("GET", "/healthz") + batch_req([upstream.url("/ok"), upstream.url("/delay/100")]) +
           req("GET", "/metrics", headers=[("Connection", "close")]))
    a = c.answer()
    assert a.status == 200 and a.json() == {"status": "ok"}
    assert_batch_ok(c.answer("POST"), 2)
    m = c.answer()
    assert m.status == 200 and m.content_type == "text/plain"
    assert b"fanoutd_requests_total" in m.body
    assert c.at_eof()


def test_pipelined_two_batches_in_one_send(daemon, upstream, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(batch_req([upstream.url("/delay/150")]) + batch_req([upstream.url("/ok"), upstream.url("/ok")]))
    first = assert_batch_ok(c.answer("POST"), 1)
    second = assert_batch_ok(c.answer("POST"), 2)
    assert first["results"][0]["url"].endswith("/delay/150")
    assert all(r["url"].endswith("/ok") for r in second["results"])
    c.send(req("GET", "/healthz"))
    assert c.answer().status == 200


def test_pipelined_request_behind_a_refused_document_is_not_answered(daemon, upstream, conns):
    d = daemon()
    c = conns(d.addrs()[0])
    c.send(req("POST", "/v1/batch", b"{not json", [("Content-Type", "application/json")]) + req("GET", "/healthz"))
    assert_json_error(c.answer("POST"), 400, "bad_request")
    # The document was read whole: the connection may go on with the next request.
    b = c.answer()
    assert b.status == 200


# --- half-close ---------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_half_close_after_a_batch_gets_the_whole_stream(both, upstream, conns, transport):
    d = both()
    c = conns(d.addrs()[0 if transport == "unix" else 1])
    urls = [upstream.url("/ok"), upstream.url("/delay/200"), upstream.url("/text/100000")]
    c.send(batch_req(urls))
    c.shut_wr()
    a = c.answer("POST")
    doc = assert_batch_ok(a, 3)
    assert doc["results"][0]["status"] == 200
    assert c.at_eof()
    assert upstream.count() == 3


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_half_close_after_healthz_gets_the_answer(both, conns, transport):
    d = both()
    for _ in range(20):  # the answer must never be lost, whatever the daemon sees first
        c = conns(d.addrs()[0 if transport == "unix" else 1])
        c.send(req("GET", "/healthz"))
        c.shut_wr()
        a = c.answer()
        assert a.status == 200 and a.json() == {"status": "ok"}
        assert c.at_eof()
        c.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_half_close_after_a_bad_request_gets_the_400(both, conns, transport):
    d = both()
    for _ in range(20):
        c = conns(d.addrs()[0 if transport == "unix" else 1])
        c.send(b"GET  /healthz HTTP/1.1\r\nHost: f\r\n\r\n")
        c.shut_wr()
        assert_json_error(c.answer(), 400, "bad_request")
        assert c.at_eof()
        c.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_half_close_after_pipelined_requests_gets_every_answer(both, upstream, conns, transport):
    """Every request wholly received before the caller's FIN is answered, in order."""
    d = both()
    c = conns(d.addrs()[0 if transport == "unix" else 1])
    c.send(req("GET", "/healthz") + batch_req([upstream.url("/ok")]) + req("GET", "/metrics"))
    c.shut_wr()
    assert c.answer().status == 200
    assert_batch_ok(c.answer("POST"), 1)
    assert c.answer().status == 200, "the request pipelined behind the batch was dropped"
    assert c.at_eof()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_half_close_never_cuts_a_queued_answer(both, conns, transport):
    """60 pipelined GET /metrics (about 5 KiB each: more than one write of the daemon's)
    and a FIN: no answer may be cut short, and every one should come."""
    d = both()
    c = conns(d.addrs()[0 if transport == "unix" else 1], rcvbuf=4096)
    c.send(req("GET", "/metrics") * 60)
    c.shut_wr()
    got = 0
    for _ in range(60):
        try:
            a = c.answer()
        except FramingError as e:
            # Closed between two answers (b'' of a head) is the lesser fault; inside one, not.
            assert "answer head: b''" in str(e), "answer %d cut short after the caller's FIN: %s" % (got + 1, e)
            break
        assert a.status == 200 and a.body.startswith(b"# "), a
        got += 1
    assert got == 60, "%d of 60 answers, then the connection closed" % got
    assert c.at_eof()


# --- JSON on every error ----------------------------------------------------------------------

def test_every_error_answer_is_json(daemon, conns):
    d = daemon()
    cases = [
        (req("GET", "/nope"), 404, "not_found", None),
        (req("GET", "/"), 404, "not_found", None),
        (req("PUT", "/v1/batch", b"{}"), 405, "method_not_allowed", "POST"),
        (req("POST", "/healthz", b"{}"), 405, "method_not_allowed", "GET, HEAD"),
        (req("DELETE", "/metrics"), 405, "method_not_allowed", "GET, HEAD"),
        (req("POST", "/v1/origins", b"x"), 405, "method_not_allowed", "GET, HEAD"),
        (req("POST", "/v1/batch", b"[]", [("Content-Type", "application/json")]), 400, "bad_request", None),
        (b"BAD\r\n\r\n", 400, "bad_request", None),
    ]
    for raw, status, kind, allow in cases:
        c = conns(d.addrs()[0])
        c.send(raw)
        a = c.answer()
        assert a.status == status, (raw, a)
        assert a.content_type == "application/json", (raw, a)
        e = a.json()["error"]
        assert kind is None or e["kind"] == kind, (raw, e)
        assert e["message"], (raw, e)
        if allow is not None:
            assert a.header("Allow") == allow, (raw, a)

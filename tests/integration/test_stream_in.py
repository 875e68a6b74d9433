"""Streamed batches (NDJSON in), from the caller's side: raw POST /v1/batch uploads with
Content-Type application/x-ndjson on the daemon's Unix socket, chunked or under a
Content-Length, sent piece by piece while the results are read.

What is checked: one result per request line with its index (options and blank lines not
counted, CRLF accepted, a last line without newline counted), results before the upload
ends, bad lines and bad options lines, over-long lines, the upload paused by a caller that
does not read and by max(1024, 2 x concurrency) queued requests, a stalled, a cut and a
closed upload, shutdown during an upload, order "input" and deadline_ms, and a
200,000-line upload whose peak RSS must not grow with the count. The strict HTTP/1.1 parsing, timeouts and pipelining of the server
are test_server.py's.

FANOUTD_STREAM_BIG=N sets the big run's line count (default 200000; the 20,000-line run it
is compared with always runs)."""

import json
import os
import select
import signal
import socket
import threading
import time

import pytest

from client import BatchStream, FramingError, Response, connect

NDJSON = "application/x-ndjson"
MiB = 1 << 20
# ASan keeps freed memory in a quarantine (256 MiB by default) that a long run fills, so
# RSS would measure the run's churn; a small one keeps it about what the daemon holds.
# A release build ignores it.
SMALL_QUARANTINE = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=4"}


# --- helpers -------------------------------------------------------------------

class Raw(str):
    """Line text sent as it is, not serialised."""


def lines(*items, eol="\n"):
    """NDJSON text: each item serialised as JSON (Raw items as they are), one a line."""
    return "".join((i if isinstance(i, Raw) else json.dumps(i)) + eol for i in items)


class Upload:
    """A POST /v1/batch with an NDJSON body sent in pieces: chunked (each send() one chunk)
    or under a Content-Length given up front (neither: a request without a body)."""

    def __init__(self, d, chunked=True, length=None, accept=NDJSON, query="", timeout=20.0):
        self.sock = connect(d.addrs()[0], timeout)
        self.chunked = chunked
        self.ndjson = accept == NDJSON or "format=ndjson" in query
        head = ["POST /v1/batch%s HTTP/1.1" % query, "Host: fanoutd", "Content-Type: " + NDJSON]
        if accept:
            head.append("Accept: " + accept)
        if chunked:
            head.append("Transfer-Encoding: chunked")
        elif length is not None:
            head.append("Content-Length: %d" % length)
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        self.timeout = timeout

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if data:
            self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    def end(self):
        if self.chunked:
            self.sock.sendall(b"0\r\n\r\n")

    def response(self, n=None):
        """The answer, its head read: a BatchStream for a 200, else a Response."""
        r = Response(self.sock, self.timeout)
        if r.status != 200:
            return r
        return BatchStream(r, n, self.ndjson)

    def reader(self, timeout=None):
        return NdjsonReader(self.sock, timeout or self.timeout)

    def close(self):
        self.sock.close()


class NdjsonReader:
    """A chunked NDJSON batch answer read with little work per byte (BatchStream keeps
    the whole text and re-joins it, too slow for 10^5 results): yields each result as
    its line is complete, checks the framing, keeps the summary and the time of the first
    result."""

    def __init__(self, sock, timeout):
        self.resp = Response(sock, timeout)
        assert self.resp.status == 200, (self.resp.status, self.resp.read_body())
        assert self.resp.chunked and self.resp.content_type == NDJSON, self.resp.headers
        self.sock = sock
        self.deadline = time.monotonic() + timeout
        self.raw = bytearray(self.resp.wire.buf)
        self.resp.wire.buf = b""
        self.text = bytearray()
        self.summary = None
        self.t_first = None
        self.count = 0
        self.ended = False

    def _recv(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not end within the reader's deadline")
        self.sock.settimeout(left)
        data = self.sock.recv(1 << 20)
        if not data:
            raise FramingError("connection closed inside the answer")
        self.raw += data

    def _chunks(self):
        """Moves whole chunks (or parts of one) from raw to text; False at the end."""
        raw = self.raw
        while True:
            if getattr(self, "_left", 0):
                take = min(self._left, len(raw))
                if take == 0:
                    return True
                self.text += raw[:take]
                del raw[:take]
                self._left -= take
                if self._left:
                    return True
                self._need_crlf = True
            if getattr(self, "_need_crlf", False):
                if len(raw) < 2:
                    return True
                if raw[:2] != b"\r\n":
                    raise FramingError("chunk not followed by CRLF")
                del raw[:2]
                self._need_crlf = False
            nl = raw.find(b"\r\n")
            if nl < 0:
                if len(raw) > 64:
                    raise FramingError("bad chunk size line %r" % bytes(raw[:64]))
                return True
            size = int(bytes(raw[:nl]), 16)
            del raw[:nl + 2]
            if size == 0:
                while len(raw) < 2:
                    self._recv()
                if raw[:2] != b"\r\n":
                    raise FramingError("trailer after the last chunk")
                del raw[:2]
                if raw:
                    raise FramingError("bytes after the answer: %r" % bytes(raw[:100]))
                return False
            self._left = size

    def __iter__(self):
        while not self.ended:
            more = self._chunks()
            nl = self.text.rfind(b"\n")
            if nl >= 0:
                block = bytes(self.text[:nl])
                del self.text[:nl + 1]
                for line in block.split(b"\n"):
                    obj = json.loads(line)
                    if self.summary is not None:
                        raise AssertionError("a line after the summary: %r" % line[:200])
                    if set(obj) == {"summary"}:
                        self.summary = obj["summary"]
                        continue
                    if self.t_first is None:
                        self.t_first = time.monotonic()
                    self.count += 1
                    yield obj
            if not more:
                if self.text:
                    raise FramingError("the answer does not end with a newline")
                if self.summary is None:
                    raise AssertionError("no summary line")
                self.ended = True
                return
            self._recv()


def read_eof(sock, timeout=5.0):
    """Whether sock sees EOF (or a reset) within timeout, nothing else arriving first."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def assert_next_request_or_close(up, r):
    """After a refusal: a connection kept alive (the whole upload was read) must serve the
    next request; otherwise the answer says close and the daemon closes."""
    if (r.header("Connection") or "").lower() == "close":
        assert read_eof(up.sock, 3.0), "Connection: close, and still open"
        return
    up.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    h = Response(up.sock, 5.0)
    assert h.status == 200 and h.json() == {"status": "ok"}, h.status


def send_until_blocked(sock, data, quiet=1.0, limit_s=30.0):
    """Sends data without blocking until the kernel takes nothing more for `quiet` seconds
    (the daemon has stopped reading), or all of it is sent. Returns the bytes sent."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + limit_s
    try:
        while sent < len(data):
            assert time.monotonic() < deadline, "the upload neither ended nor blocked in %.0f s" % limit_s
            try:
                sent += sock.send(data[sent:sent + 65536])
                continue
            except BlockingIOError:
                pass
            _, w, _ = select.select([], [sock], [], quiet)
            if not w:
                return sent
        return sent
    finally:
        sock.settimeout(30.0)


def send_rest(sock, data, done):
    """In a thread: sends data on a duplicate of sock (its own timeout), then sets done."""
    ws = socket.socket(fileno=os.dup(sock.fileno()))
    ws.settimeout(60.0)
    try:
        ws.sendall(data)
    except OSError as e:
        done.error = e
    finally:
        ws.close()
        done.set()


def mem(pid):
    """VmRSS and VmHWM (peak) of process pid, in bytes."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def ok_urls(upstream, n, tag="i"):
    return [upstream.url("/ok?%s=%d" % (tag, i)) for i in range(n)]


# --- one result per line ---------------------------------------------------------

def mixed_body(upstream):
    """Options, then 6 request lines (strings and objects, LF and CRLF, blank lines in
    between), the last without its newline; returns (text, urls, ids)."""
    u = ok_urls(upstream, 6)
    text = (lines({"options": {"concurrency": 4}}, eol="\r\n")
            + lines(u[0])
            + "\n"
            + lines({"url": u[1], "id": "one"}, eol="\r\n")
            + "  \t \n"
            + lines({"url": u[2], "id": 7, "method": "HEAD"}, u[3])
            + "\r\n"
            + lines({"url": u[4], "headers": {"X-A": "b"}}, eol="\r\n")
            + json.dumps({"url": u[5], "id": "last"}))
    return text, u, {1: "one", 2: 7, 5: "last"}


@pytest.mark.parametrize("framing", ["chunked", "length"])
@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_every_line_gets_one_result_with_its_index(daemon, upstream, framing, fmt):
    d = daemon()
    text, urls, ids = mixed_body(upstream)
    body = text.encode()
    up = Upload(d, chunked=framing == "chunked", length=len(body), accept=NDJSON if fmt == "ndjson" else None)
    # Pieces of 7 bytes: lines, and CRLFs, split across chunks (or across sends).
    for i in range(0, len(body), 7):
        up.send(body[i:i + 7])
    up.end()
    bs = up.response(len(urls)).finish()
    up.close()
    assert bs.status == 200 and bs.summary["complete"] is True
    assert bs.summary["responses"] == len(urls) and bs.summary["errors"] == 0
    for i, u in enumerate(urls):
        r = bs[i]
        assert r["url"] == u and r["status"] == 200, r
        assert r.get("id") == ids.get(i), r
    assert bs[2]["bytes"] == 0  # HEAD
    got = sorted(r.query["i"] for r in upstream.reqs("/ok"))
    assert got == [str(i) for i in range(len(urls))]
    assert [r.header("X-A") for r in upstream.reqs("/ok") if r.query["i"] == "4"] == ["b"]


def test_without_an_options_line_the_first_line_is_request_0(daemon, upstream):
    d = daemon()
    urls = ok_urls(upstream, 3)
    up = Upload(d)
    up.send(lines({"url": urls[0], "id": "first"}, *urls[1:]))
    up.end()
    bs = up.response(3).finish()
    up.close()
    assert bs[0]["id"] == "first" and [bs[i]["url"] for i in range(3)] == urls
    assert bs.summary["complete"] is True


def test_query_format_ndjson_and_a_content_type_with_parameters(daemon, upstream):
    d = daemon()
    up = Upload(d, accept=None, query="?format=ndjson")
    up.send(lines(*ok_urls(upstream, 2)))
    up.end()
    bs = up.response(2).finish()
    up.close()
    assert bs.header("Content-Type").startswith(NDJSON) and bs.summary["total"] == 2


def test_first_result_arrives_while_the_upload_is_open(daemon, upstream):
    d = daemon()
    urls = ok_urls(upstream, 6)
    up = Upload(d)
    up.send(lines({"options": {"concurrency": 8}}, urls[0], urls[1]))
    bs = up.response(6)
    assert {bs.next_result()["index"], bs.next_result()["index"]} == {0, 1}
    # One line at a time: each is dispatched, and answered, before the next is sent.
    for i in range(2, 6):
        up.send(lines(urls[i]))
        r = bs.next_result()
        assert r["index"] == i and r["url"] == urls[i] and r["status"] == 200
    assert bs.summary is None
    up.end()
    bs.finish()
    up.close()
    assert bs.summary["total"] == 6 and bs.summary["complete"] is True


# --- bad lines, bad options, empty uploads ------------------------------------------

def test_bad_lines_are_their_own_invalid_request(daemon, upstream):
    d = daemon()
    good = upstream.url("/ok")
    body = lines({"options": {}},
                 good,                                   # 0
                 Raw("this is not json"),                # 1
                 Raw("42"),                              # 2
                 Raw("[1, 2]"),                          # 3
                 Raw("null"),                            # 4
                 "ftp://example.test/",                  # 5 (a string, bad scheme)
                 {"url": good, "bogus": 1},              # 6
                 {"options": {"concurrency": 2}},        # 7: options only on the first line
                 Raw(json.dumps(good) + " trailing"),    # 8
                 {"url": good, "id": "ok9"})             # 9
    up = Upload(d)
    up.send(body)
    up.send(b'"%s?\xff\xfe"\n' % good.encode())  # 10: not UTF-8, so not JSON
    up.send(b'{"url": "%s", "id": "ok11"}' % good.encode())  # 11: the last, no newline
    up.end()
    bs = up.response(12).finish()
    up.close()
    kinds = bs.kinds()
    assert kinds == [None] + ["invalid_request"] * 8 + [None, "invalid_request", None], \
        [r.get("error") for r in bs.results_by_index]
    assert "not JSON" in bs[1]["error"]["message"]
    assert "string or an object" in bs[2]["error"]["message"]
    assert "scheme" in bs[5]["error"]["message"]
    assert "bogus" in bs[6]["error"]["message"]
    assert "options" in bs[7]["error"]["message"]
    assert "not JSON" in bs[10]["error"]["message"]
    assert bs[9]["id"] == "ok9" and bs[9]["status"] == 200 and bs[11]["id"] == "ok11"
    assert bs.summary["responses"] == 3 and bs.summary["errors"] == 9 and bs.summary["complete"] is True
    assert upstream.count("/ok") == 3


@pytest.mark.parametrize("first,what", [
    ({"options": {"concurrency": 0}}, "concurrency"),
    ({"options": {"concurrency": 4}, "x": 1}, "options"),
    ({"options": {"nope": 1}}, "nope"),
    ({"options": "fast"}, "options"),
    ({"options": {"body": "xml"}}, "body"),
])
@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_a_bad_options_line_is_400_before_any_result(daemon, upstream, first, what, framing):
    d = daemon()
    body = lines(first, *ok_urls(upstream, 3)).encode()
    up = Upload(d, chunked=framing == "chunked", length=len(body))
    up.send(body)
    up.end()
    r = up.response()
    assert r.status == 400 and r.content_type == "application/json", (r.status, r.headers)
    err = json.loads(r.read_body())["error"]
    assert err["kind"] == "bad_request" and what in err["message"], err
    assert_next_request_or_close(up, r)
    up.close()
    assert not upstream.wait_for(lambda u: u.requests, 0.3), "a request of a refused batch went out"


@pytest.mark.parametrize("body", ["chunked-empty", "length-0", "no-body", "options-only", "blank-lines"])
@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_an_upload_without_requests_is_a_batch_of_none(daemon, body, fmt):
    d = daemon(client_timeout_s=3)  # should the daemon wait for a body, the test ends soon
    text = {"options-only": lines({"options": {"concurrency": 2}}), "blank-lines": "\n\r\n  \n"}.get(body, "")
    text = text.encode()
    up = Upload(d, chunked=body not in ("length-0", "no-body"), length=None if body == "no-body" else len(text),
                accept=NDJSON if fmt == "ndjson" else None, timeout=6)
    up.send(text)
    up.end()
    bs = up.response(0)
    assert isinstance(bs, BatchStream), (bs.status, bs.read_body())
    bs.finish()
    up.close()
    assert bs.summary["total"] == 0 and bs.summary["complete"] is True and bs.arrival == []


# --- max_request_bytes ----------------------------------------------------------------

@pytest.mark.parametrize("how", ["whole", "no-newline-yet"])
def test_a_first_line_over_max_request_bytes_is_413(daemon, upstream, how):
    d = daemon(max_request_bytes=1024)
    long_line = lines({"url": upstream.url("/ok"), "id": "x" * 2000}).encode()
    up = Upload(d)
    if how == "whole":
        up.send(long_line)                    # the whole line, newline included, at once
    else:
        up.send(long_line[:-1])               # no newline: the daemon cannot wait for one
    r = up.response()
    assert r.status == 413, "a %d-byte first line was taken: %d" % (len(long_line), r.status)
    assert json.loads(r.read_body())["error"]["kind"] == "too_large"
    up.close()
    assert upstream.count() == 0


@pytest.mark.parametrize("how", ["whole", "no-newline-yet"])
def test_a_later_line_over_max_request_bytes_ends_the_upload(daemon, upstream, how):
    # client_timeout_s: should the daemon wait for more lines, the batch ends soon anyway.
    d = daemon(max_request_bytes=1024, client_timeout_s=3)
    urls = ok_urls(upstream, 4)
    up = Upload(d)
    up.send(lines({"options": {"concurrency": 4}}, urls[0], urls[1]))
    bs = up.response()
    assert {bs.next_result()["index"], bs.next_result()["index"]} == {0, 1}
    long_line = lines({"url": urls[2], "id": "x" * 2000}).encode()
    if how == "whole":
        up.send(long_line + lines(urls[3]).encode())
    else:
        up.send(long_line[:-1])  # the answer must end without the rest of the line
    bs.finish()
    assert bs.summary["total"] == 3 and bs.summary["complete"] is False, (bs.summary, bs.kinds())
    assert bs[2]["error"]["kind"] == "invalid_request" and "max_request_bytes" in bs[2]["error"]["message"]
    assert read_eof(up.sock, 3.0)
    up.close()
    assert sorted(r.query["i"] for r in upstream.reqs("/ok")) == ["0", "1"]


# --- backpressure ---------------------------------------------------------------------

def test_a_caller_that_does_not_read_stops_the_upload(daemon, upstream):
    """Large bodies, a caller that writes and never reads: its send blocks, the upstream
    sees few requests and the daemon's memory stays bounded; reading resumes the upload."""
    d = daemon(output_buffer_bytes=65536, env=SMALL_QUARANTINE)
    size, n = 32768, 3000
    rss0 = mem(d.proc.pid)["VmRSS"]
    pad = "p" * 900  # ~1 KiB lines: the buffers along the way hold fewer of them
    body = lines({"options": {"concurrency": 4, "body": "text"}},
                 *({"url": upstream.url("/text/%d?i=%d" % (size, i)), "id": pad} for i in range(n))).encode()
    up = Upload(d, chunked=False, length=len(body), timeout=60)
    sent = send_until_blocked(up.sock, body)
    assert sent < len(body), "all %d lines went in without the caller reading" % n
    blocked_lines = body[:sent].count(b"\n") - 1
    # The upstream is not asked for what the caller will not read.
    fetched = upstream.count()
    assert fetched < 64, (fetched, blocked_lines)
    assert not upstream.wait_for(lambda u: len(u.requests) > fetched, 0.5)
    m = mem(d.proc.pid)
    print("not reading: %d lines sent, %d fetched, RSS %.1f MiB (peak %.1f, start %.1f)"
          % (blocked_lines, fetched, m["VmRSS"] / MiB, m["VmHWM"] / MiB, rss0 / MiB))
    assert m["VmHWM"] - rss0 < 32 * MiB, m
    # Reading resumes it: the rest of the upload goes in while the results are read.
    done = threading.Event()
    done.error = None
    threading.Thread(target=send_rest, args=(up.sock, body[sent:], done), daemon=True).start()
    seen = bytearray(n)
    rd = up.reader(timeout=60)
    for r in rd:
        i = r["index"]
        assert not seen[i], "index %d twice" % i
        seen[i] = 1
        assert r["status"] == 200 and r["bytes"] == size and len(r["body"]) == size, r.get("error")
    assert done.wait(10) and done.error is None, done.error
    up.close()
    assert rd.summary["total"] == n and rd.summary["responses"] == n and rd.summary["complete"] is True
    assert all(seen) and upstream.count() == n
    print("peak RSS over the whole batch %.1f MiB" % (mem(d.proc.pid)["VmHWM"] / MiB))


def test_the_upload_waits_while_1024_requests_are_queued(daemon, upstream):
    """Every request held by the upstream, concurrency 4: 4 go out, the daemon reads about
    1024 more lines and stops; once released, all 5000 complete."""
    d = daemon()
    n, conc = 5000, 4
    pad = "p" * 400  # ~500-byte lines, so that the buffers on the way hold a known few
    body = lines({"options": {"concurrency": conc, "per_host": conc}},
                 *({"url": upstream.url("/wait/hold?i=%d" % i), "id": pad} for i in range(n))).encode()
    line_len = len(body) // (n + 1)
    up = Upload(d, chunked=False, length=len(body), timeout=60)
    sent = send_until_blocked(up.sock, body)
    assert sent < len(body), "all %d lines went in while %d requests were held" % (n, conc)
    sent_lines = body[:sent].count(b"\n") - 1
    assert upstream.wait_for(lambda u: u.inflight == conc, 5)
    assert not upstream.wait_for(lambda u: len(u.requests) > conc, 0.5), upstream.stats()
    # The daemon read at least the 1024 it queues (plus those in flight), and beyond them
    # only what its read buffers and the socket hold (256 KiB read ahead, a line being
    # taken in, our send buffer): far fewer than the 5000 lines.
    sndbuf = up.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    slack = (sndbuf + 2 * 256 * 1024 + 65536) // line_len
    print("held: %d of %d lines sent (line %d bytes; 1028 queued or in flight + at most %d buffered)"
          % (sent_lines, n, line_len, slack))
    assert 1024 + conc <= sent_lines <= 1024 + conc + slack, (sent_lines, slack)
    upstream.release("hold")
    done = threading.Event()
    done.error = None
    threading.Thread(target=send_rest, args=(up.sock, body[sent:], done), daemon=True).start()
    seen = bytearray(n)
    rd = up.reader(timeout=60)
    for r in rd:
        assert not seen[r["index"]] and r["status"] == 200, r
        seen[r["index"]] = 1
    assert done.wait(10) and done.error is None, done.error
    up.close()
    assert all(seen) and rd.summary["total"] == n and rd.summary["complete"] is True
    assert upstream.stats()["peak"] == conc and upstream.count() == n


def test_the_queue_bound_is_twice_the_concurrency_when_that_is_more(daemon, upstream):
    d = daemon()
    n, conc = 4000, 700  # 2 x 700 = 1400 queued, not 1024
    body = lines({"options": {"concurrency": conc, "per_host": 4}},
                 *({"url": upstream.url("/wait/hold?i=%d" % i), "id": "p" * 400} for i in range(n))).encode()
    line_len = len(body) // (n + 1)
    up = Upload(d, chunked=False, length=len(body), timeout=60)
    sent = send_until_blocked(up.sock, body)
    assert sent < len(body)
    sent_lines = body[:sent].count(b"\n") - 1
    assert upstream.wait_for(lambda u: u.inflight == 4, 5)
    sndbuf = up.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    slack = (sndbuf + 2 * 256 * 1024 + 65536) // line_len
    print("held: %d lines sent (bound 1400 + 4 + %d)" % (sent_lines, slack))
    assert 1400 + 4 <= sent_lines <= 1400 + 4 + slack
    upstream.release("hold")
    done = threading.Event()
    done.error = None
    threading.Thread(target=send_rest, args=(up.sock, body[sent:], done), daemon=True).start()
    rd = up.reader(timeout=60)
    assert sum(1 for _ in rd) == n and rd.summary["complete"] is True
    assert done.wait(10) and done.error is None
    up.close()


# --- uploads that end badly ------------------------------------------------------------

def test_a_stalled_upload_is_ended_after_client_timeout_s(daemon, upstream):
    d = daemon(client_timeout_s=1)
    urls = ok_urls(upstream, 2)
    up = Upload(d)
    up.send(lines({"options": {}}, *urls))
    t_sent = time.monotonic()
    bs = up.response()
    got = sorted([bs.next_result()["index"], bs.next_result()["index"]])
    t_results = time.monotonic()
    assert got == [0, 1] and bs.summary is None
    bs.finish()
    t_end = time.monotonic()
    assert bs.summary["total"] == 2 and bs.summary["responses"] == 2 and bs.summary["complete"] is False
    assert t_results - t_sent < 0.9 <= t_end - t_sent < 5, (t_results - t_sent, t_end - t_sent)
    assert read_eof(up.sock, 3.0), "the connection stayed open after a stalled upload"
    up.close()


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_an_upload_cut_mid_body_finishes_what_arrived(daemon, upstream, framing):
    d = daemon()
    urls = ok_urls(upstream, 3)
    whole = lines({"options": {}}, *urls).encode()
    up = Upload(d, chunked=framing == "chunked", length=len(whole) + 100)
    # Two whole lines and half of the third, then the sending side is shut:
    # no last chunk, or 100 bytes short of the Content-Length.
    up.send(whole[:-20])
    up.sock.shutdown(socket.SHUT_WR)
    bs = up.response().finish()
    up.close()
    assert bs.summary["complete"] is False, bs.summary
    assert [bs[i]["status"] for i in (0, 1)] == [200, 200]
    # The half line is not taken for a request.
    assert bs.summary["total"] == 2, bs.arrival
    assert sorted(r.query["i"] for r in upstream.reqs("/ok")) == ["0", "1"]


def test_a_caller_that_closes_mid_upload_cancels(daemon, upstream):
    d = daemon()
    up = Upload(d)
    up.send(lines({"options": {"concurrency": 2}}, *[upstream.url("/wait/hold?i=%d" % i) for i in range(5)]))
    assert upstream.wait_for(lambda u: u.inflight == 2, 5)
    up.close()
    assert upstream.wait_for(lambda u: u.inflight == 0 and len(u.peer_closes) >= 2, 3), upstream.stats()
    assert not upstream.wait_for(lambda u: len(u.requests) > 2, 0.3)
    assert d.client().get("/healthz").status == 200


# --- shutdown ----------------------------------------------------------------------------

def test_shutdown_ends_an_open_upload(daemon, upstream):
    d = daemon(drain_timeout_s=1)
    up = Upload(d)
    up.send(lines({"options": {"concurrency": 2}}, upstream.url("/ok"),
                  *[upstream.url("/wait/hold?i=%d" % i) for i in range(3)]))
    bs = up.response(4)
    assert bs.next_result()["status"] == 200
    assert upstream.wait_for(lambda u: u.inflight == 2, 5)
    d.send_signal(signal.SIGTERM)
    bs.finish()
    up.close()
    assert bs.kinds() == [None, "cancelled", "cancelled", "cancelled"], bs.kinds()
    assert bs.summary["complete"] is False
    assert d.wait_exit(10) == 0


@pytest.mark.parametrize("sent", ["nothing", "half-a-line"])
def test_shutdown_while_the_first_line_is_awaited(daemon, upstream, sent):
    """A streamed batch that has no line yet when the drain ends: the caller gets an
    answer (a 503, or a document marked incomplete) and the daemon exits cleanly."""
    d = daemon(drain_timeout_s=1)
    up = Upload(d, timeout=10)
    if sent == "half-a-line":
        up.send('{"options": {"concurr')
    assert d.client().get("/healthz").status == 200  # the upload's head has been taken in
    d.send_signal(signal.SIGTERM)
    r = Response(up.sock, 10)
    body = r.read_body()
    up.close()
    if r.status == 200:
        assert body.rstrip(b"\r\n0").endswith(b"}") and b'"complete":false' in body, body
    else:
        assert r.status == 503 and json.loads(body)["error"]["kind"] == "overloaded", (r.status, body)
    assert d.wait_exit(10) == 0


# --- options that act on a streamed batch -----------------------------------------------

def test_order_input_on_a_streamed_batch(daemon, upstream):
    d = daemon()
    urls = [upstream.url("/wait/slow")] + ok_urls(upstream, 5)
    up = Upload(d)
    up.send(lines({"options": {"order": "input", "concurrency": 8}}, *urls))
    up.end()
    bs = up.response(6)
    assert upstream.wait_for(lambda u: sum(1 for r in u.requests if r.path == "/ok" and r.outcome) == 5, 5)
    # Five results are done, all waiting behind index 0: nothing on the wire yet.
    r, _, _ = select.select([up.sock], [], [], 0.3)
    assert not r and bs.resp.wire.buf == b"", bs.resp.wire.buf[:200]
    upstream.release("slow")
    bs.finish()
    up.close()
    assert [x["index"] for x in bs.arrival] == list(range(6))
    assert bs.summary["complete"] is True


@pytest.mark.parametrize("ended", [True, False])
def test_deadline_on_a_streamed_batch(daemon, upstream, ended):
    d = daemon()
    urls = [upstream.url("/ok")] + [upstream.url("/wait/hold?i=%d" % i) for i in range(4)]
    up = Upload(d)
    t0 = time.monotonic()
    up.send(lines({"options": {"deadline_ms": 500, "concurrency": 3}}, *urls))
    if ended:
        up.end()
    bs = up.response(5)
    # /ok and two /wait go first; once /ok is answered, a third /wait; one stays queued.
    assert upstream.wait_for(lambda u: u.inflight == 3, 5)
    bs.finish()
    elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 5, elapsed
    assert bs[0]["status"] == 200
    # Three in flight and one queued: all four end with kind deadline.
    assert bs.kinds()[1:] == ["deadline"] * 4, bs.kinds()
    assert bs.summary["complete"] is False and bs.summary["total"] == 5
    assert upstream.wait_for(lambda u: u.inflight == 0, 3)
    assert upstream.count("/wait") == 3
    if not ended:
        assert read_eof(up.sock, 3.0)
    up.close()


def test_lines_sent_after_the_deadline_get_no_result(daemon, upstream):
    d = daemon()
    up = Upload(d)
    up.send(lines({"options": {"deadline_ms": 300}}, upstream.url("/wait/hold")))
    bs = up.response()
    assert bs.next_result()["error"]["kind"] == "deadline"
    try:
        up.send(lines(*ok_urls(upstream, 3)))
        up.end()
    except OSError:
        pass  # the daemon may have closed already
    bs.finish()
    up.close()
    assert bs.summary["total"] == 1 and bs.summary["complete"] is False
    assert upstream.count("/ok") == 0


# --- a big upload: flat memory -------------------------------------------------------------

class PacedWriter(threading.Thread):
    """Sends n request lines as chunks at a steady pace (rate lines/s), on a duplicate of
    the socket; `sent` is the lines the kernel has taken so far. When the daemon reads
    slower than that, sendall blocks and the writer falls behind its pace."""

    TICK = 0.005

    def __init__(self, sock, urls, rate, options):
        super().__init__(daemon=True)
        self.ws = socket.socket(fileno=os.dup(sock.fileno()))
        self.ws.settimeout(60.0)
        self.urls = urls
        self.rate = rate
        self.options = options
        self.sent = 0
        self.error = None
        self.t_end = None

    def _chunk(self, text):
        data = text.encode()
        self.ws.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def run(self):
        try:
            self._chunk(json.dumps({"options": self.options}) + "\n")
            n = len(self.urls)
            t0 = time.monotonic() - self.TICK  # the first slice is one tick's worth
            while self.sent < n:
                due = min(n, max(self.sent + 1, int((time.monotonic() - t0) * self.rate)))
                self._chunk("".join('"%s"\n' % u for u in self.urls[self.sent:due]))
                self.sent = due
                if self.sent < n:
                    time.sleep(self.TICK)  # pacing the writer, not synchronisation
            self.ws.sendall(b"0\r\n\r\n")
            self.t_end = time.monotonic()
        except OSError as e:
            self.error = e
        finally:
            self.ws.close()


def big_run(d, ups, n, rate, conc=64):
    """Streams n URLs over the upstreams; returns figures. Every index gets one result."""
    urls = [ups[i % len(ups)].url("/ok?i=%d" % i) for i in range(n)]
    up = Upload(d, timeout=180)
    t0 = time.monotonic()
    w = PacedWriter(up.sock, urls, rate, {"concurrency": conc, "per_host": conc // len(ups) or 1})
    w.start()
    rd = up.reader(timeout=180)
    seen = bytearray(n)
    first_at = None
    for r in rd:
        if first_at is None:
            first_at = w.sent
        i = r["index"]
        assert not seen[i], "index %d twice" % i
        seen[i] = 1
        assert r.get("status") == 200 and r["url"] == urls[i], r
    wall = time.monotonic() - t0
    w.join(10)
    up.close()
    assert w.error is None, w.error
    assert rd.summary["total"] == n and rd.summary["responses"] == n and rd.summary["complete"] is True
    assert seen.count(1) == n
    m = mem(d.proc.pid)
    return {"n": n, "wall": wall, "first_lines": first_at, "first_frac": first_at / n,
            "first_ms": (rd.t_first - t0) * 1000, "hwm": m["VmHWM"], "rss": m["VmRSS"],
            "upload_s": w.t_end - t0}


def test_a_big_upload_streams_with_flat_memory(daemon, upstreams):
    n_big = int(os.environ.get("FANOUTD_STREAM_BIG", "200000"))
    n_small = 20000
    ups = upstreams(4)
    keys = dict(env=SMALL_QUARANTINE, max_connections=256, max_per_host=64)
    figures = []
    for n in (n_small, n_big):
        d = daemon(**keys)  # a fresh daemon each: both peaks from the same start
        start = mem(d.proc.pid)["VmRSS"]
        f = big_run(d, ups, n, rate=8000)
        f["start"] = start
        figures.append(f)
        print("%d URLs: wall %.1f s (upload paced over %.1f s), first result after %.1f ms with "
              "%d lines sent (%.3f%% of the upload); daemon RSS start %.1f MiB, peak %.1f MiB, "
              "end %.1f MiB" % (n, f["wall"], f["upload_s"], f["first_ms"], f["first_lines"],
                                100 * f["first_frac"], start / MiB, f["hwm"] / MiB, f["rss"] / MiB))
        assert d.stop() == 0
    small, big = figures
    assert big["first_frac"] < 0.01, big
    assert big["hwm"] < small["hwm"] + 20 * MiB, (small["hwm"] / MiB, big["hwm"] / MiB)

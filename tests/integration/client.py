"""An HTTP/1.1 client for talking to fanoutd over a Unix or TCP socket.

Strict on purpose: it checks the chunked framing byte by byte, that a batch
response is valid JSON (or NDJSON) of the contract's shape, and that every input
request got exactly one result. Streaming readers hand results to the test as
soon as their bytes arrive, so tests can act between two results.
"""

from headers import HeaderLookup
import codecs
import json
import re
import socket
import time

ERROR_KINDS = {"invalid_request", "blocked", "dns", "connect", "tls", "timeout", "deadline", "too_large",
               "protocol", "redirects", "cancelled", "internal"}
BODY_ENCODINGS = {"json", "text", "base64", "none"}
TIMING_KEYS = {"queue_ms", "dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "total_ms"}


class FramingError(AssertionError):
    pass


def connect(addr, timeout=20.0):
    """addr: a Unix socket path (str) or a (host, port) tuple (IPv6 host without brackets)."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(addr)
    return s


class Wire:
    """A socket with a read buffer and an overall deadline."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.buf = b""
        self.deadline = time.monotonic() + timeout
        self.eof = False

    def fill(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from fanoutd within the client's deadline")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return data

    def until(self, sep, limit=1 << 20, what="data"):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise FramingError("%s longer than %d bytes" % (what, limit))
            if not self.fill():
                raise FramingError("connection closed inside %s: %r" % (what, self.buf[:200]))
        out, _, self.buf = self.buf.partition(sep)
        return out

    def exact(self, n, what="data"):
        while len(self.buf) < n:
            if not self.fill():
                raise FramingError("connection closed inside %s (%d of %d bytes)" % (what, len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def some(self):
        """Whatever is buffered, or the next read; b"" at EOF."""
        if not self.buf and not self.eof:
            self.fill()
        out, self.buf = self.buf, b""
        return out


class Response(HeaderLookup):
    """A response head, with the body read either all at once (read_body) or chunk by chunk."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.wire = Wire(sock, timeout)
        head = self.wire.until(b"\r\n\r\n", limit=65536, what="response head")
        if b"\n" in head.replace(b"\r\n", b""):
            raise FramingError("bare LF in response head: %r" % head)
        lines = head.decode("latin-1").split("\r\n")
        m = re.fullmatch(r"HTTP/1\.([01]) (\d{3}) (.*)", lines[0])
        if not m:
            raise FramingError("bad status line %r" % lines[0])
        self.version = "1." + m.group(1)
        self.status = int(m.group(2))
        self.reason = m.group(3)
        self.headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise FramingError("bad header line %r" % line)
            self.headers.append((name, value.strip()))
        te = self.header("Transfer-Encoding")
        cl = self.header_all("Content-Length")
        if te is not None and cl:
            raise FramingError("both Transfer-Encoding and Content-Length")
        if len(cl) > 1:
            raise FramingError("several Content-Length headers")
        if te is not None and te.lower() != "chunked":
            raise FramingError("unexpected Transfer-Encoding %r" % te)
        self.chunked = te is not None
        self.length = int(cl[0]) if cl else None
        self.body = None  # set by read_body
        self.chunk_sizes = []
        self._done = False

    @property
    def content_type(self):
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def pieces(self):
        """Yields body bytes as they arrive, checking the framing; ends at the body's end."""
        w = self.wire
        if self.chunked:
            while True:
                line = w.until(b"\r\n", limit=1024, what="chunk size line")
                if not re.fullmatch(rb"[0-9a-fA-F]+", line):
                    raise FramingError("bad chunk size line %r" % line)
                size = int(line, 16)
                self.chunk_sizes.append(size)
                if size == 0:
                    trailer = w.until(b"\r\n", limit=1024, what="trailer")
                    if trailer != b"":
                        raise FramingError("unexpected trailer %r" % trailer)
                    break
                left = size
                while left:
                    if not w.buf and not w.fill():
                        raise FramingError("connection closed inside a chunk")
                    piece = w.buf[:left]
                    w.buf = w.buf[len(piece):]
                    left -= len(piece)
                    yield piece
                if w.exact(2, "chunk end") != b"\r\n":
                    raise FramingError("chunk of %d bytes not followed by CRLF" % size)
        elif self.length is not None:
            left = self.length
            while left:
                if not w.buf and not w.fill():
                    raise FramingError("connection closed %d bytes before Content-Length" % left)
                piece = w.buf[:left]
                w.buf = w.buf[len(piece):]
                left -= len(piece)
                yield piece
        else:
            while True:
                piece = w.some()
                if not piece:
                    break
                yield piece
        if w.buf:
            raise FramingError("bytes after the end of the response: %r" % w.buf[:200])
        self._done = True

    def read_body(self):
        if self.body is None:
            self.body = b"".join(self.pieces())
        return self.body

    def json(self):
        return json.loads(self.read_body().decode("utf-8"))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def build_request(method, target, body=b"", headers=(), host="fanoutd"):
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % host]
    names = {n.lower() for n, _ in headers}
    lines += ["%s: %s" % (n, v) for n, v in headers]
    if body or method in ("POST", "PUT"):
        if "content-length" not in names and "transfer-encoding" not in names:
            lines.append("Content-Length: %d" % len(body))
    if "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Client:
    def __init__(self, addr, timeout=20.0):
        self.addr = addr
        self.timeout = timeout

    def connect(self):
        return connect(self.addr, self.timeout)

    def send(self, method, target, body=b"", headers=(), raw=None):
        """Sends a request on a new connection and returns the socket, reading nothing."""
        s = self.connect()
        s.sendall(raw if raw is not None else build_request(method, target, body, headers))
        return s

    def open(self, method, target, body=b"", headers=(), raw=None, timeout=None):
        """Sends a request and returns the Response with its head read."""
        s = self.send(method, target, body, headers, raw)
        return Response(s, timeout or self.timeout)

    def request(self, method, target, body=b"", headers=(), raw=None, timeout=None):
        r = self.open(method, target, body, headers, raw, timeout)
        try:
            r.read_body()
        finally:
            r.close()
        return r

    def get(self, target, **kw):
        return self.request("GET", target, **kw)

    # --- batches -----------------------------------------------------------
    @staticmethod
    def batch_body(requests, options=None, extra=None):
        doc = {"requests": requests}
        if options is not None:
            doc["options"] = options
        if extra:
            doc.update(extra)
        return json.dumps(doc).encode()

    def start_batch(self, requests, options=None, ndjson=False, query="", headers=(), body=None):
        """Sends a batch and returns the socket without reading anything."""
        target = "/v1/batch" + query
        hdrs = [("Content-Type", "application/json")] + list(headers)
        if ndjson and "format=ndjson" not in query:
            hdrs.append(("Accept", "application/x-ndjson"))
        if body is None:
            body = self.batch_body(requests, options)
        return self.send("POST", target, body, hdrs)

    def stream_batch(self, requests, options=None, ndjson=False, query="", headers=(), body=None,
                     timeout=None):
        """Starts a batch; returns a BatchStream whose results() yield as they arrive."""
        s = self.start_batch(requests, options, ndjson, query, headers, body)
        n = len(requests) if isinstance(requests, list) else None
        return BatchStream(Response(s, timeout or self.timeout), n, ndjson or "format=ndjson" in query)

    def batch(self, requests, options=None, ndjson=False, query="", headers=(), timeout=None):
        """Runs a batch to the end; returns the BatchStream with everything read and checked."""
        bs = self.stream_batch(requests, options, ndjson, query, headers, timeout=timeout)
        try:
            bs.finish()
        finally:
            bs.close()
        return bs


class BatchStream:
    """A 200 batch response read incrementally: results() yields each result object as
    soon as it is complete on the wire; finish() reads to the end and validates."""

    _PREFIX = re.compile(r'\s*\{\s*"results"\s*:\s*\[')

    def __init__(self, resp, n, ndjson):
        self.resp = resp
        self.n = n
        self.ndjson = ndjson
        self.status = resp.status
        self.headers = resp.headers
        self.arrival = []  # results in the order they arrived
        self.summary = None
        self.doc = None
        self.raw = b""
        self.t_first = None  # monotonic time of the first result
        if self.status != 200:
            self.error_body = resp.read_body()
            return
        if not resp.chunked:
            raise FramingError("batch response is not chunked: %r" % resp.headers)
        ct = resp.content_type
        want = "application/x-ndjson" if ndjson else "application/json"
        if ct != want:
            raise AssertionError("Content-Type %r, expected %r" % (ct, want))
        self._pieces = resp.pieces()
        self._dec = codecs.getincrementaldecoder("utf-8")("strict")
        self._text = ""
        self._pos = 0
        self._state = "prefix"
        self._raw = []
        self._gen = self._results()

    def header(self, name, default=None):
        return self.resp.header(name, default)

    def error(self):
        """For a non-200 answer: the parsed {"error": ...} body."""
        return json.loads(self.error_body.decode("utf-8"))

    def _more(self):
        try:
            piece = next(self._pieces)
        except StopIteration:
            return False
        self._raw.append(piece)
        self._text += self._dec.decode(piece)
        return True

    def _emit(self, obj):
        if self.t_first is None:
            self.t_first = time.monotonic()
        self.arrival.append(obj)
        return obj

    def _results(self):
        if self.ndjson:
            yield from self._ndjson_results()
        else:
            yield from self._json_results()
        self._finish_checks()

    def _ndjson_results(self):
        while True:
            nl = self._text.find("\n", self._pos)
            if nl < 0:
                if not self._more():
                    break
                continue
            line = self._text[self._pos:nl]
            self._pos = nl + 1
            if not line.strip():
                raise AssertionError("empty NDJSON line")
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise AssertionError("NDJSON line is not an object: %r" % line[:200])
            if self.summary is not None:
                raise AssertionError("NDJSON line after the summary: %r" % line[:200])
            if set(obj) == {"summary"}:
                self.summary = obj["summary"]
                continue
            yield self._emit(obj)
        if self._text[self._pos:]:
            raise AssertionError("NDJSON stream does not end with a newline: %r" % self._text[self._pos:][-200:])
        if self.summary is None:
            raise AssertionError("NDJSON stream without a summary line")

    def _json_results(self):
        dec = json.JSONDecoder()
        while True:
            t = self._text
            if self._state == "prefix":
                m = self._PREFIX.match(t)
                if not m:
                    if "[" in t or len(t) > 64:
                        raise AssertionError("document does not start with {\"results\":[ : %r" % t[:100])
                    if not self._more():
                        raise AssertionError("document ended before its results")
                    continue
                self._pos = m.end()
                self._state = "first"
                continue
            pos = self._pos
            while pos < len(t) and t[pos] in " \t\r\n":
                pos += 1
            if pos == len(t):
                if not self._more():
                    raise AssertionError("document ended inside results")
                continue
            if t[pos] == "]":
                self._pos = pos + 1
                self._state = "rest"
                break
            if self._state == "next":
                if t[pos] != ",":
                    raise AssertionError("expected , between results at %r" % t[pos:pos + 50])
                pos += 1
                while pos < len(t) and t[pos] in " \t\r\n":
                    pos += 1
                if pos == len(t):  # self._pos still points before the comma
                    if not self._more():
                        raise AssertionError("document ended after a comma")
                    continue
            try:
                obj, end = dec.raw_decode(t, pos)
            except json.JSONDecodeError:
                if not self._more():
                    raise
                continue  # an incomplete result: parse again with more bytes
            self._text = t[end:]  # drop what is parsed; the raw bytes are kept apart
            self._pos = 0
            self._state = "next"
            yield self._emit(obj)
        while self._more():
            pass

    def results(self):
        """Yields the results as they arrive (a generator shared across calls)."""
        return self._gen

    def next_result(self):
        return next(self._gen)

    def finish(self):
        if self.status != 200:
            return self
        for _ in self._gen:
            pass
        return self

    def _finish_checks(self):
        self.raw = b"".join(self._raw)
        self._dec.decode(b"", final=True)
        text = self.raw.decode("utf-8")
        if self.ndjson:
            self.doc = {"results": list(self.arrival), "summary": self.summary}
        else:
            self.doc = json.loads(text)  # the whole document must be valid JSON
            if set(self.doc) != {"results", "summary"}:
                raise AssertionError("document keys %r" % sorted(self.doc))
            if self.doc["results"] != self.arrival:
                raise AssertionError("incremental parse disagrees with the whole document")
            self.summary = self.doc["summary"]
        validate(self.doc, self.n)

    # --- access after finish() ---------------------------------------------
    @property
    def results_by_index(self):
        return sorted(self.arrival, key=lambda r: r["index"])

    def __getitem__(self, i):
        for r in self.arrival:
            if r["index"] == i:
                return r
        raise KeyError(i)

    def kinds(self):
        return [r.get("error", {}).get("kind") for r in self.results_by_index]

    def close(self):
        self.resp.close()


def validate(doc, n=None):
    """Checks a batch document against the contract's shape and counting rules."""
    results, summary = doc["results"], doc["summary"]
    assert isinstance(results, list) and isinstance(summary, dict)
    if n is not None:
        assert len(results) == n, "%d results for %d requests" % (len(results), n)
    idx = sorted(r["index"] for r in results)
    assert idx == list(range(len(results))), "indices are not exactly 0..n-1: %r" % idx[:50]
    responses = errors = 0
    for r in results:
        if r.get("error", {}).get("kind") != "invalid_request":
            assert isinstance(r.get("url"), str), r
        has_status, has_error = "status" in r, "error" in r
        assert has_status != has_error, "a result needs exactly one of status/error: %r" % r
        if has_error:
            errors += 1
            e = r["error"]
            assert e.get("kind") in ERROR_KINDS, e
            assert isinstance(e.get("message"), str) and e["message"], e
        else:
            responses += 1
            assert isinstance(r["status"], int) and 100 <= r["status"] <= 999, r
            assert r.get("body_encoding") in BODY_ENCODINGS, r
            if r["body_encoding"] != "none":
                assert "body" in r, r
            assert isinstance(r.get("bytes"), int), r
            assert isinstance(r.get("attempts"), int) and r["attempts"] >= 1, r
            assert isinstance(r.get("remote"), str), r
            assert isinstance(r.get("reused"), bool), r
            assert r.get("protocol") in ("h2", "http/1.1", "http/1.0"), r
            assert set(r.get("timing", {})) >= TIMING_KEYS, r
    assert summary.get("total") == len(results), summary
    assert summary.get("responses") == responses, summary
    assert summary.get("errors") == errors, summary
    assert isinstance(summary.get("complete"), bool), summary
    assert isinstance(summary.get("elapsed_ms"), (int, float)), summary


def parse_metrics(text):
    """Prometheus text -> {name: total over all label sets}, and the raw samples."""
    totals, samples = {}, []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?", line)
        assert m, "bad metrics line %r" % line
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        samples.append((name, labels, value))
        totals[name] = totals.get(name, 0.0) + value
    return totals, samples

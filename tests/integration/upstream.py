"""A scriptable HTTP/1.1 upstream for the integration tests.

Raw sockets and one thread per connection, so a handler can block on a test's
Event, trickle bytes or send malformed framing. Behaviour is chosen by the request
path (the r_* methods of _Conn). Everything the server observes is recorded under one
Condition, and tests wait for what they expect with wait_for(predicate, timeout)
instead of sleeping.

Paths (query parameters in brackets; on any path, close=1 answers with
"Connection: close" and closes, so the daemon cannot keep the connection):
  /ok                       200 "ok\\n"
  /status/N                 status N [retry_after=S] [retry_after_date=S]
  /delay/MS                 200 after MS milliseconds (gives up early if the peer closes)
  /wait/NAME                200 once the test sets event(NAME) (or the peer closes)
                            [status=N: answers N instead] [retry_after=S] [retry_after_date=S]
  /bytes/N                  N binary bytes (not UTF-8), application/octet-stream
  /text/N                   N ASCII bytes, text/plain
  /ctrl/N                   N bytes of U+0001, text/plain (valid UTF-8; JSON escapes each as
                            six bytes: the most a text body can grow when encoded)
  /utf8                     non-ASCII UTF-8 text;  /latin1: text/plain that is not UTF-8
  /json                     application/json object;  /notjson: application/json that does not parse
  /gzip/N, /deflate/N       N ASCII bytes (text_bytes(N)), compressed, with Content-Encoding
  /bomb/MB                  gzip of MB MiB of zeros (a few KiB on the wire)
  /chunked                  chunked text [n=chunks, size=bytes per chunk]
  /nocl                     body delimited by connection close (valid HTTP/1.1)
  /trickle/N                Content-Length N, one byte every [interval=100] ms
  /redirect/N               N>0: [code=302] to "redirect/N-1" (relative) [abs=1: absolute];
                            N=0: the /echo answer
  /redirect-to              [code=302] Location: [url=...] exactly as given
  /loop                     302 to itself
  /echo                     JSON of the request as received: method, target, headers (raw list), body
  /headers                  repeated headers and two Set-Cookie;  /cookie: one Set-Cookie
  /bigheader/N              one header with an N-byte value
  /longnames/N              two headers whose N-byte names differ only in their last byte
  /malformed/KIND           te_cl, dup_cl, bad_chunk, bare_lf, garbage_status, truncated,
                            truncated_chunked, bad_status_code
  /flaky/N                  the first N hits of [key=path] get [status=503] [retry_after=S]
                            [retry_after_date=S], then 200
  /retry-after/N            /flaky/N with Retry-After: 1 by default
  /closeidle                200 with keep-alive framing, then the server closes the connection
                            at once [mode=onreuse: keeps it open and drops the next request
                            that arrives on it without answering]

Retry-After, wherever a route takes it: retry_after=S is sent verbatim (any text);
retry_after_date=S sends an HTTP-date S whole seconds after the next whole second of the
wall clock (so the pause it asks for is between S and S+1 seconds), and records that
instant (time.time() scale) as the request's retry_after_until.

Each Request records its arrival (t_start, monotonic; t_wall, time.time()), the status it
was answered with (status) and when the answer's first byte left (t_answer, monotonic).

TLS mode: Upstream(host, tls=ctx) serves the same routes over TLS (ctx: a server SSLContext,
or a callable returning one, e.g. tls_support.PKI.context_factory("good")). Each connection's
handshake is recorded as a tls_support.TlsConn in tls_conns: the ClientHello the client sent
(SNI, offered ALPN and versions, whether it offered a session to resume), the SNI OpenSSL
saw, whether the handshake succeeded (or why not), session_reused, the selected ALPN
protocol and the version. Requests carry their connection's TlsConn as req.tls. A TLS server
closes its connections with close_notify. A plain server that receives a TLS ClientHello
answers 400 and closes (as real HTTP servers do) and counts it in tls_on_plain.
"""

from headers import HeaderLookup
import email.utils
import gzip
import json
import math
import os
import select
import socket
import ssl
import threading
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import tls_support

MAX_HEAD = 1 << 20
IO_TIMEOUT = 30.0
HANDSHAKE_TIMEOUT = 10.0


def text_bytes(n):
    """The deterministic ASCII payload of /text/N, /gzip/N and /deflate/N."""
    unit = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
    return (unit * (n // len(unit) + 1))[:n]


def binary_bytes(n):
    """The deterministic payload of /bytes/N: starts with 0xff 0xfe, never valid UTF-8."""
    unit = bytes([0xFF, 0xFE]) + bytes(range(256))
    return (unit * (n // len(unit) + 1))[:n]


def wait_cond(cond, predicate, timeout):
    """Waits on cond until predicate() is true or timeout passes; returns predicate's last value."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                return value
            cond.wait(left)


class PeerClosed(Exception):
    pass


class Stopping(Exception):
    """The server is closing: the handler ends without answering."""


class Request(HeaderLookup):
    """One request as the upstream received it."""

    def __init__(self, conn_id, seq, raw_head, body):
        self.conn_id = conn_id
        self.seq = seq  # 0 for the first request on its connection
        self.raw_head = raw_head
        self.body = body
        lines = raw_head.split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ")
        self.method, self.target, self.version = (parts + ["", "", ""])[:3]
        self.headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.decode("latin-1").partition(":")
            self.headers.append((name, value.strip()))
        split = urlsplit(self.target)
        self.path = split.path
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.t_start = time.monotonic()
        self.t_wall = time.time()  # the same instant on the wall clock (for HTTP-dates)
        self.t_end = None
        self.t_answer = None  # monotonic time the answer's first byte left
        self.status = None  # the status answered (respond())
        self.retry_after_until = None  # retry_after_date: the instant sent (time.time() scale)
        self.tls = None  # the connection's tls_support.TlsConn (TLS mode)
        # None while unanswered; "responded" from the first byte of the answer on,
        # unless the peer went away ("peer_closed"); or "dropped", "aborted".
        self.outcome = None
        self.answered = False

    def __repr__(self):
        return "<Request c%d#%d %s %s>" % (self.conn_id, self.seq, self.method, self.target)


class Upstream:
    """One origin: a listening socket on host:port served by background threads."""

    def __init__(self, host="127.0.0.1", port=0, cond=None, tls=None):
        """cond: a Condition shared by several servers, so that one wait can watch them all.
        tls: a server SSLContext (or a callable making one) for TLS mode."""
        self.host = host
        if callable(tls) and not isinstance(tls, ssl.SSLContext):
            tls = tls()
        self.tls = tls
        if tls is not None:
            tls.sni_callback = tls_support.record_sni
        self.scheme = "https" if tls is not None else "http"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._lsock = socket.socket(family, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, port))
        self._lsock.listen(512)
        self.port = self._lsock.getsockname()[1]
        self.cond = cond or threading.Condition()
        self._stop = threading.Event()  # closing: stop accepting too
        self._hurry = threading.Event()  # tearing down: waits and delays end at once
        self._events = {}
        self._flaky = {}
        self._conns = {}  # conn_id -> socket, while open
        self._threads = []
        # Observations (read them under self.cond, or through the accessors).
        self.connections = 0  # accepted
        self.requests = []  # Request, in arrival order
        self.inflight = 0  # received and not yet answered (see _Conn.answered)
        self.peak = 0
        self.peer_closes = []  # (conn_id, "idle" | "inflight" | "partial")
        self.closed_conns = 0  # connections finished for any reason
        self.tls_conns = []  # TLS mode: tls_support.TlsConn per accepted connection, in order
        self.tls_on_plain = []  # plain mode: conn_ids on which a TLS ClientHello arrived
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, name="upstream-%d" % self.port, daemon=True)
        self._acceptor.start()

    # --- addressing -------------------------------------------------------
    @property
    def authority(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)

    def url(self, path="/ok", host=None, scheme=None):
        """scheme: defaults to the server's own (https in TLS mode)."""
        scheme = scheme or self.scheme
        if host is not None:
            return "%s://%s:%d%s" % (scheme, host, self.port, path)
        return "%s://%s%s" % (scheme, self.authority, path)

    # --- test controls ----------------------------------------------------
    def event(self, name):
        with self.cond:
            ev = self._events.get(name)
            if ev is None:
                ev = self._events[name] = threading.Event()
            return ev

    def release(self, name):
        self.event(name).set()

    def release_all(self):
        """Ends every wait, delay and trickle now, without answering (used at teardown);
        the server still accepts, and new waits end at once too."""
        self._hurry.set()
        with self.cond:
            events = list(self._events.values())
            self.cond.notify_all()
        for ev in events:
            ev.set()

    def reset_peak(self):
        with self.cond:
            self.peak = self.inflight

    def wait_for(self, predicate, timeout=5.0):
        """Waits until predicate(self) is true (evaluated under the lock); returns its last value."""
        return wait_cond(self.cond, lambda: predicate(self), timeout)

    # --- accessors (thread-safe snapshots) ---------------------------------
    def stats(self):
        with self.cond:
            return {
                "connections": self.connections,
                "requests": len(self.requests),
                "inflight": self.inflight,
                "peak": self.peak,
                "peer_closes": len(self.peer_closes),
                "handshakes": sum(1 for t in self.tls_conns if t.ok),
                "resumed": sum(1 for t in self.tls_conns if t.ok and t.resumed),
                "tls_failures": sum(1 for t in self.tls_conns if t.ok is False),
            }

    def handshakes(self):
        """TLS mode: the TlsConn of every completed handshake, in accept order."""
        with self.cond:
            return [t for t in self.tls_conns if t.ok]

    def tls_failures(self):
        """TLS mode: the TlsConn of every failed handshake."""
        with self.cond:
            return [t for t in self.tls_conns if t.ok is False]

    def reqs(self, path_prefix=None):
        with self.cond:
            return [r for r in self.requests if path_prefix is None or r.path.startswith(path_prefix)]

    def count(self, path_prefix=None):
        return len(self.reqs(path_prefix))

    def close(self):
        self.release_all()
        self._stop.set()
        self._wake_w.send(b"x")
        self._acceptor.join(5)
        self._lsock.close()
        self._wake_r.close()
        self._wake_w.close()
        with self.cond:
            socks = list(self._conns.values())
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)

    # --- server internals --------------------------------------------------
    def _notify(self):
        self.cond.notify_all()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._lsock, self._wake_r], [], [], 1.0)
                if self._lsock not in r:
                    continue
                sock, _ = self._lsock.accept()
            except (OSError, ValueError):
                return
            with self.cond:
                self.connections += 1
                conn_id = self.connections
                self._conns[conn_id] = sock
                self._notify()
            t = threading.Thread(target=self._serve_conn, args=(sock, conn_id), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def _tls_accept(self, sock, conn_id):
        """The server side of a handshake, recorded; returns the SSLSocket or None."""
        info = tls_support.TlsConn(conn_id)
        with self.cond:
            self.tls_conns.append(info)
        # As TLS servers do: else the response waits behind the session tickets for the
        # client's delayed ACK (40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        info.hello = tls_support.peek_client_hello(sock, HANDSHAKE_TIMEOUT)
        sock.settimeout(HANDSHAKE_TIMEOUT)
        ssock = None
        try:
            ssock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            ssock.fo_tls = info
            with self.cond:
                self._conns[conn_id] = ssock
            ssock.do_handshake()
        except (OSError, ValueError) as e:
            with self.cond:
                info.ok, info.error, info.t_done = False, tls_support.ssl_error_reason(e), time.monotonic()
                self._notify()
            try:
                (ssock or sock).close()
            except OSError:
                pass
            return None
        with self.cond:
            info.ok, info.t_done = True, time.monotonic()
            info.resumed = ssock.session_reused
            info.alpn = ssock.selected_alpn_protocol()
            info.version = ssock.version()
            info.cipher = (ssock.cipher() or (None,))[0]
            self._notify()
        return ssock

    def _serve_conn(self, sock, conn_id):
        if self.tls is not None:
            sock = self._tls_accept(sock, conn_id)
            if sock is None:
                with self.cond:
                    self._conns.pop(conn_id, None)
                    self.closed_conns += 1
                    self._notify()
                return
        sock.settimeout(IO_TIMEOUT)
        conn = _Conn(self, sock, conn_id)
        try:
            seq = 0
            while not self._stop.is_set():
                req = conn.read_request(seq)
                if req is None:
                    break
                seq += 1
                if conn.drop_next:
                    req.outcome = "dropped"
                    with self.cond:
                        self.requests.append(req)
                        self._notify()
                    break
                req.tls = conn.tls
                with self.cond:
                    self.requests.append(req)
                    self.inflight += 1
                    self.peak = max(self.peak, self.inflight)
                    self._notify()
                try:
                    keep = conn.handle(req)
                except PeerClosed:
                    req.outcome = "peer_closed"
                    self._peer_closed(conn_id, "inflight")
                    keep = False
                except (Stopping, OSError):
                    req.outcome = "aborted"
                    keep = False
                except Exception as e:  # a bad route argument: answer 500 and go on
                    req.outcome = "error: %r" % (e,)
                    try:
                        conn.respond(500, ("handler error: %r\n" % (e,)).encode())
                    except Exception:
                        pass
                    keep = False
                finally:
                    req.t_end = time.monotonic()
                    conn.answered(req)
                if not keep:
                    break
        except Exception:  # a request we cannot parse, a reset: the connection ends
            pass
        finally:
            if conn.tls:
                conn.close_notify()
            try:
                sock.close()
            except OSError:
                pass
            with self.cond:
                self._conns.pop(conn_id, None)
                self.closed_conns += 1
                self._notify()

    def _peer_closed(self, conn_id, phase):
        with self.cond:
            self.peer_closes.append((conn_id, phase))
            self._notify()

    def _flaky_hit(self, key):
        with self.cond:
            n = self._flaky.get(key, 0)
            self._flaky[key] = n + 1
            return n


class _Conn:
    def __init__(self, server, sock, conn_id):
        self.server = server
        self.sock = sock
        self.conn_id = conn_id
        self.buf = b""
        self.drop_next = False
        self.req = None  # the request being answered
        self.tls = getattr(sock, "fo_tls", None)  # TlsConn in TLS mode

    # --- reading -----------------------------------------------------------
    def _recv(self):
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        return data

    def read_request(self, seq):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                return None
            try:
                # In TLS mode decrypted bytes may already wait inside the SSL object.
                pending = self.tls is not None and self.sock.pending()
                r = True if pending else select.select([self.sock], [], [], 0.2)[0]
            except (OSError, ValueError):
                return None
            if self.server._stop.is_set():
                return None
            if not r:
                continue
            data = self._recv()
            if (not self.buf and seq == 0 and self.tls is None and data[:1] == b"\x16"
                    and data[1:2] == b"\x03"):
                self._tls_on_plain_port()
                return None
            if not data:
                if not self.server._stop.is_set():
                    self.server._peer_closed(self.conn_id, "partial" if self.buf else "idle")
                return None
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        req = Request(self.conn_id, seq, head, b"")
        length = req.header("Content-Length")
        if req.header("Transfer-Encoding", "").lower() == "chunked":
            req.body = self._read_chunked()
        elif length is not None:
            n = int(length)
            while len(self.buf) < n:
                data = self._recv()
                if not data:
                    raise OSError("body cut short")
                self.buf += data
            req.body, self.buf = self.buf[:n], self.buf[n:]
        return req

    def _read_exact_line(self):
        while b"\r\n" not in self.buf:
            data = self._recv()
            if not data:
                raise OSError("chunked body cut short")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _read_chunked(self):
        body = b""
        while True:
            size = int(self._read_exact_line().split(b";")[0], 16)
            if size == 0:
                while self._read_exact_line():
                    pass
                return body
            while len(self.buf) < size + 2:
                data = self._recv()
                if not data:
                    raise OSError("chunk cut short")
                self.buf += data
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]

    # --- waiting while watching the peer -----------------------------------
    def _tls_on_plain_port(self):
        """A TLS ClientHello on a plain port: answer 400 in plain text and close."""
        with self.server.cond:
            self.server.tls_on_plain.append(self.conn_id)
            self.server._notify()
        body = b"plain HTTP port: got a TLS ClientHello\n"
        try:
            self.sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close_notify(self):
        """TLS mode: an orderly close (close_notify), without waiting for the peer's."""
        try:
            self.sock.settimeout(0)
            self.sock.unwrap()
        except (OSError, ValueError):
            pass

    def _tls_peer_gone(self):
        """peer_gone for TLS: bytes cannot be peeked through the SSL layer, so whatever
        arrives is read into self.buf (read_request takes it from there)."""
        try:
            if self.sock.pending():
                return False
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return False
            self.sock.settimeout(0)
            try:
                data = self.sock.recv(65536)
            finally:
                self.sock.settimeout(IO_TIMEOUT)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (OSError, ValueError):
            return True
        if not data:
            return True
        self.buf += data
        return False

    def peer_gone(self):
        """True if the peer has closed (EOF or reset); pending data is left alone."""
        if self.tls is not None:
            return self._tls_peer_gone()
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except ConnectionResetError:
            return True
        except (OSError, ValueError):
            return True

    def pause(self, seconds, event=None):
        """Waits up to seconds (or until event is set); raises PeerClosed if the peer goes."""
        deadline = time.monotonic() + seconds
        while True:
            if event is not None and event.is_set():
                return True
            if self.server._hurry.is_set() or self.server._stop.is_set():
                raise Stopping()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.peer_gone():
                raise PeerClosed()
            if event is not None:
                event.wait(min(left, 0.02))
            else:
                self.server._hurry.wait(min(left, 0.02))

    # --- writing -----------------------------------------------------------
    def answered(self, req):
        """A request stops counting as in flight just before its answer's first byte
        leaves, so the daemon can never see an answer (and dispatch the next request)
        while the old one still counts: peaks are never overstated."""
        if req is None or req.answered:
            return
        req.answered = True
        req.t_answer = time.monotonic()
        if req.outcome is None:
            req.outcome = "responded"
        with self.server.cond:
            self.server.inflight -= 1
            self.server._notify()

    def send(self, data):
        self.answered(self.req)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            raise PeerClosed()

    def respond(self, status, body=b"", headers=(), reason=None, head_only=None):
        if head_only is None:
            head_only = self.req is not None and self.req.method == "HEAD"
        reason = reason or REASONS.get(status, "Whatever")
        if self.req is not None:
            self.req.status = status
        out = ["HTTP/1.1 %d %s" % (status, reason)]
        if self.req is not None and self.req.query.get("close") == "1":
            headers = list(headers) + [("Connection", "close")]
        names = {h[0].lower() for h in headers}
        for n, v in headers:
            out.append("%s: %s" % (n, v))
        if "content-length" not in names and "transfer-encoding" not in names:
            out.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
        self.send(data if head_only else data + body)

    # --- routes --------------------------------------------------------------
    def handle(self, req):
        """Answers req; returns whether the connection may carry another request."""
        self.req = req
        parts = req.path.strip("/").split("/")
        name, arg = parts[0], "/".join(parts[1:])
        fn = getattr(self, "r_" + name.replace("-", "_"), None)
        if fn is None:
            self.respond(404, b"no such route\n", [("Content-Type", "text/plain")])
            return True
        keep = fn(req, arg)
        if req.header("Connection", "").lower() == "close" or req.query.get("close") == "1":
            return False
        return keep is not False

    def r_ok(self, req, arg):
        self.respond(200, b"ok\n", [("Content-Type", "text/plain")])

    @staticmethod
    def retry_after(req, hdrs):
        """Adds Retry-After as the query asks (retry_after=S verbatim, or retry_after_date=S:
        an HTTP-date S s after the next whole second, recorded in req.retry_after_until)."""
        if "retry_after" in req.query:
            hdrs.append(("Retry-After", req.query["retry_after"]))
        elif "retry_after_date" in req.query:
            until = math.ceil(time.time()) + int(req.query["retry_after_date"])
            req.retry_after_until = until
            hdrs.append(("Retry-After", email.utils.formatdate(until, usegmt=True)))
        return hdrs

    def r_status(self, req, arg):
        hdrs = self.retry_after(req, [("Content-Type", "text/plain")])
        code = int(arg)
        if code in (204, 304) or code < 200:
            self.respond(code, b"", hdrs)
        else:
            self.respond(code, b"status %d\n" % code, hdrs)

    def r_delay(self, req, arg):
        self.pause(int(arg) / 1000.0)
        self.respond(200, b"delayed\n", [("Content-Type", "text/plain")])

    def r_wait(self, req, arg):
        ev = self.server.event(arg)
        if not self.pause(IO_TIMEOUT, ev):
            self.respond(504, b"never released\n")
            return False
        code = int(req.query.get("status", 200))
        self.respond(code, ("released %s\n" % arg).encode(), self.retry_after(req, [("Content-Type", "text/plain")]))

    def r_bytes(self, req, arg):
        self.respond(200, binary_bytes(int(arg)), [("Content-Type", "application/octet-stream")])

    def r_text(self, req, arg):
        self.respond(200, text_bytes(int(arg)), [("Content-Type", "text/plain; charset=utf-8")])

    def r_ctrl(self, req, arg):
        self.respond(200, b"\x01" * int(arg), [("Content-Type", "text/plain; charset=utf-8")])

    def r_utf8(self, req, arg):
        self.respond(200, UTF8_TEXT.encode("utf-8"), [("Content-Type", "text/plain; charset=utf-8")])

    def r_latin1(self, req, arg):
        self.respond(200, b"caf\xe9 cr\xe8me", [("Content-Type", "text/plain")])

    def r_json(self, req, arg):
        self.respond(200, json.dumps(JSON_DOC).encode(), [("Content-Type", "application/json")])

    def r_notjson(self, req, arg):
        self.respond(200, b"{not json", [("Content-Type", "application/json")])

    def r_gzip(self, req, arg):
        self.respond(200, gzip.compress(text_bytes(int(arg))),
                     [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")])

    def r_deflate(self, req, arg):
        self.respond(200, zlib.compress(text_bytes(int(arg))),
                     [("Content-Type", "text/plain"), ("Content-Encoding", "deflate")])

    def r_bomb(self, req, arg):
        self.respond(200, bomb(int(arg or 16)),
                     [("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")])

    def r_chunked(self, req, arg):
        n = int(req.query.get("n", 5))
        size = int(req.query.get("size", 10))
        self.respond(200, b"", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
        for i in range(n):
            piece = text_bytes(size)
            self.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.send(b"0\r\n\r\n")

    def r_nocl(self, req, arg):
        self.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + text_bytes(100))
        return False

    def r_trickle(self, req, arg):
        n = int(arg)
        interval = int(req.query.get("interval", 100)) / 1000.0
        self.respond(200, b"", [("Content-Type", "text/plain"), ("Content-Length", str(n))])
        for i in range(n):
            self.send(b"x")
            self.pause(interval)

    def r_overrun(self, req, arg):
        """A Content-Length body whose tail comes, a moment after its head, with
        bytes that no request asked for."""
        body = text_bytes(int(arg))
        self.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
        self.pause(0.1)
        self.send(body[10:] + b"HTTP/1.1 299 Smuggled\r\nContent-Length: 5\r\n\r\nEVIL!")

    def _redirect(self, req, location):
        code = int(req.query.get("code", 302))
        self.respond(code, b"moved\n", [("Location", location), ("Content-Type", "text/plain")])

    def r_redirect(self, req, arg):
        n = int(arg)
        if n <= 0:
            return self.r_echo(req, "")
        q = "?code=%s" % req.query.get("code", "302")
        if req.query.get("abs"):
            q += "&abs=1"
            self._redirect(req, "%s://%s/redirect/%d%s" % (self.server.scheme, self.server.authority, n - 1, q))
        else:
            self._redirect(req, "%d%s" % (n - 1, q))

    def r_redirect_to(self, req, arg):
        self._redirect(req, req.query["url"])

    def r_loop(self, req, arg):
        self._redirect(req, "/loop")

    def r_echo(self, req, arg):
        doc = {
            "method": req.method,
            "target": req.target,
            "version": req.version,
            "headers": req.headers,
            "body": req.body.decode("latin-1"),
        }
        self.respond(200, json.dumps(doc).encode(), [("Content-Type", "application/json")])

    def r_headers(self, req, arg):
        self.respond(200, b"h\n", [
            ("Content-Type", "text/plain"),
            ("X-Dup", "one"),
            ("X-Dup", "two"),
            ("X-Mixed-Case", "Value"),
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2, c=3"),
        ])

    def r_cookie(self, req, arg):
        self.respond(200, b"c\n", [("Content-Type", "text/plain"), ("Set-Cookie", "only=1")])

    def r_bigheader(self, req, arg):
        self.respond(200, b"big\n", [("Content-Type", "text/plain"), ("X-Big", "x" * int(arg))])

    def r_longnames(self, req, arg):
        stem = "X-" + "N" * (int(arg) - 3)
        self.respond(200, b"n\n", [("Content-Type", "text/plain"), (stem + "1", "one"), (stem + "2", "two")])

    def r_malformed(self, req, arg):
        raw = MALFORMED[arg]
        self.send(raw)
        return False

    def r_flaky(self, req, arg):
        key = req.query.get("key", req.path)
        n = self.server._flaky_hit(key)
        if n < int(arg):
            hdrs = self.retry_after(req, [("Content-Type", "text/plain")])
            self.respond(int(req.query.get("status", 503)), b"try again\n", hdrs)
        else:
            self.respond(200, b"ok after %d\n" % n, [("Content-Type", "text/plain")])

    def r_retry_after(self, req, arg):
        req.query.setdefault("retry_after", "1")
        req.query.setdefault("key", req.path)
        return self.r_flaky(req, arg)

    def r_closeidle(self, req, arg):
        self.respond(200, b"ok\n", [("Content-Type", "text/plain")])
        if req.query.get("mode") == "onreuse":
            self.drop_next = True
            return True
        return False


REASONS = {200: "OK", 204: "No Content", 301: "Moved Permanently", 302: "Found", 303: "See Other",
           304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
           404: "Not Found", 418: "I'm a teapot", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

UTF8_TEXT = "h\u00e9llo \u2713 \u65e5\u672c"
JSON_DOC = {"hello": "world", "n": [1, 2, 3], "nested": {"ok": True, "none": None}}

MALFORMED = {
    "te_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "dup_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "bad_chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\nhello",
    "garbage_status": b"HELLO THERE\r\nContent-Length: 5\r\n\r\nhello",
    "bad_status_code": b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
    "truncated_chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nonly ten b",
}

_bombs = {}
_bomb_lock = threading.Lock()


def bomb(mib):
    """gzip of mib MiB of zeros, computed once."""
    with _bomb_lock:
        if mib not in _bombs:
            _bombs[mib] = gzip.compress(b"\0" * (mib << 20), compresslevel=9)
        return _bombs[mib]


class Blackhole:
    """A loopback address where connect() hangs: a listener with backlog 0 that never
    accepts, its accept queue filled first, so later SYNs are dropped."""

    def __init__(self):
        self._lsock = socket.socket()
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(0)
        self.port = self._lsock.getsockname()[1]
        self._fill = []
        for _ in range(16):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self._fill.append(s)
            _, w, _ = select.select([], [s], [], 0.2)
            if not w:
                break  # this one hangs: the queue is full
        else:
            raise RuntimeError("could not fill the accept queue of the blackhole listener")

    def url(self, path="/ok"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        for s in self._fill:
            s.close()
        self._lsock.close()


def closed_port():
    """A loopback TCP port nothing listens on (connect gets ECONNREFUSED)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


if __name__ == "__main__":
    # Manual poking: python3 upstream.py PORT
    import sys
    up = Upstream(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print("listening on", up.url("/"), "pid", os.getpid(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        up.close()

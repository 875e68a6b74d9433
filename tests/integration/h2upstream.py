"""A scriptable HTTP/2 upstream for the integration tests (python3-h2, Debian 12: h2 4.1).

One origin: a listening socket, an acceptor thread and one thread per connection. Each
connection thread owns its socket and its h2.connection.H2Connection and runs a small event
loop (select on the socket and a wake-up pipe, timers), so a stream that waits (/delay, /wait,
/trickle, /stall, a body held back by flow control) never blocks the other streams of the
connection, and the H2Connection is never touched by two threads. Behaviour is chosen by the
request path (the r_* methods of _Session). Everything the server observes is recorded under
one Condition, and tests wait for what they expect with wait_for(predicate, timeout).

Construction:
  H2Upstream(host="127.0.0.1", port=0, cond=None, tls=None, pki=None, cert="good",
             alpn=("h2",), max_concurrent_streams=128, initial_window_size=65535,
             max_frame_size=16384, max_header_list_size=65536, connection_window=None)
  pki:   a tls_support.PKI: the server context is pki.server_context(cert, alpn=alpn);
  tls:   instead, a server SSLContext (or a callable making one), ALPN already set on it;
         tls=False: cleartext h2c with prior knowledge (scheme http), for poking only.
  alpn:  what the server offers. ("h2",) by default. With "http/1.1" in alpn, a connection
         that selects http/1.1 (or negotiates no ALPN and does not start with the HTTP/2
         preface) gets one minimal HTTP/1.1 answer, whatever the path: 200, body "ok\\n",
         "x-protocol: http/1.1", "Connection: close"; the request is recorded with
         http_version "1.1". Without "http/1.1" in alpn such a connection is closed without
         an answer (conn.closed == "not h2"; curl: "Empty reply from server"); a client
         offering only http/1.1 gets no ALPN from OpenSSL (no overlap), sends HTTP/1.1 and
         is closed so.
  max_concurrent_streams, initial_window_size, max_frame_size, max_header_list_size: the
         SETTINGS the server sends. max_concurrent_streams is enforced by this module, not
         by h2 (h2 4.1 makes an excess stream a connection error): a HEADERS that would
         exceed it gets RST_STREAM(REFUSED_STREAM), is recorded with outcome "over_limit"
         and in conn.over_limit as (stream_id, settings_acked) -- settings_acked False means
         the client had not yet acknowledged our SETTINGS, i.e. it may not have seen them.
  connection_window: if set, the server raises its connection-level receive window to
         this size right after its SETTINGS (the stream windows follow initial_window_size).

Paths (query parameters in brackets; mirroring upstream.py where the route exists there):
  /ok                    200 "ok\\n"
  /status/N              status N [retry_after=S]; 1xx: that informational response, then 200
  /delay/MS              200 after MS milliseconds (a timer: other streams go on)
  /wait/NAME             200 "released NAME\\n" once the test sets event(NAME)
  /bytes/N               N binary bytes (upstream.binary_bytes), application/octet-stream
  /big/N                 the same (N = 5 MB is fine): every body goes out in DATA frames
                         sized to the peer's windows and max frame size, waiting for
                         WINDOW_UPDATE when a window is empty (counted in req.window_waits)
  /text/N                upstream.text_bytes(N);  /gzip/N, /deflate/N: compressed, with
                         content-encoding;  /bomb/MB, /json, /notjson, /utf8 as upstream.py
  /echo                  JSON: method, path (":path" as sent), authority, scheme, stream_id,
                         headers ([name, value] pairs as received, pseudo-headers first),
                         trailers, body (latin-1 text)
  /headers               set-cookie twice ("a=1; Path=/", "b=2, c=3"), x-dup "one" and "two",
                         x-mixed-case "Value" (h2 names are lower-case);  /cookie: one set-cookie
  /bigheader/N           one header with an N-byte value
  /redirect/N            as upstream.py [code=302] [abs=1];  /redirect-to [url=...] [code=302];
                         /loop: 302 to itself
  /flaky/N               the first N hits of [key=path] get [status=503] [retry_after=S];
                         /retry-after/N: /flaky/N with retry-after 1
  /trailers              body "t\\n" then trailers x-checksum: abc, x-more: 1
HTTP/2 behaviours:
  /refuse                the first [n=1] hits of [key=path] get RST_STREAM(REFUSED_STREAM)
                         (outcome "refused"), later ones 200 "ok after K\\n"
  /rst                   RST_STREAM([code=INTERNAL_ERROR]) [after=headers]: after the response
                         headers; after=none: instead of any response; after=data: after the
                         headers and 10 of the 100 announced body bytes (outcome "reset")
  /goaway                the first [n=1] hits of [key=path]: GOAWAY([code=NO_ERROR],
                         last_stream_id = this id - 2): this stream and any newer one are not
                         processed (outcome "goaway_unprocessed"); then the connection closes
                         once the older streams are done and at least [grace=100] ms have
                         passed. Later hits (a client sending it again): 200 "ok after K\\n"
  /goaway-after          200 "ok\\n", then GOAWAY(NO_ERROR, last_stream_id = this id): newer
                         streams must go elsewhere; the connection then closes the same way
  /goaway-settings       200, then [ms=300] later GOAWAY(last = this id) and SETTINGS in one write
  /protoerr              a connection error (WINDOW_UPDATE 0 on stream 0), the socket left open
  /stall                 200 headers, then nothing (until the peer resets, the server closes,
                         or release_all)
  /close                 closes the TCP connection at once, without GOAWAY or close_notify
                         (outcome "closed") [rst=1: with a TCP RST (SO_LINGER 0)]
  /trickle/N             content-length N, one DATA byte every [interval=100] ms
Any other path: 404. HEAD gets the headers only. A route is answered once the request is
complete (END_STREAM), so request bodies of any size are read first; received DATA is
acknowledged at once (acknowledge_received_data), so the client's windows reopen.
After the server sends GOAWAY it processes no new stream: HEADERS with a higher id are
recorded with outcome "ignored_after_goaway" and never answered. The GOAWAY frame is written
by this module (hyperframe) rather than by H2Connection.close_connection(), because h2 4.1
refuses to send anything more after its own GOAWAY; likewise a GOAWAY from the client is
recorded without closing h2's state (h2 4.1 would drop the streams still being answered).

Records (read them under cond, or through the accessors):
  conns: H2Conn per accepted connection: conn_id, tls (tls_support.TlsConn: SNI, ClientHello,
    version...), alpn, resumed, protocol ("h2", "http/1.1" or None), client_settings (the
    client's SETTINGS by lower-case name, e.g. "initial_window_size"), settings_frames (each
    SETTINGS frame as a dict), settings_acked, open_streams, peak_streams, streams,
    window_conn / window_streams (sums of the client's WINDOW_UPDATE increments on stream 0 /
    per stream), window_log [(stream_id, increment, bytes the server had sent on that stream,
    or on the connection for 0, when the update arrived)], bytes_sent, bytes_received,
    goaways_received, goaway_sent, over_limit, pings, error, closed (why it ended: "peer",
    "goaway", "route /close", "protocol_error", "stopped", "not h2", "tls", "http/1.1 done").
  requests: H2Request per stream, in arrival order (HeaderLookup: req.header("x-a")):
    conn_id, stream_id, method, target (":path"), path, query, authority, scheme, headers
    [(name, value) as received, pseudo-headers included, latin-1 str], raw_headers (bytes),
    body, trailers, complete (END_STREAM received), status, outcome, reset_code, bytes_sent,
    window_increments, window_waits, t_start / t_end, http_version "2" ("1.1" in fallback).
    outcome: None while waiting, "responding" once headers went, then "responded" (END_STREAM
    queued), "reset_by_client", "refused", "reset", "over_limit", "goaway_unprocessed",
    "ignored_after_goaway", "closed" (/close), "peer_closed" (the connection ended under it),
    "aborted" (release_all / close), "reset_by_h2" (h2 itself ended the stream);
    error: set when the route raised (a bad argument such as /delay/abc): the answer is
    then a 500 "handler error: ..." (or RST_STREAM INTERNAL_ERROR once headers went).
  resets_received: Reset(conn_id, stream_id, error_code) for every RST_STREAM from a client;
  goaways_received / goaways_sent: GoAway(conn_id, error_code, last_stream_id, additional_data);
  open_streams / peak_streams: streams open (HEADERS received, not yet closed both ways or
    reset) across all connections, and the peak. A stream stops counting just before its
    END_STREAM or RST_STREAM leaves, so peaks are never overstated.
  protocol_errors: (conn_id, message) for every connection error (h2 sent GOAWAY and the
    server closed), e.g. an upper-case header name or DATA on stream 0.
Error codes are h2.errors.ErrorCodes members (IntEnum: they compare equal to the numbers).

Accessors (thread-safe): stats() (a dict of counts: connections, closed_conns, requests,
open_streams, peak_streams, resets_received, goaways_received, goaways_sent, refused,
over_limit, protocol_errors, handshakes, resumed, tls_failures), reqs(path_prefix=None),
count(path_prefix=None), conn(conn_id), conn_records(), handshakes(), tls_failures(),
resets(); controls: event(name), release(name), release_all(), reset_peak(),
wait_for(predicate, timeout) (predicate(server), under the lock), close(); addressing:
host, port, authority, scheme, url(path="/ok", host=None, scheme=None).
"""

import collections
import gzip
import heapq
import itertools
import json
import os
import select
import socket
import ssl
import struct
import threading
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame, SettingsFrame

import tls_support
from headers import HeaderLookup
from upstream import JSON_DOC, UTF8_TEXT, binary_bytes, bomb, text_bytes, wait_cond

ErrorCodes = h2.errors.ErrorCodes
SettingCodes = h2.settings.SettingCodes
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HANDSHAKE_TIMEOUT = 10.0
IO_TIMEOUT = 10.0
OUT_HIGH_WATER = 256 * 1024  # stop producing DATA while this much waits for the socket
H2_MAX_WINDOW = 2 ** 31 - 1

Reset = collections.namedtuple("Reset", "conn_id stream_id error_code")
GoAway = collections.namedtuple("GoAway", "conn_id error_code last_stream_id additional_data")


def error_code(value):
    """An error code from a name ("REFUSED_STREAM"), a number or a numeric string."""
    if isinstance(value, str):
        value = int(value) if value.isdigit() else ErrorCodes[value.upper()]
    try:
        return ErrorCodes(value)
    except ValueError:
        return value


def setting_name(code):
    try:
        return SettingCodes(code).name.lower()
    except ValueError:
        return "0x%x" % code


class H2Conn:
    """One connection as the server saw it (see the module docstring)."""

    def __init__(self, conn_id):
        self.conn_id = conn_id
        self.tls = None
        self.protocol = None
        self.client_settings = {}
        self.settings_frames = []
        self.settings_acked = False
        self.open_streams = 0
        self.peak_streams = 0
        self.streams = 0
        self.window_conn = 0
        self.window_streams = collections.defaultdict(int)
        self.window_log = []
        self.bytes_sent = 0
        self.bytes_received = 0
        self.goaways_received = []
        self.goaway_sent = None
        self.over_limit = []
        self.pings = 0
        self.error = None
        self.closed = None
        self.t_accept = time.monotonic()
        self.t_closed = None

    @property
    def alpn(self):
        return self.tls.alpn if self.tls is not None else None

    @property
    def resumed(self):
        return self.tls.resumed if self.tls is not None else None

    def __repr__(self):
        return "<H2Conn c%d %s alpn=%r streams=%d peak=%d closed=%r>" % (
            self.conn_id, self.protocol, self.alpn, self.streams, self.peak_streams, self.closed)


class H2Request(HeaderLookup):
    """One stream's request as the server received it."""

    def __init__(self, conn_id, stream_id, raw_headers, http_version="2"):
        self.conn_id = conn_id
        self.stream_id = stream_id
        self.http_version = http_version
        self.raw_headers = list(raw_headers)
        self.headers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in raw_headers]
        pseudo = {}
        for n, v in self.headers:
            if n.startswith(":"):
                pseudo.setdefault(n, v)
        self.method = pseudo.get(":method", "")
        self.target = pseudo.get(":path", "")
        self.authority = pseudo.get(":authority")
        self.scheme = pseudo.get(":scheme")
        split = urlsplit(self.target)
        self.path = split.path
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.body = b""
        self.trailers = []
        self.complete = False
        self.status = None
        self.outcome = None
        self.reset_code = None
        self.error = None  # a route that raised (bad argument): answered 500 (or reset)
        self.bytes_sent = 0
        self.window_increments = 0
        self.window_waits = 0
        self.tls = None
        self.t_start = time.monotonic()
        self.t_end = None

    def __repr__(self):
        return "<H2Request c%d s%s %s %s %s>" % (self.conn_id, self.stream_id, self.method, self.target,
                                                 self.outcome)


class _ServerH2(h2.connection.H2Connection):
    """H2Connection with this server's SETTINGS, and a GOAWAY from the peer recorded without
    moving h2's state machine to CLOSED (which would forbid finishing the open streams)."""

    def __init__(self, server):
        super().__init__(config=h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.local_settings = h2.settings.Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: server.initial_window_size,
            SettingCodes.MAX_FRAME_SIZE: server.max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: server.max_header_list_size,
        })
        self.max_inbound_frame_size = self.local_settings.max_frame_size
        self.decoder.max_header_list_size = server.max_header_list_size

    def start(self):
        self.initiate_connection()
        # The limit went out in SETTINGS; enforcing it is the server's job (see H2Upstream).
        self.local_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = H2_MAX_WINDOW
        self.local_settings.acknowledge()

    def _receive_goaway_frame(self, frame):
        ev = h2.events.ConnectionTerminated()
        ev.error_code = error_code(frame.error_code)
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]


class _Stream:
    def __init__(self, sid, req):
        self.sid = sid
        self.req = req
        self.done = False  # nothing more will be sent on it
        self.counted = False  # included in the open-stream counts
        self.held = False  # answers later (aborted by release_all)
        self.headers_sent = False
        self.pending = bytearray()
        self.end_after = False  # END_STREAM once pending is out
        self.trailers = None
        self.blocked = False
        self.on_end = []


class H2Upstream:
    """One HTTP/2 origin: a listening socket on host:port served by background threads."""

    def __init__(self, host="127.0.0.1", port=0, cond=None, tls=None, pki=None, cert="good", alpn=("h2",),
                 max_concurrent_streams=128, initial_window_size=65535, max_frame_size=16384,
                 max_header_list_size=65536, connection_window=None):
        self.host = host
        self.alpn = tuple(alpn)
        if tls is None:
            if pki is None:
                raise ValueError("H2Upstream needs pki= or tls= (tls=False: cleartext h2c)")
            tls = pki.server_context(cert, alpn=self.alpn)
        elif tls is False:
            tls = None
        elif callable(tls) and not isinstance(tls, ssl.SSLContext):
            tls = tls()
        self.tls = tls
        if tls is not None:
            tls.sni_callback = tls_support.record_sni
        self.scheme = "https" if tls is not None else "http"
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        self.max_frame_size = max_frame_size
        self.max_header_list_size = max_header_list_size
        self.connection_window = connection_window
        h2.settings.Settings(client=False, initial_values={  # validates the values now
            SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: initial_window_size,
            SettingCodes.MAX_FRAME_SIZE: max_frame_size})
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._lsock = socket.socket(family, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, port))
        self._lsock.listen(512)
        self.port = self._lsock.getsockname()[1]
        self.cond = cond or threading.Condition()
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._events = {}
        self._flaky = {}
        self._socks = {}  # conn_id -> raw socket, while open
        self._sessions = {}  # conn_id -> _Session, while its loop runs
        self._threads = []
        # Observations (read them under self.cond, or through the accessors).
        self.connections = 0
        self.conns = []
        self.requests = []
        self.open_streams = 0
        self.peak_streams = 0
        self.resets_received = []
        self.goaways_received = []
        self.goaways_sent = []
        self.protocol_errors = []  # (conn_id, message)
        self.closed_conns = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, name="h2upstream-%d" % self.port, daemon=True)
        self._acceptor.start()

    # --- addressing -------------------------------------------------------
    @property
    def authority(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)

    def url(self, path="/ok", host=None, scheme=None):
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
        self._wake_sessions()

    def release_all(self):
        """Sets every event (waiting streams answer), and resets (CANCEL, outcome "aborted")
        the streams that wait otherwise: delays, trickles, stalls. New ones end at once too."""
        with self.cond:
            events = list(self._events.values())
        for ev in events:  # first, so that a waiting stream answers rather than aborts
            ev.set()
        self._hurry.set()
        with self.cond:
            self.cond.notify_all()
        self._wake_sessions()

    def reset_peak(self):
        with self.cond:
            self.peak_streams = self.open_streams
            for c in self.conns:
                c.peak_streams = c.open_streams

    def wait_for(self, predicate, timeout=5.0):
        """Waits until predicate(self) is true (evaluated under the lock); returns its last value."""
        return wait_cond(self.cond, lambda: predicate(self), timeout)

    # --- accessors (thread-safe snapshots) ---------------------------------
    def stats(self):
        with self.cond:
            return {
                "connections": self.connections,
                "closed_conns": self.closed_conns,
                "requests": len(self.requests),
                "open_streams": self.open_streams,
                "peak_streams": self.peak_streams,
                "resets_received": len(self.resets_received),
                "goaways_received": len(self.goaways_received),
                "goaways_sent": len(self.goaways_sent),
                "refused": sum(1 for r in self.requests if r.outcome == "refused"),
                "over_limit": sum(len(c.over_limit) for c in self.conns),
                "protocol_errors": len(self.protocol_errors),
                "handshakes": sum(1 for c in self.conns if c.tls is not None and c.tls.ok),
                "resumed": sum(1 for c in self.conns if c.tls is not None and c.tls.ok and c.tls.resumed),
                "tls_failures": sum(1 for c in self.conns if c.tls is not None and c.tls.ok is False),
            }

    def conn_records(self):
        with self.cond:
            return list(self.conns)

    def conn(self, conn_id):
        with self.cond:
            return self.conns[conn_id - 1]

    def handshakes(self):
        with self.cond:
            return [c.tls for c in self.conns if c.tls is not None and c.tls.ok]

    def tls_failures(self):
        with self.cond:
            return [c.tls for c in self.conns if c.tls is not None and c.tls.ok is False]

    def resets(self):
        with self.cond:
            return list(self.resets_received)

    def reqs(self, path_prefix=None):
        with self.cond:
            return [r for r in self.requests if path_prefix is None or r.path.startswith(path_prefix)]

    def count(self, path_prefix=None):
        return len(self.reqs(path_prefix))

    def close(self):
        self.release_all()
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._acceptor.join(5)
        self._lsock.close()
        with self.cond:
            socks = list(self._socks.values())
        self._wake_sessions()
        for s in socks:  # ends handshakes and blocking reads in progress
            try:
                # The plain socket's shutdown: SSLSocket.shutdown would drop the SSL object
                # under the thread that is using it.
                socket.socket.shutdown(s, socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)
        self._wake_r.close()
        self._wake_w.close()

    # --- internals -----------------------------------------------------------
    def _notify(self):
        self.cond.notify_all()

    def _wake_sessions(self):
        with self.cond:
            sessions = list(self._sessions.values())
        for s in sessions:
            s.wake()

    def _flaky_hit(self, key):
        with self.cond:
            n = self._flaky.get(key, 0)
            self._flaky[key] = n + 1
            return n

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
                rec = H2Conn(self.connections)
                self.conns.append(rec)
                self._socks[rec.conn_id] = sock
                self._notify()
            t = threading.Thread(target=self._serve_conn, args=(sock, rec), daemon=True,
                                 name="h2upstream-%d-c%d" % (self.port, rec.conn_id))
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def _serve_conn(self, sock, rec):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.tls is not None:
                sock = self._tls_accept(sock, rec)
            if sock is not None:
                _Session(self, sock, rec).run()
        except Exception as e:  # a bug here must not pass silently
            with self.cond:
                rec.error = rec.error or "server error: %r" % (e,)
            try:
                sock.close()
            except (OSError, AttributeError):
                pass
        finally:
            with self.cond:
                self._socks.pop(rec.conn_id, None)
                self._sessions.pop(rec.conn_id, None)
                if rec.closed is None:
                    rec.closed = "error"
                rec.t_closed = time.monotonic()
                self.closed_conns += 1
                self._notify()

    def _tls_accept(self, sock, rec):
        """The server side of a handshake, recorded in rec.tls; returns the SSLSocket or None."""
        info = tls_support.TlsConn(rec.conn_id)
        with self.cond:
            rec.tls = info
        info.hello = tls_support.peek_client_hello(sock, HANDSHAKE_TIMEOUT)
        sock.settimeout(HANDSHAKE_TIMEOUT)
        ssock = None
        try:
            ssock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            ssock.fo_tls = info
            with self.cond:
                self._socks[rec.conn_id] = ssock
            ssock.do_handshake()
        except (OSError, ValueError) as e:
            with self.cond:
                info.ok, info.error, info.t_done = False, tls_support.ssl_error_reason(e), time.monotonic()
                rec.closed = "tls"
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


class _Session:
    """One connection: protocol choice, then the HTTP/2 event loop (or the HTTP/1.1 answer)."""

    def __init__(self, server, sock, rec):
        self.server = server
        self.cond = server.cond
        self.sock = sock
        self.rec = rec
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self.out = bytearray()
        self.h2 = None
        self.streams = {}
        self.sending = collections.OrderedDict()  # sid -> _Stream with body left to send
        self.timers = []  # heap of (deadline, seq, stream or None, fn)
        self.waiters = []  # (event, stream, fn)
        self._seq = itertools.count()
        self.goaway_last = None
        self.close_after = None
        self.hurried = False
        self.end = None  # (reason, graceful) once the loop must stop
        self.abort_rst = False
        self.pump_more = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # --- protocol choice ---------------------------------------------------
    def run(self):
        try:
            with self.cond:
                self.server._sessions[self.rec.conn_id] = self
            alpn = self.rec.alpn
            if alpn == "h2":
                self._run_h2(b"")
            elif alpn == "http/1.1":
                self._run_h1(b"")
            else:
                first = self._read_prefix()
                if first.startswith(PREFACE):
                    self._run_h2(first)
                elif "http/1.1" in self.server.alpn and first:
                    self._run_h1(first)
                else:
                    with self.cond:
                        self.rec.closed = "not h2" if first else "peer"
                    self._close(graceful=bool(first))
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _read_prefix(self):
        """No ALPN: reads until the HTTP/2 preface is either there or ruled out."""
        self.sock.settimeout(IO_TIMEOUT)
        data = b""
        try:
            while len(data) < len(PREFACE) and PREFACE.startswith(data):
                d = self.sock.recv(65536)
                if not d:
                    break
                data += d
        except (OSError, ValueError):
            pass
        return data

    # --- HTTP/1.1 fallback ---------------------------------------------------
    def _run_h1(self, data):
        with self.cond:
            self.rec.protocol = "http/1.1"
            self.server._notify()
        self.sock.settimeout(IO_TIMEOUT)
        try:
            while b"\r\n\r\n" not in data and len(data) < (1 << 20):
                d = self.sock.recv(65536)
                if not d:
                    break
                data += d
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                with self.cond:
                    self.rec.closed = "peer"
                return self._close(graceful=False)
            lines = head.split(b"\r\n")
            parts = (lines[0].decode("latin-1").split(" ") + ["", ""])[:3]
            headers = []
            for line in lines[1:]:
                n, _, v = line.partition(b":")
                headers.append((n, v.strip()))
            req = H2Request(self.rec.conn_id, None, headers, http_version="1.1")
            req.method, req.target = parts[0], parts[1]
            split = urlsplit(req.target)
            req.path = split.path
            req.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            req.authority, req.scheme, req.tls = req.header("host"), self.server.scheme, self.rec.tls
            n = int(req.header("content-length", "0") or 0)
            while len(body) < n:
                d = self.sock.recv(65536)
                if not d:
                    break
                body += d
            req.body, req.complete = body[:n], len(body) >= n
            with self.cond:
                self.server.requests.append(req)
                self.server._notify()
            self.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nx-protocol: http/1.1\r\n"
                              b"Content-Length: 3\r\nConnection: close\r\n\r\nok\n")
            with self.cond:
                req.status, req.outcome, req.t_end = 200, "responded", time.monotonic()
                self.rec.closed = "http/1.1 done"
                self.server._notify()
            self._close(graceful=True)
        except (OSError, ValueError):
            with self.cond:
                self.rec.closed = "peer"
            self._close(graceful=False)

    # --- HTTP/2 event loop ---------------------------------------------------
    def _run_h2(self, initial):
        sock = self.sock
        sock.setblocking(False)
        with self.cond:
            self.rec.protocol = "h2"
            self.h2 = _ServerH2(self.server)
            self.h2.start()
            cw = self.server.connection_window
            if cw and cw > 65535:
                self.h2.increment_flow_control_window(cw - 65535)
            if initial:
                self._feed(initial)
            self._step()
        self._flush()
        while self.end is None:
            if self.server._stop.is_set():
                self.end = ("stopped", False)
                break
            now = time.monotonic()
            timeout = 1.0
            if self.timers:
                timeout = min(timeout, self.timers[0][0] - now)
            if self.waiters:
                timeout = min(timeout, 0.02)
            if self.close_after is not None:
                timeout = min(timeout, self.close_after - now)
            if self.is_tls and sock.pending():
                timeout = 0
            try:
                wl = [sock] if self.out or self.pump_more else []
                r, w, _ = select.select([sock, self._wake_r], wl, [], max(0, timeout))
            except (OSError, ValueError):
                self.end = ("error", False)
                break
            if self._wake_r in r:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            chunks, eof = [], False
            if sock in r or (self.is_tls and sock.pending()):
                chunks, eof = self._read()
            if w:
                self._flush()
            with self.cond:
                if chunks:
                    self._feed(b"".join(chunks))
                self._step()
                if eof and self.end is None:
                    self.end = ("peer", False)
            if self.end is None:
                self._flush()
        reason, graceful = self.end
        with self.cond:
            if self.rec.closed is None:
                self.rec.closed = reason
            for st in self.streams.values():
                if not st.done:
                    self._finish(st, "peer_closed" if reason == "peer" else "aborted")
            self.server._notify()
        self._close(graceful)

    def _read(self):
        chunks, total = [], 0
        while total < (1 << 20):
            try:
                d = self.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                return chunks, False
            except (OSError, ValueError):
                return chunks, True
            if not d:
                return chunks, True
            chunks.append(d)
            total += len(d)
        return chunks, False

    def _flush(self):
        while self.out:
            try:
                n = self.sock.send(self.out[:65536])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                return
            except (OSError, ValueError):
                self.out.clear()
                if self.end is None:
                    self.end = ("peer", False)
                return
            del self.out[:n]

    def _step(self):
        """Under the lock: timers, waiters, release_all, pending DATA, closing; collects output."""
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now and self.end is None:
            _, _, st, fn = heapq.heappop(self.timers)
            if st is None or not st.done:
                self._call(st, fn)
        self._check_waiters()
        if self.server._hurry.is_set() and not self.hurried:
            self.hurried = True
            self._check_waiters()  # release_all set the events before _hurry: they answer
            for st in list(self.streams.values()):
                if st.held and not st.done:
                    self._abort(st)
        self._pump()
        if self.h2 is not None:
            self.out += self.h2.data_to_send()
        if (self.end is None and self.goaway_last is not None and self.rec.open_streams == 0
                and time.monotonic() >= self.close_after):
            self.end = ("goaway", True)
        self.server._notify()

    def _check_waiters(self):
        still = []
        for ev, st, fn in self.waiters:
            if st.done:
                continue
            if ev.is_set():
                self._call(st, fn)
            else:
                still.append((ev, st, fn))
        self.waiters = still

    def _feed(self, data):
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            msg = "%s: %s" % (type(e).__name__, e)
            self.rec.error = msg
            self.server.protocol_errors.append((self.rec.conn_id, msg))
            self.out += self.h2.data_to_send()  # h2's GOAWAY
            self.end = ("protocol_error", True)
            return
        for ev in events:
            self._on_event(ev)

    def _on_event(self, ev):
        rec, server = self.rec, self.server
        if isinstance(ev, h2.events.RequestReceived):
            self._on_request(ev)
        elif isinstance(ev, h2.events.DataReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st.req.body += ev.data
            rec.bytes_received += ev.flow_controlled_length
            if ev.flow_controlled_length:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st.req.complete = True
                if not st.done:
                    self._dispatch(st)
        elif isinstance(ev, h2.events.TrailersReceived):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st.req.trailers = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in ev.headers]
        elif isinstance(ev, h2.events.StreamReset):
            code = error_code(ev.error_code)
            st = self.streams.get(ev.stream_id)
            if ev.remote_reset:
                server.resets_received.append(Reset(rec.conn_id, ev.stream_id, code))
            if st is not None and not st.done:
                self._finish(st, "reset_by_client" if ev.remote_reset else "reset_by_h2", code)
        elif isinstance(ev, h2.events.WindowUpdated):
            if ev.stream_id == 0:
                rec.window_conn += ev.delta
                rec.window_log.append((0, ev.delta, rec.bytes_sent))
            else:
                rec.window_streams[ev.stream_id] += ev.delta
                st = self.streams.get(ev.stream_id)
                sent = 0
                if st is not None:
                    st.req.window_increments += ev.delta
                    sent = st.req.bytes_sent
                rec.window_log.append((ev.stream_id, ev.delta, sent))
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            frame = {setting_name(k): v.new_value for k, v in ev.changed_settings.items()}
            rec.settings_frames.append(frame)
            rec.client_settings.update(frame)
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            rec.settings_acked = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            g = GoAway(rec.conn_id, ev.error_code, ev.last_stream_id, ev.additional_data)
            rec.goaways_received.append(g)
            server.goaways_received.append(g)
        elif isinstance(ev, h2.events.PingReceived):
            rec.pings += 1

    def _on_request(self, ev):
        rec, server = self.rec, self.server
        sid = ev.stream_id
        req = H2Request(rec.conn_id, sid, ev.headers)
        req.tls = rec.tls
        st = _Stream(sid, req)
        self.streams[sid] = st
        server.requests.append(req)
        rec.streams += 1
        if self.goaway_last is not None and sid > self.goaway_last:
            st.done, req.outcome = True, "ignored_after_goaway"
            return
        if rec.open_streams >= server.max_concurrent_streams:
            rec.over_limit.append((sid, rec.settings_acked))
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            st.done, req.outcome, req.reset_code = True, "over_limit", ErrorCodes.REFUSED_STREAM
            req.t_end = time.monotonic()
            return
        st.counted = True
        rec.open_streams += 1
        rec.peak_streams = max(rec.peak_streams, rec.open_streams)
        server.open_streams += 1
        server.peak_streams = max(server.peak_streams, server.open_streams)

    def _finish(self, st, outcome, code=None):
        """The stream is over for us (under the lock): it stops counting as open."""
        if st.done:
            return
        st.done = True
        st.pending = bytearray()
        self.sending.pop(st.sid, None)
        req = st.req
        req.outcome = outcome
        if code is not None:
            req.reset_code = code
        req.t_end = time.monotonic()
        if st.counted:
            st.counted = False
            self.rec.open_streams -= 1
            self.server.open_streams -= 1
        self.server._notify()

    def _call(self, st, fn):
        try:
            fn()
        except h2.exceptions.StreamClosedError:
            if st is not None:
                self._finish(st, "reset_by_h2")
        except Exception as e:
            if st is None:
                raise
            self._fail(st, e)

    def _fail(self, st, e):
        """A route raised (a bad argument): 500 if nothing went yet, else RST INTERNAL_ERROR."""
        if st.done:
            return
        st.req.error = "%r" % (e,)
        try:
            if not st.headers_sent:
                self.respond(st, 500, ("handler error: %r\n" % (e,)).encode())
            else:
                self.reset(st, ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.H2Error:
            self._finish(st, "reset_by_h2")

    # --- output helpers --------------------------------------------------------
    def send_headers(self, st, status, headers=(), end=False):
        hs = [(b":status", str(status).encode())]
        for n, v in headers:
            hs.append((n.lower().encode("latin-1") if isinstance(n, str) else n,
                       v.encode("latin-1") if isinstance(v, str) else v))
        self.h2.send_headers(st.sid, hs, end_stream=end)
        if status >= 200:
            st.headers_sent = True
            st.req.status = status
            st.req.outcome = "responding"
        if end:
            self._ended(st)

    def queue(self, st, data, end=False, trailers=None):
        """Body bytes for the stream, sent as the peer's windows allow (see _pump)."""
        st.pending += data
        st.end_after = end
        st.trailers = trailers
        self.sending[st.sid] = st

    def respond(self, st, status, body=b"", headers=(), trailers=None, unhold=False):
        """unhold: the wait is over, release_all no longer aborts the stream."""
        if unhold:
            st.held = False
        hs = list(headers)
        if status not in (204, 304) and not any(n.lower() == "content-length" for n, _ in hs):
            hs.append(("content-length", str(len(body))))
        if st.req.method == "HEAD" or status in (204, 304) or (not body and not trailers):
            self.send_headers(st, status, hs, end=True)
        else:
            self.send_headers(st, status, hs)
            self.queue(st, body, end=True, trailers=trailers)

    def reset(self, st, code, outcome="reset"):
        self.h2.reset_stream(st.sid, code)
        self._finish(st, outcome, code)

    def later(self, st, seconds, fn):
        heapq.heappush(self.timers, (time.monotonic() + seconds, next(self._seq), st, fn))

    def hold(self, st):
        """For a route that answers later: False (and the stream aborted) after release_all."""
        st.held = True
        if self.server._hurry.is_set():
            self._abort(st)
            return False
        return True

    def _abort(self, st):
        try:
            self.reset(st, ErrorCodes.CANCEL, "aborted")
        except h2.exceptions.H2Error:
            self._finish(st, "aborted")

    def _ended(self, st):
        self._finish(st, "responded")
        for fn in st.on_end:
            fn()

    def _pump(self):
        """Sends queued body bytes within the flow-control windows and max frame size."""
        self.pump_more = False
        if self.h2 is None:
            return
        for sid, st in list(self.sending.items()):
            while not st.done:
                if not st.pending:
                    if st.end_after:
                        if st.trailers:
                            self.h2.send_headers(sid, st.trailers, end_stream=True)
                        else:
                            self.h2.end_stream(sid)
                        self._ended(st)
                    else:
                        self.sending.pop(sid, None)
                    break
                if len(self.out) >= OUT_HIGH_WATER:
                    self.pump_more = True  # more once the socket takes it
                    return
                window = self.h2.local_flow_control_window(sid)
                if window <= 0:
                    if not st.blocked:
                        st.blocked = True
                        st.req.window_waits += 1
                    break
                st.blocked = False
                n = min(window, self.h2.max_outbound_frame_size, len(st.pending))
                chunk = bytes(st.pending[:n])
                del st.pending[:n]
                last = st.end_after and not st.pending and not st.trailers
                self.h2.send_data(sid, chunk, end_stream=last)
                st.req.bytes_sent += n
                self.rec.bytes_sent += n
                self.out += self.h2.data_to_send()
                if last:
                    self._ended(st)

    def send_goaway(self, code, last, grace):
        self.out += self.h2.data_to_send()
        f = GoAwayFrame(0)
        f.last_stream_id = last
        f.error_code = int(code)
        self.out += f.serialize()
        g = GoAway(self.rec.conn_id, error_code(code), last, None)
        self.rec.goaway_sent = g
        self.server.goaways_sent.append(g)
        self.goaway_last = last if self.goaway_last is None else min(last, self.goaway_last)
        for st in self.streams.values():
            if st.sid > self.goaway_last and not st.done:
                self._finish(st, "goaway_unprocessed")
        self.close_after = time.monotonic() + grace

    def _close(self, graceful):
        """graceful: flush, close_notify, FIN, then read until the peer's EOF (bounded), so
        that the peer gets everything; else just close (no GOAWAY, no close_notify)."""
        sock = self.sock
        try:
            if self.abort_rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if graceful:
                deadline = time.monotonic() + 2.0
                sock.setblocking(False)
                while self.out and time.monotonic() < deadline:
                    select.select([], [sock], [], 0.05)
                    self._flush()
                if self.is_tls:
                    try:
                        sock.unwrap()
                    except (OSError, ValueError):
                        pass
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and not self.server._stop.is_set():
                    r, _, _ = select.select([sock], [], [], 0.05)
                    if r:
                        try:
                            if not socket.socket.recv(sock, 65536):
                                break
                        except BlockingIOError:
                            continue
                        except OSError:
                            break
        except (OSError, ValueError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    # --- routes ----------------------------------------------------------------
    def _dispatch(self, st):
        req = st.req
        parts = req.path.strip("/").split("/")
        name, arg = parts[0], "/".join(parts[1:])
        fn = getattr(self, "r_" + name.replace("-", "_"), None)
        if fn is None:
            return self._call(st, lambda: self.respond(st, 404, b"no such route\n", [("content-type", "text/plain")]))
        self._call(st, lambda: fn(st, req, arg))

    def r_ok(self, st, req, arg):
        self.respond(st, 200, b"ok\n", [("content-type", "text/plain")])

    def r_status(self, st, req, arg):
        hdrs = [("content-type", "text/plain")]
        if "retry_after" in req.query:
            hdrs.append(("retry-after", req.query["retry_after"]))
        code = int(arg)
        if code < 200:
            self.send_headers(st, code, [])
            self.respond(st, 200, b"after %d\n" % code, hdrs)
        elif code in (204, 304):
            self.respond(st, code, b"", hdrs)
        else:
            self.respond(st, code, b"status %d\n" % code, hdrs)

    def r_delay(self, st, req, arg):
        ms = int(arg)
        if self.hold(st):
            self.later(st, ms / 1000.0, lambda: self.respond(st, 200, b"delayed\n", [("content-type", "text/plain")],
                                                             unhold=True))

    def r_wait(self, st, req, arg):
        ev = self.server.event(arg)

        def answer():
            self.respond(st, 200, ("released %s\n" % arg).encode(), [("content-type", "text/plain")], unhold=True)

        if ev.is_set():
            return answer()
        if self.hold(st):
            self.waiters.append((ev, st, answer))

    def r_bytes(self, st, req, arg):
        self.respond(st, 200, binary_bytes(int(arg)), [("content-type", "application/octet-stream")])

    r_big = r_bytes

    def r_text(self, st, req, arg):
        self.respond(st, 200, text_bytes(int(arg)), [("content-type", "text/plain; charset=utf-8")])

    def r_utf8(self, st, req, arg):
        self.respond(st, 200, UTF8_TEXT.encode("utf-8"), [("content-type", "text/plain; charset=utf-8")])

    def r_json(self, st, req, arg):
        self.respond(st, 200, json.dumps(JSON_DOC).encode(), [("content-type", "application/json")])

    def r_notjson(self, st, req, arg):
        self.respond(st, 200, b"{not json", [("content-type", "application/json")])

    def r_gzip(self, st, req, arg):
        self.respond(st, 200, gzip.compress(text_bytes(int(arg))),
                     [("content-type", "text/plain"), ("content-encoding", "gzip")])

    def r_deflate(self, st, req, arg):
        self.respond(st, 200, zlib.compress(text_bytes(int(arg))),
                     [("content-type", "text/plain"), ("content-encoding", "deflate")])

    def r_bomb(self, st, req, arg):
        self.respond(st, 200, bomb(int(arg or 16)),
                     [("content-type", "application/octet-stream"), ("content-encoding", "gzip")])

    def r_echo(self, st, req, arg):
        doc = {
            "method": req.method,
            "path": req.target,
            "authority": req.authority,
            "scheme": req.scheme,
            "stream_id": req.stream_id,
            "headers": [[n, v] for n, v in req.headers],
            "trailers": [[n, v] for n, v in req.trailers],
            "body": req.body.decode("latin-1"),
        }
        self.respond(st, 200, json.dumps(doc).encode(), [("content-type", "application/json")])

    def r_headers(self, st, req, arg):
        self.respond(st, 200, b"h\n", [
            ("content-type", "text/plain"),
            ("x-dup", "one"),
            ("x-dup", "two"),
            ("x-mixed-case", "Value"),
            ("set-cookie", "a=1; Path=/"),
            ("set-cookie", "b=2, c=3"),
        ])

    def r_cookie(self, st, req, arg):
        self.respond(st, 200, b"c\n", [("content-type", "text/plain"), ("set-cookie", "only=1")])

    def r_bigheader(self, st, req, arg):
        self.respond(st, 200, b"big\n", [("content-type", "text/plain"), ("x-big", "x" * int(arg))])

    def r_trailers(self, st, req, arg):
        self.respond(st, 200, b"t\n", [("content-type", "text/plain")],
                     trailers=[(b"x-checksum", b"abc"), (b"x-more", b"1")])

    def _redirect(self, st, req, location):
        code = int(req.query.get("code", 302))
        self.respond(st, code, b"moved\n", [("location", location), ("content-type", "text/plain")])

    def r_redirect(self, st, req, arg):
        n = int(arg)
        if n <= 0:
            return self.r_echo(st, req, "")
        q = "?code=%s" % req.query.get("code", "302")
        if req.query.get("abs"):
            q += "&abs=1"
            self._redirect(st, req, "%s://%s/redirect/%d%s" % (self.server.scheme, self.server.authority, n - 1, q))
        else:
            self._redirect(st, req, "%d%s" % (n - 1, q))

    def r_redirect_to(self, st, req, arg):
        self._redirect(st, req, req.query["url"])

    def r_loop(self, st, req, arg):
        self._redirect(st, req, "/loop")

    def r_flaky(self, st, req, arg):
        key = req.query.get("key", req.path)
        n = self.server._flaky_hit(key)
        if n < int(arg):
            hdrs = [("content-type", "text/plain")]
            if "retry_after" in req.query:
                hdrs.append(("retry-after", req.query["retry_after"]))
            self.respond(st, int(req.query.get("status", 503)), b"try again\n", hdrs)
        else:
            self.respond(st, 200, b"ok after %d\n" % n, [("content-type", "text/plain")])

    def r_retry_after(self, st, req, arg):
        req.query.setdefault("retry_after", "1")
        req.query.setdefault("key", req.path)
        return self.r_flaky(st, req, arg)

    # HTTP/2 behaviours
    def r_refuse(self, st, req, arg):
        key = req.query.get("key", req.path)
        n = self.server._flaky_hit("refuse\0" + key)
        if n < int(req.query.get("n", 1)):
            self.reset(st, ErrorCodes.REFUSED_STREAM, "refused")
        else:
            self.respond(st, 200, b"ok after %d\n" % n, [("content-type", "text/plain")])

    def r_rst(self, st, req, arg):
        code = error_code(req.query.get("code", "INTERNAL_ERROR"))
        after = req.query.get("after", "headers")
        if after == "headers":
            self.send_headers(st, 200, [("content-type", "text/plain")])
        elif after == "data":
            self.send_headers(st, 200, [("content-type", "text/plain"), ("content-length", "100")])
            self.h2.send_data(st.sid, text_bytes(10))
            st.req.bytes_sent += 10
            self.rec.bytes_sent += 10
        elif after != "none":
            raise ValueError("after=%s" % after)
        self.reset(st, code)

    def r_goaway(self, st, req, arg):
        key = req.query.get("key", req.path)
        n = self.server._flaky_hit("goaway\0" + key)
        if n >= int(req.query.get("n", 1)):
            return self.respond(st, 200, b"ok after %d\n" % n, [("content-type", "text/plain")])
        code = error_code(req.query.get("code", "NO_ERROR"))
        self.send_goaway(code, max(0, st.sid - 2), int(req.query.get("grace", 100)) / 1000.0)

    def r_goaway_after(self, st, req, arg):
        grace = int(req.query.get("grace", 100)) / 1000.0
        st.on_end.append(lambda: self.send_goaway(ErrorCodes.NO_ERROR, st.sid, grace))
        self.respond(st, 200, b"ok\n", [("content-type", "text/plain")])

    def r_goaway_settings(self, st, req, arg):
        """200, then [ms=300] later GOAWAY(NO_ERROR, last = this id) and a SETTINGS in one write."""
        ms = int(req.query.get("ms", 300))
        self.respond(st, 200, b"ok\n", [("content-type", "text/plain")])

        def later():
            g = GoAwayFrame(0)
            g.last_stream_id = st.sid
            g.error_code = 0
            f = SettingsFrame(0)
            f.settings = {SettingsFrame.MAX_CONCURRENT_STREAMS: 7}
            self.out += g.serialize() + f.serialize()
            self.goaway_last = st.sid
            self.close_after = time.monotonic() + 5
        self.later(None, ms / 1000.0, later)

    def r_protoerr(self, st, req, arg):
        """A connection error (WINDOW_UPDATE of 0 on stream 0); the socket stays open."""
        self.out += self.h2.data_to_send()
        self.out += struct.pack(">I", 4)[1:] + bytes([8, 0]) + struct.pack(">I", 0) * 2
        self.hold(st)

    def r_stall(self, st, req, arg):
        if self.hold(st):
            self.send_headers(st, 200, [("content-type", "text/plain")])

    def r_close(self, st, req, arg):
        self.abort_rst = req.query.get("rst") == "1"
        self._finish(st, "closed")
        self.rec.closed = "route /close"
        self.out.clear()
        self.end = ("route /close", False)

    def r_trickle(self, st, req, arg):
        n = int(arg)
        interval = int(req.query.get("interval", 100)) / 1000.0
        if not self.hold(st):
            return
        self.send_headers(st, 200, [("content-type", "text/plain"), ("content-length", str(n))])
        if n == 0:
            return self.queue(st, b"", end=True)

        def one(i):
            self.queue(st, b"x", end=(i == n - 1))
            if i < n - 1:
                self.later(st, interval, lambda: one(i + 1))

        one(0)


if __name__ == "__main__":
    # Manual poking: python3 h2upstream.py [PORT]  (cleartext h2c, prior knowledge:
    # curl --http2-prior-knowledge http://127.0.0.1:PORT/ok)
    import sys
    up = H2Upstream(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0, tls=False)
    print("listening on", up.url("/"), "pid", os.getpid(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        up.close()

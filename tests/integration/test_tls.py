"""HTTPS: verification (and its failures, in words), SNI / ALPN / TLS 1.2 minimum, keep-alive
and session resumption measured at the upstream, handshake timeouts, the wrong protocol on
either side, redirects between http and https, TLS errors staying with their own request,
and a 500-URL batch over 4 HTTPS origins.

The PKI is made at test time with the openssl CLI (tls_support.PKI, the session fixture
`pki`); daemons get ca_file = pki.ca_file. The first tests are self-checks of that
infrastructure without fanoutd (PKI, TLS upstream, stall server, curl, openssl s_client).
"""

import re
import shutil
import socket
import ssl
import subprocess
import warnings
from urllib.parse import quote

import pytest

from client import parse_metrics
from tls_support import StallServer
from upstream import closed_port

# What a user must read in the error message of each broken certificate.
REASONS = {
    "expired": "certificate has expired",
    "notyet": "certificate is not yet valid",
    "selfsigned": "self-signed certificate",  # OpenSSL 3 spelling (1.1: "self signed")
    "unknownca": "unable to get local issuer certificate",
    "other": "hostname mismatch",
}
TLS_WORDS = ("certificate", "mismatch", "issuer", "self-signed", "self signed", "handshake", "ssl", "alert",
             "wrong version")


def reason_in(kind, message):
    if kind == "selfsigned":
        return re.search(r"self[- ]signed certificate", message) is not None
    return REASONS[kind] in message


def tls_handshakes(d):
    """{"full": n, "resumed": n} from /metrics (0 while a series is absent; other types are
    not looked at), and the text."""
    r = d.client().get("/metrics")
    assert r.status == 200, r.status
    text = r.body.decode("utf-8")
    _, samples = parse_metrics(text)
    out = {"full": 0.0, "resumed": 0.0}
    for name, labels, value in samples:
        if name == "fanoutd_tls_handshakes_total":
            m = re.search(r'type="([^"]*)"', labels)
            assert m, "fanoutd_tls_handshakes_total without a type label: %r" % labels
            if m.group(1) in out:
                out[m.group(1)] += value
    return out, text


def delta(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


@pytest.fixture
def tls_daemon(daemon, pki):
    """daemon(...) with ca_file = the test CA unless given."""
    def start(**keys):
        keys.setdefault("ca_file", pki.ca_file)
        return daemon(**keys)
    return start


@pytest.fixture
def tls_up(upstreams, pki):
    """tls_up(cert="good", host="127.0.0.1", max_version=None) -> a TLS Upstream."""
    def make(cert="good", host="127.0.0.1", **kw):
        return upstreams(1, host=host, tls=pki.context_factory(cert, **kw))[0]
    return make


@pytest.fixture
def good(tls_up):
    return tls_up("good")


@pytest.fixture
def stall():
    s = StallServer()
    yield s
    s.close()


# --- self-checks of the infrastructure (no fanoutd) ------------------------------------

def openssl_verify(pki, cert, *args, ca="ca"):
    p = subprocess.run(["openssl", "verify", "-CAfile", pki.cert(ca)] + list(args) + [pki.cert(cert)],
                       capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("cert,args,error", [
    ("good", ["-verify_hostname", "a.test"], None),
    ("good", ["-verify_hostname", "d.test"], None),
    ("good", ["-verify_ip", "127.0.0.1"], None),
    ("good", ["-verify_ip", "::1"], None),
    ("expired", ["-verify_hostname", "a.test"], "certificate has expired"),
    ("notyet", ["-verify_hostname", "a.test"], "certificate is not yet valid"),
    ("other", ["-verify_hostname", "other.test"], None),
    ("other", ["-verify_hostname", "a.test"], "hostname mismatch"),
    ("other", ["-verify_ip", "127.0.0.1"], "IP address mismatch"),
    ("dnsip", ["-verify_hostname", "127.0.0.1"], None),  # a name check would wrongly pass
    ("dnsip", ["-verify_ip", "127.0.0.1"], "IP address mismatch"),
    ("selfsigned", ["-verify_hostname", "a.test"], "self-signed certificate"),
    ("unknownca", ["-verify_hostname", "a.test"], "unable to get local issuer certificate"),
])
def test_infra_pki_each_certificate_has_exactly_its_fault(pki, cert, args, error):
    rc, out = openssl_verify(pki, cert, *args)
    if error is None:
        assert rc == 0, out
    else:
        assert rc != 0 and error in out, out
    if cert == "unknownca":
        assert openssl_verify(pki, cert, ca="otherca")[0] == 0


def python_get(pki, port, name, paths=("/ok",), session=None, host="127.0.0.1", ctx=None):
    """Requests paths on one TLS connection; returns (bodies, session, SSLSocket facts)."""
    ctx = ctx or pki.client_context()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.create_connection((host, port), timeout=5)
    assert raw.family == fam
    s = ctx.wrap_socket(raw, server_hostname=name, session=session, suppress_ragged_eofs=False)
    bodies = []
    buf = b""
    for i, path in enumerate(paths):
        last = i == len(paths) - 1
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, name, "Connection: close\r\n" if last else ""))
                  .encode())
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        while len(buf) < n:
            buf += s.recv(65536)
        bodies.append(buf[:n])
        buf = buf[n:]
    # The server closes after "Connection: close" with close_notify: a clean EOF, not SSLEOFError.
    assert s.recv(100) == b""
    facts = (s.session_reused, s.selected_alpn_protocol(), s.version())
    sess = s.session
    s.close()
    return bodies, sess, facts


@pytest.mark.parametrize("max_version,version", [(None, "TLSv1.3"), ("1.2", "TLSv1.2")])
def test_infra_tls_upstream_keepalive_resumption_sni_alpn(pki, tls_up, max_version, version):
    u = tls_up("good", max_version=max_version)
    ctx = pki.client_context()  # a session resumes only with the context that made it
    bodies, sess, facts = python_get(pki, u.port, "a.test", ("/ok", "/echo"), ctx=ctx)
    assert bodies[0] == b"ok\n" and b'"target": "/echo"' in bodies[1]
    assert facts == (False, "http/1.1", version)
    bodies, _, facts = python_get(pki, u.port, "a.test", ("/ok",), session=sess, ctx=ctx)
    assert facts[0] is True
    python_get(pki, u.port, "127.0.0.1")  # by IP: no SNI
    assert u.wait_for(lambda u: u.closed_conns == 3, 5)
    t1, t2, t3 = u.handshakes()
    assert (t1.resumed, t2.resumed, t3.resumed) == (False, True, False)
    assert (t1.sni, t2.sni, t3.sni) == ("a.test", "a.test", None)
    assert (t1.hello.sni, t3.hello.sni) == ("a.test", None)
    assert t1.alpn == "http/1.1" and t1.hello.alpn == ["http/1.1"] and t1.version == version
    assert not t1.hello.offers_resumption and t2.hello.offers_resumption
    assert "TLSv1.2" in t1.hello.versions
    assert [(r.conn_id, r.seq, r.path) for r in u.reqs()] == [(1, 0, "/ok"), (1, 1, "/echo"), (2, 0, "/ok"),
                                                              (3, 0, "/ok")]
    assert u.reqs()[0].tls is t1
    assert u.stats()["handshakes"] == 3 and u.stats()["resumed"] == 1 and u.stats()["tls_failures"] == 0


def test_infra_tls_upstream_ipv6_and_failures(pki, tls_up):
    u6 = tls_up("good", host="::1")
    assert u6.url() == "https://[::1]:%d/ok" % u6.port
    assert python_get(pki, u6.port, "::1", host="::1")[0] == [b"ok\n"]
    assert u6.handshakes()[0].sni is None
    # A client that refuses the certificate: the upstream records a failed handshake.
    exp = tls_up("expired")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        python_get(pki, exp.port, "a.test")
    assert exp.wait_for(lambda u: u.tls_failures(), 5)
    assert exp.count() == 0 and "EXPIRED" in exp.tls_failures()[0].error


def test_infra_wrong_protocol_on_either_side(pki, tls_up, upstream):
    tls = tls_up("good")
    # Plain HTTP to the TLS port: the handshake fails there, no request is seen.
    s = socket.create_connection(("127.0.0.1", tls.port), timeout=5)
    s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    s.close()
    assert tls.wait_for(lambda u: u.tls_failures(), 5)
    assert tls.tls_failures()[0].error == "HTTP_REQUEST" and tls.count() == 0
    # TLS to the plain port: a plain-text 400, which a TLS client cannot parse.
    with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER|wrong version number"):
        python_get(pki, upstream.port, "a.test")
    assert upstream.tls_on_plain == [1] and upstream.count() == 0
    assert upstream.stats()["handshakes"] == 0


def test_infra_stall_server(pki, stall):
    raw = socket.create_connection(("127.0.0.1", stall.port), timeout=0.3)
    with pytest.raises((socket.timeout, TimeoutError)):
        pki.client_context().wrap_socket(raw, server_hostname="a.test")
    raw.close()
    assert stall.wait_for(lambda s: s.conns and s.conns[0].t_peer_closed, 5)
    c = stall.conns[0]
    assert c.received > 0 and c.hello.sni == "a.test"


def test_infra_legacy_tls11_server(pki, tls_up):
    old = tls_up("good", max_version="1.1")
    with pytest.raises(ssl.SSLError):
        python_get(pki, old.port, "a.test")  # a modern client refuses it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = pki.client_context()
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    assert python_get(pki, old.port, "a.test", ctx=ctx)[2][2] == "TLSv1.1"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_infra_curl_and_s_client_agree(pki, good, tls_up, upstream):
    def curl(url, *extra):
        p = subprocess.run(["curl", "-sS", "-m", "5", "--cacert", pki.ca_file] + list(extra) + [url],
                           capture_output=True, text=True, timeout=10)
        return p.returncode, p.stdout, p.stderr
    resolve = "b.test:%d:127.0.0.1" % good.port
    assert curl(good.url(host="b.test"), "--resolve", resolve)[:2] == (0, "ok\n")
    assert curl(good.url())[:2] == (0, "ok\n")  # by IP: the cert has IP 127.0.0.1
    rc, _, err = curl(tls_up("expired").url())
    assert rc == 60 and "certificate has expired" in err
    other = tls_up("other")
    rc, _, err = curl(other.url(host="a.test"), "--resolve", "a.test:%d:127.0.0.1" % other.port)
    assert rc == 60 and "a.test" in err, err
    rc, _, err = curl(other.url())
    assert rc == 60 and "127.0.0.1" in err, err
    rc, _, err = curl(upstream.url(scheme="https"))
    assert rc == 35 and upstream.tls_on_plain == [1], err
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % good.port, "-servername", "c.test",
                        "-CAfile", pki.ca_file, "-verify_return_error", "-alpn", "http/1.1", "-quiet"],
                       input=b"GET /ok HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n",
                       capture_output=True, timeout=10)
    assert p.returncode == 0 and p.stdout.endswith(b"\r\n\r\nok\n"), p.stderr
    assert good.wait_for(lambda u: len(u.handshakes()) == 3, 5)
    assert [h.sni for h in good.handshakes()] == ["b.test", None, "c.test"]


@pytest.mark.parametrize("conf,option", [(0, None), (0, True), (1, False)],
                         ids=["config off", "config off, option true", "option false"])
def test_http2_off_offers_http11_alone(tls_daemon, good, conf, option):
    # The option cannot turn on what the configuration turned off.
    d = tls_daemon(http2=conf)
    bs = d.batch([good.url("/ok", host="a.test")], None if option is None else {"http2": option})
    assert bs[0]["status"] == 200 and bs[0]["protocol"] == "http/1.1", bs[0]
    (h,) = good.handshakes()
    assert h.hello.alpn == ["http/1.1"] and h.alpn == "http/1.1"


# --- verification ----------------------------------------------------------------------

def test_good_certificate_by_name(tls_daemon, good):
    d = tls_daemon()
    before, _ = tls_handshakes(d)
    url = good.url("/echo", host="a.test")
    bs = d.batch([url])
    r = bs[0]
    assert r.get("status") == 200, r
    assert r["body"]["target"] == "/echo" and "final_url" not in r
    assert r["remote"] == "127.0.0.1:%d" % good.port and r["reused"] is False and r["attempts"] == 1
    assert r["timing"]["tls_ms"] > 0 and r["timing"]["total_ms"] >= r["timing"]["tls_ms"], r["timing"]
    (h,) = good.handshakes()
    assert h.sni == "a.test" and h.hello.sni == "a.test"
    # h2 offered first (http2 = 1 by default); this server takes http/1.1.
    assert h.alpn == "http/1.1" and h.hello.alpn == ["h2", "http/1.1"]
    assert r["protocol"] == "http/1.1"
    # TLS 1.2 minimum: nothing older is even offered.
    assert h.hello.versions and set(h.hello.versions) <= {"TLSv1.2", "TLSv1.3"}, h.hello
    assert not h.hello.offers_resumption  # nothing to resume yet
    (q,) = good.reqs()
    assert q.header_all("Host") == ["a.test:%d" % good.port]
    assert delta(tls_handshakes(d)[0], before) == {"full": 1, "resumed": 0}


def test_good_certificate_by_ip_sends_no_sni(tls_daemon, good):
    d = tls_daemon()
    bs = d.batch([good.url("/ok")])
    assert bs[0].get("status") == 200, bs[0]
    (h,) = good.handshakes()
    assert h.sni is None and h.hello.sni is None  # RFC 6066: no SNI for IP literals
    assert good.reqs()[0].header("Host") == "127.0.0.1:%d" % good.port


def test_good_certificate_by_ipv6_literal(tls_daemon, tls_up):
    u6 = tls_up("good", host="::1")
    d = tls_daemon()
    bs = d.batch([u6.url("/ok")])
    assert bs[0].get("status") == 200 and bs[0]["remote"] == "[::1]:%d" % u6.port, bs[0]
    assert u6.handshakes()[0].sni is None


@pytest.mark.parametrize("cert", ["expired", "notyet", "selfsigned", "unknownca", "other"])
def test_bad_certificate_is_a_tls_error_saying_why(tls_daemon, tls_up, cert):
    u = tls_up(cert)
    d = tls_daemon()
    bs = d.batch([u.url("/ok", host="a.test")])
    r = bs[0]
    assert r.get("error", {}).get("kind") == "tls", r
    msg = r["error"]["message"]
    assert reason_in(cert, msg), msg
    for other in REASONS:
        if other != cert:
            assert not reason_in(other, msg), msg
    if cert == "other":
        assert "other.test" in msg, msg  # "hostname mismatch: cert is for other.test"
    assert r["attempts"] == 1 and "status" not in r
    assert u.wait_for(lambda u: u.tls_failures(), 3), u.tls_conns  # the daemon aborted the handshake
    assert u.count() == 0


@pytest.mark.parametrize("cert", ["other", "dnsip"])
def test_ip_literal_is_checked_as_an_ip(tls_daemon, tls_up, cert):
    # "other": no SAN for 127.0.0.1 at all. "dnsip": a DNS SAN spelled "127.0.0.1" but no IP
    # SAN; a client that checks the IP literal as a host name would wrongly accept it.
    u = tls_up(cert)
    d = tls_daemon()
    bs = d.batch([u.url("/ok")])
    r = bs[0]
    assert r.get("error", {}).get("kind") == "tls", r
    assert "mismatch" in r["error"]["message"].lower(), r["error"]
    assert u.count() == 0


def test_system_trust_store_without_ca_file(daemon, good):
    # The test CA is in no system store: without ca_file the good certificate is unknown.
    d = daemon(ca_file=None)
    bs = d.batch([good.url("/ok", host="a.test")])
    assert bs.kinds() == ["tls"]
    assert REASONS["unknownca"] in bs[0]["error"]["message"], bs[0]["error"]
    assert good.count() == 0


def test_a_caller_cannot_weaken_verification(tls_daemon, tls_up):
    u = tls_up("expired")
    d = tls_daemon()
    for opts in ({"verify": False}, {"insecure": True}, {"tls_verify": False}, {"ca_file": "/dev/null"}):
        bs = d.batch([u.url("/ok", host="a.test")], opts)
        assert bs.status == 400 and bs.error()["error"]["kind"] == "bad_request", (opts, bs.status)
    bs = d.batch([{"url": u.url("/ok", host="a.test"), "insecure": True},
                  {"url": u.url("/ok", host="a.test"), "verify": False},
                  u.url("/ok", host="a.test")])
    assert bs.kinds() == ["invalid_request", "invalid_request", "tls"]
    assert u.count() == 0


def test_legacy_tls11_server_is_refused(tls_daemon, tls_up):
    old = tls_up("good", max_version="1.1")
    d = tls_daemon()
    bs = d.batch([old.url("/ok", host="a.test")])
    assert bs.kinds() == ["tls"], bs[0]
    assert old.wait_for(lambda u: u.tls_failures(), 3)
    assert old.count() == 0


# --- keep-alive and resumption -----------------------------------------------------------

def test_tls_connections_are_kept_alive_and_reused(tls_daemon, good):
    d = tls_daemon()
    before, _ = tls_handshakes(d)
    bs = d.batch([good.url("/ok?i=%d" % i, host="a.test") for i in range(10)], {"concurrency": 1})
    assert bs.summary["responses"] == 10
    st = good.stats()
    assert (st["connections"], st["handshakes"], st["requests"]) == (1, 1, 10)
    first = [r for r in bs.arrival if not r["reused"]]
    assert len(first) == 1 and first[0]["timing"]["tls_ms"] > 0, first
    for r in bs.arrival:
        if r["reused"]:
            assert r["timing"]["tls_ms"] == 0 and r["timing"]["connect_ms"] == 0, r["timing"]
    # A second batch reuses the same TLS connection: no handshake at all.
    second = d.batch([good.url("/ok?b=2&i=%d" % i, host="a.test") for i in range(3)], {"concurrency": 1})
    assert [r["reused"] for r in second.results_by_index] == [True] * 3
    assert all(r["timing"]["tls_ms"] == 0 for r in second.arrival)
    st = good.stats()
    assert (st["connections"], st["handshakes"], st["requests"]) == (1, 1, 13)
    assert delta(tls_handshakes(d)[0], before) == {"full": 1, "resumed": 0}


@pytest.mark.parametrize("max_version,version", [(None, "TLSv1.3"), ("1.2", "TLSv1.2")])
def test_next_connections_resume_the_session(tls_daemon, tls_up, max_version, version):
    u = tls_up("good", max_version=max_version)
    d = tls_daemon()
    before, _ = tls_handshakes(d)
    # close=1: the upstream answers "Connection: close", so each request needs a new
    # connection; each exchange completes first, so TLS 1.3 tickets have arrived.
    bs = d.batch([u.url("/ok?close=1&i=%d" % i, host="a.test") for i in range(3)],
                 {"concurrency": 1, "order": "input"})
    for r in bs.arrival:
        assert r.get("status") == 200 and r["reused"] is False, r
        assert r["timing"]["tls_ms"] > 0, r["timing"]  # a resumed handshake is still a handshake
    hs = u.handshakes()
    assert [h.version for h in hs] == [version] * 3
    assert [h.hello.offers_resumption for h in hs] == [False, True, True], [h.hello for h in hs]
    assert [h.resumed for h in hs] == [False, True, True]
    assert all(h.sni == "a.test" for h in hs)  # resumption still sends SNI
    after, text = tls_handshakes(d)
    assert delta(after, before) == {"full": 1, "resumed": 2}
    assert "# TYPE fanoutd_tls_handshakes_total counter" in text
    assert 'fanoutd_tls_handshakes_total{type="full"}' in text
    assert 'fanoutd_tls_handshakes_total{type="resumed"}' in text


@pytest.mark.parametrize("max_version", [None, "1.2"])
def test_session_outlives_the_origins_last_connection(tls_daemon, tls_up, max_version):
    # The session cache is per origin and shared by all batches (like the pool): when the
    # origin's last connection has closed, the next batch still resumes.
    u = tls_up("good", max_version=max_version)
    d = tls_daemon()
    assert d.batch([u.url("/ok?close=1", host="a.test")])[0].get("status") == 200
    assert u.wait_for(lambda u: u.closed_conns == 1, 5)
    r = d.batch([u.url("/ok", host="a.test")])[0]
    assert r.get("status") == 200 and r["reused"] is False, r
    h1, h2 = u.handshakes()
    assert h2.hello.offers_resumption, h2.hello
    assert (h1.resumed, h2.resumed) == (False, True)


def test_sessions_are_kept_per_origin(tls_daemon, upstreams, pki):
    # Same name, same address, other port: another origin, with its own ticket keys. A's
    # session must not be offered to B.
    a, b = upstreams(2, tls=pki.context_factory("good"))
    d = tls_daemon()
    bs = d.batch([a.url("/ok?close=1", host="a.test"), b.url("/ok?close=1", host="a.test"),
                  a.url("/ok?close=1", host="a.test")], {"concurrency": 1, "order": "input"})
    assert bs.kinds() == [None, None, None]
    (hb,) = b.handshakes()
    assert not hb.hello.offers_resumption and hb.resumed is False, hb.hello
    assert [h.resumed for h in a.handshakes()] == [False, True]


def test_upstream_closing_an_idle_tls_connection(tls_daemon, good):
    d = tls_daemon()
    assert d.batch([good.url("/closeidle", host="a.test")])[0].get("status") == 200
    assert good.wait_for(lambda u: u.closed_conns == 1, 5)  # the server hung up (close_notify)
    r = d.batch([good.url("/ok", host="a.test")])[0]
    assert r.get("status") == 200 and r["reused"] is False, r
    assert good.stats()["handshakes"] == 2


def test_stale_reused_tls_connection_is_retried_once_on_a_fresh_one(tls_daemon, good):
    d = tls_daemon()
    assert d.batch([good.url("/closeidle?mode=onreuse", host="a.test")])[0].get("status") == 200
    r = d.batch([good.url("/ok", host="a.test")], {"retries": 0})[0]
    assert r.get("status") == 200 and r["reused"] is False, r
    assert [(q.path, q.outcome) for q in good.reqs()] == [("/closeidle", "responded"), ("/ok", "dropped"),
                                                          ("/ok", "responded")]
    assert good.stats()["handshakes"] == 2


def test_plain_http_has_no_tls_phase(tls_daemon, upstream):
    d = tls_daemon()
    before, _ = tls_handshakes(d)
    bs = d.batch([upstream.url("/ok?i=%d" % i) for i in range(3)], {"concurrency": 1})
    assert all(r["timing"]["tls_ms"] == 0 for r in bs.arrival)
    assert delta(tls_handshakes(d)[0], before) == {"full": 0, "resumed": 0}
    assert upstream.tls_on_plain == []


# --- limits and timeouts -------------------------------------------------------------------

def test_stalled_handshake_is_a_timeout_naming_tls(tls_daemon, stall, good):
    d = tls_daemon()
    bs = d.batch([stall.url("/ok", host="a.test"), good.url("/ok", host="a.test")],
                 {"connect_timeout_ms": 300, "timeout_ms": 5000})
    err = bs[0].get("error")
    assert err and err["kind"] == "timeout" and "tls" in err["message"].lower(), bs[0]
    assert 250 <= bs[0]["timing"]["total_ms"] < 1500, bs[0]["timing"]
    assert bs[1].get("status") == 200
    assert bs.summary["elapsed_ms"] < 2000 and bs.summary["complete"] is True
    # The TCP connect succeeded and the ClientHello went out: it was the handshake that stalled.
    assert stall.wait_for(lambda s: s.conns and s.conns[0].t_peer_closed, 3), "the daemon did not hang up"
    assert stall.conns[0].hello is not None and stall.conns[0].hello.sni == "a.test"


def test_config_connect_timeout_bounds_the_handshake(tls_daemon, stall):
    d = tls_daemon(connect_timeout_ms=300)
    bs = d.batch([stall.url("/ok")])
    err = bs[0].get("error")
    assert err and err["kind"] == "timeout" and "tls" in err["message"].lower(), bs[0]
    assert bs.summary["elapsed_ms"] < 2000


def test_slow_response_over_tls_times_out(tls_daemon, good):
    d = tls_daemon()
    bs = d.batch([good.url("/delay/3000", host="a.test")], {"timeout_ms": 300})
    err = bs[0].get("error")
    assert err and err["kind"] == "timeout" and "response headers" in err["message"], bs[0]
    assert good.wait_for(lambda u: u.peer_closes, 3)  # the daemon hung up


def test_per_host_limit_applies_to_tls(tls_daemon, good):
    d = tls_daemon()
    s = d.stream([good.url("/wait/go?i=%d" % i, host="a.test") for i in range(6)], {"per_host": 2})
    try:
        assert good.wait_for(lambda u: u.inflight == 2, 5)
        assert not good.wait_for(lambda u: u.inflight > 2 or u.connections > 2, 0.3)
        good.release("go")
        s.finish()
    finally:
        s.close()
    assert s.summary["responses"] == 6
    st = good.stats()
    assert st["peak"] == 2 and st["connections"] == 2 and st["handshakes"] == 2


# --- the wrong protocol on either side ------------------------------------------------------

def test_tls_spoken_to_a_plain_port(tls_daemon, upstream):
    # A plain HTTP server answers the ClientHello with a plain-text 400 and closes.
    d = tls_daemon()  # connect_timeout_ms 3000: anything near it would be a hang
    bs = d.batch([upstream.url("/ok", scheme="https"), upstream.url("/ok")])
    r = bs[0]
    assert r.get("error", {}).get("kind") in ("tls", "protocol", "connect"), r
    assert r["timing"]["total_ms"] < 1000, r["timing"]
    assert bs[1].get("status") == 200
    assert upstream.tls_on_plain == [1] and [q.path for q in upstream.reqs()] == ["/ok"]


def test_plain_http_spoken_to_a_tls_port(tls_daemon, good):
    d = tls_daemon()
    bs = d.batch([good.url("/ok", scheme="http"), good.url("/ok")])
    r = bs[0]
    assert r.get("error", {}).get("kind") in ("protocol", "tls", "connect"), r
    assert r["timing"]["total_ms"] < 1000, r["timing"]
    assert bs[1].get("status") == 200
    assert good.wait_for(lambda u: u.tls_failures(), 3)
    assert good.tls_failures()[0].error == "HTTP_REQUEST"
    assert good.count() == 1  # only the https request got through


# --- redirects ------------------------------------------------------------------------------

def redirect_to(up, target, **kw):
    return up.url("/redirect-to?url=" + quote(target, safe=""), **kw)


def test_redirect_from_http_to_https(tls_daemon, upstream, good):
    d = tls_daemon()
    target = good.url("/ok?from=plain", host="b.test")
    bs = d.batch([redirect_to(upstream, target)])
    r = bs[0]
    assert r.get("status") == 200 and r["body"] == "ok\n", r
    assert r["final_url"] == target and r["url"] == redirect_to(upstream, target)
    assert r["timing"]["tls_ms"] > 0  # timing is of the last hop, which was https
    (h,) = good.handshakes()
    assert h.sni == "b.test" and h.alpn == "http/1.1"
    assert good.reqs()[0].header_all("Host") == ["b.test:%d" % good.port]


def test_redirect_from_https_to_http(tls_daemon, upstream, good):
    d = tls_daemon()
    target = upstream.url("/ok?from=tls")
    bs = d.batch([redirect_to(good, target, host="a.test")])
    r = bs[0]
    assert r.get("status") == 200 and r["final_url"] == target, r
    assert r["timing"]["tls_ms"] == 0  # the last hop was plain
    assert good.count() == 1 and upstream.reqs()[0].target == "/ok?from=tls"


def test_redirects_within_an_https_origin_share_one_connection(tls_daemon, good):
    d = tls_daemon()
    bs = d.batch([good.url("/redirect/3", host="a.test")])
    r = bs[0]
    assert r.get("status") == 200, r
    assert r["final_url"] == good.url("/redirect/0?code=302", host="a.test")
    st = good.stats()
    assert (st["requests"], st["connections"], st["handshakes"]) == (4, 1, 1)


def test_redirect_never_downgrades_verification(tls_daemon, upstream, good, tls_up):
    expired = tls_up("expired")
    other = tls_up("other")
    d = tls_daemon()
    bs = d.batch([redirect_to(upstream, expired.url("/ok", host="a.test")),
                  redirect_to(good, other.url("/ok"), host="a.test"),
                  redirect_to(good, other.url("/ok", host="a.test"), host="a.test")])
    assert bs.kinds() == ["tls", "tls", "tls"], bs.arrival
    assert REASONS["expired"] in bs[0]["error"]["message"]
    assert "mismatch" in bs[1]["error"]["message"].lower()
    assert REASONS["other"] in bs[2]["error"]["message"]
    assert expired.count() == 0 and other.count() == 0
    assert upstream.count() == 1 and good.count() == 2


# --- errors stay with their own request ------------------------------------------------------

def test_tls_errors_do_not_leak_into_other_results(tls_daemon, tls_up, upstream, good):
    bad = {k: tls_up(k) for k in ("expired", "other", "unknownca")}
    d = tls_daemon()
    refused = "http://127.0.0.1:%d/ok" % closed_port()
    reqs = []
    for i in range(4):
        for k, u in bad.items():
            reqs.append((k, u.url("/ok?i=%d" % i, host="a.test")))
        reqs.append(("good", good.url("/ok?i=%d" % i, host="a.test")))
        reqs.append(("connect", refused))
        reqs.append(("protocol", upstream.url("/malformed/bad_chunk?i=%d" % i)))
        reqs.append(("plain", upstream.url("/ok?i=%d" % i)))
    bs = d.batch([u for _, u in reqs], {"concurrency": 32})
    for (k, _), r in zip(reqs, bs.results_by_index):
        if k in ("good", "plain"):
            assert r.get("status") == 200, (k, r)
            continue
        msg = r["error"]["message"]
        if k in REASONS:
            assert r["error"]["kind"] == "tls" and reason_in(k, msg), (k, r)
            assert not any(reason_in(o, msg) for o in REASONS if o != k), (k, msg)
        else:
            assert r["error"]["kind"] == k, (k, r)
            assert not any(w in msg.lower() for w in TLS_WORDS), (k, msg)
    # And afterwards, on the same daemon, plain errors are still only about themselves.
    after = d.batch([refused, upstream.url("/malformed/dup_cl"), good.url("/ok", host="a.test")])
    assert after.kinds() == ["connect", "protocol", None]
    for r in after.arrival:
        if "error" in r:
            assert not any(w in r["error"]["message"].lower() for w in TLS_WORDS), r["error"]


# --- a big batch ----------------------------------------------------------------------------

def test_500_urls_over_4_https_origins(tls_daemon, upstreams, pki):
    ups = upstreams(4, tls=pki.context_factory("good"))
    names = ["a.test", "b.test", "c.test", "d.test"]
    d = tls_daemon()
    before, _ = tls_handshakes(d)
    urls = [ups[i % 4].url("/ok?i=%d" % i, host=names[i % 4]) for i in range(500)]
    bs = d.batch(urls, {"per_host": 8}, ndjson=True)
    assert bs.summary["responses"] == 500 and bs.summary["errors"] == 0, bs.summary
    assert bs.summary["elapsed_ms"] < 15000
    total_conns = 0
    for u, name in zip(ups, names):
        st = u.stats()
        assert st["requests"] == 125, (name, st)
        assert st["peak"] <= 8 and st["connections"] <= 8, (name, st)
        assert st["handshakes"] == st["connections"] and st["tls_failures"] == 0, (name, st)
        assert {h.sni for h in u.handshakes()} == {name}
        assert all(h.alpn == "http/1.1" for h in u.handshakes())
        total_conns += st["connections"]
    assert sum(r["reused"] for r in bs.arrival) == 500 - total_conns
    for r in bs.arrival:
        assert (r["timing"]["tls_ms"] > 0) == (not r["reused"]), r
    hs = delta(tls_handshakes(d)[0], before)
    assert hs["full"] + hs["resumed"] == total_conns, (hs, total_conns)
    assert hs["resumed"] == sum(u.stats()["resumed"] for u in ups), hs

"""TLS test infrastructure: a throwaway PKI made with the openssl CLI at test time,
server contexts for the Upstream's TLS mode, a ClientHello reader (what a client
offered: SNI, ALPN, versions, a session to resume), and a server that stalls handshakes.

PKI (one per test session, in a temp dir; PKI.ca_file is what the daemon gets as ca_file):
  good        signed by the test CA; DNS a.test b.test c.test d.test localhost, IP 127.0.0.1 ::1
  expired     as good, valid 2020-01-01..2020-01-02              -> "certificate has expired"
  notyet      as good, valid from 2048                            -> "certificate is not yet valid"
  other       signed by the test CA; DNS other.test only          -> hostname / IP mismatch
  dnsip       signed by the test CA; DNS "127.0.0.1", no IP SAN   -> a URL by IP must not match it
  selfsigned  self-signed, names of good                          -> "self-signed certificate"
  unknownca   signed by a CA the daemon is not given, names of good
                                                                  -> "unable to get local issuer certificate"
Every certificate is made with `openssl ca`, whose -startdate/-enddate set validity exactly
(Debian 12's OpenSSL 3.0 `x509` has no -not_before/-not_after, and `-days -1` gives a
certificate whose notBefore is after its notAfter).
"""

import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import warnings

GOOD_NAMES = ("a.test", "b.test", "c.test", "d.test", "localhost")
GOOD_SAN = ",".join(["DNS:%s" % n for n in GOOD_NAMES] + ["IP:127.0.0.1", "IP:::1"])

# name: (issuer, subject CN, subjectAltName, notBefore, notAfter); issuer None: self-signed
LEAVES = {
    "good": ("ca", "a.test", GOOD_SAN, "20200101000000Z", "20491231000000Z"),
    "expired": ("ca", "a.test", GOOD_SAN, "20200101000000Z", "20200102000000Z"),
    "notyet": ("ca", "a.test", GOOD_SAN, "20480101000000Z", "20491231000000Z"),
    "other": ("ca", "other.test", "DNS:other.test", "20200101000000Z", "20491231000000Z"),
    "dnsip": ("ca", "127.0.0.1", "DNS:127.0.0.1", "20200101000000Z", "20491231000000Z"),
    "selfsigned": (None, "a.test", GOOD_SAN, "20200101000000Z", "20491231000000Z"),
    "unknownca": ("otherca", "a.test", GOOD_SAN, "20200101000000Z", "20491231000000Z"),
}

OPENSSL_CNF = """\
[ req ]
distinguished_name = req_dn
[ req_dn ]
[ ca ]
default_ca = test_ca
[ test_ca ]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
[ policy_any ]
commonName = supplied
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ leaf_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = $ENV::FO_SAN
"""


class PKI:
    """The test CA and leaves, made with the openssl CLI in directory (removed by cleanup())."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(os.path.join(directory, "issued"))
        self.cnf = os.path.join(directory, "openssl.cnf")
        with open(self.cnf, "w") as f:
            f.write(OPENSSL_CNF.format(dir=directory))
        open(os.path.join(directory, "index.txt"), "w").close()
        with open(os.path.join(directory, "serial"), "w") as f:
            f.write("1000\n")
        self.certs = {}  # name -> (certfile, keyfile)
        self._ca("ca", "fanoutd test CA")
        self._ca("otherca", "untrusted test CA")
        for name, (issuer, cn, san, start, end) in LEAVES.items():
            self._leaf(name, issuer, cn, san, start, end)
        self.ca_file = self.certs["ca"][0]

    def _openssl(self, *args, san="DNS:unused"):
        env = dict(os.environ, FO_SAN=san)
        p = subprocess.run(["openssl"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30, env=env, cwd=self.dir)
        if p.returncode != 0:
            raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(args), p.returncode,
                                                              p.stderr.decode("utf-8", "replace")))
        return p

    def _key_and_csr(self, name, cn):
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
        self._openssl("req", "-new", "-config", self.cnf, "-key", key, "-subj", "/CN=" + cn, "-out", csr)
        return key, csr

    def _sign(self, name, csr, issuer, ext, start, end, san="DNS:unused", selfsign_key=None):
        pem = os.path.join(self.dir, name + ".pem")
        args = ["ca", "-batch", "-notext", "-config", self.cnf, "-in", csr, "-out", pem,
                "-extensions", ext, "-startdate", start, "-enddate", end]
        if selfsign_key:
            args += ["-selfsign", "-keyfile", selfsign_key]
        else:
            args += ["-cert", self.certs[issuer][0], "-keyfile", self.certs[issuer][1]]
        self._openssl(*args, san=san)
        return pem

    def _ca(self, name, cn):
        key, csr = self._key_and_csr(name, cn)
        pem = self._sign(name, csr, None, "ca_ext", "20000101000000Z", "20491231235959Z", selfsign_key=key)
        self.certs[name] = (pem, key)

    def _leaf(self, name, issuer, cn, san, start, end):
        key, csr = self._key_and_csr(name, cn)
        pem = self._sign(name, csr, issuer, "leaf_ext", start, end, san=san,
                         selfsign_key=key if issuer is None else None)
        self.certs[name] = (pem, key)

    def cert(self, name):
        return self.certs[name][0]

    def server_context(self, name="good", max_version=None, alpn=("http/1.1",)):
        """A fresh server SSLContext for certificate name (own session-ticket keys).
        TLS 1.2 minimum; max_version "1.2" pins TLS 1.2; "1.1" makes a legacy server
        that speaks only TLS 1.1 (the daemon must refuse it). Session tickets are on
        (OpenSSL's defaults: 2 tickets per TLS 1.3 handshake)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.certs[name])
        if max_version == "1.1":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if max_version == "1.2":
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            elif max_version is not None:
                raise ValueError("max_version: %r" % (max_version,))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def context_factory(self, name="good", **kw):
        """A callable for Upstream(tls=...) / upstreams(n, tls=...): one context per server."""
        return lambda: self.server_context(name, **kw)

    def client_context(self, trust="ca"):
        """A verifying Python client context trusting one of the CAs (for self-checks)."""
        ctx = ssl.create_default_context(cafile=self.certs[trust][0])
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# --- ClientHello ------------------------------------------------------------------

TLS_VERSIONS = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


class ClientHello:
    """What a client offered in its first handshake record (best effort: one record)."""

    def __init__(self):
        self.raw_len = 0
        self.legacy_version = None
        self.sni = None  # server_name extension, None when absent
        self.alpn = None  # offered protocols, None when no ALPN extension
        self.versions = []  # supported_versions (GREASE dropped), as strings; or [legacy version]
        self.psk = False  # TLS 1.3 pre_shared_key extension: a resumption attempt
        self.ticket = False  # non-empty TLS 1.2 SessionTicket extension: a resumption attempt
        self.extensions = []

    @property
    def offers_resumption(self):
        return self.psk or self.ticket

    def __repr__(self):
        return "<ClientHello sni=%r alpn=%r versions=%r psk=%r ticket=%r>" % (
            self.sni, self.alpn, self.versions, self.psk, self.ticket)


def parse_client_hello(rec):
    """rec: a TLS record holding a ClientHello. Returns a ClientHello or None."""
    if len(rec) < 9 or rec[0] != 0x16 or rec[5] != 0x01:
        return None
    h = ClientHello()
    h.raw_len = len(rec)
    body = rec[9:9 + int.from_bytes(rec[6:9], "big")]
    try:
        h.legacy_version = TLS_VERSIONS.get(int.from_bytes(body[0:2], "big"), hex(int.from_bytes(body[0:2], "big")))
        pos = 2 + 32
        pos += 1 + body[pos]  # session id
        pos += 2 + int.from_bytes(body[pos:pos + 2], "big")  # cipher suites
        pos += 1 + body[pos]  # compression methods
        end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
        pos += 2
        while pos + 4 <= min(end, len(body)):
            etype = int.from_bytes(body[pos:pos + 2], "big")
            elen = int.from_bytes(body[pos + 2:pos + 4], "big")
            data = body[pos + 4:pos + 4 + elen]
            pos += 4 + elen
            h.extensions.append(etype)
            if etype == 0 and len(data) >= 5 and data[2] == 0:  # server_name, host_name
                n = int.from_bytes(data[3:5], "big")
                h.sni = data[5:5 + n].decode("ascii", "replace")
            elif etype == 16:  # ALPN
                h.alpn, p = [], 2
                while p < len(data):
                    n = data[p]
                    h.alpn.append(data[p + 1:p + 1 + n].decode("ascii", "replace"))
                    p += 1 + n
            elif etype == 43:  # supported_versions
                for i in range(1, 1 + data[0], 2):
                    v = int.from_bytes(data[i:i + 2], "big")
                    if v & 0x0F0F != 0x0A0A:  # not GREASE
                        h.versions.append(TLS_VERSIONS.get(v, hex(v)))
            elif etype == 41:
                h.psk = True
            elif etype == 35 and elen > 0:
                h.ticket = True
    except IndexError:
        pass
    if 43 not in h.extensions and h.legacy_version:
        h.versions = [h.legacy_version]
    return h


def peek_client_hello(sock, timeout):
    """Peeks (without consuming) the first TLS record of a fresh connection and parses it.
    Bounded by timeout (SO_RCVTIMEO on a blocking socket, so MSG_WAITALL waits for the whole
    record); returns None for anything that is not a ClientHello. Leaves the socket blocking."""
    tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    try:
        head = sock.recv(5, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(head) < 5 or head[0] != 0x16:
            return None
        rec = sock.recv(5 + int.from_bytes(head[3:5], "big"), socket.MSG_PEEK | socket.MSG_WAITALL)
        return parse_client_hello(rec)
    except OSError:
        return None
    finally:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
        except OSError:
            pass


class TlsConn:
    """One TLS connection as an Upstream in TLS mode saw it."""

    def __init__(self, conn_id):
        self.conn_id = conn_id
        self.hello = None  # ClientHello, or None if the first bytes were not one
        self.sni = None  # the server name as OpenSSL saw it (sni_callback); None: not sent
        self.ok = None  # None: handshake in progress; True / False
        self.error = None  # why the handshake failed (str), e.g. "HTTP_REQUEST", "TLSV1_ALERT_UNKNOWN_CA"
        self.resumed = None  # SSLSocket.session_reused
        self.alpn = None  # selected_alpn_protocol()
        self.version = None  # "TLSv1.3", ...
        self.cipher = None
        self.t_accept = time.monotonic()
        self.t_done = None

    def __repr__(self):
        return "<TlsConn c%d ok=%r resumed=%r sni=%r alpn=%r %s err=%r>" % (
            self.conn_id, self.ok, self.resumed, self.sni, self.alpn, self.version, self.error)


def record_sni(sslsock, server_name, ctx):
    """sni_callback for Upstream contexts: files the name under the connection's TlsConn."""
    info = getattr(sslsock, "fo_tls", None)
    if info is not None:
        info.sni = server_name
    return None


def ssl_error_reason(e):
    return getattr(e, "reason", None) or type(e).__name__ + (": %s" % e if str(e) else "")


# --- a server that never answers ------------------------------------------------------

class StallConn:
    def __init__(self, conn_id):
        self.conn_id = conn_id
        self.t_accept = time.monotonic()
        self.received = 0  # bytes the client sent (its ClientHello)
        self.hello = None
        self.t_peer_closed = None


class StallServer:
    """Accepts TCP connections, reads what the client sends and never sends a byte: a TLS
    handshake against it stalls after the ClientHello. Records each connection and when the
    peer hung up. One thread, a select loop."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self._lsock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, 0))
        self._lsock.listen(64)
        self.port = self._lsock.getsockname()[1]
        self.cond = threading.Condition()
        self.conns = []
        self._socks = {}
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name="stall-%d" % self.port, daemon=True)
        self._thread.start()

    def url(self, path="/ok", host=None, scheme="https"):
        return "%s://%s:%d%s" % (scheme, host or self.host, self.port, path)

    def wait_for(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = predicate(self)
                if v or time.monotonic() >= deadline:
                    return v
                self.cond.wait(max(0.001, deadline - time.monotonic()))

    def _loop(self):
        while not self._stop:
            socks = [self._lsock, self._wake_r] + list(self._socks)
            try:
                r, _, _ = select.select(socks, [], [], 1.0)
            except (OSError, ValueError):
                return
            for s in r:
                if s is self._wake_r:
                    continue
                if s is self._lsock:
                    try:
                        c, _ = self._lsock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    with self.cond:
                        info = StallConn(len(self.conns) + 1)
                        self.conns.append(info)
                        self._socks[c] = info
                        self.cond.notify_all()
                    continue
                info = self._socks[s]
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                with self.cond:
                    if data:
                        if info.received == 0:
                            info.hello = parse_client_hello(data)
                        info.received += len(data)
                    else:
                        info.t_peer_closed = time.monotonic()
                        del self._socks[s]
                        s.close()
                    self.cond.notify_all()

    def close(self):
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        for s in list(self._socks):
            s.close()
        self._lsock.close()
        self._wake_r.close()
        self._wake_w.close()

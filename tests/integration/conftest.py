"""Fixtures for the fanoutd integration tests.

  dns          dnsmasq for the session (names in harness.Dnsmasq.HOSTS), with a per-test query log
  upstreams    factory: upstreams(n=1, host="127.0.0.1", tls=None) -> [Upstream], closed after the test;
               tls: a server SSLContext or a callable making one per server (pki.context_factory)
  pki          the session's test PKI (tls_support.PKI): a test CA and leaves made with openssl;
               pki.ca_file is what a daemon gets as ca_file
  upstream     one Upstream
  blackhole    a loopback address where connect() hangs
  daemon       factory: daemon(**config_keys, args=(), env=None) -> a running, READY Daemon
               (ca_file defaults to the test CA: loading the system store costs ~130 ms per
               start under ASan; ca_file=None gives the system store);
               at teardown: SIGTERM, bounded wait, exit status 0 (or d.expect_rc) and no
               sanitizer report on its stderr
  fanoutd      run_fanoutd(args, config=None): runs fanoutd to completion (-t, -V, bind failures)

fanoutd is $FANOUTD_BIN (set by `make integration`); without it every test using the
daemon fails with a message saying so.
"""

import shutil
import threading

import pytest

import harness
import tls_support
from upstream import Blackhole, Upstream, wait_cond

# Defaults every test daemon gets unless the test overrides them: short drains keep the
# teardown fast, and DNS always goes to the test dnsmasq, never the host's resolver.
BASE_KEYS = {
    "drain_timeout_s": 2,
}


@pytest.fixture(scope="session")
def dnsmasq():
    d = harness.Dnsmasq()
    yield d
    d.cleanup()


@pytest.fixture
def dns(dnsmasq):
    return harness.DnsLog(dnsmasq)


@pytest.fixture
def upstreams():
    """Factory; all servers of one test share one Condition, so upstreams.wait_for(pred)
    can wait for a predicate over several of them."""
    made = []
    cond = threading.Condition()

    def make(n=1, host="127.0.0.1", tls=None):
        new = [Upstream(host, cond=cond, tls=tls) for _ in range(n)]
        made.extend(new)
        return new

    make.all = made
    make.wait_for = lambda predicate, timeout=5.0: wait_cond(cond, predicate, timeout)
    yield make
    for u in made:
        u.close()


@pytest.fixture(scope="session")
def pki():
    p = tls_support.PKI(harness.short_tmpdir("fo-pki-"))
    yield p
    p.cleanup()


@pytest.fixture
def upstream(upstreams):
    return upstreams(1)[0]


@pytest.fixture
def sockdir():
    """A short directory for Unix socket paths, removed after the test."""
    d = harness.short_tmpdir("fo-t-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def blackhole():
    b = Blackhole()
    yield b
    b.close()


@pytest.fixture
def daemon(dnsmasq, upstreams, pki):
    """Factory. Keyword arguments are config keys (lists repeat the key; None drops a
    default); `listen` replaces the default Unix listener."""
    started = []

    def start(args=(), env=None, wait_ready=True, wrapper=(), journal=False, **keys):
        try:
            harness.fanoutd_bin()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        workdir = harness.short_tmpdir("fo-")
        conf = dict(BASE_KEYS)
        conf["listen"] = "unix:%s/s.sock" % workdir
        conf["dns_server"] = dnsmasq.server
        conf["ca_file"] = pki.ca_file
        conf.update(keys)
        d = harness.Daemon(workdir, conf, args, env, wrapper, journal)
        started.append(d)
        if wait_ready:
            d.wait_ready()
        return d

    yield start
    # Let the upstreams finish whatever a test left hanging, so the drain is quick.
    for u in upstreams.all:
        u.release_all()
    failures = []
    for d in started:
        try:
            d.check_clean()
        except AssertionError as e:
            failures.append(str(e))
        finally:
            d.cleanup()
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def fanoutd():
    def run(args, config=None, timeout=10.0, env=None):
        try:
            harness.fanoutd_bin()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        return harness.run_fanoutd(args, config, timeout, env)

    return run


@pytest.fixture
def h2upstreams(pki):
    """Factory: h2upstreams(n=1, host="127.0.0.1", **kw) -> [H2Upstream] (h2upstream.py): HTTPS
    origins with pki's "good" certificate (cert="..." for another) offering ALPN
    kw.get("alpn", ("h2",)); kw: H2Upstream's (alpn, max_concurrent_streams, initial_window_size,
    max_frame_size, tls=...). Closed after the test; all servers of one test share one Condition,
    so h2upstreams.wait_for(pred) can wait for a predicate over several of them. h2upstream (and
    python3-h2) is imported only by tests that use this fixture."""
    from h2upstream import H2Upstream

    made = []
    cond = threading.Condition()

    def make(n=1, host="127.0.0.1", **kw):
        if kw.get("tls") is None:
            kw["pki"] = pki
        new = [H2Upstream(host, cond=cond, **kw) for _ in range(n)]
        made.extend(new)
        return new

    make.all = made
    make.wait_for = lambda predicate, timeout=5.0: wait_cond(cond, predicate, timeout)
    yield make
    for u in made:
        u.close()

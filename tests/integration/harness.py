"""Processes the integration tests drive: dnsmasq (with a query-log reader) and fanoutd
itself (config file, sd_notify readiness, stderr capture, clean-exit checks)."""

import contextlib
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from client import Client, parse_metrics

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer", "ERROR: UndefinedBehaviorSanitizer")


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def short_tmpdir(prefix):
    """Unix socket paths are limited to 107 bytes: keep them short, under /tmp."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


# --- DNS ---------------------------------------------------------------------

QTYPES = {"A": 1, "AAAA": 28}


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# What every nginx of the tests needs: its files in its own directory, in the foreground.
NGINX_FRAME = """
daemon off;
pid %%(dir)s/nginx.pid;
error_log %%(dir)s/error.log;
%s
"""
NGINX_TEMP_PATHS = """
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi;
  uwsgi_temp_path %(dir)s/uwsgi;
  scgi_temp_path %(dir)s/scgi;
"""


@contextlib.contextmanager
def nginx(conf, **params):
    """nginx running conf (the main context after pid and error_log; %(dir)s, its
    directory, %(port)d, a free port, %(temp_paths)s, the http context's temporary
    directories, and params are filled in) until the block ends; yields the port. The
    caller skips its test when NGINX is not installed."""
    d = short_tmpdir("fo-ngx-")
    port = free_port()
    fill = dict(params, dir=d, port=port)
    fill["temp_paths"] = NGINX_TEMP_PATHS % fill
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write((NGINX_FRAME % conf) % fill)
    proc = subprocess.Popen([NGINX, "-c", os.path.join(d, "nginx.conf"), "-p", d],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: %s" % proc.stderr.read().decode())
                time.sleep(0.02)  # polling a port a child is about to open; bounded
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
        proc.stderr.close()
        shutil.rmtree(d, ignore_errors=True)


def dns_query(server, name, qtype="A", timeout=1.0):
    """One UDP query; returns (rcode, [answer rdata bytes])."""
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    pkt += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    pkt += struct.pack(">HH", QTYPES[qtype], 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(pkt, server)
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            resp = s.recv(4096)
            if struct.unpack(">H", resp[:2])[0] == qid:
                break
    finally:
        s.close()
    flags, qd, an = struct.unpack(">HHH", resp[2:8])
    pos = 12
    for _ in range(qd):
        while resp[pos]:
            pos += resp[pos] + 1
        pos += 5
    answers = []
    for _ in range(an):
        if resp[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while resp[pos]:
                pos += resp[pos] + 1
            pos += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", resp[pos:pos + 10])
        pos += 10
        answers.append((rtype, resp[pos:pos + rdlen]))
        pos += rdlen
    return flags & 0xF, answers


class Dnsmasq:
    """dnsmasq on a free loopback port, answering for a few .test names and NXDOMAIN for
    every other .test name. Every query it receives is a "query[TYPE] NAME from" log line."""

    HOSTS = {
        "a.test": "127.0.0.1",
        "b.test": "127.0.0.1",
        "c.test": "127.0.0.1",
        "d.test": "127.0.0.1",
        "blocked.test": "127.0.0.2",
        "v6.test": "::1",
        "mixed.test": ("127.0.0.1", "127.0.0.2"),  # dnsmasq rotates the order per answer
    }
    TTL = 60

    def __init__(self):
        self.dir = short_tmpdir("fo-dns-")
        self.log = os.path.join(self.dir, "dnsmasq.log")
        self.proc = None
        self._sync = 0
        last = None
        for _ in range(5):
            self.port = free_port(socket.AF_INET)
            try:
                self._start()
                return
            except RuntimeError as e:
                last = e
                self.stop()
        raise RuntimeError("dnsmasq would not start: %s" % last)

    def _start(self):
        cmd = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
               "--bind-interfaces", "--listen-address=127.0.0.1", "--port=%d" % self.port,
               "--log-queries", "--log-facility=%s" % self.log, "--local-ttl=%d" % self.TTL,
               "--user=root", "--group=root", "--pid-file=", "--local=/test/", "--cache-size=0"]
        cmd += ["--host-record=%s,%s" % (n, a) for n, addrs in self.HOSTS.items()
                for a in ((addrs,) if isinstance(addrs, str) else addrs)]
        self.errfile = open(os.path.join(self.dir, "dnsmasq.stderr"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.errfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.errfile.seek(0)
                raise RuntimeError("dnsmasq exited %d: %s" % (self.proc.returncode, self.errfile.read()))
            try:
                rcode, ans = dns_query(self.addr, "a.test", timeout=0.2)
            except OSError:
                continue
            if rcode == 0 and ans and ans[0][1] == socket.inet_aton("127.0.0.1"):
                self.sync()
                return
            raise RuntimeError("dnsmasq answered a.test with rcode %d %r" % (rcode, ans))
        raise RuntimeError("dnsmasq did not answer within 5 s")

    @property
    def addr(self):
        return ("127.0.0.1", self.port)

    @property
    def server(self):
        """The value for the daemon's dns_server key."""
        return "127.0.0.1:%d" % self.port

    def read_log(self, since=0):
        try:
            with open(self.log, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def size(self):
        try:
            return os.path.getsize(self.log)
        except FileNotFoundError:
            return 0

    def sync(self, timeout=5.0):
        """Returns a log offset after which every query received so far has been logged:
        sends a query for a fresh name and waits for its log line (dnsmasq logs in order)."""
        self._sync += 1
        name = "sync-%d-%d.test" % (os.getpid(), self._sync)
        dns_query(self.addr, name, timeout=1.0)
        pat = "query[A] %s from" % name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pat in self.read_log():
                return self.size()
            time.sleep(0.005)  # polling a file dnsmasq appends to; bounded by timeout
        raise RuntimeError("dnsmasq did not log %s within %.1f s" % (name, timeout))

    def queries(self, since=0):
        """[(type, name)] of every query logged after offset since (call sync() first)."""
        return re.findall(r"query\[(\w+)\] (\S+) from", self.read_log(since))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class DnsLog:
    """The queries dnsmasq received since this test began."""

    def __init__(self, dnsmasq):
        self.dnsmasq = dnsmasq
        self.server = dnsmasq.server
        self.mark = dnsmasq.sync()

    def queries(self, name=None, types=("A", "AAAA")):
        self.dnsmasq.sync()
        # Names are compared in lower case: resolvers may randomise the case (0x20 bit).
        return [(t, n.lower()) for t, n in self.dnsmasq.queries(self.mark)
                if t in types and not n.lower().startswith("sync-") and (name is None or n.lower() == name.lower())]

    def count(self, name, types=("A", "AAAA")):
        return len(self.queries(name, types))


# --- fanoutd -----------------------------------------------------------------

def fanoutd_bin():
    path = os.environ.get("FANOUTD_BIN")
    if not path:
        raise RuntimeError("FANOUTD_BIN is not set: run `make integration`, or "
                           "FANOUTD_BIN=/path/to/fanoutd /usr/bin/python3 -m pytest tests/integration")
    if not os.access(path, os.X_OK):
        raise RuntimeError("FANOUTD_BIN=%s is not an executable file" % path)
    return path


def daemon_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if extra:
        env.update(extra)
    return env


def config_text(keys):
    """{key: value or [values]} -> config file text; None values are left out."""
    out = []
    for k, v in keys.items():
        if v is None:
            continue
        for item in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(item, bool):
                item = "true" if item else "false"
            out.append("%s = %s" % (k, item))
    return "\n".join(out) + "\n"


class Daemon:
    """One fanoutd process, started from a config file written into its own directory."""

    def __init__(self, workdir, keys, args=(), env=None, wrapper=(), journal=False):
        self.dir = workdir
        self.sock = os.path.join(workdir, "s.sock")
        self.conf = os.path.join(workdir, "fanoutd.conf")
        with open(self.conf, "w") as f:
            f.write(config_text(keys))
        self.keys = keys
        self.listen = [keys["listen"]] if isinstance(keys.get("listen"), str) else list(keys.get("listen") or [])
        self.args = list(args)
        cli = [self.args[i + 1] for i, a in enumerate(self.args[:-1]) if a == "-l"]
        if cli:
            self.listen = cli  # -l overrides the file's listen lines
        self.stderr_path = os.path.join(workdir, "stderr")
        self.notify_path = os.path.join(workdir, "n.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify_msgs = []
        self.expect_rc = 0
        self.proc = None
        self._errf = open(self.stderr_path, "wb")
        env = daemon_env(dict(env or {}, NOTIFY_SOCKET=self.notify_path))
        if journal:  # as systemd does when stderr is a journal stream
            st = os.fstat(self._errf.fileno())
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        if wrapper:
            # A launcher such as systemd-socket-activate, which passes on only
            # the variables it is told to and then becomes fanoutd (exec).
            wrapper = list(wrapper) + ["-E%s=%s" % kv for kv in sorted(env.items())]
        self.proc = subprocess.Popen(list(wrapper) + [fanoutd_bin(), "-c", self.conf] + self.args,
                                     stdin=subprocess.DEVNULL, stdout=self._errf, stderr=self._errf,
                                     env=env)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("fanoutd exited %d before READY=1; stderr:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            r, _, _ = select.select([self.notify], [], [], 0.1)
            if r:
                msg = self.notify.recv(4096).decode("utf-8", "replace")
                self.notify_msgs.append(msg)
                if "READY=1" in msg.split("\n"):
                    return self
        raise AssertionError("fanoutd sent no READY=1 within %.0f s; stderr:\n%s" % (timeout, self.stderr()))

    def wait_notify(self, line, timeout=5.0):
        """Waits for a sd_notify message containing line (e.g. "STOPPING=1")."""
        deadline = time.monotonic() + timeout
        while True:
            if any(line in m.split("\n") for m in self.notify_msgs):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.notify], [], [], left)
            if r:
                self.notify_msgs.append(self.notify.recv(4096).decode("utf-8", "replace"))

    def drain_notify(self):
        while True:
            r, _, _ = select.select([self.notify], [], [], 0)
            if not r:
                return self.notify_msgs
            self.notify_msgs.append(self.notify.recv(4096).decode("utf-8", "replace"))

    # --- talking to it -------------------------------------------------------
    def addrs(self):
        """Client addresses of the listeners: unix paths and (host, port) tuples."""
        out = []
        for l in self.listen:
            if l.startswith("unix:"):
                out.append(l[5:])
            else:
                m = re.fullmatch(r"\[(.*)\]:(\d+)|([^:]+):(\d+)", l)
                out.append((m.group(1), int(m.group(2))) if m.group(1) else (m.group(3), int(m.group(4))))
        return out

    def client(self, which=0, timeout=20.0):
        return Client(self.addrs()[which], timeout)

    def batch(self, requests, options=None, **kw):
        return self.client().batch(requests, options, **kw)

    def stream(self, requests, options=None, **kw):
        return self.client().stream_batch(requests, options, **kw)

    def metrics(self):
        r = self.client().get("/metrics")
        assert r.status == 200, r.status
        return parse_metrics(r.body.decode("utf-8"))[0]

    # --- ending it -------------------------------------------------------------
    def stderr(self):
        self._errf.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("fanoutd did not exit within %.0f s of being told to; stderr:\n%s"
                                 % (timeout, self.stderr()[-4000:]))

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Signals the daemon (if still running) and returns its exit status."""
        if timeout is None:
            timeout = float(self.keys.get("drain_timeout_s", 10)) + 10
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def sanitizer_report(self):
        lines = [l for l in self.stderr().splitlines() if any(m in l for m in SANITIZER_MARKERS)]
        return lines

    def check_clean(self):
        """The teardown verdict: exit status as expected and a sanitizer-clean stderr."""
        rc = self.stop()
        problems = []
        if rc != self.expect_rc:
            problems.append("fanoutd exited %r, expected %r" % (rc, self.expect_rc))
        if self.sanitizer_report():
            problems.append("sanitizer findings")
        if problems:
            raise AssertionError("; ".join(problems) + "; stderr:\n" + self.stderr()[-8000:])

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.notify.close()
        self._errf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_fanoutd(args, config=None, timeout=10.0, env=None):
    """Runs fanoutd to completion (for -t, -h, -V and start-up failures).
    config: dict of keys or a string written to a config file passed with -c."""
    d = short_tmpdir("fo-run-")
    try:
        cmd = [fanoutd_bin()]
        if config is not None:
            path = os.path.join(d, "fanoutd.conf")
            with open(path, "w") as f:
                f.write(config if isinstance(config, str) else config_text(config))
            cmd += ["-c", path]
        cmd += [a.replace("{dir}", d) for a in args]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           env=daemon_env(env))
        p.stdout = p.stdout.decode("utf-8", "replace")
        p.stderr = p.stderr.decode("utf-8", "replace")
        return p
    except subprocess.TimeoutExpired:
        raise AssertionError("fanoutd %r did not exit within %.0f s" % (args, timeout))
    finally:
        shutil.rmtree(d, ignore_errors=True)

"""The client examples in examples/ (Python, Node, Go, shell), each run as a subprocess
against a live daemon and real upstreams: every URL's result is printed, with the right
status or error kind, as it arrives; a streamed batch gets results back while its upload
is still open; a refused batch and an unreachable daemon end with their exit statuses.

Every example prints "INDEX STATUS URL" or "INDEX ERROR-KIND URL" per result, then
"summary: T total, R responses, E errors"; it exits 0, 1 when some request got an error,
2 when the batch was refused. The toolchains come from `sh scripts/deps.sh test`; the Go
example is built once per session, offline (GOPROXY=off, GOTOOLCHAIN=local), with its
build cache in the session's temporary directory.
"""

import os
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest

from harness import free_port

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")
LANGS = ["python", "node", "go", "shell"]


def need(tool):
    path = shutil.which(tool)
    if not path:
        pytest.fail("%s is not installed: run `sh scripts/deps.sh test`" % tool, pytrace=False)
    return path


@pytest.fixture(scope="session")
def go_example(tmp_path_factory):
    d = tmp_path_factory.mktemp("go-example")
    env = dict(os.environ, GOCACHE=str(d / "cache"), GOPATH=str(d / "gopath"),
               GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="-mod=mod", GOENV="off")
    exe = str(d / "fanout_example")
    p = subprocess.run([need("go"), "build", "-o", exe, "."], cwd=os.path.join(EXAMPLES, "go"),
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, "go build failed:\n" + p.stdout + p.stderr
    return [exe]


@pytest.fixture(params=LANGS)
def example(request):
    """The example's command line, without its URL arguments."""
    lang = request.param
    if lang == "go":
        return request.getfixturevalue("go_example")
    if lang == "python":
        return [sys.executable, os.path.join(EXAMPLES, "python", "fanout_example.py")]
    if lang == "node":
        return [need("node"), os.path.join(EXAMPLES, "node", "fanout_example.js")]
    need("curl")
    need("jq")
    return [need("bash"), os.path.join(EXAMPLES, "shell", "fanout_example.sh")]


def run(cmd, fanoutd, urls, timeout=30):
    env = dict(os.environ, FANOUTD=fanoutd)
    return subprocess.run(cmd + urls, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def parse(stdout):
    """Output -> ({index: (outcome, url)}, summary line); each index at most once."""
    lines = stdout.splitlines()
    assert lines and lines[-1].startswith("summary: "), "no summary line last:\n" + stdout
    results = {}
    for line in lines[:-1]:
        index, outcome, url = line.split(" ", 2)
        assert int(index) not in results, "index %s twice:\n%s" % (index, stdout)
        results[int(index)] = (outcome, url)
    return results, lines[-1]


def unix(d):
    return "unix:" + d.addrs()[0]


def test_batch_document_over_the_unix_socket(daemon, upstream, example):
    d = daemon()
    urls = [upstream.url("/ok"), upstream.url("/status/404"),
            "http://127.0.0.1:%d/" % free_port(),  # nothing listens there: connect
            "ftp://127.0.0.1/"]                    # refused by the daemon: invalid_request
    p = run(example, unix(d), urls)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    results, summary = parse(p.stdout)
    assert results == {0: ("200", urls[0]), 1: ("404", urls[1]),
                       2: ("connect", urls[2]), 3: ("invalid_request", urls[3])}, p.stdout
    assert summary == "summary: 4 total, 2 responses, 2 errors"
    assert upstream.count("/ok") == 1 and upstream.count("/status/404") == 1


@pytest.mark.parametrize("listen", ["127.0.0.1:%d", "[::1]:%d"], ids=["ipv4", "ipv6"])
def test_batch_document_over_tcp(daemon, upstream, example, listen):
    family = socket.AF_INET6 if listen.startswith("[") else socket.AF_INET
    listen %= free_port(family, "::1" if family == socket.AF_INET6 else "127.0.0.1")
    d = daemon(listen=listen)
    urls = [upstream.url("/ok?i=%d" % i) for i in range(5)] + [upstream.url("/status/503")]
    p = run(example, listen, urls)  # $FANOUTD as HOST:PORT or [V6]:PORT
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    results, summary = parse(p.stdout)
    assert results == {i: ("200" if i < 5 else "503", u) for i, u in enumerate(urls)}, p.stdout
    assert summary == "summary: 6 total, 6 responses, 0 errors"


class Lines:
    """A subprocess's output read line by line, each within a deadline."""

    def __init__(self, f):
        self.fd, self.buf = f.fileno(), b""

    def next(self, timeout=10.0):
        """The next line, or None at the end of the output."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError("no output line within %.0f s (have %r)" % (timeout, self.buf))
            data = os.read(self.fd, 65536)
            if not data:
                assert not self.buf, "output ended inside a line: %r" % self.buf
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def rest(self, timeout=10.0):
        return list(iter(lambda: self.next(timeout), None))


def test_streamed_batch_results_arrive_while_the_upload_is_open(daemon, upstream, example):
    """URLs on stdin: each line's result is read before the next line is written, so the
    example both uploads as it reads and prints as results arrive."""
    d = daemon()
    urls = [upstream.url("/ok"), "http://127.0.0.1:%d/" % free_port(), upstream.url("/status/404")]
    want = ["0 200 " + urls[0], "1 connect " + urls[1], "2 404 " + urls[2]]
    proc = subprocess.Popen(example, env=dict(os.environ, FANOUTD=unix(d)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        out = Lines(proc.stdout)
        for url, line in zip(urls, want):
            proc.stdin.write(url.encode() + b"\n")
            assert out.next() == line
        assert proc.poll() is None  # the upload is still open
        proc.stdin.close()
        assert out.rest() == ["summary: 3 total, 2 responses, 1 errors"]
        assert proc.wait(10) == 1, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_refused_batch(daemon, upstream, example):
    d = daemon(max_batch=1)
    p = run(example, unix(d), [upstream.url("/ok?a"), upstream.url("/ok?b")])
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == "" and "too_large" in p.stderr, (p.stdout, p.stderr)
    assert upstream.count("/ok") == 0


def test_unreachable_daemon(sockdir, example):
    p = run(example, "unix:%s/none.sock" % sockdir, ["http://127.0.0.1:1/"])
    # 3 from the programs; the shell example passes on curl's 7 (could not connect)
    assert p.returncode == (7 if example[-1].endswith(".sh") else 3), (p.returncode, p.stderr)
    assert p.stdout == "" and p.stderr.strip(), p.stderr

"""The `fanout` command (cli/fanout.c), run as a subprocess against a real daemon and real
upstreams: every flag's effect as the upstream saw it or as the output shows it, where the
URLs come from, -o, --batch, every exit status, $FANOUTD and --connect, the terminal output
and progress line (under pseudo-terminals), NDJSON on a pipe, and a 200,000-URL list streamed
through standard input with fanout's peak memory measured.

fanout is $FANOUT_BIN (set by `make integration`; default build/asan/fanout). The big run
uses the release binary ./fanout (`make fanout`) and is skipped without it (ASan inflates
RSS); FANOUT_BIG_N sets its size (default 200000).
"""

import base64
import json
import os
import pty
import re
import select
import subprocess
import threading
import time

import pytest

import harness
from upstream import binary_bytes, closed_port, text_bytes, JSON_DOC

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE_FANOUT = os.path.join(ROOT, "fanout")
BIG_N = int(os.environ.get("FANOUT_BIG_N", "200000"))
RSS_LIMIT_KIB = 10 * 1024


def fanout_bin():
    path = os.environ.get("FANOUT_BIN") or os.path.join(ROOT, "build", "asan", "fanout")
    if not os.access(path, os.X_OK):
        pytest.fail("fanout is not built at %s: `make build/asan/fanout`, or set FANOUT_BIN" % path,
                    pytrace=False)
    return path


def fanout_env(extra=None, fanoutd=None):
    """The environment fanout runs in: the test's, without any $FANOUTD of the caller's
    (unless fanoutd= gives one), with leak detection on."""
    env = {k: v for k, v in os.environ.items() if k != "FANOUTD"}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if fanoutd is not None:
        env["FANOUTD"] = fanoutd
    if extra:
        env.update(extra)
    return env


def sanitizer_lines(text):
    return [l for l in text.splitlines() if any(m in l for m in harness.SANITIZER_MARKERS)]


class Run:
    """A finished fanout: rc, stdout/stderr (text), and stdout's NDJSON parsed."""

    def __init__(self, args, rc, stdout, stderr, elapsed):
        self.args, self.rc, self.elapsed = args, rc, elapsed
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")

    @property
    def lines(self):
        out = []
        for l in self.stdout.splitlines():
            try:
                out.append(json.loads(l))
            except ValueError:
                raise AssertionError("stdout line is not JSON: %r\n%s" % (l[:300], self))
        return out

    @property
    def results(self):
        """Results in arrival order (the summary checked to be last and alone)."""
        lines = self.lines
        assert lines and "summary" in lines[-1], "no summary line last:\n%s" % self
        assert not any("summary" in l for l in lines[:-1]), self
        return lines[:-1]

    @property
    def by_index(self):
        rs = self.results
        idx = sorted(r["index"] for r in rs)
        assert idx == list(range(len(rs))), "indices %r\n%s" % (idx[:20], self)
        return sorted(rs, key=lambda r: r["index"])

    @property
    def summary(self):
        return self.lines[-1]["summary"]

    def __str__(self):
        return "fanout %s -> rc %r in %.2f s\n--- stdout:\n%s\n--- stderr:\n%s" % (
            " ".join(self.args), self.rc, self.elapsed, self.stdout[-3000:], self.stderr[-3000:])


def check_clean(run):
    bad = sanitizer_lines(run.stderr)
    assert not bad, "sanitizer report from fanout:\n%s" % run


def fanout(d, *args, input=None, env=None, fanoutd=None, connect=True, timeout=30.0, stdin=None,
           binary=None, clean=True):
    """Runs fanout to completion; d (a harness.Daemon) is reached with --connect unix:PATH
    unless connect=False. input: bytes for stdin (else stdin is /dev/null, or stdin=)."""
    cmd = [binary or fanout_bin()]
    if connect and d is not None:
        cmd += ["--connect", "unix:" + d.sock]
    cmd += [str(a) for a in args]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, input=input, stdin=None if input is not None else (stdin or subprocess.DEVNULL),
                           capture_output=True, timeout=timeout, env=fanout_env(env, fanoutd))
    except subprocess.TimeoutExpired as e:
        raise AssertionError("fanout %s did not finish within %.0f s; stdout:\n%s\nstderr:\n%s" % (
            " ".join(cmd[1:]), timeout, (e.stdout or b"")[-2000:], (e.stderr or b"")[-2000:]))
    run = Run(cmd[1:], p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
    if clean:
        check_clean(run)
    return run


def start_fanout(d, *args, **popen):
    """fanout in the background (for tests that act while it runs)."""
    cmd = [fanout_bin(), "--connect", "unix:" + d.sock] + [str(a) for a in args]
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, env=fanout_env(), **popen)


def finish(p, timeout=20.0):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(5)
        raise AssertionError("fanout did not finish within %.0f s; stderr:\n%s" % (timeout, err[-2000:]))
    run = Run(p.args[1:], p.returncode, out, err, 0.0)
    check_clean(run)
    return run


def echo(result):
    """The /echo route's record of the request, from a result with body mode auto."""
    assert result.get("status") == 200 and result["body_encoding"] == "json", result
    return result["body"]


def header(echoed, name):
    vals = [v for n, v in echoed["headers"] if n.lower() == name.lower()]
    return vals[-1] if vals else None


# --- what each flag does ---------------------------------------------------------------

def test_method_and_repeated_headers_reach_the_upstream(daemon, upstream):
    d = daemon()
    r = fanout(d, "-X", "PUT", "-H", "X-One: 1", "-H", "X-Two:  two words", "-H", "Accept: text/x-test",
               upstream.url("/echo"))
    assert r.rc == 0, r
    e = echo(r.results[0])
    assert e["method"] == "PUT" and e["body"] == ""
    assert header(e, "X-One") == "1" and header(e, "X-Two") == "two words"
    assert header(e, "Accept") == "text/x-test"
    (req,) = upstream.reqs("/echo")
    assert req.method == "PUT" and req.header("X-Two") == "two words"


def test_data_implies_post_and_x_overrides_it(daemon, upstream):
    d = daemon()
    r = fanout(d, "-d", "name=value&x=1", upstream.url("/echo"))
    assert r.rc == 0, r
    e = echo(r.results[0])
    assert e["method"] == "POST" and e["body"] == "name=value&x=1"
    assert header(e, "Content-Length") == "14"
    r = fanout(d, "-X", "PUT", "-d", "payload", upstream.url("/echo"))
    e = echo(r.results[0])
    assert e["method"] == "PUT" and e["body"] == "payload"
    # At the upstream too, not only in the echo.
    assert [(q.method, q.body) for q in upstream.reqs("/echo")] == [("POST", b"name=value&x=1"), ("PUT", b"payload")]


def test_json_implies_post_with_the_json_body(daemon, upstream):
    d = daemon()
    doc = {"a": [1, 2, {"b": None}], "s": "caf\u00e9"}
    r = fanout(d, "--json", json.dumps(doc), upstream.url("/echo"))
    assert r.rc == 0, r
    e = echo(r.results[0])
    assert e["method"] == "POST"
    assert header(e, "Content-Type") == "application/json"
    assert json.loads(e["body"].encode("latin-1").decode("utf-8")) == doc
    r = fanout(d, "-X", "PATCH", "--json", "[1,2]", upstream.url("/echo"))
    e = echo(r.results[0])
    assert e["method"] == "PATCH" and json.loads(e["body"]) == [1, 2]


def test_concurrency_caps_requests_in_flight(daemon, upstream):
    d = daemon()
    p = start_fanout(d, "-c", "3", *[upstream.url("/wait/c?i=%d" % i) for i in range(8)])
    try:
        assert upstream.wait_for(lambda u: u.inflight >= 3, 10), upstream.stats()
        # The daemon now holds the other five back: nothing more arrives while these wait.
        assert upstream.count("/wait/c") == 3
    finally:
        upstream.release("c")
    r = finish(p)
    assert r.rc == 0, r
    assert [x["status"] for x in r.by_index] == [200] * 8
    assert upstream.stats()["peak"] == 3


def test_per_host_caps_connections_to_each_origin(daemon, upstreams):
    a, b = upstreams(2)
    d = daemon()
    urls = [u.url("/wait/p?i=%d" % i) for i in range(5) for u in (a, b)]
    p = start_fanout(d, "-p", "2", "-c", "100", *urls)
    try:
        for u in (a, b):
            assert u.wait_for(lambda u: u.inflight >= 2, 10), u.stats()
        assert a.count("/wait") == 2 and b.count("/wait") == 2
    finally:
        a.release("p")
        b.release("p")
    r = finish(p)
    assert r.rc == 0 and len(r.results) == 10, r
    for u in (a, b):
        st = u.stats()
        assert st["peak"] == 2 and st["connections"] == 2, st


def test_timeout_ends_a_slow_request(daemon, upstream):
    d = daemon()
    r = fanout(d, "-t", "300", upstream.url("/delay/5000"), upstream.url("/ok"))
    assert r.rc == 1, r
    slow, ok = r.by_index
    assert slow["error"]["kind"] == "timeout" and "300 ms" in slow["error"]["message"], slow
    assert ok["status"] == 200
    assert r.elapsed < 4, r


def test_deadline_ends_the_batch(daemon, upstream):
    d = daemon()
    r = fanout(d, "--deadline", "400", upstream.url("/wait/never"), upstream.url("/ok"))
    assert r.rc == 1, r
    never, ok = r.by_index
    assert never["error"]["kind"] == "deadline", never
    assert ok["status"] == 200
    assert r.summary["complete"] is False and r.summary["errors"] == 1
    assert r.elapsed < 4, r


def test_retries_retry_a_flaky_upstream(daemon, upstream):
    d = daemon()
    r = fanout(d, "-r", "3", upstream.url("/flaky/2?key=r"))
    assert r.rc == 0, r
    (res,) = r.results
    assert res["status"] == 200 and res["attempts"] == 3, res
    assert upstream.count("/flaky") == 3
    r = fanout(d, upstream.url("/flaky/2?key=none"))
    (res,) = r.results
    assert res["status"] == 503 and res["attempts"] == 1, res
    assert r.rc == 0, r  # a 503 is a response, not an error


def arrivals(u, prefix):
    return sorted(q.t_start for q in u.reqs(prefix))


def test_rate_spaces_arrivals(daemon, upstream):
    d = daemon()
    r = fanout(d, "--rate", "20", "-c", "10", *[upstream.url("/ok?i=%d" % i) for i in range(6)])
    assert r.rc == 0 and len(r.results) == 6, r
    t = arrivals(upstream, "/ok")
    # 20/s, burst 1: the i-th starts 50 ms x i after the first (GCRA is exact over a span);
    # 30 ms of slack for when the upstream's threads notice an arrival.
    late = [round(t[i] - t[0] - 0.05 * i, 3) for i in range(6)]
    assert all(x >= -0.03 for x in late), late
    assert t[-1] - t[0] >= 0.24, late


def test_burst_lets_some_start_at_once(daemon, upstream):
    d = daemon()
    r = fanout(d, "--rate", "5", "--burst", "3", "-c", "10", *[upstream.url("/ok?i=%d" % i) for i in range(4)])
    assert r.rc == 0 and len(r.results) == 4, r
    t = arrivals(upstream, "/ok")
    assert t[2] - t[0] < 0.15, t  # three at once after a quiet spell
    assert t[3] - t[0] >= 0.18, t  # the fourth waits for a token (200 ms at 5/s)


def test_redirects_limit(daemon, upstream):
    d = daemon()
    url = upstream.url("/redirect/3")
    r = fanout(d, url)
    assert r.rc == 0, r
    assert r.results[0]["status"] == 200 and r.results[0]["final_url"].endswith("/redirect/0?code=302")
    r = fanout(d, "--redirects", "1", url)
    assert r.rc == 1 and r.results[0]["error"]["kind"] == "redirects", r
    r = fanout(d, "--redirects", "0", url)
    assert r.rc == 0 and r.results[0]["status"] == 302 and "final_url" not in r.results[0], r


def test_connect_timeout(daemon, blackhole):
    d = daemon()
    r = fanout(d, "--connect-timeout", "200", blackhole.url())
    assert r.rc == 1, r
    err = r.results[0]["error"]
    assert err["kind"] == "timeout" and "connect" in err["message"], err
    # The configured 3000 ms would have run far longer.
    assert r.results[0]["timing"]["total_ms"] < 1500 and r.elapsed < 2.5, r


def test_max_body(daemon, upstream):
    d = daemon()
    r = fanout(d, "--max-body", "100", upstream.url("/bytes/1000"), upstream.url("/bytes/100"))
    assert r.rc == 1, r
    big, small = r.by_index
    assert big["error"]["kind"] == "too_large", big
    assert small["status"] == 200 and base64.b64decode(small["body"]) == binary_bytes(100)


def test_body_modes(daemon, upstream):
    d = daemon()
    raw = json.dumps(JSON_DOC)
    r = fanout(d, upstream.url("/json"), upstream.url("/bytes/40"), upstream.url("/text/20"))
    j, b, t = r.by_index
    assert (j["body_encoding"], j["body"]) == ("json", JSON_DOC)
    assert (b["body_encoding"], base64.b64decode(b["body"])) == ("base64", binary_bytes(40))
    assert (t["body_encoding"], t["body"]) == ("text", text_bytes(20).decode())
    r = fanout(d, "--body", "text", upstream.url("/json"))
    assert (r.results[0]["body_encoding"], r.results[0]["body"]) == ("text", raw)
    r = fanout(d, "--body", "base64", upstream.url("/text/20"))
    assert r.results[0]["body_encoding"] == "base64"
    assert base64.b64decode(r.results[0]["body"]) == text_bytes(20)
    r = fanout(d, "--body", "json", upstream.url("/json"), upstream.url("/text/5"))
    j, t = r.by_index
    assert j["body"] == JSON_DOC and (t["body_encoding"], t["body"]) == ("text", "abcde")
    r = fanout(d, "--body", "none", upstream.url("/json"))
    assert r.results[0]["body_encoding"] == "none" and "body" not in r.results[0]
    assert r.results[0]["bytes"] == len(raw)


def test_order_input_holds_results_back(daemon, upstream):
    d = daemon()

    def run(tag, *flags):
        # The first URL waits until both quick ones have been answered.
        urls = [upstream.url("/wait/" + tag), upstream.url("/ok?%s-a" % tag), upstream.url("/ok?%s-b" % tag)]
        p = start_fanout(d, *flags, *urls)
        try:
            assert upstream.wait_for(lambda u: sum(1 for q in u.requests if q.answered
                                                   and q.target.startswith("/ok?" + tag)) == 2
                                     and u.count("/wait/" + tag) == 1, 10), upstream.stats()
        finally:
            upstream.release(tag)
        return finish(p)

    r = run("completion")
    # Completion order: a quick one first. (Not "the slow one last": both quick
    # answers are in the daemon's socket before the slow one is released, but
    # one may share a loop turn with it.)
    assert r.rc == 0 and r.results[0]["index"] != 0, r
    r = run("input", "--order", "input")
    assert r.rc == 0 and [x["index"] for x in r.results] == [0, 1, 2], r


def test_no_headers(daemon, upstream):
    d = daemon()
    r = fanout(d, upstream.url("/headers"))
    assert r.results[0]["headers"]["x-dup"] == "one, two"
    r = fanout(d, "--no-headers", upstream.url("/headers"))
    assert r.rc == 0 and "headers" not in r.results[0], r
    assert r.results[0]["status"] == 200


def test_no_http2(daemon, h2upstreams):
    (u,) = h2upstreams(1, alpn=("h2", "http/1.1"))
    d = daemon()
    r = fanout(d, u.url("/ok"))
    assert r.rc == 0 and r.results[0]["protocol"] == "h2", r
    r = fanout(d, "--no-http2", u.url("/ok"))
    assert r.rc == 0 and r.results[0]["protocol"] == "http/1.1", r


def test_fail_makes_4xx_an_error_exit(daemon, upstream):
    d = daemon()
    r = fanout(d, upstream.url("/status/404"), upstream.url("/ok"))
    assert r.rc == 0 and r.by_index[0]["status"] == 404, r
    r = fanout(d, "--fail", upstream.url("/status/404"), upstream.url("/ok"))
    assert r.rc == 1 and r.by_index[0]["status"] == 404, r
    r = fanout(d, "--fail", upstream.url("/status/500"))
    assert r.rc == 1, r
    r = fanout(d, "--fail", upstream.url("/ok"), upstream.url("/status/302"))
    assert r.rc == 0, r



# ids a caller chose come before the status in a result line: fanout's scan for the status
# and error kind must step over them, whatever their strings hold.
DECOY_IDS = ['"status":500,"error":{"kind":"dns"}', "\\", '\\"', "\\\"status\\\":404", "{[\"error\":",
             '}},"status":404', "", 404]


def test_fail_counts_what_the_daemon_says_not_what_ids_say(daemon, upstream):
    d = daemon()
    doc = {"requests": [{"url": upstream.url("/ok"), "id": i} for i in DECOY_IDS]}
    r = fanout(d, "--batch", "--fail", input=json.dumps(doc).encode())
    assert r.rc == 0 and [x["id"] for x in r.by_index] == DECOY_IDS, r
    for i in DECOY_IDS:
        doc = {"requests": [{"url": upstream.url("/status/404"), "id": i}]}
        r = fanout(d, "--batch", "--fail", input=json.dumps(doc).encode())
        assert r.rc == 1 and r.results[0]["status"] == 404, r

# --- where the URLs come from -----------------------------------------------------------

def url_list(upstream):
    """A list with comments, blank lines, indentation, CRLF and no final newline; and the
    targets it names, in order."""
    targets = ["/ok?n=%d" % i for i in range(5)]
    text = ("# a comment\n"
            "\n"
            "%s\n"
            "   %s   \n"
            "\t# an indented comment\n"
            "%s\r\n"
            "\n\n"
            "%s\n"
            "%s") % tuple(upstream.url(t) for t in targets)
    return text.encode(), targets


def fetched(upstream, results):
    """The target of each result, by index."""
    return [r["url"][len(upstream.url("")):] for r in sorted(results, key=lambda r: r["index"])]


def test_urls_from_arguments(daemon, upstream):
    d = daemon()
    targets = ["/ok?arg=%d" % i for i in range(4)]
    r = fanout(d, *[upstream.url(t) for t in targets])
    assert r.rc == 0 and fetched(upstream, r.by_index) == targets, r
    assert sorted(q.target for q in upstream.reqs()) == sorted(targets)


@pytest.mark.parametrize("how", ["file", "stdin", "dash"])
def test_urls_from_a_file_or_standard_input(daemon, upstream, tmp_path, how):
    d = daemon()
    text, targets = url_list(upstream)
    if how == "file":
        path = tmp_path / "urls.txt"
        path.write_bytes(text)
        r = fanout(d, "-i", path)
    elif how == "stdin":
        r = fanout(d, input=text)
    else:
        r = fanout(d, "-i", "-", input=text)
    assert r.rc == 0, r
    assert fetched(upstream, r.by_index) == targets, r
    assert sorted(q.target for q in upstream.reqs()) == sorted(targets)
    assert r.summary["total"] == 5 and r.summary["complete"] is True


def test_urls_from_standard_input_with_request_flags(daemon, upstream):
    d = daemon()
    text = ("%s\n%s" % (upstream.url("/echo?a"), upstream.url("/echo?b"))).encode()
    r = fanout(d, "-X", "DELETE", "-H", "X-K: v", input=text)
    assert r.rc == 0, r
    for res in r.by_index:
        e = echo(res)
        assert e["method"] == "DELETE" and header(e, "X-K") == "v"


def test_empty_standard_input_is_an_empty_batch(daemon, upstream):
    d = daemon()
    r = fanout(d, input=b"# nothing but comments\n\n")
    assert r.rc == 0 and r.results == [] and r.summary["total"] == 0, r


def test_standard_input_from_dev_null_ends_at_once(daemon):
    """/dev/null is a character device epoll refuses (EPERM): it must still read as an empty
    list, not wait for the daemon's client_timeout_s."""
    d = daemon(client_timeout_s=3)
    with open(os.devnull, "rb") as null:
        r = fanout(d, stdin=null, timeout=10)
    assert r.rc == 0 and r.summary["total"] == 0, r
    assert r.summary["complete"] is True, r
    assert r.elapsed < 2, r


def test_invalid_lines_are_their_own_errors(daemon, upstream):
    d = daemon()
    text = ("%s\nftp://example.test/x\nnot a url\n%s\n" % (upstream.url("/ok?1"), upstream.url("/ok?2"))).encode()
    r = fanout(d, input=text)
    assert r.rc == 1, r
    kinds = [x.get("error", {}).get("kind") or x["status"] for x in r.by_index]
    assert kinds == [200, "invalid_request", "invalid_request", 200], r


# --- -o DIR --------------------------------------------------------------------------------

def test_output_dir_writes_exact_bytes_by_index(daemon, upstream, tmp_path):
    d = daemon()
    out = tmp_path / "bodies"  # made by fanout
    paths = ["/bytes/100000", "/text/77", "/json", "/status/204", "/gzip/5000", "/utf8"]
    r = fanout(d, "-o", out, *[upstream.url(p) for p in paths])
    assert r.rc == 0, r
    want = [binary_bytes(100000), text_bytes(77), json.dumps(JSON_DOC).encode(), b"", text_bytes(5000),
            "h\u00e9llo \u2713 \u65e5\u672c".encode()]
    for res in r.by_index:
        i = res["index"]
        assert "body" not in res, res
        assert res["body_file"] == os.path.join(str(out), str(i)), res
        assert (out / str(i)).read_bytes() == want[i], (i, paths[i])
        assert res["bytes"] == len(want[i])
    assert sorted(os.listdir(out)) == sorted(str(i) for i in range(len(paths)))
    assert r.summary["total"] == len(paths)


def test_output_dir_names_files_by_id_from_a_batch(daemon, upstream, tmp_path):
    d = daemon()
    out = tmp_path / "o"
    doc = {"requests": [{"url": upstream.url("/bytes/300"), "id": "first.bin"},
                        {"url": upstream.url("/text/5"), "id": 7},
                        {"url": upstream.url("/bytes/10"), "id": "../escape"},
                        upstream.url("/bytes/20")],
           "options": {"body": "base64"}}
    r = fanout(d, "--batch", "-o", out, input=json.dumps(doc).encode())
    assert r.rc == 0, r
    files = {res["index"]: res["body_file"] for res in r.results}
    assert files == {0: str(out / "first.bin"), 1: str(out / "7"), 2: str(out / "2"), 3: str(out / "3")}
    assert (out / "first.bin").read_bytes() == binary_bytes(300)
    assert (out / "7").read_bytes() == b"abcde"
    assert (out / "2").read_bytes() == binary_bytes(10)
    assert (out / "3").read_bytes() == binary_bytes(20)
    assert sorted(os.listdir(out)) == ["2", "3", "7", "first.bin"]
    assert not (tmp_path / "escape").exists()


def test_output_dir_with_a_batch_still_writes_exact_bytes(daemon, upstream, tmp_path):
    """-o promises exact bytes; a --batch document that says nothing of options.body must not
    get its JSON bodies parsed and re-serialised."""
    d = daemon()
    out = tmp_path / "o"
    doc = {"requests": [{"url": upstream.url("/json"), "id": "j"}]}
    r = fanout(d, "--batch", "-o", out, input=json.dumps(doc).encode())
    assert r.rc == 0, r
    assert (out / "j").read_bytes() == json.dumps(JSON_DOC).encode()


def test_text_bodies_with_nul_bytes(daemon, upstream, tmp_path):
    """NUL is valid UTF-8, so such a body comes as text with \\u0000 escapes: fanout must take
    the line (and -o must write every byte)."""
    d = daemon()
    r = fanout(d, upstream.url("/bomb/1"))  # 1 MiB of zeros
    assert r.rc == 0, r
    assert r.results[0]["body_encoding"] == "text" and r.results[0]["body"] == "\0" * (1 << 20)
    out = tmp_path / "o"
    r = fanout(d, "-o", out, "--body", "text", upstream.url("/bomb/1"))
    assert r.rc == 0, r
    assert (out / "0").read_bytes() == b"\0" * (1 << 20)


# --- --batch -------------------------------------------------------------------------------

def batch_doc(upstream):
    return {"requests": [upstream.url("/ok?d=0"),
                         {"url": upstream.url("/echo?d=1"), "method": "POST", "body": "b", "id": "e",
                          "headers": {"X-Doc": "1"}},
                         {"url": upstream.url("/wait/doc"), "id": 2}],
            "options": {"order": "input", "include_headers": False}}


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_batch_document(daemon, upstream, tmp_path, how):
    d = daemon()
    doc = json.dumps(batch_doc(upstream), indent=2).encode()
    upstream.release("doc")
    if how == "file":
        path = tmp_path / "doc.json"
        path.write_bytes(doc)
        r = fanout(d, "--batch", "-i", path)
    else:
        r = fanout(d, "--batch", input=doc)
    assert r.rc == 0, r
    # options.order input: in index order, as the document asked.
    assert [x["index"] for x in r.results] == [0, 1, 2], r
    ok, e, w = r.results
    assert "headers" not in ok  # options.include_headers
    assert e["id"] == "e" and w["id"] == 2
    body = echo(e)
    assert body["method"] == "POST" and body["body"] == "b" and header(body, "X-Doc") == "1"
    assert r.summary == dict(r.summary, total=3, responses=3, errors=0, complete=True)


def test_request_flags_with_a_batch_are_applied_or_refused(daemon, upstream):
    """--batch sends the document as it is: a -H (or -c, -X, ...) given with it must not be
    silently dropped; fanout either applies it or says it cannot (usage, exit 2)."""
    d = daemon()
    doc = json.dumps({"requests": [upstream.url("/echo")]}).encode()
    r = fanout(d, "--batch", "-H", "X-Flag: 1", input=doc)
    if r.rc == 2:
        assert "--batch" in r.stderr and upstream.count() == 0, r
    else:
        assert r.rc == 0 and header(echo(r.results[0]), "X-Flag") == "1", r


# --- exit statuses -------------------------------------------------------------------------

def test_exit_0_every_request_got_a_response(daemon, upstream):
    d = daemon()
    r = fanout(d, upstream.url("/ok"), upstream.url("/status/500"))
    assert r.rc == 0, r


def test_exit_1_when_a_request_got_an_error(daemon, upstream):
    d = daemon()
    r = fanout(d, upstream.url("/ok"), "http://127.0.0.1:%d/" % closed_port())
    assert r.rc == 1, r
    assert r.by_index[1]["error"]["kind"] == "connect"
    assert r.summary["errors"] == 1


@pytest.mark.parametrize("args, says", [
    (["-c", "0", "URL"], "-c"),
    (["-c", "many", "URL"], "-c"),
    (["-p", "-1", "URL"], "-p"),
    (["-t", "0", "URL"], "-t"),
    (["-r", "11", "URL"], "-r"),
    (["--rate", "0", "URL"], "--rate"),
    (["--rate", "fast", "URL"], "--rate"),
    (["--burst", "0", "URL"], "--burst"),
    (["--deadline", "x", "URL"], "--deadline"),
    (["--body", "xml", "URL"], "--body"),
    (["--order", "random", "URL"], "--order"),
    (["--max-body", "-5", "URL"], "--max-body"),
    (["--bogus", "URL"], "unknown option --bogus"),
    (["-Z", "URL"], "unknown option"),
    (["-H", "no colon here", "URL"], "-H"),
    (["--json", "{not json", "URL"], "--json"),
    (["-d", "x", "--json", "{}", "URL"], "-d and --json"),
    (["--batch", "URL"], "--batch"),
    (["-i", "FILE", "URL"], "not both"),
    (["URL", "-c"], "needs an argument"),
])
def test_exit_2_usage(daemon, upstream, tmp_path, args, says):
    d = daemon()
    urls = tmp_path / "urls"
    urls.write_text(upstream.url("/ok") + "\n")
    args = [upstream.url("/ok") if a == "URL" else str(urls) if a == "FILE" else a for a in args]
    r = fanout(d, *args)
    assert r.rc == 2, r
    assert r.stdout == "", r
    assert r.stderr.startswith("fanout: ") and says in r.stderr, r
    assert upstream.count() == 0


def test_exit_2_no_urls_on_a_terminal(daemon):
    d = daemon()
    m, s = pty.openpty()
    try:
        r = fanout(d, stdin=s)
    finally:
        os.close(m)
        os.close(s)
    assert r.rc == 2 and "no URLs" in r.stderr, r


def test_exit_2_missing_input_file(daemon, tmp_path):
    d = daemon()
    r = fanout(d, "-i", tmp_path / "nope.txt")
    assert r.rc == 2 and "nope.txt" in r.stderr, r


@pytest.mark.parametrize("doc, message", [
    (b'{"requests": 5}', "requests: must be an array"),
    (b'{"requests": [', "not JSON"),
    (b'{"requests": ["http://a.test/"], "options": {"body": "xml"}}', "options.body"),
])
def test_exit_2_batch_refused_by_the_daemon(daemon, doc, message):
    d = daemon()
    r = fanout(d, "--batch", input=doc)
    assert r.rc == 2, r
    assert "refused" in r.stderr and "400" in r.stderr and message in r.stderr, r
    assert r.stdout == "", r


def test_exit_2_streamed_batch_refused_by_the_daemon(daemon, upstream):
    """The options line the daemon refuses (a header value with CR) is a refused batch too."""
    d = daemon()
    r = fanout(d, "-H", "X-Bad: a\rb", upstream.url("/ok"))
    assert r.rc == 2, r
    assert "refused" in r.stderr and "options.headers" in r.stderr, r
    assert upstream.count() == 0


def test_exit_3_no_daemon(sockdir):
    path = os.path.join(sockdir, "none.sock")
    r = fanout(None, "--connect", "unix:" + path, "http://a.test/")
    assert r.rc == 3, r
    assert "cannot reach fanoutd at unix:" + path in r.stderr, r
    assert "fanoutd -l unix:" + path in r.stderr and "systemctl start" in r.stderr, r
    port = closed_port()
    r = fanout(None, "--connect", "127.0.0.1:%d" % port, "http://a.test/")
    assert r.rc == 3 and "127.0.0.1:%d" % port in r.stderr and "fanoutd -l" in r.stderr, r
    r = fanout(None, "--connect", "no-port-here", "http://a.test/")
    assert r.rc == 3 and "not unix:/path or HOST:PORT" in r.stderr, r


def test_fanoutd_variable_and_connect_precedence(daemon, upstream):
    port = harness.free_port()
    one = daemon()
    daemon(listen="127.0.0.1:%d" % port, max_body_bytes=10)  # the second; tells the two apart
    url = upstream.url("/bytes/100")

    def which(r):
        assert r.rc in (0, 1), r
        res = r.results[0]
        return "two" if res.get("error", {}).get("kind") == "too_large" else "one"

    r = fanout(None, "-v", url, fanoutd="unix:" + one.sock)
    assert which(r) == "one" and "connected to fanoutd at unix:" + one.sock in r.stderr, r
    r = fanout(None, "-v", url, fanoutd="127.0.0.1:%d" % port)
    assert which(r) == "two" and "at 127.0.0.1:%d" % port in r.stderr, r
    # --connect wins over $FANOUTD, which is then not tried at all.
    r = fanout(None, "--connect", "127.0.0.1:%d" % port, url, fanoutd="unix:" + one.sock)
    assert which(r) == "two", r
    r = fanout(None, "--connect", "unix:" + one.sock, url, fanoutd="unix:/nonexistent/fanoutd.sock")
    assert which(r) == "one", r
    # The first address given is the only one tried.
    r = fanout(None, url, fanoutd="unix:/nonexistent/fanoutd.sock")
    assert r.rc == 3 and "unix:/nonexistent/fanoutd.sock" in r.stderr, r
    # An empty $FANOUTD is as if unset (then the packaged socket, then 127.0.0.1:8750: not
    # asserted, the machine may run a real fanoutd).
    r = fanout(None, "--connect", "unix:" + one.sock, url, fanoutd="")
    assert which(r) == "one", r


# --- output ----------------------------------------------------------------------------

def test_ndjson_when_stdout_is_a_pipe(daemon, upstream):
    d = daemon()
    urls = [upstream.url("/ok?i=%d" % i) for i in range(20)] + ["http://127.0.0.1:%d/" % closed_port()]
    r = fanout(d, *urls)
    assert r.rc == 1, r
    lines = r.stdout.split("\n")
    assert lines[-1] == "" and all(lines[:-1]), r  # every line ends with \n, none empty
    parsed = [json.loads(l) for l in lines[:-1]]
    assert "summary" in parsed[-1] and all("index" in p for p in parsed[:-1])
    assert sorted(p["index"] for p in parsed[:-1]) == list(range(21))
    assert parsed[-1]["summary"]["total"] == 21 and parsed[-1]["summary"]["errors"] == 1
    assert r.stderr == "", r  # no progress line on a pipe


def test_each_result_reaches_the_pipe_while_others_wait(daemon, upstream):
    """Results on a pipe are written together when they come close in time, but none waits
    for a later one: every finished result is readable while a request is still held."""
    d = daemon()
    n = 40
    p = start_fanout(d, upstream.url("/wait/pipe"), *[upstream.url("/ok?i=%d" % i) for i in range(n)])
    out = b""
    try:
        deadline = time.monotonic() + 10
        while out.count(b"\n") < n and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], max(0, deadline - time.monotonic()))[0]:
                out += os.read(p.stdout.fileno(), 65536)  # unbuffered: select sees what is left
        assert upstream.inflight == 1, upstream.stats()  # /wait/pipe: still held
    finally:
        upstream.release("pipe")
    got = [json.loads(l) for l in out.split(b"\n")[:-1]]
    assert sorted(r["index"] for r in got) == list(range(1, n + 1)), got
    r = finish(p)
    assert r.rc == 0 and [x["index"] for x in r.results] == [0], r

def test_runs_as_a_batch_task(daemon, upstream):
    """fanout waits for its turn on waking instead of preempting the daemon (SCHED_BATCH)."""
    d = daemon()
    p = start_fanout(d, upstream.url("/wait/sched"))
    try:
        assert upstream.wait_for(lambda u: u.inflight == 1, 10), upstream.stats()
        policy = os.sched_getscheduler(p.pid)
    finally:
        upstream.release("sched")
    assert finish(p).rc == 0
    assert policy == os.SCHED_BATCH, policy

class PtyRun:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def __str__(self):
        return "rc %r\n--- stdout (pty):\n%r\n--- stderr (pty):\n%r" % (self.rc, self.out[-3000:], self.err[-3000:])


def run_on_terminals(d, *args, timeout=20.0):
    """fanout with stdout and stderr each on its own pseudo-terminal; stdin is /dev/null
    (the URLs are arguments)."""
    mo, so = pty.openpty()
    me, se = pty.openpty()
    cmd = [fanout_bin(), "--connect", "unix:" + d.sock] + [str(a) for a in args]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=fanout_env())
    os.close(so)
    os.close(se)
    bufs = {mo: b"", me: b""}
    open_fds = [mo, me]
    deadline = time.monotonic() + timeout
    try:
        while open_fds and time.monotonic() < deadline:
            r, _, _ = select.select(open_fds, [], [], 0.5)
            for fd in r:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the other side is closed
                    data = b""
                if data:
                    bufs[fd] += data
                else:
                    open_fds.remove(fd)
        if open_fds:
            p.kill()
            raise AssertionError("fanout on terminals did not finish within %.0f s" % timeout)
        rc = p.wait(5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        os.close(mo)
        os.close(me)
    run = PtyRun(rc, bufs[mo], bufs[me])
    assert not sanitizer_lines(run.err), run
    return run


def test_readable_output_and_progress_on_a_terminal(daemon, upstream):
    d = daemon()
    refused = "http://127.0.0.1:%d/x" % closed_port()
    urls = [upstream.url("/ok"), upstream.url("/status/404"), upstream.url("/bytes/5000"), refused,
            upstream.url("/delay/200")]
    r = run_on_terminals(d, *urls)
    assert r.rc == 1, r
    lines = [l for l in r.out.replace("\r\n", "\n").split("\n") if l]
    assert not any(l.lstrip().startswith("{") for l in lines), r  # no JSON for a person
    num = r"\d+(\.\d+)?"
    pats = {
        "ok": r"200\s+%s ms\s+3 B\s+%s$" % (num, re.escape(urls[0])),
        "404": r"404\s+%s ms\s+11 B\s+%s$" % (num, re.escape(urls[1])),
        "bytes": r"200\s+%s ms\s+4\.9 KiB\s+%s$" % (num, re.escape(urls[2])),
        "err": r"ERR\s+connect\s+%s: \S" % re.escape(refused),
        "delay": r"200\s+%s ms\s+8 B\s+%s$" % (num, re.escape(urls[4])),
        "summary": r"5 requests: 4 responses, 1 errors, complete, %s ms$" % num,
    }
    for name, pat in pats.items():
        assert sum(1 for l in lines if re.match(pat, l)) == 1, (name, pat, str(r))
    assert re.match(pats["summary"], lines[-1]), r
    assert len(lines) == 6, r
    # The progress line lives on stderr: done/total, errors by kind, rate.
    assert "done" in r.err, r
    last = r.err.replace("\r\n", "\n").split("\r")[-1]
    assert re.search(r"5/5 done, 1 errors \(connect 1\), \d+ req/s", last), r
    assert "\x1b[K" in r.err  # redrawn in place


def test_quiet_terminal_has_no_progress(daemon, upstream):
    d = daemon()
    r = run_on_terminals(d, "-q", upstream.url("/ok"))
    assert r.rc == 0, r
    assert "done" not in r.err and r.err.strip() == "", r
    assert re.match(r"200\s", r.out), r


class Terminals:
    """fanout in the background with stdout and stderr each on its own pseudo-terminal, read
    by a thread as it writes, so a test can look at the screen while requests wait."""

    def __init__(self, d, *args):
        self.mo, so = pty.openpty()
        self.me, se = pty.openpty()
        cmd = [fanout_bin(), "--connect", "unix:" + d.sock] + [str(a) for a in args]
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=so, stderr=se, env=fanout_env())
        os.close(so)
        os.close(se)
        self.cond = threading.Condition()
        self.bufs = {self.mo: b"", self.me: b""}
        self.eof = False
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        fds = [self.mo, self.me]
        while fds:
            r, _, _ = select.select(fds, [], [], 0.5)
            for fd in r:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the other side is closed
                    data = b""
                with self.cond:
                    if data:
                        self.bufs[fd] += data
                    else:
                        fds.remove(fd)
                    self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    @property
    def err(self):
        with self.cond:
            return self.bufs[self.me].decode("utf-8", "replace")

    @property
    def out(self):
        with self.cond:
            return self.bufs[self.mo].decode("utf-8", "replace")

    def wait_for(self, pred, timeout=5.0):
        from upstream import wait_cond
        return wait_cond(self.cond, lambda: pred(self.bufs[self.mo].decode("utf-8", "replace"),
                                                 self.bufs[self.me].decode("utf-8", "replace")), timeout)

    def finish(self, timeout=20.0):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait(5)
        self.t.join(5)
        os.close(self.mo)
        os.close(self.me)
        return rc


def test_progress_is_live_while_requests_wait(daemon, upstream):
    """The progress line (done/total, rate, ETA) is drawn while nothing has finished yet,
    not only when a result arrives."""
    d = daemon()
    t = Terminals(d, upstream.url("/wait/live"), upstream.url("/wait/live?2"))
    try:
        assert upstream.wait_for(lambda u: u.inflight == 2, 10), upstream.stats()
        shown = t.wait_for(lambda out, err: "0/2" in err, 3)
        seen_err = t.err
    finally:
        upstream.release("live")
        rc = t.finish()
    assert rc == 0, (rc, t.out, t.err)
    assert shown, "no progress line while both requests waited: stderr %r" % seen_err


def test_closed_standard_output_stops_the_run(daemon, upstream):
    """`fanout ... | head -1`: once nobody reads the results, fanout ends (it does not fetch
    the whole list for nobody)."""
    d = daemon()
    n = 200
    urls = "".join(upstream.url("/delay/50?i=%d" % i) + "\n" for i in range(n)).encode()
    p = start_fanout(d, "-c", "2", stdin=subprocess.PIPE)
    p.stdin.write(urls)
    p.stdin.close()
    first = p.stdout.readline()
    assert json.loads(first)["status"] == 200
    p.stdout.close()
    t0 = time.monotonic()
    try:
        rc = p.wait(15)  # the whole list would take 200 x 50 ms / 2 = 5 s
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    err = p.stderr.read().decode("utf-8", "replace")
    p.stderr.close()
    assert not sanitizer_lines(err), err
    took = time.monotonic() - t0
    assert rc != 0, (rc, took, err)
    assert took < 2 and upstream.count("/delay") < n // 2, (took, upstream.count("/delay"), err)


def test_output_that_cannot_be_written_is_an_error(daemon, upstream):
    """Results buffered for the pipe are written at the end too: a failed last write
    (here a full disk) is reported and makes the exit status 1, not 0."""
    d = daemon()
    with open("/dev/full", "wb") as full:
        p = subprocess.run([fanout_bin(), "--connect", "unix:" + d.sock, upstream.url("/ok")],
                           stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE,
                           timeout=20, env=fanout_env())
    err = p.stderr.decode("utf-8", "replace")
    assert not sanitizer_lines(err), err
    assert p.returncode == 1 and "standard output: No space left on device" in err, (p.returncode, err)

def test_version_and_help():
    p = subprocess.run([fanout_bin(), "-V"], capture_output=True, timeout=10, env=fanout_env())
    assert p.returncode == 0 and re.match(rb"fanout \d+\.\d+", p.stdout), p
    p = subprocess.run([fanout_bin(), "-h"], capture_output=True, timeout=10, env=fanout_env())
    assert p.returncode == 0 and b"usage: fanout" in p.stdout and b"--connect" in p.stdout, p


# --- a long list through standard input -----------------------------------------------------

NGINX_CONF = """
worker_processes 2;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
%(temp_paths)s
  server {
    listen 127.0.0.1:%(port)d;
    location / { default_type text/plain; return 200 "ok\\n"; }
  }
}
"""


@pytest.fixture
def nginx_plain():
    """nginx answering 200 "ok\\n" to everything over plain HTTP; yields its port."""
    if not os.access(harness.NGINX, os.X_OK):
        pytest.skip("nginx is not installed")
    with harness.nginx(NGINX_CONF) as port:
        yield port


def vm_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def test_a_long_list_streams_through_standard_input(daemon, nginx_plain):
    if not os.access(RELEASE_FANOUT, os.X_OK):
        pytest.skip("the release build ./fanout is absent (make fanout)")
    d = daemon(max_per_host=32)
    n = BIG_N
    origins = ["http://%s:%d" % (h, nginx_plain) for h in ("a.test", "b.test", "c.test", "d.test")]
    cmd = [RELEASE_FANOUT, "--connect", "unix:" + d.sock, "-p", "16", "-c", "128", "--no-headers"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=fanout_env(), bufsize=0)
    t0 = time.monotonic()
    marks = {}
    writer_error = []

    def write():
        # A steady pace: 2,000 lines every 10 ms at most (200,000 lines/s; backpressure
        # from fanout slows it when the daemon cannot keep up).
        try:
            step = 2000
            for start in range(0, n, step):
                chunk = "".join("%s/item/%d\n" % (origins[i % 4], i) for i in range(start, min(n, start + step)))
                if start == 0:
                    marks["first_written"] = time.monotonic()
                p.stdin.write(chunk.encode())
                time.sleep(0.01)  # pacing the writer, not synchronisation
            marks["last_written"] = time.monotonic()
            p.stdin.close()
        except (BrokenPipeError, OSError) as e:
            writer_error.append(e)

    err_chunks = []
    ter = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()), daemon=True)
    wt = threading.Thread(target=write, daemon=True)
    ter.start()
    wt.start()
    seen = bytearray(n)
    count = 0
    summary = None
    statuses = {}
    hwm = 0
    buf = b""
    deadline = t0 + 75
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 1.0)
            if not r:
                continue
            data = os.read(p.stdout.fileno(), 1 << 20)
            if not data:
                break
            if "first_result" not in marks:
                marks["first_result"] = time.monotonic()
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                o = json.loads(line)
                if "summary" in o:
                    assert summary is None
                    summary = o["summary"]
                    continue
                assert summary is None, "a result after the summary"
                i = o["index"]
                assert not seen[i], "index %d twice" % i
                seen[i] = 1
                count += 1
                st = o.get("status", o.get("error", {}).get("kind"))
                statuses[st] = statuses.get(st, 0) + 1
                assert o["url"].endswith("/item/%d" % i)
            v = vm_hwm_kib(p.pid)
            if v:
                hwm = max(hwm, v)
        else:
            raise AssertionError("no end of output within 75 s: %d results" % count)
        p.wait(10)
    finally:
        if p.returncode is None:
            p.kill()
            p.wait(5)
        wt.join(10)
        ter.join(10)
    elapsed = time.monotonic() - t0
    # VmHWM, sampled as output arrives (it only grows; fanout's last moments add nothing).
    # Not ru_maxrss: Linux carries the forking parent's (this Python's) peak across exec.
    peak = hwm
    report = ("%d URLs in %.1f s; fanout peak RSS (VmHWM) %d KiB; first result %.3f s after the "
              "first line was written, last line written %.2f s after it" % (
                  n, elapsed, peak, marks["first_result"] - marks["first_written"],
                  marks.get("last_written", float("nan")) - marks["first_written"]))
    print(report)
    assert not writer_error, writer_error
    assert p.returncode == 0, (p.returncode, err_chunks, report)
    assert count == n and summary is not None, (count, statuses, report)
    assert summary["total"] == n and summary["responses"] == n and summary["complete"] is True, summary
    assert statuses == {200: n}, statuses
    assert marks["first_result"] < marks["last_written"], report
    assert peak < RSS_LIMIT_KIB, report

"""Batch intake: the request shape, document-level 400/413, per-request invalid_request,
and that nothing a caller smuggles into a URL, method or header reaches an upstream."""

import json

import pytest


def echo_of(result):
    assert result.get("status") == 200, result
    assert result["body_encoding"] == "json", result
    return result["body"]


def test_bare_string_is_a_get(daemon, upstream):
    d = daemon()
    bs = d.batch([upstream.url("/echo?x=1")])
    body = echo_of(bs[0])
    assert body["method"] == "GET" and body["target"] == "/echo?x=1"
    (req,) = upstream.reqs()
    assert req.method == "GET" and req.version == "HTTP/1.1"
    assert req.header_all("Host") == [upstream.authority]
    assert req.body == b""
    assert bs[0]["url"] == upstream.url("/echo?x=1") and "final_url" not in bs[0]


def test_request_object_fields(daemon, upstream):
    d = daemon()
    bs = d.batch([
        {"url": upstream.url("/echo"), "method": "PUT", "headers": {"X-A": "1"}, "body": "hello", "id": "u1"},
        {"url": upstream.url("/echo"), "method": "POST", "json": {"k": [1, "two"]}, "id": 7},
        {"url": upstream.url("/echo"), "method": "PURGE"},
    ])
    assert bs[0]["id"] == "u1" and bs[1]["id"] == 7 and "id" not in bs[2]
    by_method = {r.method: r for r in upstream.reqs()}
    put = by_method["PUT"]
    assert put.body == b"hello" and put.header_all("Content-Length") == ["5"] and put.header("X-A") == "1"
    post = by_method["POST"]
    assert json.loads(post.body) == {"k": [1, "two"]}
    assert post.header_all("Content-Type") == ["application/json"]
    assert post.header_all("Content-Length") == [str(len(post.body))]
    assert "PURGE" in by_method
    assert echo_of(bs[1])["body"] == post.body.decode()


def test_options_headers_are_defaults_a_request_header_wins(daemon, upstream):
    d = daemon()
    d.batch([{"url": upstream.url("/echo"), "headers": {"x-both": "req"}}, upstream.url("/echo")],
            {"headers": {"X-Def": "d", "X-Both": "opt"}})
    reqs = upstream.reqs()
    assert [r.header_all("X-Def") for r in reqs] == [["d"], ["d"]]
    both = sorted(tuple(r.header_all("X-Both")) for r in reqs)
    assert both == [("opt",), ("req",)]


def test_host_header_equal_to_authority_is_accepted(daemon, upstream):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/echo"), "headers": {"Host": upstream.authority}}])
    assert bs[0]["status"] == 200
    assert upstream.reqs()[0].header_all("Host") == [upstream.authority]


def test_host_header_differing_from_authority_is_invalid(daemon, upstream):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/echo"), "headers": {"Host": "evil.example"}}, upstream.url("/ok")])
    assert bs[0]["error"]["kind"] == "invalid_request"
    assert "host" in bs[0]["error"]["message"].lower()
    assert bs[1]["status"] == 200
    assert [r.path for r in upstream.reqs()] == ["/ok"]


# --- 400: the document --------------------------------------------------------------

URL = "http://127.0.0.1:1/ok"  # replaced by the upstream's URL in each case

BAD_DOCS = [
    ("not json", b"this is not json", None),
    ("truncated json", b'{"requests": ["URL"', None),
    ("array", b'["URL"]', None),
    ("requests missing", b'{"options": {}}', "requests"),
    ("requests not array", b'{"requests": "URL"}', "requests"),
    ("requests empty", b'{"requests": []}', "requests"),
    ("bad element", b'{"requests": ["URL", "URL", "URL", 5]}', "requests[3]"),
    ("null element", b'{"requests": [null]}', "requests[0]"),
    ("unknown top key", b'{"requests": ["URL"], "extra": 1}', "extra"),
    ("unknown option", b'{"requests": ["URL"], "options": {"bogus": 1}}', "bogus"),
    ("options not object", b'{"requests": ["URL"], "options": 3}', "options"),
    ("concurrency 0", b'{"requests": ["URL"], "options": {"concurrency": 0}}', "options.concurrency"),
    ("concurrency string", b'{"requests": ["URL"], "options": {"concurrency": "4"}}', "options.concurrency"),
    ("per_host 0", b'{"requests": ["URL"], "options": {"per_host": 0}}', "options.per_host"),
    ("negative timeout", b'{"requests": ["URL"], "options": {"timeout_ms": -1}}', "options.timeout_ms"),
    # An option's bounds are its configuration key's (doc/config.md).
    ("timeout over its bound", b'{"requests": ["URL"], "options": {"timeout_ms": 3600001}}',
     "options.timeout_ms: must be between 1 and 3600000"),
    ("connect timeout over its bound", b'{"requests": ["URL"], "options": {"connect_timeout_ms": 3600001}}',
     "options.connect_timeout_ms: must be between 1 and 3600000"),
    ("redirects over their bound", b'{"requests": ["URL"], "options": {"follow_redirects": 21}}',
     "options.follow_redirects: must be between 0 and 20"),
    ("deadline over its bound", b'{"requests": ["URL"], "options": {"deadline_ms": 86400001}}',
     "options.deadline_ms: must be between 0 and 86400000"),
    ("retries over their bound", b'{"requests": ["URL"], "options": {"retries": 11}}', "options.retries"),
    ("negative retries", b'{"requests": ["URL"], "options": {"retries": -1}}', "options.retries"),
    ("body mode", b'{"requests": ["URL"], "options": {"body": "xml"}}', "options.body"),
    ("order", b'{"requests": ["URL"], "options": {"order": "random"}}', "options.order"),
    ("include_headers", b'{"requests": ["URL"], "options": {"include_headers": "yes"}}', "options.include_headers"),
    ("headers not object", b'{"requests": ["URL"], "options": {"headers": ["a"]}}', "options.headers"),
    ("CRLF in options header", b'{"requests": ["URL"], "options": {"headers": {"X-A": "a\\r\\nX-Injected: 1"}}}',
     "options.headers"),
    ("LF in options header", b'{"requests": ["URL"], "options": {"headers": {"X-A": "a\\nb"}}}', "options.headers"),
]


@pytest.mark.parametrize("name,doc,place", BAD_DOCS, ids=[b[0] for b in BAD_DOCS])
def test_document_errors_are_400(daemon, upstream, name, doc, place):
    d = daemon()
    doc = doc.replace(b"URL", upstream.url("/ok").encode())
    bs = d.client().stream_batch(None, body=doc)
    assert bs.status == 400, (bs.status, bs.error_body)
    assert bs.resp.content_type == "application/json"
    err = bs.error()["error"]
    assert err["kind"] == "bad_request"
    if place:
        assert place in err["message"], err
    assert upstream.stats()["connections"] == 0  # nothing was fetched


def test_document_over_max_request_bytes_is_413(daemon, upstream):
    d = daemon(max_request_bytes=2048)
    small = [upstream.url("/ok?pad=" + "x" * 100)] * 5
    bs = d.batch(small)  # under the limit: fine
    assert bs.summary["responses"] == 5
    big = [upstream.url("/ok?pad=" + "x" * 100)] * 30
    bs = d.client().stream_batch(big)
    assert bs.status == 413
    # The contract wants the JSON error here; doc/api.md says libevent's own 413
    # (HTML) answers before the body is read. Check the JSON when it is JSON.
    if bs.resp.content_type == "application/json":
        assert bs.error()["error"]["kind"] == "too_large"
    assert upstream.count() == 5


def test_more_than_max_batch_requests_is_413(daemon, upstream):
    d = daemon(max_batch=5)
    assert d.batch([upstream.url("/ok")] * 5).summary["responses"] == 5
    bs = d.client().stream_batch([upstream.url("/ok")] * 6)
    assert bs.status == 413
    assert bs.error()["error"]["kind"] == "too_large"
    assert upstream.count() == 5


# --- invalid_request: one request --------------------------------------------------

def bad_requests(up):
    ok = up.url("/echo")
    base = "http://%s" % up.authority
    return [
        (base + "/a b", "url"),
        (base + "/a\tb", "url"),
        (base + "/a\x01b", "url"),
        (base + "/a\x7fb", "url"),
        (base + "/ok HTTP/1.1\r\nX-Injected: 1\r\n\r\n", "url"),
        (base + "/ok\nX-Injected: 1", "url"),
        ("http://127.0.0.1\r\nX-Injected: 1:%d/ok" % up.port, "url"),
        ("ftp://%s/ok" % up.authority, 'url: unsupported scheme "ftp"'),
        ("http:///ok", "url"),
        ("http://user:pw@%s/ok" % up.authority, "url"),
        ("http://", "url"),
        ("not a url", "url"),
        ("", "url"),
        ({"method": "GET"}, "url"),
        ({"url": 5}, "url"),
        ({"url": ok, "method": "GE T"}, "method"),
        ({"url": ok, "method": "GET\r\nX-Injected: 1"}, "method"),
        ({"url": ok, "method": "GET /x HTTP/1.1\r\nX-Injected:"}, "method"),
        ({"url": ok, "method": ""}, "method"),
        ({"url": ok, "method": 5}, "method"),
        ({"url": ok, "headers": {"X Bad": "1"}}, "headers"),
        ({"url": ok, "headers": {"X-A:": "1"}}, "headers"),
        ({"url": ok, "headers": {"": "1"}}, "headers"),
        ({"url": ok, "headers": {"X-A": "1\r\nX-Injected: 1"}}, "headers"),
        ({"url": ok, "headers": {"X-A": "1\nX-Injected: 1"}}, "headers"),
        ({"url": ok, "headers": {"X-A": "1\rX-Injected: 1"}}, "headers"),
        ({"url": ok, "headers": {"X-A": "a\u0000b"}}, "headers"),
        ({"url": ok, "headers": {"X-Injected\r\nX-B": "1"}}, "headers"),
        ({"url": ok, "headers": {"X-A": 5}}, "headers"),
        ({"url": ok, "headers": ["X-A: 1"]}, "headers"),
        ({"url": ok, "bogus": 1}, "bogus"),
        ({"url": ok, "body": "a", "json": {}}, "json"),
        ({"url": ok, "body": 5}, "body"),
        ({"url": ok, "timeout_ms": "soon"}, "timeout_ms"),
        ({"url": ok, "timeout_ms": 3600001}, "timeout_ms: must be between 1 and 3600000"),
        ({"url": ok, "id": [1]}, "id"),
    ]


def test_invalid_requests_get_their_own_error_and_the_others_run(daemon, upstream):
    d = daemon()
    cases = bad_requests(upstream)
    reqs = []
    for bad, _ in cases:
        reqs += [bad, upstream.url("/ok?i=%d" % len(reqs))]
    bs = d.batch(reqs)
    for i, (bad, place) in enumerate(cases):
        r = bs[2 * i]
        assert r.get("error", {}).get("kind") == "invalid_request", (bad, r)
        assert place.lower() in r["error"]["message"].lower(), (bad, r["error"])
        assert bs[2 * i + 1]["status"] == 200
    assert bs.summary["errors"] == len(cases) and bs.summary["responses"] == len(cases)
    # Only the good ones reached the upstream, and nothing was injected anywhere.
    assert sorted(r.target for r in upstream.reqs()) == sorted("/ok?i=%d" % (2 * i) for i in range(len(cases)))
    for r in upstream.reqs():
        assert b"X-Injected" not in r.raw_head and b"x-injected" not in r.raw_head.lower(), r.raw_head


def test_invalid_request_alone_gives_a_valid_document(daemon):
    d = daemon()
    bs = d.batch(["ftp://example.test/x"])
    assert bs.kinds() == ["invalid_request"]
    assert bs.summary == dict(bs.summary, total=1, responses=0, errors=1, complete=True)


def test_daemon_sets_framing_headers_itself(daemon, upstream):
    d = daemon()
    bs = d.batch([{"url": upstream.url("/echo"), "method": "POST", "body": "abc", "headers": {"X-Keep": "k"}},
                  upstream.url("/echo")])
    assert bs[0]["status"] == 200 and bs[1]["status"] == 200
    post, get = sorted(upstream.reqs(), key=lambda r: r.method, reverse=True)
    assert post.header_all("Content-Length") == ["3"] and post.body == b"abc"
    assert post.header_all("Transfer-Encoding") == [] and get.header_all("Transfer-Encoding") == []
    assert get.header("Content-Length", "0") == "0" and get.body == b""
    assert len(post.header_all("Connection")) <= 1
    assert post.header("X-Keep") == "k"
    assert post.header_all("Host") == [upstream.authority]

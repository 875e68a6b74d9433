"""HTTP/2 against nginx (`listen ... ssl http2`), the server most APIs sit behind: one
connection for a batch that fits its stream limit, gzip, HEAD, a POST body, and nginx's
own count of connections and requests (stub_status)."""

import os
import re

import pytest

import harness

CONF = """
worker_processes 1;
events { worker_connections 256; }
http {
  access_log %(dir)s/access.log;
%(temp_paths)s
  server {
    listen 127.0.0.1:%(port)d ssl http2;
    ssl_certificate %(cert)s;
    ssl_certificate_key %(key)s;
    http2_max_concurrent_streams 64;
    gzip on; gzip_min_length 1; gzip_types text/plain;
    location = /ok { default_type text/plain; return 200 "ok from nginx\\n"; }
    location = /text { default_type text/plain; return 200 "%(text)s\\n"; }
    location = /post { default_type text/plain; return 200 "$request_method $content_length\\n"; }
    location = /status { stub_status; }
  }
}
"""


@pytest.fixture
def nginx(pki):
    if not os.access(harness.NGINX, os.X_OK):
        pytest.skip("nginx is not installed")
    cert, key = pki.certs["good"]
    with harness.nginx(CONF, cert=cert, key=key, text="a" * 2000) as port:
        yield port


def stub_status(d, port):
    """nginx's accepted connections and requests, read through fanoutd itself."""
    r = d.batch(["https://a.test:%d/status" % port], {"http2": False})[0]
    m = re.search(r"\n\s*(\d+)\s+(\d+)\s+(\d+)", r["body"])
    return int(m.group(1)), int(m.group(3))


def test_nginx_h2_one_connection_for_a_batch(daemon, pki, nginx):
    d = daemon(ca_file=pki.ca_file, idle_timeout_s=0)
    accepts0, requests0 = stub_status(d, nginx)
    urls = ["https://a.test:%d/ok?i=%d" % (nginx, i) for i in range(60)]
    bs = d.batch(urls, {"per_host": 8, "concurrency": 256})
    assert [r["status"] for r in bs.results_by_index] == [200] * 60
    assert {r["protocol"] for r in bs.arrival} == {"h2"}
    assert bs[0]["body"] == "ok from nginx\n"
    accepts, requests = stub_status(d, nginx)
    # One connection for the batch's 60 requests, one for the second status read.
    assert (accepts - accepts0, requests - requests0) == (2, 61)


def test_nginx_h2_gzip_head_and_post(daemon, pki, nginx):
    d = daemon(ca_file=pki.ca_file)
    base = "https://a.test:%d" % nginx
    bs = d.batch([base + "/text", {"url": base + "/ok", "method": "HEAD"},
                  {"url": base + "/post", "method": "POST", "body": "x" * 5000}])
    text, head, post = bs.results_by_index
    assert text["headers"]["content-encoding"] == "gzip" and text["body"] == "a" * 2000 + "\n"
    assert head["status"] == 200 and head["bytes"] == 0 and head["protocol"] == "h2"
    assert post["body"] == "POST 5000\n"

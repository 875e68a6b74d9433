"""HTTP/2 against nginx (`listen ... ssl http2`), the server most APIs sit behind: one
connection for a batch that fits its stream limit, gzip, HEAD, a POST body, and nginx's
own count of connections and requests (stub_status)."""

import os
import re
import shutil
import subprocess
import time

import pytest

import harness

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """
daemon off;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 256; }
http {
  access_log %(dir)s/access.log;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi;
  uwsgi_temp_path %(dir)s/uwsgi;
  scgi_temp_path %(dir)s/scgi;
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
    d = harness.short_tmpdir("fo-nginx-")
    port = harness.free_port()
    cert, key = pki.certs["good"]
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(CONF % {"dir": d, "port": port, "cert": cert, "key": key, "text": "a" * 2000})
    proc = subprocess.Popen([NGINX, "-c", os.path.join(d, "nginx.conf"), "-p", d],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            harness.socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("nginx did not start: %s" % proc.stderr.read().decode())
            time.sleep(0.02)  # polling a port a child is about to open; bounded
    yield port
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


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

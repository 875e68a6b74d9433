"""The anchors of scripts/bench's work item A (HTTPS, HTTP/2 origins): h2load, curl
--parallel over TLS (HTTP/2, and --http1.1) and aiohttp over TLS, each on the same
URLs as fanoutd, each under /usr/bin/time -v for its peak RSS and CPU.

Every runner returns a dict like those of bench_anchors: requests, ok (responses
counted as right: status 200 and the expected body size, counted by us, never taken
from an exit code), wall_s, cpu_s, peak_rss_kb, req_per_s, mb_per_s, and the
protocols the responses came with.
"""
import json
import os
import re
import subprocess
import time

import bench_anchors

HERE = os.path.dirname(os.path.abspath(__file__))
TIME = bench_anchors.TIME


def h2load_origins(tdir, origin_urls, per_origin, streams, size, timeout=60):
    """One `h2load -n PER_ORIGIN -c 1 -m STREAMS URL` per origin, all started at once
    (HTTP/2 is h2load's default; it does not verify certificates). h2load sends the
    same URL every time and counts what it got: a run is right when every request
    succeeded with a 2xx status and the DATA bytes are exactly 2xx count x size (it
    does not give per-response sizes, so the size check is on the total).

    wall_s is the slowest process's own "finished in" (from its first connect,
    handshake included, to its last response: the client's work, as fanoutd's wall
    is from the POST to a warm daemon); group_wall_s is the span from starting the
    first process to the end of the last (exec, OpenSSL's start-up and 4 processes
    sharing the cores included: some 50 ms more here)."""
    procs = []
    t0 = time.monotonic()
    for k, url in enumerate(origin_urls):
        tfile = os.path.join(tdir, "h2load%d.time" % k)
        cmd = [TIME, "-v", "-o", tfile, "h2load", "-n", str(per_origin), "-c", "1", "-m", str(streams), url]
        procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE), tfile, url))
    outs = []
    for p, tfile, url in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate(timeout=5)
        outs.append((out.decode(errors="replace"), err.decode(errors="replace"), tfile, url))
    wall = time.monotonic() - t0
    ok = n2xx_all = nbytes = 0
    own = []
    bad = {}
    protocols = {}
    cpu = rss = 0
    for text, err, tfile, url in outs:
        m = re.search(r"finished in ([\d.]+)(us|ms|s),", text)
        if m:
            own.append(float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)])
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", text)
        succeeded = int(m.group(4)) if m else 0
        if m and int(m.group(5)) + int(m.group(6)) + int(m.group(7)):
            bad["failed/errored/timeout"] = bad.get("failed/errored/timeout", 0) + \
                int(m.group(5)) + int(m.group(6)) + int(m.group(7))
        m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        n2xx = int(m.group(1)) if m else 0
        if m and sum(int(g) for g in m.groups()[1:]):
            bad["non-2xx"] = bad.get("non-2xx", 0) + sum(int(g) for g in m.groups()[1:])
        m = re.search(r"\((\d+)\) data", text)
        data = int(m.group(1)) if m else -1
        m = re.search(r"Application protocol: (\S+)", text)
        proto = m.group(1) if m else "?"
        protocols[proto] = protocols.get(proto, 0) + n2xx
        right = min(n2xx, succeeded)
        if data != right * size:
            bad["data bytes %d for %d responses" % (data, right)] = right
            right = 0
        if not own or not text:
            bad["no output: " + err[-200:]] = 1
        ok += right
        n2xx_all += n2xx
        nbytes += max(data, 0)
        tv = bench_anchors.time_v(tfile)
        cpu += tv["cpu_s"]
        rss += tv.get("peak_rss_kb", 0)
    n = per_origin * len(origin_urls)
    if len(own) == len(origin_urls):
        own_wall = max(own)
    else:  # a process said nothing: its run is wrong anyway (ok counts it), time the group
        own_wall = wall
    return {"requests": n, "ok": ok, "bad": bad, "wall_s": own_wall, "group_wall_s": wall,
            "h2load_walls_s": own, "cpu_s": cpu, "peak_rss_kb": rss, "req_per_s": n / own_wall,
            "mb_per_s": nbytes / own_wall / 1e6, "protocols": protocols, "processes": len(origin_urls),
            "streams_each": streams}


def curl_parallel_tls(tdir, urls, parallel, size, ca, http1=False, timeout=120):
    """`curl --parallel --parallel-max N --cacert CA -K cfg` (HTTP/2 by ALPN, curl's
    default for https; it waits for a connection to multiplex on rather than open
    more, --parallel-immediate being off), or the same with --http1.1. -w prints
    status, body size and HTTP version of every transfer; we count them."""
    name = "curl_h1" if http1 else "curl_h2"
    cfg = os.path.join(tdir, name + ".cfg")
    with open(cfg, "w") as f:
        for u in urls:
            f.write('url = "%s"\noutput = "/dev/null"\n' % u)
    cmd = ["curl", "-sS", "--parallel", "--parallel-max", str(parallel), "--cacert", ca]
    if http1:
        cmd.append("--http1.1")
    cmd += ["-K", cfg, "-w", "%{http_code} %{size_download} %{http_version}\\n"]
    p, tv, wall = bench_anchors.run_timed(cmd, tdir, name, timeout)
    ok = nbytes = lines = 0
    bad = {}
    protocols = {}
    want = "200 %d" % size
    for line in p.stdout.decode().splitlines():
        lines += 1
        status_size, _, version = line.rpartition(" ")
        protocols[version] = protocols.get(version, 0) + 1
        if status_size == want:
            ok += 1
        else:
            bad[line] = bad.get(line, 0) + 1
        try:
            nbytes += int(line.split()[1])
        except (IndexError, ValueError):
            pass
    return {"requests": len(urls), "ok": ok, "results": lines, "bad": bad, "wall_s": wall,
            "cpu_s": tv["cpu_s"], "peak_rss_kb": tv.get("peak_rss_kb", 0), "exit": tv.get("exit"),
            "req_per_s": len(urls) / wall, "mb_per_s": nbytes / wall / 1e6, "protocols": protocols,
            "stderr": p.stderr.decode()[-500:]}


def aiohttp_gather_tls(tdir, urls, limit, per_host, size, ca, timeout=180):
    """bench_aiohttp.py as it is (TCPConnector(limit, limit_per_host), asyncio.gather,
    status and len(body) checked), told to trust the test CA by SSL_CERT_FILE: its
    default context is ssl.create_default_context(), whose default verify paths
    OpenSSL takes from that variable. aiohttp speaks HTTP/1.1 only (no ALPN h2)."""
    ufile = os.path.join(tdir, "aiohttp_tls.urls")
    with open(ufile, "w") as f:
        f.write("\n".join(urls) + "\n")
    tfile = os.path.join(tdir, "aiohttp_tls.time")
    cmd = [TIME, "-v", "-o", tfile, "/usr/bin/python3", os.path.join(HERE, "bench_aiohttp.py"), ufile,
           str(limit), str(per_host), str(size)]
    env = dict(os.environ, SSL_CERT_FILE=ca)
    env.pop("SSL_CERT_DIR", None)
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=env)
    wall = time.monotonic() - t0
    tv = bench_anchors.time_v(tfile)
    try:
        r = json.loads(p.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        r = {"requests": len(urls), "ok": 0, "bytes": 0, "wall_s": wall, "cpu_s": tv["cpu_s"],
             "error": p.stderr.decode()[-500:]}
    r["process_wall_s"] = wall
    r["process_cpu_s"] = tv["cpu_s"]
    r["peak_rss_kb"] = tv.get("peak_rss_kb", 0)
    r["req_per_s"] = r["requests"] / r["wall_s"]
    r["mb_per_s"] = r["bytes"] / r["wall_s"] / 1e6
    r["protocols"] = {"http/1.1": r["ok"]}  # aiohttp has no HTTP/2
    return r

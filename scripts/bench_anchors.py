"""The anchors of scripts/bench: wrk, curl --parallel and aiohttp, each run on the
same URLs and limits as fanoutd, each under /usr/bin/time -v for its peak RSS and CPU.

Every runner returns a dict with at least: requests, ok (responses counted as right:
status 200 and the expected body size, counted by us, not taken from an exit code),
wall_s, cpu_s, peak_rss_kb, req_per_s, mb_per_s (body bytes only, 1 MB = 1e6 bytes).
"""
import json
import os
import re
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TIME = "/usr/bin/time"


def time_v(path):
    """The figures of one `/usr/bin/time -v -o path` report."""
    out = {}
    with open(path) as f:
        for line in f:
            key, _, val = line.strip().rpartition(": ")
            if key == "Maximum resident set size (kbytes)":
                out["peak_rss_kb"] = int(val)
            elif key == "User time (seconds)":
                out["user_s"] = float(val)
            elif key == "System time (seconds)":
                out["sys_s"] = float(val)
            elif key == "Exit status":
                out["exit"] = int(val)
            elif key.startswith("Elapsed (wall clock) time"):
                parts = [float(p) for p in val.split(":")]
                secs = 0.0
                for p in parts:
                    secs = secs * 60 + p
                out["time_wall_s"] = secs
    out["cpu_s"] = out.get("user_s", 0.0) + out.get("sys_s", 0.0)
    return out


def run_timed(cmd, tdir, name, timeout, stdout=subprocess.PIPE):
    """Runs cmd under /usr/bin/time -v; returns (CompletedProcess, time figures, wall)."""
    tfile = os.path.join(tdir, name + ".time")
    t0 = time.monotonic()
    p = subprocess.run([TIME, "-v", "-o", tfile] + cmd, stdout=stdout, stderr=subprocess.PIPE,
                       timeout=timeout)
    wall = time.monotonic() - t0
    return p, time_v(tfile), wall


def curl_parallel(tdir, urls, parallel, size, timeout=120):
    """One `curl --parallel --parallel-max N -K cfg`: cfg has `url` and `output =
    /dev/null` per URL; `-w` prints status and size of every transfer, which we count.
    curl 7.88 has no per-host limit (only the global --parallel-max)."""
    cfg = os.path.join(tdir, "curl.cfg")
    with open(cfg, "w") as f:
        for u in urls:
            f.write('url = "%s"\noutput = "/dev/null"\n' % u)
    cmd = ["curl", "-sS", "--parallel", "--parallel-max", str(parallel), "-K", cfg,
           "-w", "%{http_code} %{size_download}\\n"]
    p, tv, wall = run_timed(cmd, tdir, "curl", timeout)
    ok = nbytes = lines = 0
    bad = {}
    want = "200 %d" % size
    for line in p.stdout.decode().splitlines():
        lines += 1
        if line == want:
            ok += 1
        else:
            bad[line] = bad.get(line, 0) + 1
        try:
            nbytes += int(line.split()[1])
        except (IndexError, ValueError):
            pass
    return {"requests": len(urls), "ok": ok, "results": lines, "bad": bad, "wall_s": wall,
            "cpu_s": tv["cpu_s"], "peak_rss_kb": tv.get("peak_rss_kb", 0), "exit": tv.get("exit"),
            "req_per_s": len(urls) / wall, "mb_per_s": nbytes / wall / 1e6,
            "stderr": p.stderr.decode()[-500:]}


def aiohttp_gather(tdir, urls, limit, per_host, size, timeout=180):
    """bench_aiohttp.py: asyncio.gather over every URL with TCPConnector(limit,
    limit_per_host); it counts status and len(body) itself and times the fetching."""
    ufile = os.path.join(tdir, "aiohttp.urls")
    with open(ufile, "w") as f:
        f.write("\n".join(urls) + "\n")
    cmd = ["/usr/bin/python3", os.path.join(HERE, "bench_aiohttp.py"), ufile, str(limit),
           str(per_host), str(size)]
    p, tv, wall = run_timed(cmd, tdir, "aiohttp", timeout)
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
    return r


WRK_LUA = """
-- cycles through this port's share of the work item's URLs, requests built once
local reqs = {}
local j = 0
init = function(args)
  for i = %(first)d, %(count)d - 1, %(step)d do
    reqs[#reqs + 1] = wrk.format(nil, "%(path)s?i=" .. i)
  end
end
request = function()
  j = j %% #reqs + 1
  return reqs[j]
end
"""


def wrk_ports(tdir, ports, path, count, conns, size, duration):
    """One wrk per port (-t1 -cCONNS) for a fixed duration, all at once; each cycles
    through that port's share of the item's URLs (?i=k for k = the port's index modulo the number of ports).
    Duration based, so an anchor of the client-side ceiling, not a correctness check:
    we still read its non-2xx count and socket errors. Req/s are summed; peak RSS and
    CPU are the sums over the processes (they run together)."""
    procs = []
    t0 = time.monotonic()
    for k, port in enumerate(ports):
        lua = os.path.join(tdir, "wrk%d.lua" % k)
        with open(lua, "w") as f:
            f.write(WRK_LUA % {"first": k, "count": count, "step": len(ports), "path": path})
        tfile = os.path.join(tdir, "wrk%d.time" % k)
        cmd = [TIME, "-v", "-o", tfile, "wrk", "-t1", "-c%d" % conns, "-d%gs" % duration,
               "--timeout", "10s", "-s", lua, "http://127.0.0.1:%d%s" % (port, path)]
        procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE), tfile))
    reqs = non2xx = errors = 0
    rps = 0.0
    secs = []
    cpu = rss = 0
    for p, tfile in procs:
        out, _ = p.communicate(timeout=duration + 30)
        text = out.decode()
        m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
        if m:
            n, d = int(m.group(1)), float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
            reqs += n
            secs.append(d)
            rps += n / d
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if m:
            non2xx += int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        if m:
            errors += sum(int(g) for g in m.groups())
        tv = time_v(tfile)
        cpu += tv["cpu_s"]
        rss += tv.get("peak_rss_kb", 0)
    wall = time.monotonic() - t0
    dur = max(secs) if secs else duration
    return {"requests": reqs, "ok": reqs - non2xx, "non2xx": non2xx, "socket_errors": errors,
            "duration_s": dur, "wall_s": dur, "process_wall_s": wall, "cpu_s": cpu,
            "peak_rss_kb": rss, "req_per_s": rps, "mb_per_s": rps * size / 1e6,
            "processes": len(ports), "conns_each": conns}

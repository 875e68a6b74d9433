"""The two figures of scripts/bench that do not depend on machine noise.

instructions(): instructions per upstream request, counted by valgrind's callgrind
  (perf stat has no instruction counter on this kind of VM: `perf stat -e
  instructions true` says <not supported>). The daemon runs under callgrind twice,
  each time one fixed T-shaped batch (1 KiB GETs over 8 ports, <=64 in flight, <=8
  per port, body text) of N1 and N2 URLs, then SIGTERM. Start-up, the batch's own
  fixed costs, opening the connections and shutdown are the same in both runs, so
  (Ir(N2) - Ir(N1)) / (N2 - N1) is the marginal cost of one more request on a warm
  keep-alive connection: parsing it, queueing, sending, reading the response,
  writing the result. This is the figure to watch when optimising.

memory(): peak RSS against batch size. A fresh daemon per size; the batch asks for
  the 100 ms /delay path with concurrency 8 (per_host 1), so all but 8 requests are
  really queued (checked with fanoutd_requests_queued) while we read the peak. We
  read VmHWM once the first result has arrived and /metrics shows every request
  queued, in flight or finished (the daemon may take a batch in slices), after
  watching VmRSS for a moment; bytes per queued request =
  (VmHWM - idle VmRSS before - document size) / URLs, the document being what the
  daemon holds as the batch. Then we close the connection, which cancels the batch
  (doc/api.md), wait until the daemon has no batch and nothing in flight, and read
  the idle RSS again: it should come back near where it started.

memory_h2(): the same figure on HTTP/2 (work M2: 1,000 and 10,000 URLs; M2X: and
  100,000). A fresh daemon per size sends the batch to ONE HTTP/2 origin (nginx
  `listen ... ssl http2`, /small: 1 KiB at once) with concurrency 256, per_host 8,
  body none, and the batch runs to its end (every result read and checked: status
  200, 1,024 bytes, protocol h2). The answers come at once, so requests wait not on
  the upstream but for one of the 256 slots, the rest queued behind them; a thread
  reads fanoutd_requests_queued from /metrics every 10 ms to show how many really
  were queued at once (the daemon takes the batch in slices of 512 while it
  dispatches). Bytes per queued request = (VmHWM after the batch - idle VmRSS
  before - document size) / URLs, as above; the idle RSS is read again once the
  batch is over (its HTTP/2 connections stay open, idle). The caller passes
  `measure`, which adds what the origin saw (nginx's accepted connections, requests
  and their protocol).
"""
import json
import os
import threading
import time


def metrics(fd):
    """The daemon's /metrics as {name: value} (labelled series keep their labels)."""
    conn = fd.connection(10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, val = line.rpartition(" ")
            try:
                out[name] = float(val)
            except ValueError:
                pass
    return out


def callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return None


def instructions(Fanoutd, run_batch, workdir, fanoutd_conf, urls_for, n1=1000, n2=5000):
    options = {"concurrency": 64, "per_host": 8, "body": "text"}
    runs = {}
    for n in (n1, n2):
        d = os.path.join(workdir, "callgrind%d" % n)
        os.makedirs(d)
        out = os.path.join(d, "callgrind.out")
        fd = Fanoutd(d, fanoutd_conf,
                     wrapper=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                              "--log-file=" + os.path.join(d, "valgrind.log")],
                     ready_timeout=120)
        t0 = time.monotonic()
        try:
            r = run_batch(fd, urls_for("/small", n), options, 1024, "text", timeout=600)
        finally:
            fd.stop(timeout=120)
        runs[n] = {"ok": r["ok"], "requests": n, "ir": callgrind_total(out),
                   "seconds": time.monotonic() - t0}
    ok = all(r["ok"] == r["requests"] and r["ir"] for r in runs.values())
    per = (runs[n2]["ir"] - runs[n1]["ir"]) / (n2 - n1) if ok else None
    return {"method": "valgrind --tool=callgrind, (Ir(N2)-Ir(N1))/(N2-N1)",
            "batch": "1 KiB GET over 8 ports, concurrency 64, per_host 8, body text",
            "n1": n1, "n2": n2, "runs": runs, "instructions_per_request": per,
            "whole_run_per_request": runs[n2]["ir"] / n2 if runs[n2]["ir"] else None, "ok": ok}


def memory(Fanoutd, workdir, fanoutd_conf, urls_for, sizes=(1000, 10000, 100000)):
    rows = []
    options = {"concurrency": 8, "per_host": 1, "body": "text"}
    for n in sizes:
        d = os.path.join(workdir, "mem%d" % n)
        os.makedirs(d)
        fd = Fanoutd(d, fanoutd_conf)
        try:
            time.sleep(0.2)
            rss0 = fd.status("VmRSS")
            doc = json.dumps({"requests": urls_for("/delay", n), "options": options}).encode()
            conn = fd.connection(120)
            t0 = time.monotonic()
            conn.request("POST", "/v1/batch?format=ndjson", body=doc)
            resp = conn.getresponse()
            line = resp.readline()  # the first result: dispatching has begun
            first_s = time.monotonic() - t0
            assert resp.status == 200 and b'"status":200' in line, line[:200]
            # The daemon may take the batch in slices over several loop turns: wait
            # until every request is queued, in flight or finished.
            deadline = time.monotonic() + 60
            while True:
                m = metrics(fd)
                queued = m.get("fanoutd_requests_queued", -1)
                in_flight = m.get("fanoutd_requests_in_flight", -1)
                done = sum(v for k, v in m.items() if k.startswith("fanoutd_requests_total"))
                if queued + in_flight + done >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            admitted_s = time.monotonic() - t0
            rss_q = fd.status("VmRSS")
            for _ in range(5):  # watch the peak a little longer; it should not move
                time.sleep(0.05)
                rss_q = max(rss_q, fd.status("VmRSS"))
            hwm = fd.status("VmHWM")
            conn.close()  # cancels the batch
            idle = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                m2 = metrics(fd)
                if m2.get("fanoutd_batches_in_flight", 1) == 0 and \
                        m2.get("fanoutd_requests_in_flight", 1) == 0:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            idle = fd.status("VmRSS")
        finally:
            fd.stop()
        beyond = (hwm - rss0) * 1024 - len(doc)
        rows.append({"urls": n, "document_bytes": len(doc), "idle_rss_kb_before": rss0,
                     "peak_rss_kb": hwm, "rss_while_queued_kb": rss_q, "queued": queued,
                     "in_flight": in_flight, "finished": done, "first_result_s": first_s,
                     "all_admitted_s": admitted_s,
                     "bytes_per_request_beyond_doc": beyond / n, "idle_rss_kb_after": idle})
    slope = None
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        slope = (((b["peak_rss_kb"] - a["peak_rss_kb"]) * 1024 - (b["document_bytes"] - a["document_bytes"]))
                 / (b["urls"] - a["urls"]))
    return {"method": "fresh daemon per size; /delay, concurrency 8, per_host 1; VmHWM after the "
                      "first result; minus idle RSS and the document; cancelled by closing",
            "rows": rows, "marginal_bytes_per_request": slope}


class _QueueWatch:
    """Polls the daemon's /metrics every `every` s on a thread of its own while a
    batch runs: the peak of fanoutd_requests_queued and of fanoutd_h2_streams."""

    def __init__(self, fd, every=0.01):
        self.fd, self.every = fd, every
        self.queued = self.streams = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                m = metrics(self.fd)
                self.queued = max(self.queued, int(m.get("fanoutd_requests_queued", 0)))
                self.streams = max(self.streams, int(m.get("fanoutd_h2_streams", 0)))
                self.polls += 1
            except OSError:
                pass
            self._stop.wait(self.every)

    def stop(self):
        self._stop.set()
        self._thread.join(10)


def memory_h2(Fanoutd, run_batch, workdir, fanoutd_conf, urls_for, measure, sizes=(1000, 10000)):
    """urls_for(n): n URLs of one HTTP/2 origin answering 1 KiB at once; measure(fn):
    runs fn() and adds the origin's view (nginx_conns, nginx_requests, origin_conns,
    origin_protocols)."""
    rows = []
    options = {"concurrency": 256, "per_host": 8, "body": "none"}
    size = 1024
    for n in sizes:
        d = os.path.join(workdir, "memh2_%d" % n)
        os.makedirs(d)
        fd = Fanoutd(d, fanoutd_conf)
        try:
            time.sleep(0.2)
            rss0 = fd.status("VmRSS")
            urls = urls_for(n)
            watch = _QueueWatch(fd)
            try:
                r = measure(lambda: run_batch(fd, urls, options, size, "none", timeout=120))
            finally:
                watch.stop()
            hwm = fd.status("VmHWM")
            m = metrics(fd)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                m2 = metrics(fd)
                if m2.get("fanoutd_batches_in_flight", 1) == 0 and \
                        m2.get("fanoutd_requests_in_flight", 1) == 0:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
            idle = fd.status("VmRSS")
        finally:
            fd.stop()
        beyond = (hwm - rss0) * 1024 - r["document_bytes"]
        protocols = r.get("protocols", {})
        rows.append({"urls": n, "document_bytes": r["document_bytes"], "idle_rss_kb_before": rss0,
                     "peak_rss_kb": hwm, "peak_queued_polled": watch.queued,
                     "peak_h2_streams_polled": watch.streams, "metrics_polls": watch.polls,
                     "ok": r["ok"], "results": r["results"], "bad": r["bad"], "complete": r["complete"],
                     "protocols": protocols, "all_h2": protocols == {"h2": n},
                     "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                     "upstream_connections_opened": int(m.get("fanoutd_upstream_connections_opened_total", 0)),
                     "nginx_conns": r.get("nginx_conns"), "nginx_requests": r.get("nginx_requests"),
                     "origin_conns": r.get("origin_conns"), "origin_logged": r.get("origin_logged"),
                     "origin_protocols": r.get("origin_protocols"),
                     "bytes_per_request_beyond_doc": beyond / n, "idle_rss_kb_after": idle})
    slope = None
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        slope = (((b["peak_rss_kb"] - a["peak_rss_kb"]) * 1024 - (b["document_bytes"] - a["document_bytes"]))
                 / (b["urls"] - a["urls"]))
    return {"method": "fresh daemon per size; one HTTP/2 origin, /small (1 KiB at once), concurrency 256, "
                      "per_host 8, body none, run to the end; VmHWM after it, minus idle RSS and the "
                      "document; queued: fanoutd_requests_queued polled every 10 ms",
            "options": options, "rows": rows, "marginal_bytes_per_request": slope}

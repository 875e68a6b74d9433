"""A caller that reads nothing costs no more memory than what is in flight
(issue "Own the caller-facing HTTP"): while its unread output is over
output_buffer_bytes the daemon stops reading its requests' bodies and keeps
finished results unencoded, so 64 bodies of control characters (six times
larger once escaped as JSON) do not all turn into output at once."""

import json
import socket
import time

MiB = 1 << 20
# 64 bodies of 1 MiB (the case has 2 MB; the release build's figures for it
# are in the session notes): escaping 64 x 6 MiB under ASan already takes a while,
# and an upstream held longer than its 30 s I/O timeout gives up on its body.
N, SIZE = 64, 1 * MiB
# ASan keeps freed memory in a quarantine that would be counted as held.
SMALL_QUARANTINE = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=4"}


def peak(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_caller_that_reads_nothing_does_not_pin_encoded_bodies(daemon, upstream):
    d = daemon(env=SMALL_QUARANTINE, max_per_host=N)
    before = peak(d.proc.pid)
    doc = json.dumps({"requests": [upstream.url("/ctrl/%d?i=%d" % (SIZE, i)) for i in range(N)],
                      "options": {"concurrency": N, "per_host": N, "body": "text",
                                  "timeout_ms": 60000}}).encode()
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(d.sock)
    s.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\n"
              b"Content-Length: %d\r\n\r\n" % len(doc) + doc)
    # Requests reach the upstream and start their bodies; the caller reads nothing.
    # (Once the unread output passes output_buffer_bytes, no new one is dispatched.)
    assert upstream.wait_for(lambda u: len(u.requests) >= 8, 10), upstream.stats()
    deadline = time.monotonic() + 3
    held = 0
    while time.monotonic() < deadline:      # the daemon settles; its peak is what counts
        held = max(held, peak(d.proc.pid) - before)
        time.sleep(0.1)
    # The documented bound (doc/config.md): output_buffer_bytes (1 MiB), one encoded
    # result (6 x 2 MiB), and per request its body so far and 64 KiB of buffers.
    bound = 1 * MiB + 6 * SIZE + N * (SIZE + 64 * 1024)
    print("peak RSS growth while the caller reads nothing: %.1f MiB (bound %.1f MiB)"
          % (held / MiB, bound / MiB))
    assert held < bound
    # Reading, the caller gets every result whole.
    s.settimeout(60)
    buf, results = b"", 0
    while b'"summary"' not in buf[-400:]:
        chunk = s.recv(1 << 20)
        assert chunk, "the daemon closed before the summary"
        results += chunk.count(b'"status":200')
        buf = buf[-400:] + chunk
    s.close()
    assert results == N
    print("peak RSS growth over the whole batch: %.1f MiB" % ((peak(d.proc.pid) - before) / MiB))

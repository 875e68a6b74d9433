#!/usr/bin/env python3
"""Fetch URLs through fanoutd and handle each result as it arrives (standard library only).

    fanout_example.py URL...     one batch document of these URLs
    fanout_example.py < urls     a streamed batch: each line of stdin is sent as it is read

The daemon is $FANOUTD (unix:/path or HOST:PORT), by default unix:/run/fanoutd/fanoutd.sock.
Prints "INDEX STATUS URL" (or "INDEX ERROR-KIND URL") per result, then the summary;
exits 1 if any request got an error instead of a response, 2 if the batch was refused.
"""

import http.client
import json
import os
import socket
import sys
import threading


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: only connect() differs."""

    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def connect(addr):
    if addr.startswith("unix:"):
        return UnixHTTPConnection(addr[len("unix:"):])
    return http.client.HTTPConnection(addr)  # "host:port", "[::1]:port"


def send_batch(conn, urls, options=None):
    """POSTs one batch document; returns the response, whose body streams NDJSON results."""
    doc = {"requests": urls, "options": options or {}}
    conn.request("POST", "/v1/batch", body=json.dumps(doc),
                 headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"})
    return conn.getresponse()


def stream_batch(conn, lines, options=None):
    """POSTs a streamed batch: a thread uploads one request per line (chunked) while the
    caller reads results from the response, which starts before the upload ends."""
    conn.putrequest("POST", "/v1/batch")
    conn.putheader("Content-Type", "application/x-ndjson")
    conn.putheader("Accept", "application/x-ndjson")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()

    def send_line(value):  # one JSON value per line, one line per chunk
        data = json.dumps(value).encode() + b"\n"
        conn.send(b"%x\r\n%s\r\n" % (len(data), data))

    def upload():
        try:
            if options:
                send_line({"options": options})
            for line in lines:
                if line.strip():
                    send_line(line.strip())  # a request: a URL string (or a request object)
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the daemon refused the batch and closed: the response says why

    threading.Thread(target=upload, daemon=True).start()
    return conn.getresponse()


def main():
    urls = sys.argv[1:]
    conn = connect(os.environ.get("FANOUTD", "unix:/run/fanoutd/fanoutd.sock"))
    options = {"concurrency": 64, "body": "none"}  # results without bodies: just the outcome
    try:
        resp = send_batch(conn, urls, options) if urls else stream_batch(conn, sys.stdin, options)
    except OSError as e:
        print("fanoutd: %s" % e, file=sys.stderr)
        sys.exit(3)
    if resp.status != 200:  # refused as a whole: {"error": {"kind": ..., "message": ...}}
        err = json.load(resp)["error"]
        print("fanoutd: %d %s: %s" % (resp.status, err["kind"], err["message"]), file=sys.stderr)
        sys.exit(2)

    summary = None
    for line in resp:  # one JSON object per line, each as soon as its request finishes
        result = json.loads(line)
        if "summary" in result:
            summary = result["summary"]
        elif "error" in result:
            print(result["index"], result["error"]["kind"], result.get("url", "-"), flush=True)
        else:
            print(result["index"], result["status"], result["url"], flush=True)
    if summary is None:
        print("fanoutd: the connection closed before the summary", file=sys.stderr)
        sys.exit(3)
    print("summary: %(total)d total, %(responses)d responses, %(errors)d errors" % summary)
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The aiohttp anchor of scripts/bench, run as its own process under /usr/bin/time -v.

usage: bench_aiohttp.py URLFILE LIMIT LIMIT_PER_HOST EXPECTED_SIZE

Fetches every URL of URLFILE (one a line) at once with asyncio.gather through one
ClientSession whose TCPConnector(limit, limit_per_host) does the limiting, reads
every body, and prints one JSON line: how many answered 200 with a body of the
expected size, the wall and CPU time of the fetching alone (interpreter start and
the import of aiohttp are not counted; /usr/bin/time gives the peak RSS of all of
it), and the time to the first complete response.
"""
import asyncio
import json
import sys
import time

import aiohttp


async def main(urls, limit, per_host, size):
    ok = 0
    nbytes = 0
    first = None
    bad = {}
    t0 = time.monotonic()
    cpu0 = time.process_time()
    conn = aiohttp.TCPConnector(limit=limit, limit_per_host=per_host)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False) as s:

        async def one(url):
            nonlocal ok, nbytes, first
            try:
                async with s.get(url) as r:
                    body = await r.read()
                    status = r.status
            except Exception as e:  # counted, never fatal: the figure is how many were right
                key = type(e).__name__
                bad[key] = bad.get(key, 0) + 1
                return
            if first is None:
                first = time.monotonic() - t0
            nbytes += len(body)
            if status == 200 and len(body) == size:
                ok += 1
            else:
                key = "%d/%d" % (status, len(body))
                bad[key] = bad.get(key, 0) + 1

        await asyncio.gather(*(one(u) for u in urls))
    wall = time.monotonic() - t0
    return {"requests": len(urls), "ok": ok, "bytes": nbytes, "wall_s": wall,
            "cpu_s": time.process_time() - cpu0, "first_ms": (first or 0) * 1000, "bad": bad}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        urls = f.read().split()
    out = asyncio.run(main(urls, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    print(json.dumps(out))

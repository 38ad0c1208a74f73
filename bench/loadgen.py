"""A small HTTP/1.1 load generator (its own process, keep-alive connections, asyncio).

Open loop (`--rate`): request i is due at t0 + i / rate whatever happened before; it is
sent on a free keep-alive connection or a new one, so a slow response never delays the next
send (no coordinated omission). Latency is measured from the moment the request is written;
how late the generator itself sent (`send_lag`, timer granularity of the event loop) is
reported beside it, so a late generator cannot pass for a slow server or the other way round. Closed loop (`--concurrency`, no rate): each connection sends its
next request as soon as the last answer arrives; the completion rate is the saturation
throughput. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import numpy as np


class Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, target: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\nConnection: keep-alive\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await self.reader.readexactly(length)
        return status


async def open_loop(host, port, targets, rate, duration):
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(16):
        pool.put_nowait(Connection(host, port))
    latencies, lags, errors = [], [], 0
    n = int(rate * duration)
    start = time.perf_counter() + 0.05

    async def one(i: int):
        nonlocal errors
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = pool.get_nowait() if not pool.empty() else Connection(host, port)
        sent = time.perf_counter()
        try:
            status = await conn.request(targets[i % len(targets)])
            errors += status != 200
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            conn = Connection(host, port)
        latencies.append(time.perf_counter() - sent)
        lags.append(sent - due)
        pool.put_nowait(conn)

    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    ms, lag = np.array(latencies) * 1000, np.array(lags) * 1000
    pct = lambda a, q: round(float(np.percentile(a, q)), 3)  # noqa: E731
    return {"requests": n, "errors": errors, "achieved_rps": round(n / elapsed, 1), "p50_ms": pct(ms, 50),
            "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99), "max_ms": round(float(ms.max()), 3),
            "send_lag_p50_ms": pct(lag, 50), "send_lag_p99_ms": pct(lag, 99)}


async def closed_loop(host, port, targets, concurrency, duration):
    done, errors = 0, 0
    stop = time.perf_counter() + duration

    async def worker(k: int):
        nonlocal done, errors
        conn, i = Connection(host, port), k
        while time.perf_counter() < stop:
            status = await conn.request(targets[i % len(targets)])
            errors += status != 200
            done += 1
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return {"requests": done, "errors": errors, "concurrency": concurrency, "throughput_rps": round(done / (time.perf_counter() - started), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--targets", required=True, help="JSON file with a list of request paths")
    parser.add_argument("--rate", type=float, help="requests per second (open loop)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    targets = json.loads(open(args.targets).read())
    random.Random(0).shuffle(targets)
    if args.rate:
        result = asyncio.run(open_loop(args.host, args.port, targets, args.rate, args.duration))
    else:
        result = asyncio.run(closed_loop(args.host, args.port, targets, args.concurrency, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

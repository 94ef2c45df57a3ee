#!/usr/bin/env python3
"""Opens N connections through a balancer, does one HTTP request on each, keeps them all open
and idle, then prints the resident memory of the balancer's processes.

Usage: hold.py PORT N PID [PID...]"""
import asyncio
import sys


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


async def main(port, n, pids):
    conns = []
    for i in range(n):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            print(f"opened {i} of {n}: {e}", file=sys.stderr)
            break
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conns.append((reader, writer))
    for reader, _ in conns:  # one response each: every connection really reached a backend
        await reader.read(200)
    await asyncio.sleep(1)
    total = sum(rss_kb(p) for p in pids)
    print(f"{len(conns)} {total}")
    for _, writer in conns:
        writer.close()


asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]))

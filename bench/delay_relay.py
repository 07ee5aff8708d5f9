"""A TCP relay on loopback that delays every byte by a fixed time each way.

It stands for a database on another machine: ``--delay-ms 1`` adds about 2 ms to every
round trip. Each direction has a reader thread, which stamps what it reads with the time it
is due, and a writer thread, which sends it then; order is kept. This machine's kernel has
no ``netem``, which would do the same for a port.

    .venv/bin/python bench/delay_relay.py --target 127.0.0.1:5432 --delay-ms 1

It prints ``{"port": N}`` once it listens, and stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import sys
import threading
import time


def pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
    """Forward ``source`` to ``sink``, each chunk ``delay`` seconds after it was read."""
    due: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def write() -> None:
        while True:
            at, data = due.get()
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if not data:
                sink.shutdown(socket.SHUT_WR)
                return
            sink.sendall(data)

    threading.Thread(target=write, daemon=True).start()
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        due.put((time.perf_counter() + delay, data))
        if not data:
            return


def serve(listener: socket.socket, target: tuple[str, int], delay: float) -> None:
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(target)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pipe, args=(client, server, delay), daemon=True).start()
        threading.Thread(target=pipe, args=(server, client, delay), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="127.0.0.1:5432")
    parser.add_argument("--delay-ms", type=float, default=1.0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(
        target=serve, args=(listener, (host, int(port)), args.delay_ms / 1000), daemon=True
    ).start()
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    sys.stdin.read()  # until the parent closes it


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Record NBD conversations as fuzz seeds (used by scripts/fuzz-seeds.sh).

  nbd-record.py UPSTREAM_SOCKET LISTEN_SOCKET OUT_DIR

Listens on LISTEN_SOCKET; every connection is forwarded to the NBD server on UPSTREAM_SOCKET,
and what each side sent is saved as OUT_DIR/client-N (the client's bytes: a seed for the
nbd_server target) and OUT_DIR/server-N (the server's bytes: a seed for nbd_client).
Runs until killed.
"""
import os
import socket
import sys
import threading

upstream, listen, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
if os.path.exists(listen):
    os.unlink(listen)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(listen)
srv.listen(16)
count = 0
lock = threading.Lock()


def pump(src, dst, path):
    with open(path, "wb") as f:
        while True:
            try:
                b = src.recv(65536)
            except OSError:
                b = b""
            if not b:
                break
            f.write(b)
            f.flush()
            try:
                dst.sendall(b)
            except OSError:
                break
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


while True:
    c, _ = srv.accept()
    with lock:
        n = count
        count += 1
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(upstream)
    threading.Thread(target=pump, args=(c, u, f"{out}/client-{n}"), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, f"{out}/server-{n}"), daemon=True).start()

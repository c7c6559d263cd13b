#!/usr/bin/env python3
"""A usernsd client in Python's standard library only, written from usernsd-protocol(7).

Usage: resolve_client.py SOCKET LABEL
Prints "PATH INO CREATED" on success (exit 0), "CODE: MESSAGE" on an agent error (exit 1).
"""
import json
import socket
import sys

DELIMITER = b"\f"  # every frame is a UTF-8 JSON object followed by a form feed


def call(sock, request_id, method, params):
    frame = {"type": "request", "data": {"id": request_id, "method": method, "params": params}}
    sock.sendall(json.dumps(frame).encode("utf-8") + DELIMITER)
    buf = b""
    while True:
        while DELIMITER in buf:
            raw, buf = buf.split(DELIMITER, 1)
            msg = json.loads(raw.decode("utf-8"))
            if msg["type"] == "reply" and msg["data"]["id"] == request_id:
                return msg["data"]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the agent closed the connection")
        buf += chunk


def main():
    path, label = sys.argv[1], sys.argv[2]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        reply = call(sock, 1, "resolve", {"label": label})
    if "error" in reply:
        print("%s: %s" % (reply["error"]["code"], reply["error"]["message"]))
        return 1
    r = reply["result"]
    print("%s %d %s" % (r["path"], r["ino"], "created" if r["created"] else "existing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

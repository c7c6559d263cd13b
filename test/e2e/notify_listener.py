#!/usr/bin/env python3
"""A stand-in for systemd's notification socket: receives sd_notify datagrams and, the moment each
arrives, records what is true of the agent then (does its socket accept connections — true, or why not? which pins
are mounted?). One JSON line per datagram on stdout; exits after STOPPING=1 or 30 s.

Usage: notify_listener.py NOTIFY_SOCKET AGENT_SOCKET PINS_DIR
"""
import json
import os
import socket
import sys

notify_path, agent_socket, pins = sys.argv[1:4]
rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
rx.bind(notify_path)
rx.settimeout(30)
print(json.dumps({"listening": True}), flush=True)


def accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError as e:
        return e.strerror or str(e)  # why not, for the test's failure message
    finally:
        s.close()


while True:
    try:
        data = rx.recv(4096).decode()
    except socket.timeout:
        break
    mounted = sorted(n for n in (os.listdir(pins) if os.path.isdir(pins) else []) if os.path.ismount(os.path.join(pins, n)))
    print(json.dumps({"msg": data, "socketAccepts": accepts(agent_socket), "pinned": mounted}), flush=True)
    if "STOPPING=1" in data.split("\n"):
        break

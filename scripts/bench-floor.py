#!/usr/bin/env python3
"""The test server's own delivery floor for a ladder (used by scripts/bench.sh).

Sends each rung once over submission (STARTTLS + AUTH, Python's smtplib, one
message at a time) and watches the mailbox's Maildir/new on the server side
with inotify: for every message, the time from SMTP acceptance (the reply to
DATA) until Dovecot's LMTP moved the file into new/. Prints one line:

    floor_ms=<sum> smtp_ms=<sum of SMTP sessions> each=<d1>,<d2>,...

Usage: bench-floor.py HOST PORT CA USER PASSWORD_FILE MAILDIR SIZE...
Every wait is bounded (30 s per message). Traffic goes to HOST only (loopback).
"""

import ctypes
import os
import queue
import smtplib
import ssl
import struct
import sys
import threading
import time
from email.message import EmailMessage

IN_CREATE = 0x100
IN_MOVED_TO = 0x80


def watch(directory):
    """Timestamped names of files appearing in `directory`, as a queue."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0 or libc.inotify_add_watch(fd, directory.encode(), IN_CREATE | IN_MOVED_TO) < 0:
        sys.exit(f"inotify on {directory} failed (errno {ctypes.get_errno()})")
    events = queue.Queue()

    def reader():
        while True:
            data = os.read(fd, 65536)
            seen = time.monotonic()
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                events.put(seen)
                offset += 16 + length

    threading.Thread(target=reader, daemon=True).start()
    return events


def main():
    host, port, ca, user, password_file, maildir, *sizes = sys.argv[1:]
    with open(password_file) as f:
        password = f.readline().strip()
    events = watch(os.path.join(maildir, "new"))
    context = ssl.create_default_context(cafile=ca)
    floor, smtp, each = 0.0, 0.0, []
    for size in map(int, sizes):
        message = EmailMessage()
        message["From"] = user
        message["To"] = user
        message["Subject"] = f"bench floor {size}"
        message.set_content("bench floor message\n")
        if size:
            message.add_attachment(os.urandom(size), maintype="application",
                                   subtype="octet-stream", filename="floor.bin")
        started = time.monotonic()
        with smtplib.SMTP(host, int(port), timeout=30) as s:
            s.starttls(context=context)
            s.login(user, password)
            s.send_message(message)
            accepted = time.monotonic()
        try:
            arrived = events.get(timeout=30)
        except queue.Empty:
            sys.exit(f"the {size}-byte message did not arrive in {maildir}/new within 30 s")
        delay = max(0.0, arrived - accepted) * 1000
        floor += delay
        smtp += (accepted - started) * 1000
        each.append(f"{delay:.1f}")
    print(f"floor_ms={floor:.1f} smtp_ms={smtp:.1f} each={','.join(each)}")


if __name__ == "__main__":
    main()

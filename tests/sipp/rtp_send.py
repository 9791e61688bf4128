#!/usr/bin/env python3
"""Sends a raw mu-law file as one RTP stream (PT 0, 20 ms packets) at real-time pacing.

SIPp's rtp_stream plays only to the first answered m-line; a SIPREC call has two streams, so
the scenario starts this for the second one. Usage: rtp_send.py HOST PORT FILE [SSRC]
"""
import socket
import struct
import sys
import time


def main() -> None:
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ssrc = int(sys.argv[4]) if len(sys.argv) > 4 else 0x5EC0_0002
    data = open(path, "rb").read()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    for n, off in enumerate(range(0, len(data) - 159, 160)):
        header = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrc)
        delay = start + n * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(header + data[off : off + 160], (host, port))


if __name__ == "__main__":
    main()

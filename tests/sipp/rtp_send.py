#!/usr/bin/env python3
"""Sends a raw mu-law file as one RTP stream (PT 0, 20 ms packets) at real-time pacing.

SIPp's rtp_stream plays only to the first answered m-line; a SIPREC call has two streams, so
the scenario starts this for the second one.

Usage: rtp_send.py HOST PORT FILE [DTMF]
DTMF is "", "rfc4733:DIGITS@SECONDS" (RFC 4733 telephone-events, payload type 101, in place of
the audio while a digit lasts) or "inband:DIGITS@SECONDS" (the tones mixed into the audio).
Each digit lasts 100 ms, followed by 60 ms of silence.
"""
import math
import socket
import struct
import sys
import time

KEYS = "123A456B789C*0#D"
LOW = [697, 770, 852, 941]
HIGH = [1209, 1336, 1477, 1633]
EVENTS = "0123456789*#ABCD"


def ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    s = min(abs(sample) + 0x84, 32635 + 0x84)
    exp = max(0, min(7, s.bit_length() - 8))
    mantissa = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mantissa) & 0xFF


def tone(digit: str, samples: int) -> bytes:
    i = KEYS.index(digit)
    lo, hi = LOW[i // 4], HIGH[i % 4]
    return bytes(ulaw(int(6000 * (math.sin(2 * math.pi * lo * n / 8000) + math.sin(2 * math.pi * hi * n / 8000)))) for n in range(samples))


def main() -> None:
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dtmf = sys.argv[4] if len(sys.argv) > 4 else ""
    data = bytearray(open(path, "rb").read())
    events = {}  # frame number -> (event code, frame index within the event)
    if dtmf:
        kind, spec = dtmf.split(":", 1)
        digits, at = spec.split("@")
        start = int(float(at) * 50)
        for k, d in enumerate(digits):
            first = start + k * 8  # 100 ms digit + 60 ms pause = 8 frames
            if kind == "inband":
                off = first * 160
                data[off : off + 800] = tone(d, 800)
                data[off + 800 : off + 1280] = bytes([0xFF]) * 480
            else:
                for j in range(5):
                    events[first + j] = (EVENTS.index(d), j)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    begin = time.monotonic()
    for n, off in enumerate(range(0, len(data) - 159, 160)):
        delay = begin + n * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if n in events:
            code, j = events[n]
            event_ts = (n - j) * 160
            end = 0x80 if j == 4 else 0
            header = struct.pack("!BBHII", 0x80, 101 | (0x80 if j == 0 else 0), n & 0xFFFF, event_ts & 0xFFFFFFFF, 0x5EC00002)
            payload = struct.pack("!BBH", code, end | 10, (j + 1) * 160)
            sock.sendto(header + payload, (host, port))
            continue
        header = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0x5EC00002)
        sock.sendto(header + bytes(data[off : off + 160]), (host, port))


if __name__ == "__main__":
    main()

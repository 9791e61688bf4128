#!/usr/bin/env python3
"""A SIPREC client over TLS on another stack than the recorder's (Python's ssl, OpenSSL).

It forks one two-stream G.711 call: INVITE with SDP and RFC 7865 metadata over TLS, the two
streams from one UDP socket per stream at real-time pacing, then BYE over the same TLS
connection. With --srtp SUITE the streams are SRTP (RTP/SAVP, SDES keys in a=crypto), protected
by libsrtp (PyPI pylibsrtp), and every 50th packet is also sent again (a replay) and once more
with a flipped payload bit (a forgery). With --options it sends one OPTIONS and reports the
answer (or the refusal).

Usage: sbc.py HOST PORT --ca CA.pem [--cert C.pem --key K.pem] [--options]
              [--caller AOR --callee AOR --left F.ulaw --right F.ulaw --seconds S]
              [--srtp AES_CM_128_HMAC_SHA1_80|AES_CM_128_HMAC_SHA1_32|AEAD_AES_128_GCM]
Prints one JSON object.
"""
import argparse
import base64
import json
import os
import re
import socket
import ssl
import struct
import sys
import time
import uuid


def read_response(conn, buf):
    """One SIP response from the stream: (status, headers text, body, rest of buffer)."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            raise EOFError("connection closed")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    text = head.decode("utf-8", "replace")
    m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)", text)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            raise EOFError("connection closed")
        rest += data
    status = int(text.split(" ", 2)[1])
    return status, text, rest[:length], rest[length:]


def final(conn, buf):
    while True:
        status, head, body, buf = read_response(conn, buf)
        if status >= 200:
            return status, head, body, buf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--options", action="store_true")
    ap.add_argument("--caller", default="sip:+31201234567@pbx.example.com")
    ap.add_argument("--callee", default="sip:+441632960000@carrier.example")
    ap.add_argument("--left")
    ap.add_argument("--right")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--srtp")
    a = ap.parse_args()

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=a.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    raw = socket.create_connection((a.host, a.port), timeout=10)
    try:
        conn = ctx.wrap_socket(raw, server_hostname="recorder.opname.test")
        # TLS 1.3 reports a refused client certificate only on the first read.
        local = conn.getsockname()
        via = f"SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}"
        call_id = uuid.uuid4().hex
        if a.options:
            req = (f"OPTIONS sips:srs@{a.host}:{a.port} SIP/2.0\r\nVia: {via}\r\n"
                   f"From: <sips:sbc@{local[0]}>;tag=o1\r\nTo: <sips:srs@{a.host}>\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            conn.sendall(req.encode())
            status, _, _, _ = final(conn, b"")
            print(json.dumps({"options": status, "version": conn.version()}))
            return
    except (ssl.SSLError, ConnectionResetError, EOFError, BrokenPipeError) as e:
        print(json.dumps({"refused": type(e).__name__, "error": str(e)}))
        return

    rtp = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in rtp:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in rtp]
    sessions = [None, None]
    proto, crypto = "RTP/AVP", ["", ""]
    if a.srtp:
        from pylibsrtp import Policy, Session
        profile, length = {
            "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
            "AES_CM_128_HMAC_SHA1_32": (Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
            "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
        }[a.srtp]
        proto = "RTP/SAVP"
        for i in range(2):
            key = os.urandom(length)
            crypto[i] = f"a=crypto:1 {a.srtp} inline:{base64.b64encode(key).decode()}\r\n"
            sessions[i] = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    sdp = ("v=0\r\no=sbc 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {ports[0]} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto[0]}a=label:1\r\na=sendonly\r\n"
           f"m=audio {ports[1]} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto[1]}a=label:2\r\na=sendonly\r\n")
    md = ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
          '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>'
          '<session session_id="c2Vzcw=="/>'
          f'<participant participant_id="cA=="><nameID aor="{a.caller}"/></participant>'
          f'<participant participant_id="cQ=="><nameID aor="{a.callee}"/></participant>'
          '<stream stream_id="czE=" session_id="c2Vzcw=="><label>1</label></stream>'
          '<stream stream_id="czI=" session_id="c2Vzcw=="><label>2</label></stream>'
          '<participantstreamassoc participant_id="cA=="><send>czE=</send></participantstreamassoc>'
          '<participantstreamassoc participant_id="cQ=="><send>czI=</send></participantstreamassoc>'
          '</recording>\r\n')
    body = (f"--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}"
            f"--b1\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{md}"
            "--b1--\r\n").encode()
    contact = f"<sips:sbc@{local[0]}:{local[1]};transport=tls>;+sip.src"
    invite = (f"INVITE sips:srs@{a.host}:{a.port} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
              f"From: <sips:sbc@{local[0]}>;tag=t1\r\nTo: <sips:srs@{a.host}>\r\nCall-ID: {call_id}\r\n"
              f"CSeq: 1 INVITE\r\nContact: {contact}\r\nRequire: siprec\r\n"
              "Content-Type: multipart/mixed;boundary=b1\r\n"
              f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    conn.sendall(invite)
    status, head, answer, buf = final(conn, b"")
    out = {"invite": status, "version": conn.version()}
    if status != 200:
        print(json.dumps(out))
        return
    to = re.search(r"(?im)^(?:to|t)\s*:\s*(.*)$", head).group(1).strip()
    contact_uri = re.search(r"(?im)^(?:contact|m)\s*:\s*<([^>]*)>", head).group(1)
    out["contact"] = contact_uri
    text = answer.decode()
    out["answer_crypto"] = re.findall(r"(?m)^a=crypto:(\S+ \S+)", text)
    host = re.search(r"(?m)^c=IN IP4 (\S+)", text).group(1)
    dest = [int(p) for p in re.findall(r"(?m)^m=audio (\d+) ", text)]
    ack = (f"ACK {contact_uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sips:sbc@{local[0]}>;tag=t1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
           "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
    conn.sendall(ack.encode())

    audio = [open(a.left, "rb").read(), open(a.right, "rb").read()]
    frames = int(a.seconds * 50)
    start = time.monotonic()
    for n in range(frames):
        for i in range(2):
            chunk = audio[i][n * 160:(n + 1) * 160].ljust(160, b"\xff")
            header = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, n * 160, 0x5000 + i)
            packet = header + chunk
            if sessions[i] is not None:
                packet = sessions[i].protect(packet)
            rtp[i].sendto(packet, (host, dest[i]))
            if sessions[i] is not None and n % 50 == 25:
                rtp[i].sendto(packet, (host, dest[i]))  # a replay
                forged = bytearray(packet)
                forged[20] ^= 0x01
                rtp[i].sendto(bytes(forged), (host, dest[i]))  # a forgery
        delay = start + (n + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out["packets"] = frames * 2
    out["keys"] = [c.split("inline:")[1].strip() for c in crypto if c]
    out["replayed"] = sum(1 for n in range(frames) if n % 50 == 25) * 2 if a.srtp else 0
    bye = (f"BYE {contact_uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sips:sbc@{local[0]}>;tag=t1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
           "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    conn.sendall(bye.encode())
    status, _, _, _ = final(conn, buf)
    out["bye"] = status
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())

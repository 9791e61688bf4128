#!/usr/bin/env python3
"""An AWS STS stand-in for AssumeRoleWithWebIdentity over HTTPS (object_store requires HTTPS).

It accepts one web identity token for one role and answers with the credentials it was given
(the test store's real keys, so a store that checks signatures verifies every request signed
with them) plus a session token; anything else gets STS's AccessDenied. Every request is
appended to --log as one JSON line.

Usage: sts.py --port P --cert C.pem --key K.pem --token T --role ARN
              --key-id ID --secret S --session-token TOKEN --log FILE
"""
import argparse
import datetime
import json
import ssl
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser()
    for flag in ("--cert", "--key", "--token", "--role", "--key-id", "--secret", "--session-token", "--log"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            length = int(self.headers.get("content-length") or 0)
            query.update(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            granted = (
                query.get("Action") == "AssumeRoleWithWebIdentity"
                and query.get("WebIdentityToken") == args.token
                and query.get("RoleArn") == args.role
            )
            with open(args.log, "a") as log:
                log.write(json.dumps({"query": query, "granted": granted}) + "\n")
            if not granted:
                body = (
                    "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                    "<Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
                    "</Error></ErrorResponse>"
                )
                self.reply(403, body)
                return
            expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            body = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>{args.key_id}</AccessKeyId>
      <SecretAccessKey>{args.secret}</SecretAccessKey>
      <SessionToken>{args.session_token}</SessionToken>
      <Expiration>{expires}</Expiration>
    </Credentials>
    <AssumedRoleUser><Arn>{args.role}/{query.get("RoleSessionName", "")}</Arn><AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"""
            self.reply(200, body)

        def reply(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", "text/xml")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

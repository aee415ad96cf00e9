"""sinks — local stand-ins for an SMS gateway (HTTP) and a mail server (SMTP),
standard library only, for the notify tests.

    http = HttpSink(statuses=[500, 500])   # answers 500, 500, then 200 forever
    http.url("/sms/send")                  # http://127.0.0.1:PORT/sms/send
    http.wait(3)                           # the first 3 requests, as dicts
    smtp = SmtpSink(auth=True)             # advertises AUTH PLAIN LOGIN
    smtp.wait(1)[0]["mail_from"]

HttpSink records every request: method, path, headers (lower-case names),
body bytes and the status it answered. SmtpSink speaks plain SMTP: EHLO/HELO,
AUTH PLAIN (with or without an initial response) and AUTH LOGIN (recorded as
("PLAIN"|"LOGIN", user, password)), MAIL, RCPT, DATA (dot-unstuffed), RSET,
NOOP, QUIT. It never offers STARTTLS, so a client with STARTTLS "when
offered" (libcurl CURLUSESSL_TRY, rxd's default) talks plain text to it; the
upgrade itself is libcurl's and is not tested here.
"""
import base64
import http.server
import socketserver
import threading
import time

HOST = "127.0.0.1"


def _wait(lock, items, n, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        with lock:
            if len(items) >= n:
                return list(items)
        if time.monotonic() > deadline:
            with lock:
                raise AssertionError("timed out waiting for %d %s, got %d: %r"
                                     % (n, what, len(items), items))
        time.sleep(0.02)


class HttpSink:
    def __init__(self, statuses=None):
        self.lock = threading.Lock()
        self.requests = []
        self.statuses = list(statuses or [])
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with sink.lock:
                    status = sink.statuses.pop(0) if sink.statuses else 200
                    sink.requests.append({
                        "method": self.command, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body, "status": status})
                out = b'{"status": "ok"}' if status < 300 else b'{"error": "try later"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = do_PUT = do_GET = _any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/"):
        return "http://%s:%d%s" % (HOST, self.port, path)

    def set_statuses(self, statuses):
        with self.lock:
            self.statuses = list(statuses)

    def clear(self):
        with self.lock:
            self.requests.clear()
            self.statuses.clear()

    def wait(self, n=1, timeout=10.0):
        return _wait(self.lock, self.requests, n, timeout, "HTTP requests")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    def __init__(self, auth=False):
        self.lock = threading.Lock()
        self.messages = []
        self.sessions = []
        self.auth = auth
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, text):
                self.wfile.write(text.encode() + b"\r\n")
                self.wfile.flush()

            def line(self):
                raw = self.rfile.readline(65536)
                if not raw:
                    raise EOFError
                return raw.decode("utf-8", "replace").rstrip("\r\n")

            def b64line(self):
                return base64.b64decode(self.line()).decode("utf-8", "replace")

            def handle(self):
                s = {"ehlo": None, "auth": None, "mail_from": None, "rcpt_to": [], "commands": []}
                with sink.lock:
                    sink.sessions.append(s)
                try:
                    self.session(s)
                except (EOFError, ConnectionError):
                    pass

            def session(self, s):
                self.reply("220 sink.test ESMTP ready")
                while True:
                    cmd = self.line()
                    verb = cmd.split(" ", 1)[0].upper()
                    s["commands"].append(verb)
                    arg = cmd[len(verb):].strip()
                    if verb == "EHLO":
                        s["ehlo"] = arg
                        lines = ["sink.test", "8BITMIME", "SIZE 1000000"]
                        if sink.auth:
                            lines.append("AUTH PLAIN LOGIN")
                        for l in lines[:-1]:
                            self.reply("250-" + l)
                        self.reply("250 " + lines[-1])
                    elif verb == "HELO":
                        s["ehlo"] = arg
                        self.reply("250 sink.test")
                    elif verb == "AUTH":
                        parts = arg.split()
                        mech = parts[0].upper() if parts else ""
                        if mech == "PLAIN":
                            if len(parts) > 1:
                                blob = base64.b64decode(parts[1])
                            else:
                                self.reply("334 ")
                                blob = base64.b64decode(self.line())
                            _, user, pw = blob.decode("utf-8", "replace").split("\0", 2)
                        elif mech == "LOGIN":
                            if len(parts) > 1:
                                user = base64.b64decode(parts[1]).decode()
                            else:
                                self.reply("334 VXNlcm5hbWU6")
                                user = self.b64line()
                            self.reply("334 UGFzc3dvcmQ6")
                            pw = self.b64line()
                        else:
                            self.reply("504 mechanism not supported")
                            continue
                        s["auth"] = (mech, user, pw)
                        self.reply("235 authenticated")
                    elif verb == "MAIL":
                        s["mail_from"] = arg.split(":", 1)[1].strip().split()[0].strip("<>")
                        s["rcpt_to"] = []
                        self.reply("250 ok")
                    elif verb == "RCPT":
                        s["rcpt_to"].append(arg.split(":", 1)[1].strip().strip("<>"))
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        lines = []
                        while True:
                            l = self.line()
                            if l == ".":
                                break
                            lines.append(l[1:] if l.startswith(".") else l)
                        msg = {"ehlo": s["ehlo"], "auth": s["auth"], "mail_from": s["mail_from"],
                               "rcpt_to": list(s["rcpt_to"]), "data": "\r\n".join(lines)}
                        head, _, body = msg["data"].partition("\r\n\r\n")
                        msg["headers"] = {}
                        for h in head.split("\r\n"):
                            k, _, v = h.partition(":")
                            msg["headers"][k.strip().lower()] = v.strip()
                        msg["body"] = body
                        with sink.lock:
                            sink.messages.append(msg)
                        self.reply("250 queued")
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 ok")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 command not implemented")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self):
        return "smtp://%s:%d" % (HOST, self.port)

    def clear(self):
        with self.lock:
            self.messages.clear()
            self.sessions.clear()

    def wait(self, n=1, timeout=10.0):
        return _wait(self.lock, self.messages, n, timeout, "SMTP messages")

    def close(self):
        self.server.shutdown()
        self.server.server_close()

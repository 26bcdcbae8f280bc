"""A webhook receiver for the destination tests: a real HTTP server (Python's http.server) on loopback
that the test programs through POST /control to stall, drop connections, or answer 500, 429, 400 or 200.

Usage: webhook_server.py PORT RECORD_FILE. Prints "listening PORT" once it accepts connections.
Every batch answered 200 is appended to RECORD_FILE as one JSON line with its headers and body.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
# Answers for the next hook requests, in turn; then `default`.
script = []
default = "200"
counts = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with lock:
            self.reply(200, json.dumps(counts).encode())

    def do_POST(self):
        global default
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/control":
            command = json.loads(body)
            with lock:
                script[:] = command.get("script", [])
                default = command.get("default", default)
            return self.reply(200)
        with lock:
            answer = script.pop(0) if script else default
            counts[answer] = counts.get(answer, 0) + 1
        if answer == "stall":
            time.sleep(30)
            return
        if answer == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if answer == "429":
            return self.reply(429, b"slow down", [("Retry-After", "1")])
        if answer != "200":
            return self.reply(int(answer), b"no")
        record = {
            "path": self.path,
            "signature": self.headers.get("X-SafeClaw-Signature"),
            "idempotencyKey": self.headers.get("Idempotency-Key"),
            "body": body.decode(),
        }
        with lock:
            with open(sys.argv[2], "a") as out:
                out.write(json.dumps(record) + "\n")
        self.reply(200, b"ok")


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a connection the test told us to drop


server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()

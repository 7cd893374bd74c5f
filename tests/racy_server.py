"""A deliberately racy toy server, the kind a student writes first (tests/test_grade.py grades it).

    python tests/racy_server.py      # prints "listening on 127.0.0.1:PORT"

A thread per connection answers PING, ECHO, SET, GET and INCR, and nothing
guards the dictionary: INCR reads, sleeps a millisecond, then writes, so when
many clients INCR one key together, most of them read a value another is
about to overwrite, and updates are lost every time, not just sometimes.
"""

import socketserver
import time

values: dict[bytes, bytes] = {}


def bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


class Client(socketserver.StreamRequestHandler):
    def handle(self):
        while line := self.rfile.readline():
            if line.startswith(b"*"):   # an array of bulk strings; anything else is inline
                args = [self.rfile.read(int(self.rfile.readline()[1:]) + 2)[:-2]
                        for _ in range(int(line[1:]))]
            else:
                args = line.split()
            name = args[0].upper() if args else b""
            if name == b"PING":
                self.wfile.write(b"+PONG\r\n")
            elif name == b"ECHO":
                self.wfile.write(bulk(args[1]))
            elif name == b"SET":
                values[args[1]] = args[2]
                self.wfile.write(b"+OK\r\n")
            elif name == b"GET":
                self.wfile.write(bulk(values.get(args[1])))
            elif name == b"INCR":
                count = int(values.get(args[1], b"0")) + 1
                time.sleep(0.001)   # the race window: others read the old value meanwhile
                values[args[1]] = b"%d" % count
                self.wfile.write(b":%d\r\n" % count)
            elif name:
                self.wfile.write(b"-ERR unknown command\r\n")


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 128   # fifty clients connect at once; the default backlog is 5


if __name__ == "__main__":
    with Server(("127.0.0.1", 0), Client) as server:
        host, port = server.server_address
        print(f"listening on {host}:{port}", flush=True)
        server.serve_forever()

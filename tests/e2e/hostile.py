"""Helpers for tests that attack Sluice: raw gRPC over HTTP/2 (so a test can send what no well-behaved
client library would: pre-compressed bombs, lying length prefixes), a watcher that samples the
process's resident memory and `/healthz` latency while an attack runs, and hostile bodies."""

import gzip
import socket
import threading
import time
import zlib

import h2.config
import h2.connection
import h2.events
import requests
import zstandard


def grpc_raw(port: int, method: str, payload: bytes, *, encoding=None, compressed=False,
             declared_len=None, timeout=20.0) -> dict:
    """Sends one gRPC request whose 5-byte frame prefix says `compressed` and `declared_len` (default:
    the payload's length), then returns the response headers and trailers merged (`grpc-status`...),
    or {"reset": True} when the server reset the stream or closed the connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    sid = c.get_next_available_stream_id()
    headers = [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", f"127.0.0.1:{port}"),
               ("content-type", "application/grpc"), ("te", "trailers")]
    if encoding:
        headers.append(("grpc-encoding", encoding))
    c.send_headers(sid, headers)
    n = len(payload) if declared_len is None else declared_len
    data = bytes([1 if compressed else 0]) + n.to_bytes(4, "big") + payload
    out: dict = {}
    done = False

    def pump():
        nonlocal done
        chunk = s.recv(65536)
        if not chunk:
            out["reset"] = True
            done = True
            return
        for ev in c.receive_data(chunk):
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                out.update(dict(ev.headers))
            elif isinstance(ev, h2.events.StreamReset):
                out["reset"] = True
                done = True
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out["reset"] = True
                done = True
            elif isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        s.sendall(c.data_to_send())

    try:
        pos = 0
        while pos < len(data) and not done:
            window = min(c.local_flow_control_window(sid), c.max_outbound_frame_size)
            if window <= 0:
                pump()
                continue
            c.send_data(sid, data[pos:pos + window])
            pos += window
            s.sendall(c.data_to_send())
        if not done:
            c.end_stream(sid)
            s.sendall(c.data_to_send())
        while not done:
            pump()
    except (OSError, h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
        out["reset"] = True
    finally:
        s.close()
    return out


def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes, gzipped (about 1,000× smaller)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    parts = [z.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts) + z.flush()


def zstd_bomb(size: int) -> bytes:
    """`size` zero bytes, zstd-compressed."""
    c = zstandard.ZstdCompressor(level=19).compressobj()
    chunk = b"\0" * (1 << 20)
    return b"".join(c.compress(chunk) for _ in range(size >> 20)) + c.flush()


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def empty_spans_request(total_bytes: int) -> bytes:
    """A traces request of nothing but empty spans (2 bytes each on the wire, hundreds decoded)."""
    spans = b"\x12\x00" * (total_bytes // 2)
    return field(1, field(2, spans))


def empty_exp_histogram_points_request(total_bytes: int) -> bytes:
    """A metrics request: one exponential histogram of empty data points."""
    points = b"\x0a\x00" * (total_bytes // 2)
    metric = field(1, b"m") + field(10, points)
    return field(1, field(2, field(2, metric)))


def nested_any_value(depth: int) -> bytes:
    """A span attribute whose value nests arrays `depth` deep."""
    v = field(1, b"x")  # AnyValue{string_value}
    for _ in range(depth):
        v = field(5, field(1, v))  # AnyValue{array_value{values=[v]}}
    kv = field(1, b"k") + field(2, v)
    span = field(1, b"\x01" * 16) + field(2, b"\x02" * 8) + field(9, kv)
    return field(1, field(2, field(2, span)))


def nested_json(depth: int) -> bytes:
    inner = '{"stringValue":"x"}'
    for _ in range(depth):
        inner = '{"arrayValue":{"values":[' + inner + ']}}'
    span = ('{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"n",'
            '"attributes":[{"key":"k","value":' + inner + '}]}')
    return ('{"resourceSpans":[{"scopeSpans":[{"spans":[' + span + ']}]}]}').encode()


def lying_length() -> bytes:
    """A traces request whose first field says it is 2^60 bytes long."""
    return b"\x0a" + varint(1 << 60) + b"\x12\x00"


class Watch:
    """Samples the process's RSS and `/healthz` latency every `every` seconds until stopped."""

    def __init__(self, sl, every=0.1):
        self.sl, self.every = sl, every
        self.peak_rss = 0
        self.worst_health = 0.0
        self.health_failures = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in open(f"/proc/{self.sl.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def hwm(self) -> int:
        """The kernel's own high-water mark of the resident set (catches peaks between samples)."""
        for line in open(f"/proc/{self.sl.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.rss())
            t0 = time.monotonic()
            try:
                ok = requests.get(self.sl.url("/healthz"), timeout=1).status_code == 200
            except requests.RequestException as e:
                ok = False
                self.health_failures.append(repr(e))
            dt = time.monotonic() - t0
            self.worst_health = max(self.worst_health, dt)
            if not ok and not self.health_failures:
                self.health_failures.append(f"status after {dt:.2f}s")
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def gz(b: bytes) -> bytes:
    return gzip.compress(b)

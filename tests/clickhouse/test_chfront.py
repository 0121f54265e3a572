"""Tests for chfront.py: the ClickHouse HTTP interface over an embedded ClickHouse engine (chDB).

Run: .venv/bin/python -m pytest tests/clickhouse/test_chfront.py
(the Python packages come from tests/clickhouse/requirements.txt; see tests/clickhouse/setup.sh).

Every test talks HTTP to a real chfront process started on a free port with a temporary data
directory, the way an exporter under test would. Data bodies are produced by the engine itself
(`SELECT ... FORMAT RowBinary`) and sent back, never hand-built.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import lz4.block
import lz4.frame
import pytest
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

CHFRONT = Path(__file__).with_name("chfront.py")

# One ClickHouse compressed block (checksum, 0x82, sizes, LZ4 block) made by the Rust `clickhouse`
# crate 0.15.3 (`clickhouse::_priv::lz4_compress`) for b"1\tgolden\n2\tblock\n": proves that the
# checksum chfront verifies is the one the exporter's client library writes.
RUST_CRATE_LZ4_BLOCK = bytes.fromhex(
    "166a49ebdb5f4929f7d503d5b32c317d821c00000011000000f0023109676f6c64656e0a3209626c6f636b0a")


# ------------------------------------------------------------------------------------------
# Harness
# ------------------------------------------------------------------------------------------

class Resp:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def code(self) -> int | None:
        c = self.headers.get("x-clickhouse-exception-code")
        return int(c) if c is not None else None

    def __repr__(self):
        return f"Resp({self.status}, {self.headers}, {self.body[:300]!r})"


class Chfront:
    def __init__(self, data_dir: Path, *extra: str):
        self.data_dir = data_dir
        self.log = data_dir.parent / (data_dir.name + ".stderr")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(CHFRONT), "--port", "0", "--data-dir", str(data_dir), *extra],
            stdout=subprocess.PIPE, stderr=open(self.log, "wb"), text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("chfront listening on "):
            self.stop()
            raise RuntimeError(f"chfront did not start: {line!r}\n{self.log.read_text()}")
        self.startup_seconds = time.monotonic() - t0
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, query: str | None = None, body: bytes | str = b"", method: str = "POST",
                params: list[tuple[str, str]] | dict | None = None, headers: dict | None = None,
                path: str = "/", chunked: bool = False) -> Resp:
        p = list(params.items()) if isinstance(params, dict) else list(params or [])
        if query is not None:
            p.append(("query", query))
        url = path + ("?" + urlencode(p) if p else "")
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            h = dict(headers or {})
            if chunked:
                conn.request(method, url, body=iter([body[:7], body[7:]]), headers=h, encode_chunked=True)
            elif method == "POST" or body:
                conn.request(method, url, body=body, headers=h)
            else:
                conn.request(method, url, headers=h)
            r = conn.getresponse()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()


def run(ch: Chfront, sql: str, **kw) -> Resp:
    """POST the statement in the body."""
    return ch.request(body=sql.encode(), **kw)


def ok(ch: Chfront, sql: str, **kw) -> str:
    r = run(ch, sql, **kw)
    assert r.status == 200 and r.code is None, r
    return r.text


@pytest.fixture(scope="module")
def ch(tmp_path_factory):
    server = Chfront(tmp_path_factory.mktemp("chfront") / "data")
    yield server
    server.stop()


# ------------------------------------------------------------------------------------------
# Native block format, written independently of chfront for the tests
# ------------------------------------------------------------------------------------------

def city128(data: bytes) -> bytes:
    h = CityHash128(data)
    return struct.pack("<QQ", h >> 64, h & 0xFFFFFFFFFFFFFFFF)


def lz4_block(data: bytes) -> bytes:
    comp = lz4.block.compress(data, store_size=False)
    body = bytes([0x82]) + struct.pack("<II", 9 + len(comp), len(data)) + comp
    return city128(body) + body


def zstd_block(data: bytes) -> bytes:
    comp = zstandard.ZstdCompressor(level=3).compress(data)
    body = bytes([0x90]) + struct.pack("<II", 9 + len(comp), len(data)) + comp
    return city128(body) + body


def read_blocks(data: bytes) -> tuple[bytes, int]:
    """Decode a compress=1 response, checking every checksum; returns (payload, block count)."""
    out, pos, blocks = [], 0, 0
    while pos < len(data):
        checksum = data[pos:pos + 16]
        method, csize, dsize = struct.unpack("<BII", data[pos + 16:pos + 25])
        block = data[pos + 16:pos + 16 + csize]
        assert city128(block) == checksum, "bad checksum in a chfront response block"
        assert method == 0x82
        out.append(lz4.block.decompress(block[9:], uncompressed_size=dsize))
        pos += 16 + csize
        blocks += 1
    return b"".join(out), blocks


# ------------------------------------------------------------------------------------------
# The OpenTelemetry collector's ClickHouse exporter schema (exporter/clickhouseexporter
# sqltemplates: traces_table.sql, traces_id_ts_lookup_table.sql, traces_id_ts_lookup_mv.sql)
# ------------------------------------------------------------------------------------------

TRACES_DDL = """
CREATE TABLE IF NOT EXISTS otel.otel_traces (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(3)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

LOOKUP_DDL = """
CREATE TABLE IF NOT EXISTS otel.otel_traces_trace_id_ts (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = MergeTree()
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
TTL toDateTime(Start) + toIntervalDay(3)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

MV_DDL = """
CREATE MATERIALIZED VIEW IF NOT EXISTS "otel"."otel_traces_trace_id_ts_mv"
TO "otel"."otel_traces_trace_id_ts"
AS SELECT
              TraceId,
              min(Timestamp) as Start,
              max(Timestamp) as End
   FROM "otel"."otel_traces"
   WHERE TraceId != ''
   GROUP BY TraceId
"""

# Rows made by the engine. Timestamps are recent: the tables have a 3-day TTL.
SPANS_SELECT = """
SELECT
    now64(9) - toIntervalMillisecond(number) AS Timestamp,
    leftPad(hex(intDiv(number, 4)), 32, '0') AS TraceId,
    leftPad(hex(number), 16, '0') AS SpanId,
    if(number % 4 = 0, '', leftPad(hex(number - 1), 16, '0')) AS ParentSpanId,
    '' AS TraceState,
    concat('op-', toString(number % 7)) AS SpanName,
    'Server' AS SpanKind,
    concat('svc-', toString(number % 3)) AS ServiceName,
    map('service.name', concat('svc-', toString(number % 3)), 'host.name', 'h1') AS ResourceAttributes,
    'sluice' AS ScopeName,
    '0.1.0' AS ScopeVersion,
    map('http.status_code', toString(200 + number % 5), 'unicode', 'ünï ☃') AS SpanAttributes,
    1000 + number AS Duration,
    'Ok' AS StatusCode,
    '' AS StatusMessage,
    [now64(9)] AS `Events.Timestamp`,
    ['ev'] AS `Events.Name`,
    [map('k', toString(number))] AS `Events.Attributes`,
    if(number % 2 = 0, [leftPad(hex(number), 32, '0')], []) AS `Links.TraceId`,
    if(number % 2 = 0, ['00000000000000aa'], []) AS `Links.SpanId`,
    if(number % 2 = 0, [''], []) AS `Links.TraceState`,
    if(number % 2 = 0, [map('l', 'v')], []) AS `Links.Attributes`
FROM numbers({n})
"""


@pytest.fixture(scope="module")
def otel(ch):
    """The exporter schema plus a staging copy holding engine-made spans."""
    ok(ch, "CREATE DATABASE IF NOT EXISTS otel")
    ok(ch, TRACES_DDL)
    ok(ch, LOOKUP_DDL)
    ok(ch, MV_DDL)
    ok(ch, "CREATE TABLE otel.staging AS otel.otel_traces ENGINE = MergeTree PRIMARY KEY SpanId ORDER BY SpanId")
    ok(ch, f"INSERT INTO otel.staging SELECT * FROM ({SPANS_SELECT.format(n=2000)})")
    cols = ok(ch, "SELECT name FROM system.columns WHERE database = 'otel' AND table = 'otel_traces' "
                  "AND default_kind != 'ALIAS' ORDER BY position").split()
    return ", ".join(f"`{c}`" for c in cols)


def count(ch, table: str, where: str = "1") -> int:
    return int(ok(ch, f"SELECT count() FROM {table} WHERE {where}"))


# ------------------------------------------------------------------------------------------
# Basics
# ------------------------------------------------------------------------------------------

def test_ping_root_and_select_1(ch):
    r = ch.request(method="GET", path="/ping")
    assert (r.status, r.body) == (200, b"Ok.\n")
    r = ch.request(method="GET")
    assert (r.status, r.body) == (200, b"Ok.\n")
    r = ch.request("SELECT 1", method="GET")
    assert (r.status, r.body) == (200, b"1\n")
    assert r.headers["x-clickhouse-format"] == "TabSeparated"
    assert "x-clickhouse-query-id" in r.headers
    summary = json.loads(r.headers["x-clickhouse-summary"])
    assert all(isinstance(v, str) for v in summary.values()) and "read_rows" in summary
    r = ch.request(method="GET", path="/nope")
    assert r.status == 404 and r.text.startswith("There is no handle /nope")


def test_version_and_engine_is_clickhouse(ch):
    version = ok(ch, "SELECT version()").strip()
    assert version.startswith("26.9.")
    r = run(ch, "SELECT * FROM no_such_table")
    assert f"(version {version} (official build))" in r.text


def test_query_param_and_body_are_joined_with_newline(ch):
    # ClickHouse semantics: URL query + "\n" + body.
    r = ch.request("SELECT", body="42 AS x")
    assert (r.status, r.text) == (200, "42\n")
    r = ch.request("SELECT 'a' AS s FORMAT", body="JSONEachRow")
    assert r.text == '{"s":"a"}\n' and r.headers["x-clickhouse-format"] == "JSONEachRow"


def test_default_format_and_database_params(ch):
    ok(ch, "CREATE DATABASE IF NOT EXISTS dbp")
    ok(ch, "CREATE TABLE IF NOT EXISTS dbp.t (x UInt8) ENGINE = MergeTree ORDER BY x")
    r = run(ch, "SELECT currentDatabase() AS d, count() AS n FROM t", params={"database": "dbp",
                                                                             "default_format": "JSONEachRow"})
    assert r.status == 200 and json.loads(r.text) == {"d": "dbp", "n": 0}
    r = run(ch, "SELECT 1", params={"database": "no_such_db"})
    assert r.status == 404 and r.code == 81 and "UNKNOWN_DATABASE" in r.text
    # X-ClickHouse-Database / X-ClickHouse-Format headers win over parameters.
    r = run(ch, "SELECT currentDatabase() AS d", params={"database": "default"},
            headers={"X-ClickHouse-Database": "dbp", "X-ClickHouse-Format": "CSV"})
    assert r.text == '"dbp"\n'
    # The current database does not stick to the (shared) embedded session.
    assert ok(ch, "SELECT currentDatabase()") == "default\n"


def test_chunked_request_body(ch):
    r = ch.request(body="SELECT 'chunked' AS c", chunked=True)
    assert (r.status, r.text) == (200, "chunked\n")


def test_post_without_length_is_411(ch):
    with socket.create_connection(("127.0.0.1", ch.port), timeout=30) as s:
        s.sendall(b"POST /?query=SELECT+1 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
    head = data.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 411") and "X-ClickHouse-Exception-Code: 381" in head


# ------------------------------------------------------------------------------------------
# Schema, RowBinary INSERT, materialized view
# ------------------------------------------------------------------------------------------

def test_exporter_schema_is_created_as_written(ch, otel):
    create = ok(ch, "SHOW CREATE TABLE otel.otel_traces", params={"default_format": "TSVRaw"})
    for needle in ("`Timestamp` DateTime64(9) CODEC(Delta(8), ZSTD(1))",
                   "`ResourceAttributes` Map(LowCardinality(String), String) CODEC(ZSTD(1))",
                   "`Events.Timestamp` Array(DateTime64(9)) CODEC(ZSTD(1))",
                   "`Links.Attributes` Array(Map(LowCardinality(String), String)) CODEC(ZSTD(1))",
                   "`Duration` UInt64 CODEC(T64, ZSTD(1))",
                   "INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
                   "TTL toDateTime(Timestamp) + toIntervalDay(3)",
                   "ttl_only_drop_parts = 1"):
        assert needle in create, needle
    engines = ok(ch, "SELECT name, engine FROM system.tables WHERE database = 'otel' ORDER BY name")
    assert "otel_traces_trace_id_ts_mv\tMaterializedView" in engines
    # What the Rust client sends before every insert (schema validation).
    r = run(ch, "DESCRIBE TABLE otel.otel_traces", params={"default_format": "RowBinaryWithNamesAndTypes",
                                                           "describe_include_subcolumns": "0"})
    assert r.status == 200 and r.headers["content-type"] == "application/octet-stream"
    assert b"default_expression" in r.body and b"ttl_expression" in r.body and b"ALIAS" in r.body


def _spans(ch, cols: str, fmt: str, where: str = "1") -> bytes:
    r = run(ch, f"SELECT {cols} FROM otel.staging WHERE {where} ORDER BY SpanId FORMAT {fmt}")
    assert r.status == 200, r
    return r.body


def test_rowbinary_insert_round_trip_and_mv(ch, otel):
    data = _spans(ch, otel, "RowBinary", "toUInt64(reinterpretAsUInt64(reverse(unhex(SpanId)))) < 1000")
    r = ch.request(f"INSERT INTO otel.otel_traces ({otel}) FORMAT RowBinary", body=data)
    assert r.status == 200 and r.body == b"", r
    # written_rows counts the rows the materialized view wrote too (1000 spans + 250 traces).
    assert json.loads(r.headers["x-clickhouse-summary"])["written_rows"] == "1250"
    assert count(ch, "otel.otel_traces") == 1000
    back = run(ch, f"SELECT {otel} FROM otel.otel_traces ORDER BY SpanId FORMAT RowBinary").body
    assert back == data  # byte-identical: Map, Nested, DateTime64(9), LowCardinality, unicode
    # The materialized view filled otel_traces_trace_id_ts on insert.
    assert count(ch, "otel.otel_traces_trace_id_ts") == 250
    mismatches = ok(ch, """
        SELECT count() FROM otel.otel_traces_trace_id_ts AS l
        INNER JOIN (SELECT TraceId, toDateTime(min(Timestamp)) AS s, toDateTime(max(Timestamp)) AS e
                    FROM otel.otel_traces GROUP BY TraceId) AS t USING TraceId
        WHERE l.Start != t.s OR l.End != t.e""")
    assert mismatches == "0\n"
    # The indexes exist and are usable.
    assert ok(ch, "SELECT count() FROM otel.otel_traces WHERE TraceId = leftPad(hex(7), 32, '0') "
                  "AND mapContains(ResourceAttributes, 'host.name')") == "4\n"


def test_rowbinary_with_names_and_types_insert_lz4(ch, otel):
    """What the Rust clickhouse crate 0.14/0.15 sends: RWNAT, decompress=1, chunked."""
    where = "toUInt64(reinterpretAsUInt64(reverse(unhex(SpanId)))) BETWEEN 1000 AND 1499"
    data = _spans(ch, otel, "RowBinaryWithNamesAndTypes", where)
    before = count(ch, "otel.otel_traces")
    body = lz4_block(data[:len(data) // 2]) + lz4_block(data[len(data) // 2:])  # two blocks
    r = ch.request(f"INSERT INTO otel.otel_traces({otel}) FORMAT RowBinaryWithNamesAndTypes", body=body,
                   params={"decompress": "1", "database": "otel"}, chunked=True)
    assert r.status == 200, r
    assert count(ch, "otel.otel_traces") == before + 500
    same = ok(ch, f"SELECT count() FROM (SELECT {otel} FROM otel.staging WHERE {where} "
                  f"EXCEPT SELECT {otel} FROM otel.otel_traces)")
    assert same == "0\n"


def test_rowbinary_with_names_and_types_type_mismatch_is_rejected(ch, otel):
    # Map(String, String) is not Map(LowCardinality(String), String): a real server says INCORRECT_DATA.
    data = run(ch, "SELECT map('a', 'b') AS ResourceAttributes FORMAT RowBinaryWithNamesAndTypes").body
    before = count(ch, "otel.otel_traces")
    r = ch.request("INSERT INTO otel.otel_traces (ResourceAttributes) FORMAT RowBinaryWithNamesAndTypes", body=data)
    assert r.status == 400 and r.code == 117 and "INCORRECT_DATA" in r.text, r
    assert "Map(LowCardinality(String), String)" in r.text
    assert count(ch, "otel.otel_traces") == before


def test_truncated_rowbinary_is_rejected(ch, otel):
    data = _spans(ch, otel, "RowBinary", "toUInt64(reinterpretAsUInt64(reverse(unhex(SpanId)))) >= 1900")
    before = count(ch, "otel.otel_traces")
    r = ch.request(f"INSERT INTO otel.otel_traces ({otel}) FORMAT RowBinary", body=data[:-5])
    assert r.status == 500 and r.code == 33 and "CANNOT_READ_ALL_DATA" in r.text, r
    assert count(ch, "otel.otel_traces") == before


def test_insert_data_in_query_text_and_settings_after_format(ch):
    ok(ch, "CREATE TABLE IF NOT EXISTS default.kv (k String, v UInt32) ENGINE = MergeTree ORDER BY k")
    ok(ch, "INSERT INTO default.kv FORMAT TSV\nx\t1\ny\t2\n")
    ok(ch, "INSERT INTO default.kv (k, v) FORMAT JSONEachRow SETTINGS input_format_skip_unknown_fields = 1 "
           '{"k": "z", "v": 3, "extra": 1}')
    ok(ch, "INSERT INTO default.kv VALUES ('w', 4)")
    assert ok(ch, "SELECT k, v FROM default.kv ORDER BY k FORMAT CSV") == '"w",4\n"x",1\n"y",2\n"z",3\n'
    r = run(ch, "INSERT INTO default.kv FORMAT TSV;\nq\t1\n")
    assert r.status == 400 and "excessive ';'" in r.text
    r = run(ch, "INSERT INTO default.kv (k, nope) FORMAT TSV\nq\t1\n")
    assert r.status == 500 and r.code == 16 and "NO_SUCH_COLUMN_IN_TABLE" in r.text
    r = run(ch, "INSERT INTO default.kv FORMAT TSV\nq\tnot-a-number\n")
    assert r.status == 400 and r.code in (27, 6, 72) and "(version" in r.text, r
    r = run(ch, "INSERT INTO default.kv FORMAT NoSuchFormat\nq\t1\n")
    assert r.status == 404 and r.code == 73 and "UNKNOWN_FORMAT" in r.text


# ------------------------------------------------------------------------------------------
# Compression
# ------------------------------------------------------------------------------------------

def test_rust_crate_block_is_accepted(ch):
    ok(ch, "CREATE TABLE IF NOT EXISTS default.golden (n UInt8, s String) ENGINE = MergeTree ORDER BY n")
    r = ch.request("INSERT INTO default.golden FORMAT TSV", body=RUST_CRATE_LZ4_BLOCK, params={"decompress": "1"})
    assert r.status == 200, r
    assert ok(ch, "SELECT n, s FROM default.golden ORDER BY n") == "1\tgolden\n2\tblock\n"


def test_zstd_native_block_is_accepted(ch):
    r = ch.request(body=zstd_block(b"SELECT 'zstd block' AS s"), params={"decompress": "1"})
    assert (r.status, r.text) == (200, "zstd block\n")


def test_bad_checksum_is_rejected(ch):
    ok(ch, "CREATE TABLE IF NOT EXISTS default.cs (n UInt32) ENGINE = MergeTree ORDER BY n")
    good = lz4_block(b"1\n2\n3\n")
    # One flipped bit in the stored checksum.
    bad = bytes([good[0] ^ 0x01]) + good[1:]
    r = ch.request("INSERT INTO default.cs FORMAT TSV", body=bad, params={"decompress": "1"})
    assert r.status == 500 and r.code == 40 and "CHECKSUM_DOESNT_MATCH" in r.text, r
    assert "Checksum doesn't match: corrupted data. Reference:" in r.text
    assert "single bit flip in checksum" in r.text
    # One flipped bit in the compressed data.
    bad = good[:-1] + bytes([good[-1] ^ 0x10])
    r = ch.request("INSERT INTO default.cs FORMAT TSV", body=bad, params={"decompress": "1"})
    assert r.code == 40 and "single bit flip in data block" in r.text, r
    # Garbage, truncation, unknown codec.
    r = ch.request("INSERT INTO default.cs FORMAT TSV", body=b"1\n2\n3\n", params={"decompress": "1"})
    assert r.status == 500 and r.code == 33 and "CANNOT_READ_ALL_DATA" in r.text
    r = ch.request("INSERT INTO default.cs FORMAT TSV", body=good[:-2], params={"decompress": "1"})
    assert r.code == 33
    body = bytes([0x7F]) + good[17:]
    r = ch.request("INSERT INTO default.cs FORMAT TSV", body=city128(body) + body, params={"decompress": "1"})
    assert r.code == 432 and "UNKNOWN_CODEC" in r.text
    assert count(ch, "default.cs") == 0
    # The same block with a good checksum goes in; the setting that skips the check is honoured.
    assert ch.request("INSERT INTO default.cs FORMAT TSV", body=good, params={"decompress": "1"}).status == 200
    bad = bytes([good[0] ^ 0x01]) + good[1:]
    r = ch.request("INSERT INTO default.cs FORMAT TSV", body=bad, params={
        "decompress": "1", "http_native_compression_disable_checksumming_on_decompress": "1"})
    assert r.status == 200
    assert count(ch, "default.cs") == 6


def test_compressed_response_round_trip(ch):
    plain = run(ch, "SELECT number, toString(number) FROM numbers(200000) FORMAT RowBinary").body
    assert len(plain) > 2 * 1048576
    r = run(ch, "SELECT number, toString(number) FROM numbers(200000) FORMAT RowBinary", params={"compress": "1"})
    assert r.status == 200 and "content-encoding" not in r.headers
    payload, blocks = read_blocks(r.body)
    assert payload == plain and blocks == 3  # 1 MiB uncompressed per block, like CompressedWriteBuffer
    # Request and response both compressed (the query itself is in the compressed body).
    r = ch.request(body=lz4_block(b"SELECT 'both ways' AS s"), params={"decompress": "1", "compress": "1"})
    assert read_blocks(r.body) == (b"both ways\n", 1)
    # Errors go through the same compressed stream (decoders fall back to plain text if needed).
    r = run(ch, "SELECT * FROM no_such_table", params={"compress": "1"})
    assert r.status == 404 and r.code == 60 and b"UNKNOWN_TABLE" in read_blocks(r.body)[0]


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip", "deflate"])
def test_http_content_encoding(ch, encoding):
    r = run(ch, "SELECT number FROM numbers(3)", headers={"Accept-Encoding": encoding})
    assert r.status == 200 and r.headers["content-encoding"] == encoding
    decode = {"lz4": lz4.frame.decompress, "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
              "gzip": gzip.decompress, "deflate": __import__("zlib").decompress}[encoding]
    assert decode(r.body) == b"0\n1\n2\n"
    # Disabled by the setting, as on a server.
    r = run(ch, "SELECT 1", headers={"Accept-Encoding": encoding}, params={"enable_http_compression": "0"})
    assert "content-encoding" not in r.headers and r.body == b"1\n"


def test_request_content_encoding(ch):
    r = ch.request(body=gzip.compress(b"SELECT 'gz' AS s"), headers={"Content-Encoding": "gzip"})
    assert r.text == "gz\n"
    r = ch.request(body=lz4.frame.compress(b"SELECT 'lz4f' AS s"), headers={"Content-Encoding": "lz4"})
    assert r.text == "lz4f\n"
    r = ch.request(body=b"SELECT 1", headers={"Content-Encoding": "weird"})
    assert r.status == 400 and r.code == 36


# ------------------------------------------------------------------------------------------
# Errors, settings, parameters, read-only, authentication
# ------------------------------------------------------------------------------------------

def test_unknown_table(ch):
    r = run(ch, "SELECT * FROM default.no_such_table")
    assert r.status == 404
    assert r.headers["x-clickhouse-exception-code"] == "60"
    assert r.text.startswith("Code: 60. DB::Exception: ") and "(UNKNOWN_TABLE)" in r.text
    assert r.text.endswith(")\n")
    r = ch.request("INSERT INTO default.no_such_table FORMAT RowBinary", body=b"\x01")
    assert r.status == 404 and r.code == 60 and "UNKNOWN_TABLE" in r.text


def test_syntax_error(ch):
    r = run(ch, "SELEC 1")
    assert r.status == 400 and r.code == 62 and "SYNTAX_ERROR" in r.text
    r = run(ch, "SELECT 1; SELECT 2")
    assert r.status == 400 and r.code == 62 and "Multi-statements are not allowed" in r.text
    assert run(ch, "SELECT 1;").text == "1\n"  # one trailing ';' is fine
    r = run(ch, "")
    assert r.status == 400 and "Empty query" in r.text
    r = run(ch, "1 + 1")  # chDB alone would accept this (implicit_select); a server does not
    assert r.status == 400 and r.code == 62


def test_settings_are_per_request(ch):
    r = run(ch, "SELECT getSetting('max_block_size')", params={"max_block_size": "1234"})
    assert r.text == "1234\n"
    default = ok(ch, "SELECT getSetting('max_block_size')")
    assert default != "1234\n"
    ok(ch, "SET max_block_size = 777")
    assert ok(ch, "SELECT getSetting('max_block_size')") == default
    # Limits that would also hit chfront's own bookkeeping queries do not leak either.
    r = run(ch, "SELECT number FROM numbers(5)", params={"max_result_rows": "1"})
    assert r.status == 500 and r.code == 396, r
    ok(ch, "SET limit = 1, max_result_rows = 1")
    assert ok(ch, "SELECT number FROM numbers(3)") == "0\n1\n2\n"
    r = run(ch, "SELECT 1", params={"no_such_setting": "1"})
    assert r.status == 404 and r.code == 115 and "UNKNOWN_SETTING" in r.text
    r = run(ch, "SELECT 1", params={"max_block_size": "lots"})
    assert r.status == 400 and r.code == 27
    # Reserved parameters are not settings.
    r = run(ch, "SELECT 1", params={"query_id": "qid-1", "session_id": "s", "wait_end_of_query": "1",
                                    "buffer_size": "100", "stacktrace": "1"})
    assert r.status == 200 and r.headers["x-clickhouse-query-id"] == "qid-1"


def test_query_parameters_url_and_multipart(ch):
    r = run(ch, "SELECT {a:UInt32} + 1, {s:String}", params={"param_a": "41", "param_s": "x\\ty"})
    assert r.text == "42\tx\\ty\n"
    boundary = "clickhouse-rs-boundary-0123456789abcdef"
    fields = [("query", "SELECT {n:UInt64} * 2 AS v"), ("param_n", "21")]
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields)
    body += f"--{boundary}--\r\n"
    r = ch.request(body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                   params={"default_format": "JSONEachRow"})
    assert r.status == 200 and json.loads(r.text) == {"v": 42}, r


def test_readonly(ch):
    r = ch.request("CREATE TABLE default.ro (x UInt8) ENGINE = Memory", method="GET")
    assert r.status == 500 and r.code == 164 and "method GET implies readonly" in r.text
    r = run(ch, "CREATE TABLE default.ro (x UInt8) ENGINE = Memory", params={"readonly": "1"})
    assert r.code == 164 and "READONLY" in r.text
    assert run(ch, "SELECT 1", params={"readonly": "1"}).text == "1\n"
    assert ok(ch, "EXISTS TABLE default.ro") == "0\n"


def test_into_outfile_and_from_infile_are_refused(ch, tmp_path):
    target = tmp_path / "out.tsv"
    r = run(ch, f"SELECT 1 INTO OUTFILE '{target}'")
    assert r.status != 200 and "INTO OUTFILE is not allowed" in r.text and not target.exists()
    r = run(ch, f"INSERT INTO default.kv FROM INFILE '{CHFRONT}' FORMAT TSV")
    assert r.status == 404 and "infile" in r.text


@pytest.fixture(scope="module")
def ch_auth(tmp_path_factory):
    server = Chfront(tmp_path_factory.mktemp("chfront-auth") / "data", "--user", "sluice", "--password", "s3cret")
    yield server
    server.stop()


def test_authentication(ch_auth):
    r = ch_auth.request("SELECT 1", method="GET")
    assert r.status == 403 and r.code == 516 and "default: Authentication failed" in r.text
    r = ch_auth.request("SELECT 1", headers={"X-ClickHouse-User": "sluice", "X-ClickHouse-Key": "wrong"})
    assert r.status == 403 and r.code == 516 and "AUTHENTICATION_FAILED" in r.text
    r = ch_auth.request("SELECT 1", headers={"X-ClickHouse-User": "sluice", "X-ClickHouse-Key": "s3cret"})
    assert (r.status, r.text) == (200, "1\n")
    basic = base64.b64encode(b"sluice:s3cret").decode()
    assert ch_auth.request("SELECT 1", headers={"Authorization": f"Basic {basic}"}).status == 200
    assert ch_auth.request("SELECT 1", params={"user": "sluice", "password": "s3cret"}).status == 200
    r = ch_auth.request("SELECT 1", headers={"X-ClickHouse-User": "sluice", "X-ClickHouse-Key": "s3cret",
                                             "Authorization": f"Basic {basic}"})
    assert r.status == 403 and "simultaneously" in r.text
    # Auth failures are answered before the output is set up: never compressed.
    r = ch_auth.request("SELECT 1", params={"compress": "1"}, headers={"Accept-Encoding": "gzip"})
    assert r.status == 403 and "content-encoding" not in r.headers and r.text.startswith("Code: 516.")


def test_data_survives_restart(tmp_path):
    data_dir = tmp_path / "persist"
    a = Chfront(data_dir)
    try:
        ok(a, "CREATE TABLE default.p (x UInt32) ENGINE = MergeTree ORDER BY x")
        ok(a, "INSERT INTO default.p SELECT number FROM numbers(1234)")
        print(f"chfront start-up: {a.startup_seconds:.2f}s")
        # chDB locks its data directory: a second server on it refuses to start, with a message.
        with pytest.raises(RuntimeError, match="cannot open the engine"):
            Chfront(data_dir)
    finally:
        a.stop()
    b = Chfront(data_dir)
    try:
        assert count(b, "default.p") == 1234
    finally:
        b.stop()


def test_concurrent_requests(ch):
    import concurrent.futures as cf
    ok(ch, "CREATE TABLE IF NOT EXISTS default.conc (w UInt8, n UInt32) ENGINE = MergeTree ORDER BY (w, n)")

    def work(w: int) -> None:
        for i in range(10):
            r = ch.request(f"INSERT INTO default.conc FORMAT TSV", body=f"{w}\t{i}\n",
                           params={"max_block_size": str(1000 + w)})
            assert r.status == 200, r
            assert run(ch, "SELECT getSetting('max_block_size')", params={"max_block_size": str(1000 + w)}).text \
                == f"{1000 + w}\n"

    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(work, range(8)))
    assert count(ch, "default.conc") == 80

#!/usr/bin/env python3
"""chfront: a small, strict ClickHouse HTTP interface in front of an embedded ClickHouse engine.

The SQL engine is the real ClickHouse code, embedded in-process through chDB (PyPI
`chdb-core`): every statement, every INSERT data body (RowBinary,
RowBinaryWithNamesAndTypes, TSV, JSONEachRow, ...) and every result format is parsed or
produced by the engine itself. This file only implements the HTTP layer a ClickHouse
server puts around it: URL parameters, settings, authentication, the native compressed
block format (`compress=1` / `decompress=1`, CityHash128-checked), HTTP Content-Encoding,
query parameters, error bodies, status codes and headers. See README.md next to this file.

Usage:
    python chfront.py --port 8123 --data-dir /tmp/ch [--user U --password P] [--verbose]

Prints `chfront listening on 127.0.0.1:PORT` once it accepts connections (with
--port 0 the kernel picks the port and the line tells which).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import os
import re
import signal
import struct
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
import lz4.frame
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------

# Filled at start-up from the engine (errorCodeToName), so codes and names are the engine's.
ERROR_CODES: dict[str, int] = {}
ENGINE_VERSION = "0.0.0.0"

# src/Server/HTTP/exceptionCodeToHTTPStatus.cpp (ClickHouse 25.x/26.x)
_STATUS_BY_NAME = {
    "REQUIRED_PASSWORD": 401,
    **{n: 403 for n in ("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE",
                        "ACCESS_DENIED")},
    **{n: 400 for n in (
        "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
        "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
        "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
        "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE")},
    **{n: 404 for n in (
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
        "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
        "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE")},
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

# Fallback codes, used only if the engine table could not be read.
_FALLBACK_CODES = {
    "STD_EXCEPTION": 1001, "SYNTAX_ERROR": 62, "BAD_ARGUMENTS": 36, "NOT_IMPLEMENTED": 48,
    "AUTHENTICATION_FAILED": 516, "READONLY": 164, "HTTP_LENGTH_REQUIRED": 381,
    "CHECKSUM_DOESNT_MATCH": 40, "CANNOT_DECOMPRESS": 271, "UNKNOWN_CODEC": 432,
    "CANNOT_READ_ALL_DATA": 33, "CORRUPTED_DATA": 246, "TOO_LARGE_SIZE_COMPRESSED": 39,
    "UNKNOWN_ROLE": 511, "UNKNOWN_FORMAT": 73, "INTO_OUTFILE_NOT_ALLOWED": 358,
    "UNKNOWN_TYPE_OF_QUERY": 78, "ZLIB_INFLATE_FAILED": 354, "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27,
}


def code_of(name: str) -> int:
    return ERROR_CODES.get(name) or _FALLBACK_CODES.get(name, 1001)


class CHError(Exception):
    """An exception as ClickHouse would report it: code, name and message."""

    def __init__(self, name: str, message: str, code: int | None = None):
        super().__init__(message)
        self.name = name
        self.code = code if code is not None else code_of(name)
        self.message = message

    def text(self) -> str:
        msg = self.message
        if not msg.endswith("."):
            msg += "."
        return f"Code: {self.code}. DB::Exception: {msg} ({self.name}) (version {ENGINE_VERSION} (official build))"

    @property
    def status(self) -> int:
        return _STATUS_BY_NAME.get(self.name, 500)


_NESTED_RE = re.compile(
    r"^Code: (\d+)\. DB::Exception: (Code: \1\. DB::Exception: .*?)(?: \(version [^()]*\))?\. \(([A-Z0-9_]+)\)$", re.S)
_HEAD_RE = re.compile(r"^Code: (\d+)\. DB::Exception: (.*)$", re.S)
_TAIL_RE = re.compile(r"^(.*?)\.? \(([A-Z][A-Z0-9_]*)\)(?: \(version [^()]*\))?$", re.S)


class EngineError(CHError):
    """An exception raised by the embedded engine, normalised to the server's text form."""

    def __init__(self, raw: str):
        text = raw.strip()
        for prefix in ("Streaming insert finish failed: ", "Streaming insert append failed: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
        # chDB sometimes wraps an exception into another one with the same code.
        while True:
            m = _NESTED_RE.match(text)
            if not m:
                break
            text = m.group(2)
        m = _HEAD_RE.match(text)
        if m:
            code = int(m.group(1))
            body = m.group(2)
            t = _TAIL_RE.match(body)
            if t:
                message, name = t.group(1), t.group(2)
            else:
                message, name = body, _name_of(code)
        else:
            code, name, message = code_of("STD_EXCEPTION"), "STD_EXCEPTION", text
        super().__init__(name, message, code)


def _name_of(code: int) -> str:
    for n, c in ERROR_CODES.items():
        if c == code:
            return n
    return "UNKNOWN_EXCEPTION"


# ----------------------------------------------------------------------------------------
# ClickHouse native compressed blocks (compress=1 / decompress=1)
# ----------------------------------------------------------------------------------------

CHECKSUM_SIZE = 16
HEADER_SIZE = 9
METHOD_NONE, METHOD_LZ4, METHOD_ZSTD = 0x02, 0x82, 0x90
# Codec family codes ClickHouse knows but chfront does not decode (Multiple, Delta, T64, ...).
_KNOWN_UNSUPPORTED_METHODS = set(range(0x91, 0xA0)) | {0x01}
DBMS_MAX_COMPRESSED_SIZE = 0x40000000
DBMS_DEFAULT_BUFFER_SIZE = 1048576


def _cityhash_pair(data: bytes) -> tuple[int, int]:
    """CityHash v1.0.2 128-bit as ClickHouse's (first, second) pair of UInt64."""
    h = CityHash128(data)
    return h >> 64, h & 0xFFFFFFFFFFFFFFFF


def _checksum_bytes(data: bytes) -> bytes:
    first, second = _cityhash_pair(data)
    return struct.pack("<QQ", first, second)


def _validate_checksum(block: bytes, stored: bytes) -> None:
    exp_first, exp_second = struct.unpack("<QQ", stored)
    first, second = _cityhash_pair(block)
    if (first, second) == (exp_first, exp_second):
        return
    msg = (f"Checksum doesn't match: corrupted data. Reference: {exp_first:016x}{exp_second:016x}. "
           f"Actual: {first:016x}{second:016x}. Size of compressed block: {len(block)}")
    hw = ("This is most likely due to hardware failure. If you receive broken data over network and the error "
          "does not repeat every time, this can be caused by bad RAM on network interface controller or bad "
          "controller itself or bad RAM on network switches or bad CPU on network switches (look at the logs on "
          "related network switches; note that TCP checksums don't help) or bad RAM on host (look at dmesg or "
          "kern.log for enormous amount of EDAC errors, ECC-related reports, Machine Check Exceptions, mcelog; "
          "note that ECC memory can fail if the number of errors is huge) or bad CPU on host. If you read data "
          "from disk, this can be caused by disk bit rot. This exception protects ClickHouse from data "
          "corruption due to hardware failures.")
    # The server also looks for a single flipped bit; that is cheap only for small blocks here.
    if len(block) <= 2048:
        buf = bytearray(block)
        for bit in range(len(buf) * 8):
            buf[bit // 8] ^= 1 << (bit % 8)
            if _cityhash_pair(bytes(buf)) == (exp_first, exp_second):
                raise CHError("CHECKSUM_DOESNT_MATCH", f"{msg}. The mismatch is caused by single bit flip in data "
                              f"block at byte {bit // 8}, bit {bit % 8}. {hw}")
            buf[bit // 8] ^= 1 << (bit % 8)
    diff = bin(exp_first ^ first).count("1") + bin(exp_second ^ second).count("1")
    if diff == 1:
        raise CHError("CHECKSUM_DOESNT_MATCH", f"{msg}. The mismatch is caused by single bit flip in checksum. {hw}")
    raise CHError("CHECKSUM_DOESNT_MATCH", msg)


def decompress_native(data: bytes, verify_checksum: bool = True) -> bytes:
    """Decode a stream of ClickHouse compressed blocks (CompressedReadBuffer semantics)."""
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        meta = CHECKSUM_SIZE + HEADER_SIZE
        if n - pos < meta:
            raise CHError("CANNOT_READ_ALL_DATA", f"Cannot read all data. Bytes read: {n - pos}. Bytes expected: {meta}")
        stored = data[pos:pos + CHECKSUM_SIZE]
        header = data[pos + CHECKSUM_SIZE:pos + meta]
        method = header[0]
        size_compressed, size_decompressed = struct.unpack("<II", header[1:9])
        if method not in (METHOD_NONE, METHOD_LZ4, METHOD_ZSTD):
            if method in _KNOWN_UNSUPPORTED_METHODS:
                raise CHError("NOT_IMPLEMENTED", f"chfront: compression codec with method byte 0x{method:02x} "
                              "is not supported in request bodies (only LZ4 0x82, ZSTD 0x90, NONE 0x02)")
            raise CHError("UNKNOWN_CODEC", f"Unknown codec family code: {method}")
        if size_compressed > DBMS_MAX_COMPRESSED_SIZE:
            raise CHError("TOO_LARGE_SIZE_COMPRESSED", f"Too large size_compressed_without_checksum: "
                          f"{size_compressed}. Most likely corrupted data")
        if size_compressed < HEADER_SIZE:
            raise CHError("CORRUPTED_DATA", f"Can't decompress data: the compressed data size ({size_compressed}, "
                          f"this should include header size) is less than the header size ({HEADER_SIZE})")
        block = data[pos + CHECKSUM_SIZE:pos + CHECKSUM_SIZE + size_compressed]
        if len(block) < size_compressed:
            raise CHError("CANNOT_READ_ALL_DATA", f"Cannot read all data. Bytes read: {len(block) - HEADER_SIZE}. "
                          f"Bytes expected: {size_compressed - HEADER_SIZE}")
        if verify_checksum:
            _validate_checksum(block, stored)
        payload = block[HEADER_SIZE:]
        if method == METHOD_LZ4:
            try:
                plain = lz4.block.decompress(payload, uncompressed_size=size_decompressed)
            except Exception:
                raise CHError("CANNOT_DECOMPRESS", "Cannot decompress LZ4-encoded data") from None
        elif method == METHOD_ZSTD:
            try:
                plain = zstandard.ZstdDecompressor().decompress(payload, max_output_size=size_decompressed)
            except Exception as e:
                raise CHError("CANNOT_DECOMPRESS", f"Cannot decompress ZSTD-encoded data: {e}") from None
        else:
            plain = payload
        if len(plain) != size_decompressed:
            raise CHError("CANNOT_DECOMPRESS", f"Cannot decompress block: decompressed size {len(plain)} "
                          f"differs from the size in the header {size_decompressed}")
        out.append(plain)
        pos += CHECKSUM_SIZE + size_compressed
    return b"".join(out)


def compress_native(data: bytes) -> bytes:
    """Encode like CompressedWriteBuffer with the default LZ4 codec (1 MiB blocks)."""
    out = []
    for off in range(0, len(data), DBMS_DEFAULT_BUFFER_SIZE):
        chunk = data[off:off + DBMS_DEFAULT_BUFFER_SIZE]
        comp = lz4.block.compress(chunk, store_size=False)
        block = bytes([METHOD_LZ4]) + struct.pack("<II", HEADER_SIZE + len(comp), len(chunk)) + comp
        out.append(_checksum_bytes(block) + block)
    return b"".join(out)


# ----------------------------------------------------------------------------------------
# HTTP Content-Encoding
# ----------------------------------------------------------------------------------------

_UNKNOWN_METHOD_MSG = ("Unknown compression method '{}'. Only 'auto', 'none', 'gzip', 'deflate', 'br', 'xz', "
                       "'zstd', 'lz4', 'bz2', 'snappy' are supported as compression methods")


def decode_content_encoding(data: bytes, encoding: str) -> bytes:
    enc = encoding.strip().lower()
    if enc in ("", "none", "auto"):
        return data
    try:
        if enc in ("gzip", "gz"):
            return gzip.decompress(data)
        if enc in ("deflate", "zlib"):
            return zlib.decompress(data)
        if enc in ("zstd", "zst"):
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if enc == "lz4":
            return lz4.frame.decompress(data)
        if enc == "xz":
            return lzma.decompress(data)
        if enc in ("bz2", "bzip2"):
            return bz2.decompress(data)
    except Exception as e:
        names = {"gzip": "ZLIB_INFLATE_FAILED", "gz": "ZLIB_INFLATE_FAILED", "deflate": "ZLIB_INFLATE_FAILED",
                 "zlib": "ZLIB_INFLATE_FAILED", "zstd": "ZSTD_DECODER_FAILED", "zst": "ZSTD_DECODER_FAILED",
                 "lz4": "LZ4_DECODER_FAILED", "xz": "LZMA_STREAM_DECODER_FAILED",
                 "bz2": "BZIP2_STREAM_DECODER_FAILED", "bzip2": "BZIP2_STREAM_DECODER_FAILED"}
        name = names[enc] if names[enc] in ERROR_CODES else "CANNOT_DECOMPRESS"
        raise CHError(name, f"Cannot decode request body with Content-Encoding {enc}: {e}") from None
    if enc in ("br", "brotli", "snappy"):
        raise CHError("NOT_IMPLEMENTED", f"chfront: Content-Encoding {enc} is not supported")
    raise CHError("BAD_ARGUMENTS", _UNKNOWN_METHOD_MSG.format(encoding))


def choose_response_encoding(accept: str) -> str | None:
    """chooseHTTPCompressionMethod() order, minus br and snappy, which chfront cannot produce."""
    for name in ("zstd", "lz4", "gzip", "deflate", "xz", "bz2"):
        if name in accept:
            return name
    return None


def encode_content(data: bytes, enc: str, level: int) -> bytes:
    if enc == "zstd":
        return zstandard.ZstdCompressor(level=max(1, min(level, 22))).compress(data)
    if enc == "lz4":
        return lz4.frame.compress(data, block_size=lz4.frame.BLOCKSIZE_MAX256KB, block_linked=True,
                                  content_checksum=False, store_size=False)
    if enc == "gzip":
        return gzip.compress(data, compresslevel=max(1, min(level, 9)))
    if enc == "deflate":
        return zlib.compress(data, max(1, min(level, 9)))
    if enc == "xz":
        return lzma.compress(data)
    if enc == "bz2":
        return bz2.compress(data)
    raise AssertionError(enc)


# ----------------------------------------------------------------------------------------
# A small SQL lexer: enough to find statement kind, FORMAT clauses, INSERT data, multi-statements.
# The text is latin-1 decoded bytes, so offsets are byte offsets and binary data is harmless.
# ----------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"""
  (?P<ws>[ \t\n\r\f\v]+)
| (?P<lcomment>--[^\n]*|\#[ !][^\n]*)
| (?P<bcomment>/\*)
| (?P<string>'(?:[^'\\]|\\.|'')*'?)
| (?P<qident>"(?:[^"\\]|\\.|"")*"?|`(?:[^`\\]|\\.|``)*`?)
| (?P<heredoc>\$(?P<tag>[A-Za-z0-9_]*)\$)
| (?P<word>[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)
| (?P<number>[0-9][0-9A-Za-z_.]*)
| (?P<punct>.)
""", re.S | re.X)


class Tok:
    __slots__ = ("kind", "text", "start", "end", "depth")

    def __init__(self, kind, text, start, end, depth):
        self.kind, self.text, self.start, self.end, self.depth = kind, text, start, end, depth

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words

    def __repr__(self):
        return f"Tok({self.kind},{self.text!r},{self.start},{self.depth})"


def iter_tokens(text: str, pos: int = 0):
    """Yield significant tokens (no whitespace/comments) with their bracket depth."""
    depth = 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        kind = m.lastgroup if m.lastgroup != "tag" else "heredoc"
        if kind == "bcomment":
            level, i = 1, pos + 2
            while i < n and level:
                if text.startswith("/*", i):
                    level, i = level + 1, i + 2
                elif text.startswith("*/", i):
                    level, i = level - 1, i + 2
                else:
                    i += 1
            pos = i
            continue
        if kind == "heredoc":
            tag = m.group(0)
            close = text.find(tag, m.end())
            end = n if close < 0 else close + len(tag)
            yield Tok("string", text[pos:end], pos, end, depth)
            pos = end
            continue
        end = m.end()
        if kind in ("ws", "lcomment"):
            pos = end
            continue
        tok_text = m.group(0)
        if kind == "punct" and tok_text in ")]":
            depth -= 1
        yield Tok(kind, tok_text, pos, end, depth)
        if kind == "punct" and tok_text in "([":
            depth += 1
        pos = end


def _skip_ws_comments(text: str, pos: int) -> int:
    """Skip whitespace and comments only (never scans into a string: the text may be binary data)."""
    n = len(text)
    while pos < n:
        c = text[pos]
        if c in " \t\n\r\f\v":
            pos += 1
        elif text.startswith("--", pos) or text.startswith("# ", pos) or text.startswith("#!", pos):
            nl = text.find("\n", pos)
            pos = n if nl < 0 else nl + 1
        elif text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            pos = n if close < 0 else close + 2
        else:
            break
    return pos


READ_KINDS = {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "(", "CHECK", "USE"}
OUTPUT_KINDS = {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "(", "CHECK"}


class Parsed:
    kind = ""            # first keyword, upper-cased ("(" for a parenthesised SELECT)
    sql = ""             # SQL text for the engine (str)
    insert_format = None  # INSERT ... FORMAT <this> with data
    data = b""           # data part for INSERT ... FORMAT
    output_format = None  # explicit FORMAT of a SELECT-like statement
    set_names: list = []  # settings a SET statement changes


def _syntax_error(msg):
    return CHError("SYNTAX_ERROR", msg)


def parse_request_query(raw: bytes, max_query_size: int) -> Parsed:
    """Split the HTTP query stream (query param + '\\n' + body) like executeQuery() does."""
    text = raw.decode("latin-1")
    p = Parsed()
    toks = iter_tokens(text)
    first = next(toks, None)
    if first is None:
        raise _syntax_error("Empty query")
    stmt_start = first.start
    p.kind = first.text.upper() if first.kind == "word" else first.text

    if p.kind == "INSERT":
        return _parse_insert(text, raw, first, toks, p)

    # Any other statement: it is all SQL. Check for FORMAT, INTO OUTFILE and a second statement.
    limit = stmt_start + max_query_size
    prev = first
    stmt_end = len(text)
    for tok in toks:
        if tok.start > limit:
            break  # let the engine report "Max query size exceeded"
        if tok.depth == 0 and tok.kind == "punct" and tok.text == ";":
            stmt_end = tok.start
            rest = next(toks, None)
            if rest is not None:
                raise _syntax_error(
                    f"Syntax error (Multi-statements are not allowed): failed at position {tok.start + 1} "
                    f"(end of query): {_snippet(text, tok.start)}. ")
            break
        if tok.depth == 0 and prev.is_word("INTO") and tok.is_word("OUTFILE"):
            raise CHError("INTO_OUTFILE_NOT_ALLOWED", "INTO OUTFILE is not allowed")
        if tok.depth == 0 and prev.is_word("FORMAT") and tok.kind in ("word", "qident"):
            p.output_format = tok.text.strip('`"')
        prev = tok
    p.sql = _utf8(raw[stmt_start:stmt_end])
    if p.kind == "SET":
        p.set_names = _set_statement_names(p.sql)
    return p


def _set_statement_names(sql: str) -> list[str]:
    """Names assigned by `SET a = 1, b = 'x'` (depth 0: `name =` after SET or a comma)."""
    names, prev, prev2 = [], None, None
    for tok in iter_tokens(sql):
        if tok.depth == 0 and tok.text == "=" and prev is not None and prev.kind in ("word", "qident") \
                and prev2 is not None and (prev2.is_word("SET") or prev2.text == ","):
            names.append(prev.text.strip('`"'))
        prev2, prev = prev, tok
    return names


def _parse_insert(text: str, raw: bytes, first: Tok, toks, p: Parsed) -> Parsed:
    # INSERT INTO [TABLE] {name[.name] | FUNCTION f(...)} [(columns)] ...
    toks = _Peekable(toks)
    t = toks.next()
    if t is None or not t.is_word("INTO"):
        p.sql = _utf8(raw[first.start:])
        return p  # not something we split; let the engine report errors
    t = toks.peek()
    if t is not None and t.is_word("TABLE"):
        toks.next()
    t = toks.next()
    if t is not None and t.is_word("FUNCTION"):
        toks.next()  # function name
        _skip_group(toks)
    else:
        nt = toks.peek()
        if nt is not None and nt.kind == "punct" and nt.text == ".":
            toks.next()
            toks.next()
    nt = toks.peek()
    if nt is not None and nt.kind == "punct" and nt.text == "(":
        toks.next()
        _skip_group(toks, opened=True)
    # Clauses until VALUES / FORMAT / SELECT / WITH / FROM INFILE.
    prev = None
    while True:
        t = toks.next()
        if t is None:
            p.sql = _utf8(raw[first.start:])
            return p
        if t.depth == 0:
            if t.is_word("VALUES") or t.is_word("SELECT", "WITH") or (t.kind == "punct" and t.text == "("):
                # Data is SQL (VALUES) or comes from a SELECT: the engine parses the whole text.
                p.sql = _utf8(raw[first.start:])
                if not t.is_word("VALUES"):
                    _check_trailing(text, toks)
                return p
            if prev is not None and prev.is_word("FROM") and t.is_word("INFILE"):
                raise CHError("UNKNOWN_TYPE_OF_QUERY", "Query has infile and was send directly to server")
            if t.is_word("FORMAT"):
                fmt_tok = toks.next()
                if fmt_tok is None or fmt_tok.kind not in ("word", "qident"):
                    p.sql = _utf8(raw[first.start:])
                    return p
                fmt = fmt_tok.text.strip('`"')
                head = raw[first.start:t.start]
                data_pos = fmt_tok.end
                # INSERT ... FORMAT fmt SETTINGS a=1, b='x' <data>
                after = _skip_ws_comments(text, data_pos)
                if text[after:after + 8].upper() == "SETTINGS" and text[after + 8:after + 9] in " \t\r\n\f":
                    settings_end = _scan_settings(text, after + 8)
                    head = head + b" " + raw[after:settings_end]
                    data_pos = settings_end
                if data_pos < len(text) and text[data_pos] == ";":
                    raise _syntax_error(
                        "You have excessive ';' symbol before data for INSERT.\nExample:\n\n"
                        "INSERT INTO t (x, y) FORMAT TabSeparated\n;\tHello\n2\tWorld\n\n"
                        "Note that there is no ';' just after format name, you need to put at least one "
                        "whitespace symbol before the data.")
                while data_pos < len(text) and text[data_pos] in " \t\f":
                    data_pos += 1
                if data_pos < len(text) and text[data_pos] == "\r":
                    data_pos += 1
                if data_pos < len(text) and text[data_pos] == "\n":
                    data_pos += 1
                p.sql = _utf8(head).rstrip()
                p.insert_format = fmt
                p.data = raw[data_pos:]
                return p
        prev = t


def _scan_settings(text: str, pos: int) -> int:
    """Return the end of `name = value [, name = value]*` starting at pos."""
    toks = _Peekable(iter_tokens(text, pos))
    end = pos
    while True:
        name = toks.next()
        eq = toks.next()
        if name is None or eq is None or eq.text != "=":
            return end
        val = toks.next()
        if val is None:
            return end
        if val.text == "-":
            val = toks.next() or val
        if val.text in ("(", "["):
            val = _skip_group(toks, opened=True) or val
        end = val.end
        nt = toks.peek()
        if nt is None or nt.text != ",":
            return end
        toks.next()


def _check_trailing(text: str, toks) -> None:
    for tok in toks:
        if tok.depth == 0 and tok.text == ";":
            rest = toks.next()
            if rest is not None:
                raise _syntax_error(
                    f"Syntax error (Multi-statements are not allowed): failed at position {tok.start + 1} "
                    f"(end of query): {_snippet(text, tok.start)}. ")
            return


def _skip_group(toks, opened: bool = False):
    """Consume a balanced (...) / [...] group; returns the closing token."""
    if not opened:
        t = toks.next()
        if t is None or t.text not in "([":
            return t
    level = 1
    while True:
        t = toks.next()
        if t is None:
            return None
        if t.kind == "punct" and t.text in "([":
            level += 1
        elif t.kind == "punct" and t.text in ")]":
            level -= 1
            if level == 0:
                return t


class _Peekable:
    def __init__(self, it):
        self._it = iter(it)
        self._buf = []

    def next(self):
        if self._buf:
            return self._buf.pop()
        return next(self._it, None)

    def peek(self):
        if not self._buf:
            t = next(self._it, None)
            if t is None:
                return None
            self._buf.append(t)
        return self._buf[-1]

    def __iter__(self):
        while True:
            t = self.next()
            if t is None:
                return
            yield t


def _snippet(text: str, pos: int) -> str:
    return text[pos:pos + 40].encode("latin-1").decode("utf-8", "replace")


def _utf8(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CHError("SYNTAX_ERROR", f"chfront: query text is not valid UTF-8 ({e})") from None


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# ----------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------

class Result:
    def __init__(self, body=b"", read_rows=0, read_bytes=0, written_rows=0, written_bytes=0,
                 result_rows=0, elapsed=0.0):
        self.body = body
        self.summary = {
            "read_rows": str(read_rows), "read_bytes": str(read_bytes),
            "written_rows": str(written_rows), "written_bytes": str(written_bytes),
            "total_rows_to_read": str(read_rows), "result_rows": str(result_rows),
            "result_bytes": str(len(body)), "elapsed_ns": str(int(elapsed * 1e9)),
        }


class Engine:
    """One persistent chDB connection; every request runs under one lock."""

    # Settings chDB changes for its own (library) use whose server defaults differ.
    SERVER_DEFAULTS = {"implicit_select": "0", "allow_introspection_functions": "0"}

    def __init__(self, data_dir: str):
        global ENGINE_VERSION
        self.lock = threading.Lock()
        self.conn = chdb.connect(os.path.abspath(data_dir))
        ENGINE_VERSION = self._q("SELECT version()").decode().strip()
        rows = self._q("SELECT number, errorCodeToName(number) FROM numbers(2000) "
                       "WHERE errorCodeToName(number) != ''").decode().splitlines()
        for line in rows:
            code, name = line.split("\t")
            ERROR_CODES[name] = int(code)
        self._q("SET " + ", ".join(f"{k} = {v}" for k, v in self.SERVER_DEFAULTS.items()))
        self.baseline = self._changed_settings()
        self.timezone = self._q("SELECT timezone()").decode().strip()
        self.http_compression_default = self._q(
            "SELECT value FROM system.settings WHERE name = 'enable_http_compression'").decode().strip() or "1"

    def _q(self, sql: str, fmt: str = "TabSeparated", params=None):
        return self._raw(sql, fmt, params).bytes()

    def _raw(self, sql: str, fmt: str = "TabSeparated", params=None):
        try:
            return self.conn._conn.query(sql, fmt, params=params or {})
        except RuntimeError as e:
            raise EngineError(str(e)) from None

    def _changed_settings(self) -> dict[str, str]:
        out = {}
        for line in self._q("SELECT name, value FROM system.settings WHERE changed").decode().splitlines():
            name, _, value = line.partition("\t")
            if name != "database":
                out[name] = value
        return out

    def _restore_settings(self, names) -> None:
        """Put settings changed for one request back to the session's start-up values.

        Only SET statements are used: no SELECT runs under the request's settings (a leaked
        max_result_rows or limit would break it).
        """
        for name in dict.fromkeys(names):
            if name == "database":
                continue
            value = quote_string(self.baseline[name]) if name in self.baseline else "DEFAULT"
            try:
                self._q(f"SET {quote_ident(name)} = {value}")
            except CHError as e:
                if e.name != "UNKNOWN_SETTING":
                    print(f"chfront: warning: could not restore setting {name}: {e.text()}", file=sys.stderr)

    def execute(self, parsed: Parsed, database: str, settings: list[tuple[str, str]], params: dict[str, str],
                default_format: str) -> Result:
        with self.lock:
            self._q(f"USE {quote_ident(database)}")
            touched = [k for k, _ in settings] + list(parsed.set_names)
            try:
                if settings:
                    self._q("SET " + ", ".join(f"{quote_ident(k)} = {quote_string(v)}" for k, v in settings))
                if parsed.insert_format is not None:
                    return self._insert(parsed)
                res = self._raw(parsed.sql, default_format, params)
                return Result(res.bytes(), read_rows=res.storage_rows_read(), read_bytes=res.storage_bytes_read(),
                              written_rows=res.rows_written(), written_bytes=res.bytes_written(),
                              result_rows=res.rows_read() if parsed.kind in OUTPUT_KINDS else 0,
                              elapsed=res.elapsed())
            finally:
                if touched:
                    self._restore_settings(touched)

    def _insert(self, parsed: Parsed) -> Result:
        try:
            ins = self.conn.send_insert(parsed.sql, parsed.insert_format)
        except RuntimeError as e:
            raise EngineError(str(e)) from None
        ok = False
        try:
            if parsed.data:
                ins.append(parsed.data)
            r = ins.finish()
            ok = True
            return Result(b"", written_rows=r.rows_written, written_bytes=r.bytes_written, elapsed=r.elapsed)
        except RuntimeError as e:
            raise EngineError(str(e)) from None
        finally:
            if not ok:
                try:
                    ins.cancel()
                except Exception:
                    pass

    def close(self) -> None:
        with self.lock:
            self.conn.close()


# ----------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------

# Parameters that are not settings (HTTPHandler::processQuery reserved_param_names + handled ones).
RESERVED_PARAMS = {"compress", "decompress", "user", "password", "quota_key", "query_id", "stacktrace",
                   "buffer_size", "wait_end_of_query", "session_id", "session_timeout", "session_check",
                   "client_protocol_version", "close_session", "query", "database", "default_format", "role"}
# Settings interpreted by the HTTP layer (chfront) rather than by the engine.
HTTP_LAYER_SETTINGS = {"readonly"}

CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "jsoncompacteachrow": "application/x-ndjson; charset=UTF-8",
    "xml": "application/xml; charset=UTF-8",
}
BINARY_FORMATS = {"rowbinary", "rowbinarywithnames", "rowbinarywithnamesandtypes", "rowbinarywithdefaults",
                  "native", "parquet", "arrow", "arrowstream", "orc", "avro", "protobuf", "capnproto",
                  "msgpack", "bson", "npy"}
# chDB-only pseudo formats that a real server does not know.
CHDB_PSEUDO_FORMATS = {"dataframe", "arrowtable", "datastore"}

NO_HANDLER_TEXT = ("There is no handle {}\n\nUse / or /ping for health checks.\nOr /replicas_status for more "
                   "sophisticated health checks.\n\nSend queries from your program with POST method or GET /?query=...\n"
                   "\nUse clickhouse-client:\n\nFor interactive data analysis:\n    clickhouse-client\n\nFor batch query "
                   "processing:\n    clickhouse-client --query='SELECT 1' > result\n    clickhouse-client < query > result\n")


class Config:
    user = "default"
    password = ""
    verbose = False


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false", ""):
        return False
    try:
        return int(v) != 0
    except ValueError:
        raise CHError("CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                      f"Cannot parse input: expected 'eof' before: '{value}'") from None


def _parse_int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise CHError("CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                      f"Cannot parse input: expected 'eof' before: '{value}'") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # --keep-alive-timeout: idle keep-alive connections are closed after this many seconds
    engine: Engine = None  # set in main()
    config: Config = Config()

    # -- plumbing ------------------------------------------------------------------------

    def version_string(self):
        return "chfront"

    def log_message(self, fmt, *args):
        if self.config.verbose:
            sys.stderr.write("chfront: %s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, status: int, body: bytes, headers: dict[str, str]):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("X-ClickHouse-Server-Display-Name", "chfront")
        self.send_header("Keep-Alive", f"timeout={self.timeout}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    self.close_connection = True
                    raise CHError("CANNOT_READ_ALL_DATA", "Unexpected end of chunked request body")
                size_str = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_str, 16)
                except ValueError:
                    self.close_connection = True
                    raise CHError("BAD_ARGUMENTS", f"Invalid chunk size in request body: {size_str!r}") from None
                if size == 0:
                    while True:  # trailers
                        tl = self.rfile.readline(65537)
                        if not tl or tl in (b"\r\n", b"\n"):
                            break
                    break
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    self.close_connection = True
                    raise CHError("CANNOT_READ_ALL_DATA", "Unexpected end of chunked request body")
                chunks.append(chunk)
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(chunks)
        cl = self.headers.get("Content-Length")
        if cl is None:
            if self.command == "POST":
                self.close_connection = True
                raise CHError("HTTP_LENGTH_REQUIRED", "The Transfer-Encoding is not chunked and there is no "
                              "Content-Length header for POST request")
            return b""
        try:
            n = int(cl)
        except ValueError:
            self.close_connection = True
            raise CHError("BAD_ARGUMENTS", f"Invalid Content-Length: {cl}") from None
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            raise CHError("CANNOT_READ_ALL_DATA", f"Cannot read all data. Bytes read: {len(data)}. "
                          f"Bytes expected: {n}")
        return data

    # -- methods ---------------------------------------------------------------------------

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def _dispatch(self):
        url = urlsplit(self.path)
        path = url.path
        if path in ("/ping", "/replicas_status") and self.command in ("GET", "HEAD"):
            self._drain_quietly()
            return self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        if path != "/":
            self._drain_quietly()
            return self._send(404, NO_HANDLER_TEXT.format(path).encode(), {"Content-Type": "text/plain; charset=UTF-8"})
        params = parse_qsl(url.query, keep_blank_values=True)
        if self.command in ("GET", "HEAD") and not any(k == "query" for k, _ in params) \
                and not self.headers.get("Content-Length") and "chunked" not in self.headers.get("Transfer-Encoding", ""):
            return self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        self._handle_query(params)

    def _drain_quietly(self):
        try:
            if self.headers.get("Content-Length") or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._read_body()
        except CHError:
            self.close_connection = True

    # -- the query handler -----------------------------------------------------------------

    def _handle_query(self, params: list[tuple[str, str]]):
        started = time.monotonic()
        query_id = dict(params).get("query_id") or self.headers.get("X-ClickHouse-Query-Id") or str(uuid.uuid4())
        out_native = False
        out_encoding = None
        out_level = 3
        try:
            body = self._read_body()
            p = {}
            for k, v in params:
                if k:
                    p.setdefault(k, v)  # first value for reserved parameters
            user = self._authenticate(p)

            settings: list[tuple[str, str]] = []
            query_params: dict[str, str] = {}
            for k, v in params:
                if not k or k in RESERVED_PARAMS:
                    continue
                if k.startswith("param_"):
                    query_params.setdefault(k[len("param_"):], v)
                else:
                    settings = [s for s in settings if s[0] != k] + [(k, v)]
            settings_map = dict(settings)

            # Output compression is decided before anything can fail inside the query.
            enable_http_compression = _parse_bool(settings_map.get(
                "enable_http_compression", self.engine.http_compression_default))
            if enable_http_compression:
                out_encoding = choose_response_encoding(self.headers.get("Accept-Encoding", "") or "")
                out_level = _parse_int(settings_map.get("http_zlib_compression_level", "3"))
            out_native = _parse_bool(p.get("compress", "0"))

            if "role" in p:
                raise CHError("UNKNOWN_ROLE", f"There is no role `{p['role']}` in user directories")

            # Request body: HTTP Content-Encoding first, then the native block format.
            body = decode_content_encoding(body, self.headers.get("Content-Encoding", ""))
            if _parse_bool(p.get("decompress", "0")):
                skip_checksum = _parse_bool(settings_map.get(
                    "http_native_compression_disable_checksumming_on_decompress", "0"))
                body = decompress_native(body, verify_checksum=not skip_checksum)

            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                query_text, form_params = _parse_multipart(body, content_type)
                for k, v in form_params.items():
                    query_params.setdefault(k, v)
                stream = query_text.encode("utf-8")
            else:
                q = p.get("query", "")
                stream = (q + "\n").encode("utf-8") + body if q else body

            database = self.headers.get("X-ClickHouse-Database") or p.get("database") or "default"
            default_format = self.headers.get("X-ClickHouse-Format") or p.get("default_format") or "TabSeparated"
            if default_format.lower() in CHDB_PSEUDO_FORMATS:
                raise CHError("UNKNOWN_FORMAT", f"Unknown format {default_format}")

            max_query_size = _parse_int(settings_map.get("max_query_size", "262144"))
            parsed = parse_request_query(stream, max_query_size)
            self._check_readonly(parsed, settings_map, user)
            engine_settings = [(k, v) for k, v in settings if k not in HTTP_LAYER_SETTINGS]
            if parsed.kind == "SET" and "READONLY" in parsed.sql.upper():
                # SET readonly would stick to the embedded session; on a server it ends with the query.
                result = Result(b"")
            else:
                result = self.engine.execute(parsed, database, engine_settings, query_params, default_format)

            headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": self.engine.timezone}
            if parsed.kind in OUTPUT_KINDS:
                fmt = parsed.output_format or default_format
                headers["X-ClickHouse-Format"] = fmt
                headers["Content-Type"] = CONTENT_TYPES.get(fmt.lower(), "application/octet-stream"
                                                           if fmt.lower() in BINARY_FORMATS
                                                           else "text/plain; charset=UTF-8")
            else:
                headers["Content-Type"] = "text/plain; charset=UTF-8"
            result.summary["elapsed_ns"] = str(int((time.monotonic() - started) * 1e9))
            headers["X-ClickHouse-Summary"] = json.dumps(result.summary, separators=(",", ":"))
            payload = result.body
            if out_native:
                payload = compress_native(payload)
            if out_encoding:
                payload = encode_content(payload, out_encoding, out_level)
                headers["Content-Encoding"] = out_encoding
            self._send(200, payload, headers)
        except CHError as e:
            self._send_error(e, query_id, out_native, out_encoding, out_level)
        except Exception as e:  # a bug in chfront: still answer like a server would
            import traceback
            traceback.print_exc()
            self._send_error(CHError("STD_EXCEPTION", f"chfront internal error: {type(e).__name__}: {e}"),
                             query_id, out_native, out_encoding, out_level)

    def _send_error(self, e: CHError, query_id: str, native: bool, encoding: str | None, level: int):
        if self.config.verbose:
            sys.stderr.write(f"chfront: error {e.status}: {e.text()}\n")
        body = (e.text() + "\n").encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(e.code),
                   "X-ClickHouse-Query-Id": query_id}
        if native:
            body = compress_native(body)
        if encoding:
            body = encode_content(body, encoding, level)
            headers["Content-Encoding"] = encoding
        if e.name == "REQUIRED_PASSWORD":
            headers["WWW-Authenticate"] = 'Basic realm="ClickHouse server HTTP API"'
        self._send(e.status, body, headers)

    def _authenticate(self, p: dict[str, str]) -> str:
        """authenticateUserByHTTP(): one way of passing credentials at a time."""
        user = self.headers.get("X-ClickHouse-User", "")
        password = self.headers.get("X-ClickHouse-Key", "")
        has_headers = bool(user or password)
        auth = self.headers.get("Authorization")
        has_params = "user" in p or "password" in p
        if has_headers:
            if not user:
                raise CHError("AUTHENTICATION_FAILED", "Got an empty user name from X-ClickHouse HTTP headers")
            if auth:
                raise CHError("AUTHENTICATION_FAILED", "Invalid authentication: it is not allowed to use X-ClickHouse "
                              "HTTP headers and Authorization HTTP header simultaneously")
            if has_params:
                raise CHError("AUTHENTICATION_FAILED", "Invalid authentication: it is not allowed to use X-ClickHouse "
                              "HTTP headers and authentication via parameters simultaneously")
        elif auth:
            if has_params:
                raise CHError("AUTHENTICATION_FAILED", "Invalid authentication: it is not allowed to use Authorization "
                              "HTTP header and authentication via parameters simultaneously")
            scheme, _, info = auth.partition(" ")
            if scheme.lower() != "basic":
                raise CHError("AUTHENTICATION_FAILED",
                              f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not supported")
            import base64
            try:
                decoded = base64.b64decode(info.strip(), validate=True).decode("utf-8")
            except Exception:
                raise CHError("AUTHENTICATION_FAILED", "Invalid authentication: cannot decode Basic credentials") from None
            user, _, password = decoded.partition(":")
            if not user:
                raise CHError("AUTHENTICATION_FAILED", "Got an empty user name from Authorization HTTP header")
        else:
            user = p.get("user", "default")
            password = p.get("password", "")
            if not user:
                raise CHError("AUTHENTICATION_FAILED", "Got an empty user name from authentication via parameters")
        if user != self.config.user or password != self.config.password:
            raise CHError("AUTHENTICATION_FAILED",
                          f"{user}: Authentication failed: password is incorrect, or there is no user with such name.")
        return user

    def _check_readonly(self, parsed: Parsed, settings: dict[str, str], user: str):
        readonly = 0
        if self.command in ("GET", "HEAD"):
            readonly = 2
        if "readonly" in settings:
            try:
                wanted = int(settings["readonly"])
            except ValueError:
                raise CHError("CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                              f"Cannot parse input: expected 'eof' before: '{settings['readonly']}'") from None
            if readonly and wanted != readonly:
                raise CHError("READONLY", "Cannot modify 'readonly' setting in readonly mode")
            readonly = wanted
        if not readonly:
            return
        if parsed.kind == "SET":
            if readonly == 1:
                raise CHError("READONLY", "Cannot modify setting in readonly mode")
            return
        if parsed.kind not in READ_KINDS:
            msg = f"{user}: Cannot execute query in readonly mode"
            if self.command in ("GET", "HEAD"):
                msg += (". For queries over HTTP, method GET implies readonly. "
                        "You should use method POST for modifying queries")
            raise CHError("READONLY", msg)


def _parse_multipart(body: bytes, content_type: str) -> tuple[str, dict[str, str]]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise CHError("BAD_ARGUMENTS", "multipart/form-data without boundary")
    delim = b"--" + m.group(1).encode("latin-1")
    query = []
    params: dict[str, str] = {}
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        if part.startswith(b"\r\n"):
            part = part[2:]
        head, _, content = part.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disp = ""
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                disp = line
        nm = re.search(r'\bname="([^"]*)"', disp)
        if not nm:
            continue
        if re.search(r'\bfilename="', disp):
            raise CHError("NOT_IMPLEMENTED", "chfront: external data (multipart file parts) is not supported")
        name, value = nm.group(1), content.decode("utf-8")
        if name == "query":
            query.append(value)
        elif name.startswith("param_"):
            params.setdefault(name[len("param_"):], value)
    return "".join(query), params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123, help="0 picks a free port (printed on start-up)")
    ap.add_argument("--data-dir", required=True, help="chDB data directory (created if missing, kept on exit)")
    ap.add_argument("--user", default="default")
    ap.add_argument("--password", default="")
    ap.add_argument("--keep-alive-timeout", type=int, default=30,
                    help="seconds an idle keep-alive connection stays open (ClickHouse's keep_alive_timeout)")
    ap.add_argument("--verbose", action="store_true", help="log every request and error to stderr")
    args = ap.parse_args(argv)

    os.makedirs(args.data_dir, exist_ok=True)
    try:
        engine = Engine(args.data_dir)
    except Exception as e:
        print(f"chfront: cannot open the engine on {args.data_dir} (is another chfront or chDB process "
              f"using it?): {e}", file=sys.stderr)
        return 1
    cfg = Config()
    cfg.user, cfg.password, cfg.verbose = args.user, args.password, args.verbose
    Handler.engine = engine
    Handler.config = cfg
    Handler.timeout = args.keep_alive_timeout

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer((args.host, args.port), Handler)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    print(f"chfront listening on {host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

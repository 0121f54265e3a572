"""An independent, minimal pprof decoder (protobuf wire format by hand), so the tests compute their
expectations from the input files rather than trusting Sluice's own decoder."""

import gzip


def _varint(b, i):
    shift = result = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def fields(b):
    """Message bytes → {field number: [values]} (ints for varints, bytes for length-delimited)."""
    out, i = {}, 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 1:
            v, i = int.from_bytes(b[i:i + 8], "little"), i + 8
        elif wt == 5:
            v, i = int.from_bytes(b[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def _ints(vals):
    """Repeated varint field, packed or not; int64 negatives come back as two's complement."""
    out = []
    for v in vals:
        if isinstance(v, bytes):
            i = 0
            while i < len(v):
                x, i = _varint(v, i)
                out.append(x)
        else:
            out.append(v)
    return [x - (1 << 64) if x >= 1 << 63 else x for x in out]


def parse(data: bytes) -> dict:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    f = fields(data)
    strings = [s.decode() for s in f.get(6, [])]
    sample_types = [(strings[vt.get(1, [0])[0]], strings[vt.get(2, [0])[0]]) for vt in map(fields, f.get(1, []))]
    samples = []
    for s in map(fields, f.get(2, [])):
        samples.append({"locations": _ints(s.get(1, [])), "values": _ints(s.get(2, []))})
    functions = {}
    for fn in map(fields, f.get(5, [])):
        functions[fn.get(1, [0])[0]] = strings[fn.get(2, [0])[0]]
    locations = {}
    for loc in map(fields, f.get(4, [])):
        lines = [fields(l) for l in loc.get(4, [])]
        locations[loc.get(1, [0])[0]] = [functions.get(l.get(1, [0])[0], "") for l in lines]
    return {"strings": strings, "sample_types": sample_types, "samples": samples, "locations": locations}


def top_flat(p: dict, value_index: int = -1) -> str:
    """The function with the highest flat value, as `pprof -top` reports it (leaf frame of each sample)."""
    flat = {}
    for s in p["samples"]:
        if not s["locations"]:
            continue
        leaf = p["locations"][s["locations"][0]]
        name = leaf[0] if leaf else ""
        flat[name] = flat.get(name, 0) + s["values"][value_index]
    return max(flat.items(), key=lambda kv: (kv[1], kv[0]))[0]


def enc_varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 negatives as two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def message(*fields_) -> bytes:
    """(field number, value) pairs → message bytes: ints as varints, bytes/str length-delimited,
    lists of ints packed."""
    out = bytearray()
    for num, v in fields_:
        if isinstance(v, bool) or isinstance(v, int):
            out += enc_varint(num << 3) + enc_varint(int(v))
        elif isinstance(v, list):
            packed = b"".join(enc_varint(x) for x in v)
            out += enc_varint(num << 3 | 2) + enc_varint(len(packed)) + packed
        else:
            b = v.encode() if isinstance(v, str) else bytes(v)
            out += enc_varint(num << 3 | 2) + enc_varint(len(b)) + b
    return bytes(out)


def profile(strings, sample_types, samples=(), mappings=(), locations=(), functions=(), **scalars) -> bytes:
    """A pprof Profile. samples: (location ids, values, labels as (key, str) pairs);
    mappings: (id, filename, build_id); locations: (id, mapping id, function id);
    functions: (id, name); scalars: drop_frames=7, keep_frames=8, comment=13 (list), period=12."""
    tags = {"drop_frames": 7, "keep_frames": 8, "time_nanos": 9, "duration_nanos": 10, "period": 12, "comment": 13, "default_sample_type": 14}
    f = [(1, message((1, t), (2, u))) for t, u in sample_types]
    for locs, values, labels in samples:
        f.append((2, message((1, list(locs)), (2, list(values)), *[(3, message((1, k), (2, s))) for k, s in labels])))
    f += [(3, message((1, i), (5, fn), (6, b))) for i, fn, b in mappings]
    f += [(4, message((1, i), (2, m), (4, message((1, fid), (2, 1))))) for i, m, fid in locations]
    f += [(5, message((1, i), (2, n))) for i, n in functions]
    f += [(6, s) for s in strings]
    f += [(tags[k], v) for k, v in scalars.items()]
    return message(*f)


def push_request(series) -> bytes:
    """push.v1.PushRequest: series = [(labels dict, [raw profile bytes])]."""
    return message(*[
        (1, message(*[(1, message((1, k), (2, v))) for k, v in labels.items()], *[(2, message((1, raw), (2, f"id-{i}"))) for i, raw in enumerate(raws)]))
        for labels, raws in series
    ])

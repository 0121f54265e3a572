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

//! OpenTelemetry consistent probability sampling: 56-bit thresholds, their `th` encoding, the
//! randomness of a trace, and the `ot` entry of W3C `tracestate`.
//!
//! Keep an item iff its randomness `R` ≥ the rejection threshold `T`, where `T = (1 − p)·2^56`.
//! Every collector that sees a trace computes the same `R` (from `rv` or the trace id), so with the
//! same `T` they make the same decision with no coordination.

/// 2^56: thresholds and randomness are 56-bit numbers.
pub const MAX_ADJUSTED: u64 = 1 << 56;

const HEX_DIGITS: u32 = 14;

/// A rejection threshold in [0, 2^56]; 0 keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(pub u64);

impl Threshold {
    /// Keeps everything (p = 1).
    pub const ALWAYS: Threshold = Threshold(0);

    /// The threshold for probability `p`, rounded to `precision` hex digits the way the
    /// OpenTelemetry Collector does (more digits near 0 and 1, where relative error matters).
    pub fn from_probability(p: f64, precision: u8) -> Threshold {
        if p.is_nan() || p <= 0.0 {
            return Threshold(MAX_ADJUSTED);
        }
        if p >= 1.0 {
            return Threshold::ALWAYS;
        }
        let extra = |x: f64| -> i32 {
            // frexp exponent: x = m·2^e with m in [0.5, 1).
            let e = x.log2().floor() as i32 + 1;
            (-e) / 4
        };
        let precision =
            (i32::from(precision.max(1)) + extra(p).max(extra(1.0 - p))).min(HEX_DIGITS as i32);
        let scaled = (p * MAX_ADJUSTED as f64).round() as u64;
        let mut t = MAX_ADJUSTED - scaled.min(MAX_ADJUSTED);
        let shift = 4 * (HEX_DIGITS - precision as u32);
        if shift != 0 {
            let half = 1u64 << (shift - 1);
            t = ((t + half) >> shift) << shift;
        }
        Threshold(t.min(MAX_ADJUSTED))
    }

    /// The sampling probability this threshold stands for.
    pub fn probability(self) -> f64 {
        (MAX_ADJUSTED - self.0.min(MAX_ADJUSTED)) as f64 / MAX_ADJUSTED as f64
    }

    /// How many items each kept item represents (1/p).
    pub fn adjusted_count(self) -> f64 {
        let kept = MAX_ADJUSTED - self.0.min(MAX_ADJUSTED);
        if kept == 0 {
            return 0.0;
        }
        MAX_ADJUSTED as f64 / kept as f64
    }

    /// Whether an item with randomness `r` is kept.
    #[inline]
    pub fn keeps(self, r: u64) -> bool {
        r >= self.0
    }

    /// The `th` value: 1–14 lowercase hex digits, trailing zeros removed (`0` for p = 1).
    pub fn encode(self) -> String {
        if self.0 == 0 {
            return "0".to_owned();
        }
        if self.0 >= MAX_ADJUSTED {
            // Not representable: nothing would be kept. Callers never write it.
            return "ffffffffffffff".to_owned();
        }
        let s = format!("{:014x}", self.0);
        s.trim_end_matches('0').to_owned()
    }

    /// Parses a `th` value (1–14 hex digits, implicitly right-padded with zeros).
    pub fn parse(s: &str) -> Option<Threshold> {
        if s.is_empty()
            || s.len() > HEX_DIGITS as usize
            || !s.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        let v = u64::from_str_radix(s, 16).ok()?;
        Some(Threshold(v << (4 * (HEX_DIGITS as usize - s.len()))))
    }
}

/// The randomness of a trace: the low 56 bits of its 16-byte id (the last 7 bytes, big-endian).
#[inline]
pub fn randomness_from_trace_id(trace_id: &[u8]) -> Option<u64> {
    if trace_id.len() != 16 {
        return None;
    }
    let mut v = 0u64;
    for b in &trace_id[9..16] {
        v = (v << 8) | u64::from(*b);
    }
    Some(v)
}

/// Parses an explicit `rv` (exactly 14 hex digits).
pub fn parse_rv(s: &str) -> Option<u64> {
    (s.len() == 14 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// What the `ot` entry of a trace state says about sampling.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OtState {
    /// The threshold an earlier sampler applied.
    pub th: Option<Threshold>,
    /// Explicit randomness.
    pub rv: Option<u64>,
}

/// Reads `th` and `rv` from a W3C `tracestate` (`vendor=x,ot=th:8;rv:…`).
pub fn read_ot(tracestate: &str) -> OtState {
    let mut st = OtState::default();
    if let Some(ot) = ot_value(tracestate) {
        for kv in ot.split(';') {
            match kv.split_once(':') {
                Some(("th", v)) => st.th = Threshold::parse(v),
                Some(("rv", v)) => st.rv = parse_rv(v),
                _ => {}
            }
        }
    }
    st
}

fn ot_value(tracestate: &str) -> Option<&str> {
    tracestate
        .split(',')
        .map(str::trim)
        .find_map(|m| m.strip_prefix("ot="))
}

/// Writes `th` into the `ot` entry, keeping its other keys and every other vendor's entry.
/// The modified `ot` entry moves to the front, as W3C Trace Context asks of an updated entry.
pub fn write_th(tracestate: &str, th: Threshold) -> String {
    let mut out = String::with_capacity(tracestate.len() + 24);
    write_th_into(&mut out, tracestate, th);
    out
}

/// [`write_th`] into a reused buffer (cleared first), so the wire path allocates nothing per span.
pub fn write_th_into(out: &mut String, tracestate: &str, th: Threshold) {
    out.clear();
    out.push_str("ot=th:");
    out.push_str(&th.encode());
    let mut others = false;
    for member in tracestate
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        match member.strip_prefix("ot=") {
            Some(v) => {
                for kv in v
                    .split(';')
                    .filter(|kv| !kv.is_empty() && !kv.starts_with("th:"))
                {
                    out.push(';');
                    out.push_str(kv);
                }
            }
            None => others = true,
        }
    }
    if others {
        for m in tracestate
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty() && !m.starts_with("ot="))
        {
            out.push(',');
            out.push_str(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_probability_encodings() {
        for (p, th) in [
            (1.0, "0"),
            (0.5, "8"),
            (0.25, "c"),
            (0.125, "e"),
            (1.0 / 3.0, "aaab"),
            (2.0 / 3.0, "5555"),
            (0.1, "e666"),
            (0.01, "fd70a"),
        ] {
            assert_eq!(Threshold::from_probability(p, 4).encode(), th, "p = {p}");
        }
        assert_eq!(Threshold::from_probability(0.5, 4).adjusted_count(), 2.0);
        assert_eq!(Threshold::from_probability(1.0 / 3.0, 4).encode().len(), 4);
    }

    #[test]
    fn parse_round_trips() {
        for s in ["0", "8", "c", "aaab", "e666", "fd70a", "ffffffffffffff"] {
            assert_eq!(Threshold::parse(s).unwrap().encode(), s);
        }
        assert_eq!(Threshold::parse("8").unwrap().0, 1 << 55);
        assert!(Threshold::parse("").is_none());
        assert!(Threshold::parse("g").is_none());
        assert!(Threshold::parse("123456789012345").is_none());
    }

    #[test]
    fn spec_decisions() {
        // Trace id ...c3 d4 e5 f6 07 18 29 → R = 0xd4e5f607182900? No: the low 56 bits are bytes 9..16.
        let id = hex("5b8efff798038103d269b633813fc60c");
        let r = randomness_from_trace_id(&id).unwrap();
        assert_eq!(r, 0x69b633813fc60c);
        assert!(!Threshold::from_probability(0.5, 4).keeps(r)); // 0x69.. < 0x80..
        assert!(Threshold::from_probability(0.75, 4).keeps(r)); // T = 0x40..
        let high = hex("00000000000000000ff0000000000000");
        let r = randomness_from_trace_id(&high).unwrap();
        assert_eq!(r, 0xf0000000000000);
        assert!(Threshold::from_probability(0.1, 4).keeps(r)); // T = 0xe666.. < 0xf0..
        assert!(!Threshold::from_probability(0.01, 4).keeps(r)); // T = 0xfd70a..
    }

    #[test]
    fn tracestate_editing() {
        assert_eq!(write_th("", Threshold::from_probability(0.5, 4)), "ot=th:8");
        assert_eq!(
            write_th(
                "vendor=a,ot=rv:0123456789abcd;th:4,other=b",
                Threshold::from_probability(0.25, 4)
            ),
            "ot=th:c;rv:0123456789abcd,vendor=a,other=b"
        );
        let st = read_ot("x=1, ot=th:c;rv:0123456789abcd");
        assert_eq!(st.th, Some(Threshold(0xc << 52)));
        assert_eq!(st.rv, Some(0x0123456789abcd));
        assert_eq!(read_ot("ot=th:zz"), OtState::default());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}

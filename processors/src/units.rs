//! Unit conversion factors shared by `metric_transform` (rewrites data) and `alert_rules`
//! (compares converted values with a threshold), so both read units the same way.

/// The dimension and scale of a unit name (UCUM as OpenTelemetry uses it, plus common spellings).
fn scale(unit: &str) -> Option<(&'static str, f64)> {
    Some(match unit {
        "ns" | "nanoseconds" => ("time", 1e-9),
        "us" | "µs" | "microseconds" => ("time", 1e-6),
        "ms" | "milliseconds" => ("time", 1e-3),
        "s" | "seconds" => ("time", 1.0),
        "min" | "minutes" => ("time", 60.0),
        "h" | "hours" => ("time", 3600.0),
        "d" | "days" => ("time", 86400.0),
        "By" | "bytes" => ("bytes", 1.0),
        "kBy" | "KBy" => ("bytes", 1e3),
        "KiBy" => ("bytes", 1024.0),
        "MBy" => ("bytes", 1e6),
        "MiBy" => ("bytes", 1024.0 * 1024.0),
        "GBy" => ("bytes", 1e9),
        "GiBy" => ("bytes", 1024.0 * 1024.0 * 1024.0),
        "1" | "ratio" => ("ratio", 1.0),
        "%" | "percent" => ("ratio", 0.01),
        _ => return None,
    })
}

/// Whether `unit` is a name [`factor`] understands.
pub fn known(unit: &str) -> bool {
    scale(unit).is_some()
}

/// The factor that turns a value in `from` into one in `to` (`s` → `ms` is 1000), or `None` when
/// either is unknown or they measure different things.
pub fn factor(from: &str, to: &str) -> Option<f64> {
    let (df, sf) = scale(from)?;
    let (dt, st) = scale(to)?;
    (df == dt).then_some(sf / st)
}

/// The units [`factor`] knows, for error messages.
pub const KNOWN: &str = "ns, us, ms, s, min, h, d, By, kBy, KiBy, MBy, MiBy, GBy, GiBy, 1, %";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors() {
        assert_eq!(factor("s", "ms"), Some(1000.0));
        assert_eq!(factor("seconds", "ms"), Some(1000.0));
        assert_eq!(factor("MiBy", "KiBy"), Some(1024.0));
        assert_eq!(factor("s", "By"), None);
        assert_eq!(factor("furlong", "s"), None);
    }
}

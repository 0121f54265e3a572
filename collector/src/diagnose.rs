//! `sluice diagnose memory-leak`: reads the heap profiles Sluice stored in ClickHouse
//! (`otel_profiles`, sample type `inuse_space`), and reports the stacks whose in-use bytes grow
//! steadily over the window: a least-squares slope over the window's profiles, how well a line
//! fits them (r²), and the growth against the baseline period before the window.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `sluice diagnose ...`.
#[derive(Subcommand, Debug)]
pub enum Diagnose {
    /// Stacks whose in-use heap bytes grow steadily, from heap profiles stored in ClickHouse.
    MemoryLeak(LeakArgs),
}

/// `sluice diagnose memory-leak` options.
#[derive(Args, Debug)]
pub struct LeakArgs {
    /// ClickHouse HTTP URL (http://host:8123), as the clickhouse exporter's `endpoint`.
    #[arg(long, value_name = "URL")]
    pub clickhouse: String,
    /// The service whose profiles to read (`service.name`).
    #[arg(long)]
    pub service: String,
    /// The window to look for growth in, ending now (`2h`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2h")]
    pub since: Duration,
    /// The period before the window that growth is compared with (`24h`, ending where the window starts).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub baseline: Duration,
    /// The database the clickhouse exporter writes to.
    #[arg(long, default_value = "otel")]
    pub database: String,
    /// The profiles table.
    #[arg(long, default_value = "otel_profiles")]
    pub table: String,
    /// ClickHouse user and password (X-ClickHouse-User / X-ClickHouse-Key), if needed.
    #[arg(long)]
    pub user: Option<String>,
    /// See `--user`.
    #[arg(long)]
    pub password: Option<String>,
    /// Rows to show at most.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Growth thresholds: a stack is reported when a line fits its in-use bytes well (r² at least
/// this) ...
const MIN_R2: f64 = 0.8;
/// ... and the line rises by at least this share of the stack's mean over the window.
const MIN_RELATIVE_GROWTH: f64 = 0.1;
/// Fewer profiles than this in the window say nothing about a trend.
const MIN_PROFILES: usize = 3;

/// One growing stack.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Leak {
    /// The stack's hash as stored (`StackHash`).
    pub stack_hash: String,
    /// Function names, leaf first.
    pub frames: Vec<String>,
    /// Least-squares slope of in-use bytes over the window, per hour.
    pub slope_bytes_per_hour: f64,
    /// How well the line fits (1 = a straight line).
    pub r2: f64,
    /// In-use bytes in the window's last profile.
    pub inuse_bytes_last: f64,
    /// Mean in-use bytes over the baseline's profiles (0 when it had none or the stack was absent).
    pub inuse_bytes_baseline: f64,
    /// Last in-use bytes over the baseline mean (`null` when the baseline has nothing to compare with).
    pub growth_ratio: Option<f64>,
}

/// What one run found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The service.
    pub service: String,
    /// Profiles (distinct times) in the window and in the baseline.
    pub window_profiles: usize,
    /// See `window_profiles`.
    pub baseline_profiles: usize,
    /// Growing stacks, steepest first.
    pub leaks: Vec<Leak>,
}

/// One (stack, profile time) total, as queried.
#[derive(Debug, Clone)]
pub struct Point {
    /// Stack hash.
    pub stack: String,
    /// Profile time, unix nanos.
    pub t: i64,
    /// In-use bytes of the stack at that time.
    pub bytes: f64,
    /// Function names, leaf first.
    pub frames: Vec<String>,
}

/// Runs the subcommand.
pub fn main(cmd: &Diagnose) -> ExitCode {
    let Diagnose::MemoryLeak(args) = cmd;
    match memory_leak(args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice diagnose memory-leak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn memory_leak(args: &LeakArgs) -> Result<String> {
    if args.baseline.is_zero() || args.since.is_zero() {
        bail!("--since and --baseline must be longer than 0s");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?;
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let window_start = nanos(now).saturating_sub(nanos(args.since));
    let baseline_start = window_start.saturating_sub(nanos(args.baseline));
    let points = query(args, baseline_start).context("reading profiles from ClickHouse")?;
    let (window, baseline): (Vec<Point>, Vec<Point>) =
        points.into_iter().partition(|p| p.t >= window_start);
    let mut report = analyze(&window, &baseline);
    report.service.clone_from(&args.service);
    report.leaks.truncate(args.top);
    if args.json {
        return Ok(serde_json::to_string_pretty(&report)? + "\n");
    }
    Ok(table(&report))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn ident(s: &str) -> Result<&str> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("invalid database or table name {s:?}");
    }
    Ok(s)
}

fn query(args: &LeakArgs, from: i64) -> Result<Vec<Point>> {
    let sql = format!(
        "SELECT toString(StackHash) AS stack, toString(toUnixTimestamp64Nano(Timestamp)) AS t, \
         toFloat64(sum(arraySum(Values))) AS bytes, any(FunctionNames) AS frames \
         FROM {db}.{table} \
         WHERE ServiceName = {svc} AND SampleType = 'inuse_space' \
         AND toUnixTimestamp64Nano(Timestamp) >= {from} \
         GROUP BY stack, t FORMAT JSONEachRow",
        db = ident(&args.database)?,
        table = ident(&args.table)?,
        svc = quote(&args.service),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut req = client
            .post(args.clickhouse.trim_end_matches('/').to_owned() + "/")
            .body(sql);
        if let Some(u) = &args.user {
            req = req.header("X-ClickHouse-User", u);
        }
        if let Some(p) = &args.password {
            req = req.header("X-ClickHouse-Key", p);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {}", text.trim());
        }
        anyhow::Ok(text)
    })?;
    #[derive(serde::Deserialize)]
    struct Row {
        stack: String,
        t: String,
        bytes: f64,
        frames: Vec<String>,
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let r: Row = serde_json::from_str(l).with_context(|| format!("unexpected row {l}"))?;
            Ok(Point {
                stack: r.stack,
                t: r.t.parse().with_context(|| format!("bad time {:?}", r.t))?,
                bytes: r.bytes,
                frames: r.frames,
            })
        })
        .collect()
}

/// Least-squares line through `(x, y)`: slope and r² (r² is 0 for a flat series).
pub fn fit(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return (0.0, 0.0);
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let syy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    if sxx == 0.0 {
        return (0.0, 0.0);
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        0.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    (slope, r2)
}

/// Finds the steadily growing stacks: per stack, in-use bytes at every profile time of the window
/// (0 where the stack is absent), a line through them, and the baseline's mean.
pub fn analyze(window: &[Point], baseline: &[Point]) -> Report {
    let times: BTreeSet<i64> = window.iter().map(|p| p.t).collect();
    let base_times: BTreeSet<i64> = baseline.iter().map(|p| p.t).collect();
    let mut by_stack: HashMap<&str, (BTreeMap<i64, f64>, &[String])> = HashMap::new();
    for p in window {
        let e = by_stack
            .entry(p.stack.as_str())
            .or_insert_with(|| (BTreeMap::new(), p.frames.as_slice()));
        *e.0.entry(p.t).or_default() += p.bytes;
    }
    let mut base_sum: HashMap<&str, f64> = HashMap::new();
    for p in baseline {
        *base_sum.entry(p.stack.as_str()).or_default() += p.bytes;
    }
    let mut leaks = Vec::new();
    if times.len() >= MIN_PROFILES {
        let t0 = times.first().copied().unwrap_or(0);
        let xs: Vec<f64> = times.iter().map(|t| (t - t0) as f64 / 3.6e12).collect();
        let span = xs.last().copied().unwrap_or(0.0);
        for (stack, (vals, frames)) in &by_stack {
            let ys: Vec<f64> = times
                .iter()
                .map(|t| vals.get(t).copied().unwrap_or(0.0))
                .collect();
            let (slope, r2) = fit(&xs, &ys);
            let mean = ys.iter().sum::<f64>() / ys.len() as f64;
            if slope <= 0.0 || r2 < MIN_R2 || slope * span < MIN_RELATIVE_GROWTH * mean.max(1.0) {
                continue;
            }
            let base = if base_times.is_empty() {
                0.0
            } else {
                base_sum.get(stack).copied().unwrap_or(0.0) / base_times.len() as f64
            };
            let last = ys.last().copied().unwrap_or(0.0);
            leaks.push(Leak {
                stack_hash: (*stack).to_owned(),
                frames: frames.to_vec(),
                slope_bytes_per_hour: slope,
                r2,
                inuse_bytes_last: last,
                inuse_bytes_baseline: base,
                growth_ratio: (base > 0.0).then(|| last / base),
            });
        }
    }
    leaks.sort_by(|a, b| b.slope_bytes_per_hour.total_cmp(&a.slope_bytes_per_hour));
    Report {
        service: String::new(),
        window_profiles: times.len(),
        baseline_profiles: base_times.len(),
        leaks,
    }
}

fn bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units.get(i).copied().unwrap_or("B"))
}

fn table(r: &Report) -> String {
    let mut out = format!(
        "service {}: {} heap profile(s) in the window, {} in the baseline\n",
        r.service, r.window_profiles, r.baseline_profiles
    );
    if r.window_profiles < MIN_PROFILES {
        out += &format!("not enough profiles in the window to see a trend (need {MIN_PROFILES})\n");
        return out;
    }
    if r.leaks.is_empty() {
        out += "no stack grows steadily\n";
        return out;
    }
    out += &format!(
        "{:<4} {:>14} {:>6} {:>12} {:>12} {:>8}  {}\n",
        "#", "growth/hour", "r2", "in-use now", "baseline", "ratio", "top frames (leaf first)"
    );
    for (i, l) in r.leaks.iter().enumerate() {
        let ratio = l
            .growth_ratio
            .map_or_else(|| "new".to_owned(), |g| format!("{g:.1}x"));
        let frames: Vec<&str> = l.frames.iter().take(4).map(String::as_str).collect();
        out += &format!(
            "{:<4} {:>14} {:>6.2} {:>12} {:>12} {:>8}  {}\n",
            i + 1,
            bytes(l.slope_bytes_per_hour),
            l.r2,
            bytes(l.inuse_bytes_last),
            bytes(l.inuse_bytes_baseline),
            ratio,
            frames.join(" < ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(stack: &str, series: &[(i64, f64)]) -> Vec<Point> {
        series
            .iter()
            .map(|(t, b)| Point {
                stack: stack.into(),
                t: *t,
                bytes: *b,
                frames: vec![format!("{stack}_leaf"), "main".into()],
            })
            .collect()
    }

    const MIN: i64 = 60_000_000_000;

    #[test]
    fn the_growing_stack_is_found_and_flat_ones_are_not() {
        let mut window = pts(
            "grow",
            &[
                (0, 1e6),
                (10 * MIN, 2e6),
                (20 * MIN, 3e6),
                (30 * MIN, 4.1e6),
            ],
        );
        window.extend(pts(
            "flat",
            &[
                (0, 5e6),
                (10 * MIN, 5e6),
                (20 * MIN, 5.1e6),
                (30 * MIN, 5e6),
            ],
        ));
        let baseline = pts("grow", &[(-600 * MIN, 1e6)]);
        let r = analyze(&window, &baseline);
        assert_eq!(r.window_profiles, 4);
        assert_eq!(r.leaks.len(), 1);
        let l = &r.leaks[0];
        assert_eq!(l.stack_hash, "grow");
        // ~1 MB per 10 minutes.
        assert!(
            (l.slope_bytes_per_hour - 6.12e6).abs() < 0.2e6,
            "{}",
            l.slope_bytes_per_hour
        );
        assert_eq!(l.growth_ratio, Some(4.1));
        assert!(table(&r).contains("grow_leaf < main"));
    }

    #[test]
    fn a_flat_profile_series_reports_nothing() {
        let window = pts("flat", &[(0, 5e6), (10 * MIN, 5e6), (20 * MIN, 5e6)]);
        let r = analyze(&window, &[]);
        assert!(r.leaks.is_empty());
        assert!(table(&r).contains("no stack grows steadily"));
        let (slope, r2) = fit(&[0.0, 1.0, 2.0], &[1.0, 2.0, 3.0]);
        assert!((slope - 1.0).abs() < 1e-12 && (r2 - 1.0).abs() < 1e-12);
    }
}

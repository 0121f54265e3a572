//! `sluice top`: a live terminal view of a running instance, read from its admin server's
//! `/status` and `/metrics` (so it works against any Sluice it can reach, over a plain SSH
//! terminal): per receiver/exporter/signal rates, queue fill, refused/dropped per reason, each
//! sampler's p and the exporter loads it reads, with short sparklines. Keys: `q`/Esc quit, `s`
//! cycles the sort column, `r` reverses it.

use crate::prom_text::{self, Kind, Sample};
use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Points of history kept per series (one per refresh).
const HISTORY: usize = 60;
/// Width of a sparkline cell.
const SPARK: usize = 24;

/// Which column the receiver and exporter tables are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Name,
    Rate,
    Queue,
}

impl SortBy {
    fn next(self) -> Self {
        match self {
            Self::Name => Self::Rate,
            Self::Rate => Self::Queue,
            Self::Queue => Self::Name,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Rate => "rate",
            Self::Queue => "queue",
        }
    }
}

struct Snapshot {
    at: Instant,
    status: Value,
    samples: Vec<Sample>,
}

/// Sums of every counter series by (name, labels), for rates.
fn totals(samples: &[Sample]) -> HashMap<(String, Vec<(String, String)>), f64> {
    samples
        .iter()
        .filter(|s| s.kind == Kind::Counter)
        .map(|s| ((s.name.clone(), s.labels.clone()), s.value))
        .collect()
}

struct App {
    admin: String,
    cur: Option<Snapshot>,
    prev_totals: HashMap<(String, Vec<(String, String)>), f64>,
    prev_at: Option<Instant>,
    rates: HashMap<(String, Vec<(String, String)>), f64>,
    history: HashMap<String, VecDeque<f64>>,
    sort: SortBy,
    reverse: bool,
    error: Option<String>,
}

impl App {
    fn new(admin: String) -> Self {
        Self {
            admin,
            cur: None,
            prev_totals: HashMap::new(),
            prev_at: None,
            rates: HashMap::new(),
            history: HashMap::new(),
            sort: SortBy::Name,
            reverse: false,
            error: None,
        }
    }

    fn update(&mut self, snap: Snapshot) {
        let now_totals = totals(&snap.samples);
        self.rates.clear();
        if let Some(prev_at) = self.prev_at {
            let dt = snap.at.duration_since(prev_at).as_secs_f64();
            if dt > 0.0 {
                for (k, v) in &now_totals {
                    let before = self.prev_totals.get(k).copied().unwrap_or(0.0);
                    self.rates.insert(k.clone(), ((v - before) / dt).max(0.0));
                }
            }
        }
        self.prev_totals = now_totals;
        self.prev_at = Some(snap.at);
        self.cur = Some(snap);
        self.error = None;
        let mut points: Vec<(String, f64)> = Vec::new();
        for r in self.receiver_names() {
            points.push((
                format!("rx/{r}"),
                self.rate("sluice_receiver_accepted_items_total", &[("receiver", &r)]),
            ));
        }
        for e in self.exporter_names() {
            points.push((
                format!("ex/{e}"),
                self.rate("sluice_exporter_sent_items_total", &[("exporter", &e)]),
            ));
        }
        for s in self.samplers() {
            if let (Some(n), Some(p)) = (s["name"].as_str(), s["probability"].as_f64()) {
                points.push((format!("p/{n}"), p));
            }
        }
        for (k, v) in points {
            let h = self.history.entry(k).or_default();
            h.push_back(v);
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
    }

    fn status(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.cur.as_ref().map_or(&NULL, |s| &s.status)
    }

    fn samples(&self) -> &[Sample] {
        self.cur.as_ref().map_or(&[], |s| &s.samples)
    }

    fn names(&self, kind: &str) -> Vec<String> {
        self.status()["config"][kind]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn receiver_names(&self) -> Vec<String> {
        self.names("receivers")
    }

    fn exporter_names(&self) -> Vec<String> {
        self.names("exporters")
    }

    fn samplers(&self) -> Vec<Value> {
        self.status()["samplers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn matches(s: &Sample, name: &str, want: &[(&str, &str)]) -> bool {
        s.name == name && want.iter().all(|(k, v)| s.label(k) == Some(*v))
    }

    fn total(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples()
            .iter()
            .filter(|s| Self::matches(s, name, want))
            .fold(0.0, |acc, s| acc + s.value)
    }

    fn rate(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.rates
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            // fold, not sum: an empty f64 sum is -0.0, shown as "-0".
            .fold(0.0, |acc, (_, r)| acc + r)
    }

    fn spark(&self, key: &str) -> String {
        self.history
            .get(key)
            .map(|h| sparkline(h.iter().copied(), SPARK))
            .unwrap_or_default()
    }

    fn kind_of(&self, section: &str, name: &str) -> String {
        self.status()["config"][section][name]["type"]
            .as_str()
            .unwrap_or("?")
            .to_owned()
    }

    fn draw(&self, f: &mut Frame<'_>) {
        let signals = ["traces", "metrics", "logs", "profiles"];
        // Receivers: one row per receiver and signal it has seen (a row even when idle).
        let mut rx: Vec<(String, f64, f64, Row<'static>)> = Vec::new();
        for r in self.receiver_names() {
            let mut any = false;
            for sig in signals {
                let want = [("receiver", r.as_str()), ("signal", sig)];
                let acc = self.total("sluice_receiver_accepted_items_total", &want);
                let refused = self.total("sluice_receiver_refused_items_total", &want);
                if acc == 0.0 && refused == 0.0 {
                    continue;
                }
                any = true;
                let rate = self.rate("sluice_receiver_accepted_items_total", &want);
                rx.push((
                    format!("{r}/{sig}"),
                    rate,
                    0.0,
                    Row::new(vec![
                        r.clone(),
                        self.kind_of("receivers", &r),
                        sig.to_owned(),
                        fmt(rate),
                        fmt(self.rate("sluice_receiver_refused_items_total", &want)),
                        fmt(acc),
                        self.spark(&format!("rx/{r}")),
                    ]),
                ));
            }
            if !any {
                rx.push((
                    r.clone(),
                    0.0,
                    0.0,
                    Row::new(vec![
                        r.clone(),
                        self.kind_of("receivers", &r),
                        "-".into(),
                        "0".into(),
                        "0".into(),
                        "0".into(),
                        String::new(),
                    ]),
                ));
            }
        }
        self.sort_rows(&mut rx);

        let mut ex: Vec<(String, f64, f64, Row<'static>)> = Vec::new();
        for e in self.status()["exporters"].as_array().into_iter().flatten() {
            let Some(name) = e["name"].as_str() else {
                continue;
            };
            let want = [("exporter", name)];
            let rate = self.rate("sluice_exporter_sent_items_total", &want);
            let items = e["queue_items"].as_f64().unwrap_or(0.0);
            let cap = e["queue_capacity"].as_f64().unwrap_or(0.0);
            let fill = if cap > 0.0 { items / cap } else { 0.0 };
            let load = e["load"].as_f64().unwrap_or(0.0);
            let throttled = e["throttled"].as_bool().unwrap_or(false);
            ex.push((
                name.to_owned(),
                rate,
                fill,
                Row::new(vec![
                    name.to_owned(),
                    self.kind_of("exporters", name),
                    fmt(rate),
                    fmt(self.rate("sluice_exporter_failed_items_total", &want)),
                    format!("{}/{} {:>3.0}%", fmt(items), fmt(cap), fill * 100.0),
                    format!("{load:.2}{}", if throttled { " T" } else { "" }),
                    format!(
                        "{}/{}",
                        e["in_flight"].as_u64().unwrap_or(0),
                        e["concurrency_limit"].as_u64().unwrap_or(0)
                    ),
                    self.spark(&format!("ex/{name}")),
                ]),
            ));
        }
        self.sort_rows(&mut ex);

        let pipelines: Vec<Row<'static>> = self.status()["config"]["pipelines"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, p)| {
                let list = |k: &str| {
                    p[k].as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                };
                let queued = self.status()["pipelines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|q| q["name"].as_str() == Some(name))
                    .and_then(|q| q["queued_items"].as_f64())
                    .unwrap_or(0.0);
                let procs = p["processors"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" → ")
                    })
                    .unwrap_or_default();
                Row::new(vec![
                    name.clone(),
                    list("signals"),
                    format!(
                        "{} → [{}] → {}",
                        list("receivers"),
                        procs,
                        list("exporters")
                    ),
                    fmt(queued),
                ])
            })
            .collect();

        let samplers: Vec<Row<'static>> = self
            .samplers()
            .iter()
            .map(|s| {
                let name = s["name"].as_str().unwrap_or("?");
                let loads = s["exporter_loads"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        format!(
                            "{}={:.2}{}",
                            l["exporter"].as_str().unwrap_or("?"),
                            l["load"].as_f64().unwrap_or(0.0),
                            if l["throttled"].as_bool().unwrap_or(false) {
                                "T"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                Row::new(vec![
                    name.to_owned(),
                    s["mode"].as_str().unwrap_or("?").to_owned(),
                    format!("p={:.4}", s["probability"].as_f64().unwrap_or(0.0)),
                    s["reason"].as_str().unwrap_or("?").to_owned(),
                    fmt(s["input_rate"].as_f64().unwrap_or(0.0)),
                    loads,
                    self.spark(&format!("p/{name}")),
                ])
            })
            .collect();

        let mut losses: Vec<Row<'static>> = Vec::new();
        let mut by_reason: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
        for s in self.samples() {
            let (what, comp) = match s.name.as_str() {
                "sluice_receiver_refused_items_total" => ("refused", s.label("receiver")),
                "sluice_dropped_items_total" => ("dropped", s.label("component")),
                "sluice_sampler_sampled_out_items_total" => ("sampled out", s.label("processor")),
                _ => continue,
            };
            if s.value <= 0.0 {
                continue;
            }
            let key = (
                format!("{what} by {}", comp.unwrap_or("?")),
                s.label("signal").unwrap_or("-").to_owned(),
                s.label("reason").unwrap_or("-").to_owned(),
            );
            let rate = self.rates.get(&(s.name.clone(), s.labels.clone())).copied();
            let e = by_reason.entry(key).or_default();
            e.0 += s.value;
            e.1 += rate.unwrap_or(0.0);
        }
        for ((what, sig, reason), (total, rate)) in by_reason {
            losses.push(Row::new(vec![what, sig, reason, fmt(total), fmt(rate)]));
        }

        let h = |n: usize| Constraint::Length(u16::try_from(n + 3).unwrap_or(u16::MAX));
        let [head, rx_area, pipe_area, ex_area, samp_area, loss_area, foot] = Layout::vertical([
            Constraint::Length(1),
            h(rx.len()),
            h(pipelines.len()),
            h(ex.len()),
            h(samplers.len()),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(f.area());

        let st = self.status();
        let reload = match &st["last_reload"] {
            Value::Object(r) => format!(
                "  last reload: {} {}{}{}",
                r.get("result").and_then(Value::as_str).unwrap_or("?"),
                r.get("time").and_then(Value::as_str).unwrap_or(""),
                r.get("trigger")
                    .and_then(Value::as_str)
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                r.get("error")
                    .and_then(Value::as_str)
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        let mut header = vec![
            Span::styled("sluice top", Style::new().bold()),
            Span::raw(format!(
                "  {}  v{}  {}{}",
                self.admin,
                st["version"].as_str().unwrap_or("?"),
                st["state"].as_str().unwrap_or("connecting"),
                reload
            )),
        ];
        if let Some(e) = &self.error {
            header.push(Span::styled(format!("  {e}"), Style::new().fg(Color::Red)));
        }
        f.render_widget(Paragraph::new(Line::from(header)), head);

        let hdr = |cols: &[&'static str]| {
            Row::new(cols.to_vec()).style(Style::new().add_modifier(Modifier::BOLD))
        };
        let sorted = format!(
            " sorted by {}{} ",
            self.sort.as_str(),
            if self.reverse { " ↑" } else { "" }
        );
        f.render_widget(
            Table::new(
                rx.into_iter().map(|r| r.3),
                [
                    Constraint::Length(14),
                    Constraint::Length(8),
                    Constraint::Length(9),
                    Constraint::Length(11),
                    Constraint::Length(10),
                    Constraint::Length(12),
                    Constraint::Length(SPARK as u16),
                ],
            )
            .header(hdr(&[
                "receiver",
                "type",
                "signal",
                "accepted/s",
                "refused/s",
                "accepted",
                "accepted/s history",
            ]))
            .block(Block::bordered().title(" Receivers ").title(sorted.clone())),
            rx_area,
        );
        f.render_widget(
            Table::new(
                pipelines,
                [
                    Constraint::Length(14),
                    Constraint::Length(24),
                    Constraint::Min(30),
                    Constraint::Length(10),
                ],
            )
            .header(hdr(&["pipeline", "signals", "flow", "queued"]))
            .block(Block::bordered().title(" Pipelines ")),
            pipe_area,
        );
        f.render_widget(
            Table::new(
                ex.into_iter().map(|r| r.3),
                [
                    Constraint::Length(14),
                    Constraint::Length(11),
                    Constraint::Length(10),
                    Constraint::Length(10),
                    Constraint::Length(20),
                    Constraint::Length(7),
                    Constraint::Length(9),
                    Constraint::Length(SPARK as u16),
                ],
            )
            .header(hdr(&[
                "exporter",
                "type",
                "sent/s",
                "failed/s",
                "queue (fill)",
                "load",
                "inflight",
                "sent/s history",
            ]))
            .block(Block::bordered().title(" Exporters ").title(sorted)),
            ex_area,
        );
        f.render_widget(
            Table::new(
                samplers,
                [
                    Constraint::Length(14),
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(12),
                    Constraint::Length(9),
                    Constraint::Min(20),
                    Constraint::Length(SPARK as u16),
                ],
            )
            .header(hdr(&[
                "sampler",
                "mode",
                "p",
                "reason",
                "input/s",
                "exporter loads read",
                "p history",
            ]))
            .block(Block::bordered().title(" Samplers ")),
            samp_area,
        );
        f.render_widget(
            Table::new(
                losses,
                [
                    Constraint::Min(26),
                    Constraint::Length(9),
                    Constraint::Length(18),
                    Constraint::Length(12),
                    Constraint::Length(10),
                ],
            )
            .header(hdr(&["where", "signal", "reason", "items", "items/s"]))
            .block(Block::bordered().title(" Refused / dropped / sampled out ")),
            loss_area,
        );
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::raw(" q").bold(),
                Span::raw(" quit  "),
                Span::raw("s").bold(),
                Span::raw(" sort (name/rate/queue)  "),
                Span::raw("r").bold(),
                Span::raw(" reverse"),
            ])),
            foot,
        );
    }

    fn sort_rows(&self, rows: &mut [(String, f64, f64, Row<'static>)]) {
        match self.sort {
            SortBy::Name => rows.sort_by(|a, b| a.0.cmp(&b.0)),
            SortBy::Rate => rows.sort_by(|a, b| b.1.total_cmp(&a.1)),
            SortBy::Queue => rows.sort_by(|a, b| b.2.total_cmp(&a.2)),
        }
        if self.reverse {
            rows.reverse();
        }
    }
}

/// Unicode block sparkline of the last `width` values, scaled to their maximum.
fn sparkline(
    values: impl DoubleEndedIterator<Item = f64> + ExactSizeIterator,
    width: usize,
) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let skip = values.len().saturating_sub(width);
    let v: Vec<f64> = values.skip(skip).collect();
    let max = v.iter().copied().fold(0.0_f64, f64::max);
    v.iter()
        .map(|x| {
            if max <= 0.0 {
                BARS[0]
            } else {
                let i = ((x / max) * 7.0).round().clamp(0.0, 7.0) as usize;
                BARS.get(i).copied().unwrap_or('█')
            }
        })
        .collect()
}

/// Compact number: 1234 → 1234, 12345 → 12.3k, 0.25 → 0.250.
fn fmt(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else if n.fract() == 0.0 {
        format!("{n:.0}")
    } else if a < 1.0 {
        format!("{n:.3}")
    } else {
        format!("{n:.1}")
    }
}

async fn fetch(client: &reqwest::Client, base: &str) -> Result<Snapshot> {
    let status = client
        .get(format!("{base}/status"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Snapshot {
        at: Instant::now(),
        status: serde_json::from_slice(&status).context("/status is not JSON")?,
        samples: prom_text::parse(&metrics),
    })
}

/// Runs the view until `q`; `admin` is `host:port` of the admin server.
pub fn run(admin: &str, interval: Duration) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    let base = format!("http://{admin}");
    let mut app = App::new(admin.to_owned());
    let mut terminal = ratatui::try_init().context("sluice top needs a terminal")?;
    let result = (|| -> Result<()> {
        loop {
            match rt.block_on(fetch(&client, &base)) {
                Ok(s) => app.update(s),
                Err(e) => app.error = Some(format!("cannot read {base}: {e:#}")),
            }
            terminal.draw(|f| app.draw(f))?;
            let deadline = Instant::now() + interval;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !event::poll(left)? {
                    break;
                }
                if let Event::Key(k) = event::read()? {
                    if k.kind != KeyEventKind::Press {
                        continue;
                    }
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            return Ok(())
                        }
                        KeyCode::Char('s') => app.sort = app.sort.next(),
                        KeyCode::Char('r') => app.reverse = !app.reverse,
                        _ => {}
                    }
                    terminal.draw(|f| app.draw(f))?;
                }
            }
        }
    })();
    ratatui::restore();
    result
}

/// `sluice top`'s entry: picks the admin address (`--admin`, else the config's `service.admin`,
/// else the default `127.0.0.1:13133`; an unspecified listen IP becomes loopback) and runs.
pub fn main(
    config: Option<&std::path::Path>,
    admin: Option<String>,
    interval: f64,
) -> std::process::ExitCode {
    let admin = match admin {
        Some(a) => a,
        None => match config.map(sluice_config::Config::load) {
            Some(Ok(cfg)) => match cfg.service.admin {
                Some(a) if a.0.ip().is_unspecified() => format!("127.0.0.1:{}", a.0.port()),
                Some(a) => a.0.to_string(),
                None => {
                    eprintln!("sluice top: the configuration has no service.admin; pass --admin HOST:PORT");
                    return std::process::ExitCode::from(2);
                }
            },
            Some(Err(errs)) => {
                eprintln!("{} configuration error(s):\n{errs}", errs.0.len());
                return std::process::ExitCode::from(2);
            }
            None => "127.0.0.1:13133".to_owned(),
        },
    };
    let interval = Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
    match run(&admin, interval) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice top: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_maximum() {
        assert_eq!(sparkline([0.0, 1.0, 2.0].into_iter(), 10), "▁▅█");
        assert_eq!(sparkline([5.0; 30].into_iter(), 4).chars().count(), 4);
        assert_eq!(sparkline([0.0, 0.0].into_iter(), 4), "▁▁");
    }

    #[test]
    fn rates_come_from_counter_differences() {
        let mut app = App::new("x".into());
        let text = |n: u64| {
            format!("# TYPE sluice_receiver_accepted_items counter\nsluice_receiver_accepted_items_total{{receiver=\"otlp\",signal=\"traces\"}} {n}\n")
        };
        let t0 = Instant::now();
        let status = serde_json::json!({"config": {"receivers": {"otlp": {"type": "otlp"}}}});
        app.update(Snapshot {
            at: t0,
            status: status.clone(),
            samples: prom_text::parse(&text(100)),
        });
        app.update(Snapshot {
            at: t0 + Duration::from_secs(2),
            status,
            samples: prom_text::parse(&text(300)),
        });
        assert_eq!(
            app.rate(
                "sluice_receiver_accepted_items_total",
                &[("receiver", "otlp")]
            ),
            100.0
        );
        assert_eq!(app.history["rx/otlp"].len(), 2);
    }
}

//! Progress for long operations: a bar on a terminal, one plain line every few seconds
//! otherwise (cron, Slurm logs), both on stderr and both fed from shared atomic counters so
//! the workers never wait on the display.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters the workers bump.
#[derive(Debug, Default)]
pub struct Counters {
    pub files_done: AtomicU64,
    pub bytes: AtomicU64,
    pub rows: AtomicU64,
    /// Items that failed (a fetch that will be retried by the next run, say).
    pub failures: AtomicU64,
}

impl Counters {
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.files_done.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
    }

    fn snapshot(&self, at: Instant) -> Sample {
        let (items, bytes, rows) = self.get();
        Sample {
            at,
            items,
            bytes,
            rows,
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bar if stderr is a terminal, else plain lines.
    Auto,
    Plain,
    Quiet,
}

/// How a command shows progress: the one options struct every stage takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub mode: Mode,
    /// Between two plain lines.
    pub interval: Duration,
}

impl Progress {
    /// No display (tests, benches, library callers).
    pub fn quiet() -> Progress {
        Progress {
            mode: Mode::Quiet,
            interval: Duration::from_secs(30),
        }
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::quiet()
    }
}

/// What a phase counts: its items' name and the totals it expects (0: unknown).
#[derive(Debug, Clone)]
pub struct Phase {
    pub label: String,
    /// `files`, `objects`, `entries`.
    pub unit: &'static str,
    pub items: u64,
    pub bytes: u64,
}

impl Phase {
    pub fn new(label: impl Into<String>, unit: &'static str, items: u64, bytes: u64) -> Phase {
        Phase {
            label: label.into(),
            unit,
            items,
            bytes,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    items: u64,
    bytes: u64,
    rows: u64,
    failures: u64,
}

/// The rates of the last few seconds: a run that sped up or stalled shows it at once,
/// where an average since the start would hide it for hours.
struct Window {
    samples: std::collections::VecDeque<Sample>,
}

impl Window {
    const SPAN: Duration = Duration::from_secs(20);

    fn push(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self
            .samples
            .front()
            .is_some_and(|f| s.at.duration_since(f.at) > Self::SPAN && self.samples.len() > 2)
        {
            self.samples.pop_front();
        }
    }

    /// Items, bytes and rows per second.
    fn rates(&self) -> (f64, f64, f64) {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.at > a.at => {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                (
                    (b.items - a.items) as f64 / secs,
                    (b.bytes - a.bytes) as f64 / secs,
                    (b.rows - a.rows) as f64 / secs,
                )
            }
            _ => (0.0, 0.0, 0.0),
        }
    }
}

/// The figures of one progress line, shared by the bar and the plain lines so they say
/// the same: done of total, rate, ETA, failures. A figure the phase does not count (rows
/// while fetching, say) is left out rather than shown as 0.
fn figures(phase: &Phase, now: &Sample, rates: (f64, f64, f64)) -> String {
    let (items_rate, bytes_rate, rows_rate) = rates;
    let mut parts = Vec::new();
    if phase.items > 0 {
        parts.push(format!(
            "{}/{} {}",
            human_count(now.items),
            human_count(phase.items),
            phase.unit
        ));
    } else if now.items > 0 {
        parts.push(format!("{} {}", human_count(now.items), phase.unit));
    }
    if phase.bytes > 0 {
        parts.push(format!(
            "{}/{}",
            human_bytes(now.bytes),
            human_bytes(phase.bytes)
        ));
    } else if now.bytes > 0 {
        parts.push(human_bytes(now.bytes));
    }
    if now.rows > 0 {
        parts.push(format!(
            "{} rows ({}/s)",
            human_count(now.rows),
            human_count(rows_rate as u64)
        ));
    }
    if now.bytes > 0 {
        parts.push(format!("{}/s", human_bytes(bytes_rate as u64)));
    } else if now.items > 0 {
        parts.push(format!(
            "{} {}/s",
            human_count(items_rate as u64),
            phase.unit
        ));
    }
    let eta = if phase.bytes > 0 && bytes_rate > 0.0 {
        Some(phase.bytes.saturating_sub(now.bytes) as f64 / bytes_rate)
    } else if phase.items > 0 && items_rate > 0.0 {
        Some(phase.items.saturating_sub(now.items) as f64 / items_rate)
    } else {
        None
    };
    if let Some(eta) = eta {
        parts.push(format!("ETA {}", human_secs(eta)));
    }
    if now.failures > 0 {
        parts.push(format!("{} failed", human_count(now.failures)));
    }
    parts.join(", ")
}

/// A bar drawn into the line itself, so the line as a whole can be cut to the terminal's
/// width: indicatif's own `{wide_bar}` shrinks to nothing and wraps when the message is long.
fn bar_line(phase: &Phase, now: &Sample, figures: &str, width: usize) -> String {
    let (done, total) = if phase.bytes > 0 {
        (now.bytes, phase.bytes)
    } else {
        (now.items, phase.items)
    };
    let head = format!("{} ", phase.label);
    let room = width.saturating_sub(head.chars().count() + figures.chars().count() + 3);
    let bar = if total > 0 && room >= 10 {
        let w = room.min(40);
        let filled = ((done.min(total) as f64 / total as f64) * w as f64) as usize;
        format!("[{}{}] ", "#".repeat(filled), "-".repeat(w - filled))
    } else {
        String::new()
    };
    let line = format!("{head}{bar}{figures}");
    line.chars().take(width.saturating_sub(1)).collect()
}

/// Shows progress until dropped, then one line saying what the phase did.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    pub fn start(phase: Phase, counters: Arc<Counters>, progress: &Progress) -> Reporter {
        let Progress { mode, interval } = *progress;
        let stop = Arc::new(AtomicBool::new(false));
        if mode == Mode::Quiet {
            return Reporter { stop, thread: None };
        }
        let bar = mode == Mode::Auto && std::io::stderr().is_terminal();
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut window = Window {
                samples: std::collections::VecDeque::new(),
            };
            window.push(counters.snapshot(started));
            if bar {
                let pb = indicatif::ProgressBar::new_spinner();
                pb.set_style(
                    indicatif::ProgressStyle::with_template("{msg}").expect("valid template"),
                );
                let term = console::Term::stderr();
                while !stop2.load(Ordering::Relaxed) {
                    let now = counters.snapshot(Instant::now());
                    window.push(now);
                    let width = usize::from(term.size_checked().map_or(80, |(_, w)| w));
                    let text = figures(&phase, &now, window.rates());
                    pb.set_message(bar_line(&phase, &now, &text, width));
                    pb.tick();
                    std::thread::sleep(Duration::from_millis(200));
                }
                pb.finish_and_clear();
            } else {
                let mut next = started + interval;
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let at = Instant::now();
                    if at.duration_since(window.samples.back().map_or(started, |s| s.at))
                        >= Duration::from_secs(1)
                    {
                        window.push(counters.snapshot(at));
                    }
                    if at < next {
                        continue;
                    }
                    next += interval;
                    let now = counters.snapshot(at);
                    window.push(now);
                    let text = figures(&phase, &now, window.rates());
                    let sep = if text.is_empty() { "" } else { ", " };
                    crate::say!(
                        "{}: {text}{sep}{} elapsed",
                        phase.label,
                        human_secs(started.elapsed().as_secs_f64())
                    );
                }
            }
            // The phase's end, on a terminal and in a log alike: its totals and average.
            let end = counters.snapshot(Instant::now());
            if end.items + end.bytes + end.rows + end.failures > 0 {
                let first = Sample {
                    at: started,
                    items: 0,
                    bytes: 0,
                    rows: 0,
                    failures: 0,
                };
                let avg = Window {
                    samples: [first, end].into_iter().collect(),
                };
                let done = Phase {
                    items: 0,
                    bytes: 0,
                    ..phase.clone()
                };
                crate::say!(
                    "{}: done, {} in {}",
                    phase.label,
                    figures(&done, &end, avg.rates()),
                    human_secs(started.elapsed().as_secs_f64())
                );
            }
        });
        Reporter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `1234`, `12.3k`, `4.5M`, `1.2G`.
pub fn human_count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

/// `45s`, `12m 5s`, `3h 20m`.
pub fn human_secs(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Parses sizes such as `1GiB`, `256MiB`, `512M`, `1000000`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("bad size unit in {s:?} (use KiB, MiB, GiB)")),
    };
    Ok((num * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("1XB").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn lines_say_what_the_phase_counts_and_fit_the_width() {
        let t0 = Instant::now();
        let phase = Phase::new("fetch 2026-12-01", "objects", 1000, 4 << 30);
        let at = |secs: u64, items, bytes| Sample {
            at: t0 + Duration::from_secs(secs),
            items,
            bytes,
            rows: 0,
            failures: 3,
        };
        let w = Window {
            samples: [at(0, 0, 0), at(10, 100, 1 << 30)].into_iter().collect(),
        };
        let now = at(10, 100, 1 << 30);
        let text = figures(&phase, &now, w.rates());
        assert_eq!(
            text,
            "100/1000 objects, 1.0 GiB/4.0 GiB, 102.4 MiB/s, ETA 30s, 3 failed"
        );
        assert!(!text.contains("rows"), "a fetch counts no rows: {text}");
        for width in [20, 60, 80, 200] {
            let line = bar_line(&phase, &now, &text, width);
            assert!(line.chars().count() < width, "{width}: {line}");
        }
        assert!(bar_line(&phase, &now, &text, 200).contains("[##########"));
    }
}

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
}

impl Counters {
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.files_done.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        )
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

/// Shows progress until dropped.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    pub fn start(
        label: &str,
        files_total: u64,
        bytes_total: u64,
        counters: Arc<Counters>,
        progress: &Progress,
    ) -> Reporter {
        let Progress { mode, interval } = *progress;
        let stop = Arc::new(AtomicBool::new(false));
        if mode == Mode::Quiet {
            return Reporter { stop, thread: None };
        }
        let bar = mode == Mode::Auto && std::io::stderr().is_terminal();
        let label = label.to_string();
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            if bar {
                let pb = indicatif::ProgressBar::new(bytes_total);
                pb.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}",
                    )
                    .expect("valid template"),
                );
                pb.set_prefix(label);
                while !stop2.load(Ordering::Relaxed) {
                    let (files, bytes, rows) = counters.get();
                    let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    pb.set_position(bytes);
                    pb.set_message(format!(
                        "files {files}/{files_total}, {rows} rows, {rate:.0} rows/s"
                    ));
                    std::thread::sleep(Duration::from_millis(100));
                }
                pb.finish_and_clear();
            } else {
                let mut next = Instant::now() + interval;
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if Instant::now() < next {
                        continue;
                    }
                    next += interval;
                    let (files, bytes, rows) = counters.get();
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    eprintln!(
                        "{label}: files {files}/{files_total}, {} of {}, {rows} rows ({:.0} rows/s), {:.0}s",
                        human_bytes(bytes),
                        human_bytes(bytes_total),
                        rows as f64 / secs,
                        secs
                    );
                }
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
}

//! How many downloads are in flight: a fixed number (`--jobs N`), or (`--jobs auto`, the
//! default) as many as make the run faster, found the way TCP finds its window.
//!
//! Over loopback a GET costs a fraction of a millisecond and 32 in flight saturate the
//! server; over a real link each small GET waits a round trip of 20–100 ms, and the same 32
//! leave the link idle most of the time (at 50 ms: 640 GETs/s at most). No fixed number is
//! right for both, nor for a bucket that S3 starts throttling half-way. So the limit is
//! controlled by what the run observes, every [`WINDOW`]:
//! - *slow start*: from [`START`], doubled while each doubling makes the run ≥ 10% faster;
//! - then *additive increase*: a small step up while nothing says stop (probing, as TCP
//!   does, because the best number drifts with the link and the server);
//! - *multiplicative decrease*: × 0.7 when S3 throttles 1% or more of a window's requests
//!   (503 SlowDown, 429; not below 16, and the throttled requests back off on their own),
//!   × 0.85 when the time to first byte has grown to 3× the best seen without the run
//!   getting faster (requests queueing somewhere: more in flight only adds waiting);
//! - no change while the run has fewer requests to make than it may have in flight.
//!
//! The controller is a pure state machine ([`Aimd`]) fed by measurements, so that its
//! decisions are tested without a network; [`Limiter`] applies them to the fetcher's threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where `--jobs auto` starts: what the fixed default was, comfortably below what any
/// server or link handles.
pub const START: usize = 32;
/// The default ceiling of `--jobs auto` (`--max-jobs`): thousands of idle blocking threads
/// cost little, but each holds a connection and a descriptor.
pub const DEFAULT_MAX: usize = 1024;
/// The floor of `--jobs auto`, however hard S3 throttles (each throttled request also
/// backs off on its own, exponentially): a throttling that does not depend on our rate
/// (5% of requests whatever the rate) would otherwise drive the limit to nothing.
const MIN: f64 = (START / 2) as f64;
/// How often the controller looks and decides.
pub const WINDOW: Duration = Duration::from_millis(300);

/// `--jobs`: `auto` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for Jobs {
    type Err = String;
    fn from_str(s: &str) -> Result<Jobs, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Jobs::Auto);
        }
        match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "'{s}': expected 'auto' or a number of downloads in flight (1 or more)"
            )),
            Ok(n) => Ok(Jobs::Fixed(n)),
        }
    }
}

/// What one window of the run looked like.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Work done per second: objects finished plus MiB received (so that a window of big
    /// ranges and one of small objects both count).
    pub rate: f64,
    /// Throttling answers (503 SlowDown, 429) in the window.
    pub throttled: u64,
    /// Requests answered in the window (throttled or not).
    pub answered: u64,
    /// Mean time to first byte of the window's GETs, in ms (none finished: `None`).
    pub latency_ms: Option<f64>,
    /// The run had work for every download slot (else a bigger limit changes nothing).
    pub saturated: bool,
}

/// Additive increase, multiplicative decrease over [`Window`]s.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    min: f64,
    max: f64,
    slow_start: bool,
    /// The rate of the last window that counted, at the limit before.
    previous_rate: f64,
    /// The best (lowest) window latency seen: the link's own round trip and the server's
    /// time, without queueing.
    base_latency_ms: f64,
    /// Windows to leave alone after a decrease (the threads that were in flight still
    /// finish at the old limit).
    hold: u32,
}

impl Aimd {
    pub fn new(start: usize, max: usize) -> Aimd {
        let max = max.max(1) as f64;
        Aimd {
            limit: (start.max(1) as f64).min(max),
            min: MIN.min(max),
            max,
            slow_start: true,
            previous_rate: 0.0,
            base_latency_ms: f64::INFINITY,
            hold: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.round() as usize
    }

    /// The limit for the next window, given the one that ended.
    pub fn next(&mut self, w: Window) -> usize {
        // A stray SlowDown in thousands of requests is S3 moving a partition; one in a
        // hundred is a request rate it does not take.
        if w.throttled * 100 >= w.answered.max(1) {
            self.decrease(0.7);
            return self.limit();
        }
        if w.throttled > 0 {
            self.previous_rate = w.rate;
            return self.limit();
        }
        if self.hold > 0 {
            self.hold -= 1;
            self.previous_rate = w.rate;
            return self.limit();
        }
        let queueing = match w.latency_ms {
            Some(l) => {
                self.base_latency_ms = self.base_latency_ms.min(l);
                l > 3.0 * self.base_latency_ms && l > self.base_latency_ms + 5.0
            }
            None => false,
        };
        if !w.saturated {
            return self.limit();
        }
        let faster = w.rate > self.previous_rate * 1.1;
        if queueing && !faster {
            self.decrease(0.85);
            return self.limit();
        }
        if self.slow_start {
            if faster {
                self.limit *= 2.0;
            } else {
                self.slow_start = false;
            }
        } else {
            let step = if faster { 8.0 } else { 32.0 };
            self.limit += (self.limit / step).max(1.0);
        }
        self.limit = self.limit.min(self.max);
        self.previous_rate = w.rate;
        self.limit()
    }

    fn decrease(&mut self, factor: f64) {
        self.limit = (self.limit * factor).max(self.min);
        self.slow_start = false;
        self.previous_rate = 0.0;
        self.hold = 2;
    }
}

/// One point of the concurrency curve, for `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the downloads started.
    pub t: f64,
    /// Downloads allowed in flight after this window.
    pub limit: usize,
    pub objects_per_s: f64,
    pub mib_per_s: f64,
    pub throttled: u64,
    pub latency_ms: Option<f64>,
}

/// How many downloads were in flight, for the summary and `--report`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConcurrencyReport {
    /// "auto" or "fixed".
    pub mode: String,
    /// The most downloads in flight allowed at once.
    pub reached: usize,
    /// The limit when the downloads ended.
    pub last: usize,
    /// Throttling answers (503 SlowDown, 429) during the downloads.
    pub throttled: u64,
    /// One sample per window (auto only), thinned to at most ~200 points.
    pub curve: Vec<Sample>,
}

/// The fetcher's side: how many worker threads should run, how many do, how many are busy,
/// and the measurements the controller reads.
pub struct Limiter {
    pub adaptive: bool,
    target: AtomicUsize,
    alive: AtomicUsize,
    busy: AtomicUsize,
    latency_us: AtomicU64,
    latency_n: AtomicU64,
    reached: AtomicUsize,
    curve: Mutex<Vec<Sample>>,
    throttled_at_start: u64,
}

impl Limiter {
    pub fn new(jobs: usize, adaptive: bool) -> Limiter {
        let start = if adaptive { START.min(jobs) } else { jobs }.max(1);
        if adaptive {
            crate::s3::set_shared_pause(false);
        }
        Limiter {
            adaptive,
            target: AtomicUsize::new(start),
            alive: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            latency_us: AtomicU64::new(0),
            latency_n: AtomicU64::new(0),
            reached: AtomicUsize::new(start),
            curve: Mutex::new(Vec::new()),
            throttled_at_start: crate::s3::throttle_events(),
        }
    }

    pub fn target(&self) -> usize {
        self.target.load(Ordering::SeqCst)
    }

    pub fn set_target(&self, n: usize) {
        self.target.store(n.max(1), Ordering::SeqCst);
        self.reached.fetch_max(n, Ordering::SeqCst);
    }

    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    /// A worker thread is about to start.
    pub fn born(&self) {
        self.alive.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a worker should end now because the limit went down (the caller ends then).
    pub fn retire(&self) -> bool {
        let mut alive = self.alive.load(Ordering::SeqCst);
        while alive > self.target() && alive > 1 {
            match self
                .alive
                .compare_exchange(alive, alive - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => alive = now,
            }
        }
        false
    }

    /// A worker thread ended for any other reason.
    pub fn died(&self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn begin_task(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end_task(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// One GET's time to its response headers.
    pub fn record_latency(&self, d: Duration) {
        self.latency_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.latency_n.fetch_add(1, Ordering::Relaxed);
    }

    /// The mean latency since the last call, in ms, and of how many GETs.
    pub fn take_latency_ms(&self) -> (Option<f64>, u64) {
        let n = self.latency_n.swap(0, Ordering::Relaxed);
        let us = self.latency_us.swap(0, Ordering::Relaxed);
        ((n > 0).then(|| us as f64 / n as f64 / 1000.0), n)
    }

    pub fn push_sample(&self, s: Sample) {
        self.curve.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    pub fn report(&self) -> ConcurrencyReport {
        let mut curve = self.curve.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let every = curve.len().div_ceil(200).max(1);
        if every > 1 {
            curve = curve.into_iter().step_by(every).collect();
        }
        ConcurrencyReport {
            mode: if self.adaptive { "auto" } else { "fixed" }.to_string(),
            reached: self.reached.load(Ordering::SeqCst),
            last: self.target(),
            throttled: crate::s3::throttle_events().saturating_sub(self.throttled_at_start),
            curve,
        }
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        crate::s3::set_shared_pause(true);
    }
}

/// Reads the counters every [`WINDOW`] and moves the limit; `work` returns (objects
/// finished, bytes received) so far. Returns when `done` says so.
pub fn control(
    limiter: &Limiter,
    max: usize,
    work: impl Fn() -> (u64, u64),
    done: impl Fn() -> bool,
    mut on_target: impl FnMut(usize),
) {
    let start = Instant::now();
    let mut aimd = Aimd::new(limiter.target(), max);
    let (mut objects, mut bytes) = work();
    let mut throttled = crate::s3::throttle_events();
    let mut last = Instant::now();
    while !done() {
        std::thread::sleep(Duration::from_millis(20));
        if last.elapsed() < WINDOW {
            continue;
        }
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let (o, b) = work();
        let t = crate::s3::throttle_events();
        let per_s = (o - objects) as f64 / secs;
        let mib_per_s = (b - bytes) as f64 / secs / (1 << 20) as f64;
        let limit = limiter.target();
        let (latency_ms, answered) = limiter.take_latency_ms();
        let window = Window {
            rate: per_s + mib_per_s,
            throttled: t - throttled,
            answered: answered + (t - throttled),
            latency_ms,
            saturated: limiter.busy() * 10 >= limit * 8,
        };
        (objects, bytes, throttled) = (o, b, t);
        let next = aimd.next(window);
        if next != limit {
            tracing::debug!(
                "downloads in flight: {limit} -> {next} ({per_s:.0} objects/s, {mib_per_s:.1} MiB/s, {} throttled, latency {:?} ms)",
                window.throttled,
                window.latency_ms.map(|l| l.round())
            );
            limiter.set_target(next);
            on_target(next);
        }
        limiter.push_sample(Sample {
            t: (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            limit: next,
            objects_per_s: per_s.round(),
            mib_per_s: (mib_per_s * 10.0).round() / 10.0,
            throttled: window.throttled,
            latency_ms: window.latency_ms.map(|l| (l * 10.0).round() / 10.0),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(rate: f64) -> Window {
        Window {
            rate,
            throttled: 0,
            answered: 300,
            latency_ms: Some(50.0),
            saturated: true,
        }
    }

    /// A link where each request in flight adds 20/s until 400 in flight: slow start
    /// doubles to past the knee, then stops doubling.
    #[test]
    fn slow_start_doubles_while_it_pays_then_probes_gently() {
        let mut a = Aimd::new(32, 4096);
        let mut limits = vec![];
        for _ in 0..8 {
            let l = a.limit() as f64;
            limits.push(a.next(w(20.0 * l.min(400.0))));
        }
        // 512 is faster than 256, 1024 no faster than 512: no more doubling, small steps.
        assert_eq!(&limits[..6], &[64, 128, 256, 512, 1024, 1024], "{limits:?}");
        assert!(limits[7] < 1024 + 80, "{limits:?}");
    }

    #[test]
    fn throttling_halves_and_holds() {
        let mut a = Aimd::new(512, 4096);
        a.slow_start = false;
        let throttled = Window {
            throttled: 3,
            ..w(1000.0)
        };
        assert_eq!(a.next(throttled), 358);
        // Two windows left alone, then probing again from there.
        assert_eq!(a.next(w(900.0)), 358);
        assert_eq!(a.next(w(900.0)), 358);
        assert!(a.next(w(900.0)) > 358);
        // Throttled every window: down to the floor, never to zero.
        for _ in 0..40 {
            a.next(throttled);
        }
        assert_eq!(a.limit(), 16);
        // One SlowDown in 300 answers: no step up, no step down.
        let mut b = Aimd::new(100, 4096);
        b.slow_start = false;
        let stray = Window {
            throttled: 1,
            ..w(1000.0)
        };
        assert_eq!(b.next(stray), 100);
        assert_eq!(b.next(stray), 100);
    }

    #[test]
    fn rising_latency_without_gain_backs_off() {
        let mut a = Aimd::new(256, 4096);
        a.slow_start = false;
        assert!(a.next(w(2000.0)) > 256);
        let l = a.limit();
        let slow = Window {
            latency_ms: Some(400.0),
            ..w(2000.0)
        };
        assert!(a.next(slow) < l);
        // The same latency with a faster run is the link filling, not queueing.
        let mut b = Aimd::new(256, 4096);
        b.slow_start = false;
        b.next(w(2000.0));
        let l = b.limit();
        let faster = Window {
            latency_ms: Some(400.0),
            ..w(3000.0)
        };
        assert!(b.next(faster) > l);
    }

    #[test]
    fn no_growth_without_work_and_never_past_the_ceiling() {
        let mut a = Aimd::new(32, 100);
        let idle = Window {
            saturated: false,
            ..w(10.0)
        };
        for _ in 0..10 {
            assert_eq!(a.next(idle), 32);
        }
        for i in 0..20 {
            a.next(w(100.0 * (i + 1) as f64));
        }
        assert_eq!(a.limit(), 100);
    }

    #[test]
    fn jobs_parse() {
        assert_eq!("auto".parse::<Jobs>(), Ok(Jobs::Auto));
        assert_eq!("16".parse::<Jobs>(), Ok(Jobs::Fixed(16)));
        assert!("0".parse::<Jobs>().is_err());
        assert!("many".parse::<Jobs>().is_err());
    }
}

//! Ctrl-C and SIGTERM, for the whole process: they set the one [`Stop`] token every command
//! passes down. In graceful mode (a sync applying changes) the first signal asks it to stop
//! after the downloads in flight, and only a third within five seconds exits at once; in
//! any other mode the registered temporary files are removed and the process exits 130.
//!
//! The handler runs on a thread of its own (the `ctrlc` crate), not in signal context, so
//! removing files there is safe.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use s3invbackup::sys::stop::Stop;

/// The process's token, with the handler installed on first use.
pub fn stop_token() -> Stop {
    static TOKEN: OnceLock<Stop> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let stop = Stop::new();
            let handler_stop = stop.clone();
            let recent = Mutex::new(Vec::<Instant>::new());
            let result = ctrlc::set_handler(move || {
                if handler_stop.is_graceful() && !exit_now(&handler_stop, &recent) {
                    return;
                }
                for p in handler_stop.take_cleanup() {
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
                s3invbackup::say!("s3invbackup: interrupted; temporary files removed");
                std::process::exit(130);
            });
            if let Err(e) = result {
                tracing::warn!("cannot install the interrupt handler: {e}");
            }
            stop
        })
        .clone()
}

/// In graceful mode: asks for a stop, and says whether this signal should end the process
/// now (the third within five seconds).
fn exit_now(stop: &Stop, recent: &Mutex<Vec<Instant>>) -> bool {
    let mut times = recent.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    times.push(now);
    times.retain(|t| now.duration_since(*t).as_secs_f64() <= 5.0);
    stop.request();
    if times.len() >= 3 {
        return true;
    }
    s3invbackup::say!(
        "s3invbackup: stopping after the downloads in flight (interrupt twice more within 5 s to stop now)"
    );
    false
}

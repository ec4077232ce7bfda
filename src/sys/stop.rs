//! Ctrl-C and SIGTERM for the commands that write files: temporary files they registered are
//! removed and the process exits with 130, so an interrupted `index` leaves nothing behind.
//!
//! While a sync applies changes it switches to *graceful* mode: the first signal asks it to
//! stop (it finishes the renames in flight and flushes the journal), and only a third
//! within five seconds stops the process at once -- still recoverable from the journal.
//!
//! The handler runs on a thread of its own (the `ctrlc` crate), not in signal context, so
//! removing files there is safe.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static GRACEFUL: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static SIGNALS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

/// Graceful mode on or off (see the module comment).
pub fn set_graceful(on: bool) {
    GRACEFUL.store(on, Ordering::SeqCst);
}

/// A graceful stop was asked for.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// In graceful mode: true if this signal should stop the process now.
fn graceful_signal() -> bool {
    let mut times = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    times.push(now);
    times.retain(|t| now.duration_since(*t).as_secs_f64() <= 5.0);
    STOP.store(true, Ordering::SeqCst);
    if times.len() >= 3 {
        return true;
    }
    eprintln!(
        "s3invbackup: stopping after the downloads in flight (interrupt twice more within 5 s to stop now)"
    );
    false
}

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let result = ctrlc::set_handler(|| {
            if GRACEFUL.load(Ordering::SeqCst) && !graceful_signal() {
                return;
            }
            let paths = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|e| e.into_inner()));
            for p in paths.iter().rev() {
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                };
            }
            eprintln!("s3invbackup: interrupted; temporary files removed");
            std::process::exit(130);
        });
        if let Err(e) = result {
            tracing::warn!("cannot install the interrupt handler: {e}");
        }
    });
}

/// Removes `path` if the process is interrupted, until the guard is dropped.
pub struct Cleanup(PathBuf);

impl Cleanup {
    pub fn register(path: &Path) -> Cleanup {
        CLEANUP
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_path_buf());
        Cleanup(path.to_path_buf())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut list = CLEANUP.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = list.iter().rposition(|p| *p == self.0) {
            list.remove(i);
        }
    }
}

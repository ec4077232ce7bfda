//! Ctrl-C and SIGTERM for the commands that write files: temporary files they registered are
//! removed and the process exits with 130, so an interrupted `index` leaves nothing behind.
//!
//! The handler runs on a thread of its own (the `ctrlc` crate), not in signal context, so
//! removing files there is safe.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let result = ctrlc::set_handler(|| {
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

//! The stop token: how a caller asks a long operation to stop, and what it must clean up if
//! the process is made to exit at once.
//!
//! The library never installs a signal handler. The binary owns the process and wires
//! Ctrl-C / SIGTERM to a [`Stop`] (see `cli/signals.rs`); tests and benches pass a fresh
//! token or request a stop themselves. Two ways of stopping:
//!
//! - *graceful* (while a sync applies changes, see [`Stop::graceful`]): the run notices
//!   [`Stop::requested`] between steps, finishes the moves in flight, flushes its journal and
//!   returns "interrupted" -- resumable;
//! - *at once* (anything else): the binary removes the temporary files registered with
//!   [`Stop::cleanup`] and exits 130, so an interrupted `index` leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Cloned freely; every clone is the same token.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    graceful: AtomicBool,
    cleanup: Mutex<Vec<PathBuf>>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks the operation to stop at its next safe point.
    pub fn request(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Graceful mode until the guard is dropped: a stop request is honoured between steps
    /// instead of by exiting.
    pub fn graceful(&self) -> Graceful {
        self.0.graceful.store(true, Ordering::SeqCst);
        Graceful(self.clone())
    }

    pub fn is_graceful(&self) -> bool {
        self.0.graceful.load(Ordering::SeqCst)
    }

    /// Removes `path` if the process is made to exit at once, until the guard is dropped.
    pub fn cleanup(&self, path: &Path) -> Cleanup {
        self.lock_cleanup().push(path.to_path_buf());
        Cleanup {
            stop: self.clone(),
            path: path.to_path_buf(),
        }
    }

    /// Creates a temporary file or directory with `make` and registers it, with no moment
    /// in between: the signal handler takes the same lock, so a Ctrl-C that lands while
    /// the file is being made waits and then removes it (made first and registered after,
    /// a Ctrl-C in between left it behind: seen once in CI, under load).
    pub fn create_registered<T>(
        &self,
        make: impl FnOnce() -> anyhow::Result<T>,
        path: impl FnOnce(&T) -> PathBuf,
    ) -> anyhow::Result<(T, Cleanup)> {
        let mut list = self.lock_cleanup();
        let made = make()?;
        let p = path(&made);
        list.push(p.clone());
        drop(list);
        Ok((
            made,
            Cleanup {
                stop: self.clone(),
                path: p,
            },
        ))
    }

    /// The registered paths, newest first, taken out of the token (for the exiting process).
    pub fn take_cleanup(&self) -> Vec<PathBuf> {
        let mut paths = std::mem::take(&mut *self.lock_cleanup());
        paths.reverse();
        paths
    }

    fn lock_cleanup(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.0.cleanup.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See [`Stop::graceful`].
pub struct Graceful(Stop);

impl Drop for Graceful {
    fn drop(&mut self) {
        self.0.0.graceful.store(false, Ordering::SeqCst);
    }
}

/// See [`Stop::cleanup`].
pub struct Cleanup {
    stop: Stop,
    path: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut list = self.stop.lock_cleanup();
        if let Some(i) = list.iter().rposition(|p| *p == self.path) {
            list.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_token() {
        let stop = Stop::new();
        let other = stop.clone();
        assert!(!other.requested());
        stop.request();
        assert!(other.requested());
        {
            let _g = other.graceful();
            assert!(stop.is_graceful());
        }
        assert!(!stop.is_graceful());
        let a = stop.cleanup(Path::new("/a"));
        let _b = stop.cleanup(Path::new("/b"));
        drop(a);
        assert_eq!(stop.take_cleanup(), vec![PathBuf::from("/b")]);
        assert!(stop.take_cleanup().is_empty());
    }
}

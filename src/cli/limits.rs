//! Process limits the binary sets for itself (the library only reads what it is given).

use s3invbackup::sync::concurrency::Jobs;
use s3invbackup::sync::fetch::{FetchOptions, jobs_within_fd_limit};

/// Raises the soft open-file limit to the hard one (what a process may do for itself) and
/// returns the limit then in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return u64::MAX;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

/// The fetcher's options from `--jobs`, `--max-jobs` and `--part-size`, the one conversion
/// every command that downloads uses: threads fitted to the descriptor limit, parts of at
/// least 1 MiB.
pub fn fetch_options(jobs: Jobs, max_jobs: usize, part_size: u64) -> FetchOptions {
    let (n, adaptive) = match jobs {
        Jobs::Auto => (max_jobs, true),
        Jobs::Fixed(n) => (n, false),
    };
    FetchOptions {
        jobs: jobs_within_fd_limit(n.max(1), raise_fd_limit()),
        adaptive,
        part_size: part_size.max(1 << 20),
        ..FetchOptions::default()
    }
}

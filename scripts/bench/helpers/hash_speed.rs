//! CPU per GiB of each way the fetcher can verify bytes (scripts/bench/bench-checksums.sh):
//! MD5 (the ETag) and S3's additional checksums, on the same in-memory buffer, through the
//! same code the fetcher uses (`model::checksum::Hasher`, the md-5 crate).
//!
//!     hash_speed [GIB]     (default 2)
//!
//! Prints one line per algorithm: `algorithm cpu_s_per_gib gib_per_s`, measured as the
//! thread's CPU time (CLOCK_THREAD_CPUTIME_ID), not wall time, so another process on the
//! machine does not skew it.

use md5::{Digest, Md5};
use s3invbackup::model::checksum::{Algorithm, Hasher};

fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn main() {
    let gib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    // 256 KiB pieces, as the fetcher reads a body.
    let block: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let pieces = gib * 4096;
    let run = |name: &str, f: &mut dyn FnMut(&[u8])| {
        let t = cpu_seconds();
        for _ in 0..pieces {
            f(&block);
        }
        let s = (cpu_seconds() - t) / gib as f64;
        println!("{name:<10} {s:.3} {:.2}", 1.0 / s);
    };
    let mut md5 = Md5::new();
    run("MD5", &mut |b| md5.update(b));
    std::hint::black_box(md5.finalize());
    for a in [
        Algorithm::Crc64Nvme,
        Algorithm::Crc32c,
        Algorithm::Crc32,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ] {
        let mut h = Hasher::new(a);
        run(a.name(), &mut |b| h.update(b));
        std::hint::black_box(h.finish());
    }
}

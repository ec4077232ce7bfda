//! Which boot of which machine this process runs on: a resumed run compares it with the
//! interrupted attempt's, to know whether that attempt's unsynced writes may have been lost.

/// `host boot-id`. The boot id (Linux: a random UUID per boot) changes when the machine
/// restarts, which is what a power loss or a node crash implies; a run resumed on another
/// host of a cluster differs by host. Where no boot id can be read, the process id stands
/// in: every attempt then counts as possibly cut, which costs a re-read, never a version.
pub fn this_boot() -> String {
    let host = hostname();
    // The power-loss campaign's "reboot" between the cut attempt and the resumed one.
    #[cfg(feature = "failpoints")]
    if let Ok(boot) = std::env::var("S3INVBACKUP_BOOT_ID") {
        return format!("{host} {boot}");
    }
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(id) => format!("{host} {}", id.trim()),
        Err(_) => format!("{host} pid-{}", std::process::id()),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_process_sees_the_same_boot() {
        let a = super::this_boot();
        assert_eq!(a, super::this_boot());
        assert!(a.contains(' '), "{a}");
    }
}

//! What the generator reads from and asks of the operating system: the file-descriptor limit,
//! a process's resident memory and CPU time (Linux `/proc`).

use rlimit::Resource;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub(crate) fn raise_fd_limit() -> std::io::Result<u64> {
    let (_, hard) = Resource::NOFILE.get()?;
    Resource::NOFILE.set(hard, hard)?;
    Ok(hard)
}

/// Resident set size of process `pid` in bytes (`VmRSS`), or `None` if it cannot be read.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU seconds used by process `pid` so far, all threads.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // The kernel reports /proc times in USER_HZ, which is 100 on every Linux ABI.
    Some((utime + stime) as f64 / 100.0)
}

/// Open file descriptors of process `pid`.
pub(crate) fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(open_fds(me).unwrap() >= 3);
        assert!(rss_bytes(u32::MAX).is_none());
    }
}

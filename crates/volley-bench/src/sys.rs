//! The client process's own resources: CPU time and peak memory, from `/proc` on Linux.
//!
//! CPU time comes from `/proc/self/stat` in clock ticks of 10 ms (`USER_HZ`), so each of the
//! user and system times over a run is off by up to 10 ms at either end, and the per-request
//! and per-chunk CPU figures derived from them are coarse for short runs.
//!
//! Where `/proc` cannot be read (not Linux, or a sandbox without it) the readers return `None`,
//! the results say 0 for the CPU figures and the peak RSS (meaning "not measured", not "free"),
//! and a warning is logged once per process. Reading `/proc/self` is a memory copy by the
//! kernel, a few microseconds, done three times per run.

use std::sync::Once;
use std::time::Duration;

/// Warns once that `/proc` could not be read.
fn warn_unavailable(what: &str) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "cannot read {what}: the benchmark's client CPU time and peak RSS are reported \
             as 0 (not measured)"
        );
    });
}

/// User and system CPU time of the whole process (every thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    pub(crate) user: Duration,
    pub(crate) system: Duration,
}

impl CpuTimes {
    /// The CPU time from `earlier` to `self`.
    pub(crate) fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// The process's CPU times so far, when the platform says.
pub(crate) fn cpu_times() -> Option<CpuTimes> {
    let times = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_stat(&stat));
    if times.is_none() {
        warn_unavailable("/proc/self/stat");
    }
    times
}

/// The process's peak resident set size in bytes (`VmHWM`), when the platform says.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_vm_hwm(&status));
    if bytes.is_none() {
        warn_unavailable("/proc/self/status");
    }
    bytes
}

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, 100 on every Linux
/// architecture the kernel ships (reading `sysconf(_SC_CLK_TCK)` would need libc for a
/// constant).
const TICKS_PER_SEC: u64 = 100;

/// `utime` and `stime` of a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<CpuTimes> {
    // The command name is in parentheses and may hold spaces and parentheses of its own: the
    // fields start after the last `)`. `utime` and `stime` are fields 14 and 15 of the line,
    // so 12th and 13th after the name.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let ticks = |field: Option<&str>| field?.parse::<u64>().ok();
    let user = ticks(fields.next())?;
    let system = ticks(fields.next())?;
    let to_duration = |t: u64| Duration::from_millis(t.saturating_mul(1000 / TICKS_PER_SEC));
    Some(CpuTimes {
        user: to_duration(user),
        system: to_duration(system),
    })
}

/// `VmHWM` of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_ascii_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next() {
        Some("kB") | None => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        Some(_) => return None,
    };
    Some(value.saturating_mul(unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_past_odd_command_names() {
        let line = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 1500 0 0 0 250 37 0 0 20 0 \
                    9 0 1000 1000000 500 18446744073709551615";
        let cpu = parse_stat(line).unwrap();
        assert_eq!(cpu.user, Duration::from_millis(2500));
        assert_eq!(cpu.system, Duration::from_millis(370));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
        let later = CpuTimes {
            user: Duration::from_secs(3),
            system: Duration::from_secs(1),
        };
        assert_eq!(later.since(cpu).user, Duration::from_millis(500));
        assert_eq!(cpu.since(later), CpuTimes::default());
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tvolley\nVmPeak:\t  20000 kB\nVmHWM:\t    1536 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1536 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_can_be_read_on_linux() {
        assert!(cpu_times().is_some());
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}

//! What the kernel says about this process, for the `process_*` series every Prometheus client
//! library exports: CPU time, memory, file descriptors and the start time (Linux `/proc`).

/// One reading of the process figures; a figure the kernel would not give is `None`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reading {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

/// Reads every figure now.
pub fn read() -> Reading {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok());
    // Counted from the field after the command name: state is 3, utime 14, stime 15,
    // starttime 22 (proc(5) numbers them from 1 with pid and comm first).
    let cpu_seconds = match (field(14), field(15)) {
        (Some(user), Some(system)) if ticks > 0.0 => {
            Some(user.saturating_add(system) as f64 / ticks)
        }
        _ => None,
    };
    let start_time_seconds = match (field(22), boot_time()) {
        (Some(since_boot), Some(boot)) if ticks > 0.0 => {
            Some(boot as f64 + since_boot as f64 / ticks)
        }
        _ => None,
    };
    let (virtual_bytes, resident_bytes) = memory();
    Reading {
        cpu_seconds,
        resident_bytes,
        virtual_bytes,
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| i64::try_from(dir.count()).unwrap_or(i64::MAX)),
        max_fds: Some(max_fds()),
        start_time_seconds,
    }
}

/// `/proc/self/stat` split into fields numbered as proc(5) numbers them (pid is 1); the
/// command name, which may hold spaces and parentheses, is field 2 whole.
fn stat_fields(stat: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return Vec::new();
    };
    let mut fields = vec![String::new(), stat[..open].trim().to_string()];
    fields.push(stat[open + 1..close].to_string());
    fields.extend(stat[close + 1..].split_whitespace().map(str::to_string));
    fields
}

/// When the machine booted, in seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Virtual and resident size in bytes (`/proc/self/statm`'s first two fields, in pages).
fn memory() -> (Option<i64>, Option<i64>) {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return (None, None);
    };
    let page: i64 = rustix::param::page_size().try_into().unwrap_or(4096);
    let mut pages = statm
        .split_whitespace()
        .map(|v| v.parse::<i64>().ok().map(|p| p.saturating_mul(page)));
    let size = pages.next().flatten();
    let resident = pages.next().flatten();
    (size, resident)
}

fn max_fds() -> i64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit
        .current
        .map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_keeps_the_numbering() {
        let fields = stat_fields("42 (a (b) c) S 1 42 42 0 -1 4194560 10 0 0 0 7 3");
        assert_eq!(fields[1], "42");
        assert_eq!(fields[2], "a (b) c");
        assert_eq!(fields[3], "S");
        assert_eq!(fields[14], "7");
        assert_eq!(fields[15], "3");
    }

    #[test]
    fn this_process_has_a_start_time_cpu_time_and_memory() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let reading = read();
        let started = reading.start_time_seconds.unwrap_or_default();
        assert!(started > 1.6e9 && started <= now + 1.0, "{reading:?}");
        assert!(reading.cpu_seconds.is_some_and(|s| s >= 0.0), "{reading:?}");
        assert!(reading.resident_bytes.is_some_and(|b| b > 0), "{reading:?}");
        assert!(reading.open_fds.is_some_and(|n| n >= 3), "{reading:?}");
    }
}

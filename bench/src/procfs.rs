//! What `/proc` says of a process: its CPU time and its memory. `pid` is a process id,
//! or `self`.

use crate::Error;

/// CPU seconds (user + system) of process `pid` so far.
pub fn cpu_seconds(pid: &str) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which ends with the last ')'): utime and stime are
    // the 14th and 15th fields of the line, the 12th and 13th after it.
    let after = stat
        .rsplit_once(')')
        .ok_or_else(|| format!("unexpected /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / rustix::param::clock_ticks_per_second() as f64)
}

/// A memory figure of `/proc/<pid>/status` (`VmHWM`: peak resident, `VmRSS`: resident
/// now), in MB.
pub fn memory_mb(pid: &str, field: &str) -> Result<f64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

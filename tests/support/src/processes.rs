//! Processes on this machine, read from Linux's `/proc`: benchmarks say how much CPU the broker,
//! the store server and their own process used while they measured.

/// Linux reports CPU time in clock ticks of a fixed 100 per second to user space (`USER_HZ`).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// The processes the benchmarks watch beside their own: `(name, what its command line holds)`.
pub const SERVICES: [(&str, &str); 2] = [("broker", "beam.smp"), ("store", "bin/nx-27017")];

/// The first process other than this one whose command line contains `needle`.
pub fn find_process(needle: &str) -> Option<u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
}

/// User and system CPU time of a process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // twelfth and stime the thirteenth.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / CLOCK_TICKS_PER_S)
}

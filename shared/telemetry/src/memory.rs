use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, Opts};

/// `process_resident_memory_peak_bytes`: the high-water mark of resident memory (`VmHWM`), which
/// catches spikes between scrapes that the plain RSS gauge misses.
pub struct PeakMemoryCollector {
    gauge: Gauge,
}

impl PeakMemoryCollector {
    pub fn new() -> Self {
        let gauge = Gauge::with_opts(Opts::new(
            "process_resident_memory_peak_bytes",
            "Peak resident memory size of the process in bytes (VmHWM).",
        ))
        .expect("a valid metric name");
        Self { gauge }
    }

    /// The peak resident memory of this process in bytes, if the platform reports it: the
    /// high-water mark, or the current resident size where the kernel has not caught the mark
    /// up with it yet (it updates the mark lazily).
    pub fn read_peak_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |field: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        let peak = kib("VmHWM:")?.max(kib("VmRSS:").unwrap_or(0));
        Some(peak * 1024)
    }
}

impl Default for PeakMemoryCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for PeakMemoryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(peak) = Self::read_peak_bytes() {
            self.gauge.set(peak as f64);
        }
        self.gauge.collect()
    }
}

/// The resident memory of this process in bytes, now.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux pages are 4 KiB on the platforms OLEG runs on.
    Some(pages * 4096)
}

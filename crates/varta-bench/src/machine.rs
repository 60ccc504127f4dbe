//! The machine a run happened on, printed above the tables and stored in
//! the JSON: absolute figures mean little without it.

use serde::Serialize;

#[derive(Serialize, Debug)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub date_utc: String,
    pub unix_max_dgram_qlen: Option<u64>,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string());
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            date_utc: utc_date_time(secs),
            unix_max_dgram_qlen: std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "machine: {} CPUs ({}), Linux {}, net.unix.max_dgram_qlen = {}, {}",
            self.nproc,
            self.cpu_model,
            self.kernel,
            self.unix_max_dgram_qlen
                .map_or_else(|| "?".to_string(), |q| q.to_string()),
            self.date_utc
        )
    }
}

/// `YYYY-MM-DD HH:MM UTC` from Unix seconds (Howard Hinnant's
/// days-to-civil algorithm; avoids a date crate for one line).
fn utc_date_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::utc_date_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc_date_time(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(super::utc_date_time(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}

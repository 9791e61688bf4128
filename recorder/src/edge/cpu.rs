//! CPU admission: new sessions are refused while the recorder uses more CPU than it may, so
//! that calls already being recorded keep theirs. Sans-IO: fed CPU-time samples and the time.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Hysteresis below the limit before admitting again, in percentage points.
const HYSTERESIS: f64 = 10.0;

#[derive(Debug)]
pub struct CpuGuard {
    max_percent: f64,
    cpus: f64,
    last: Option<(f64, Instant)>,
    overloaded: bool,
}

impl CpuGuard {
    /// `cpus`: how many CPUs the process may use; `max_percent` of those is the limit.
    pub fn new(max_percent: u32, cpus: usize) -> Self {
        Self {
            max_percent: max_percent as f64,
            cpus: cpus.max(1) as f64,
            last: None,
            overloaded: false,
        }
    }

    /// A sample of the process's total CPU time; returns the new state when it changed.
    pub fn sample(&mut self, cpu_seconds: f64, now: Instant) -> Option<bool> {
        let (prev_cpu, prev_at) = self.last.replace((cpu_seconds, now))?;
        let wall = now.saturating_duration_since(prev_at).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let percent = (cpu_seconds - prev_cpu).max(0.0) / wall / self.cpus * 100.0;
        let next = if self.overloaded {
            percent > self.max_percent - HYSTERESIS
        } else {
            percent > self.max_percent
        };
        (next != self.overloaded).then(|| {
            self.overloaded = next;
            next
        })
    }
}

/// Total CPU time of this process (all threads), from `/proc/self/stat` in USER_HZ (100 on
/// Linux for every mainstream architecture).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Samples the process's CPU time every second and tells the core when it crosses the limit.
pub(super) async fn cpu_monitor(tx: mpsc::Sender<super::CoreInput>, max_percent: u32) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut guard = CpuGuard::new(max_percent, cpus);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(cpu) = process_cpu_seconds() else {
            return;
        };
        if let Some(overloaded) = guard.sample(cpu, Instant::now()) {
            if overloaded {
                tracing::warn!(max_percent, "CPU above its limit: refusing new sessions");
            } else {
                tracing::info!("CPU back below its limit: taking new sessions");
            }
            if tx
                .send(super::CoreInput::Overloaded(overloaded))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refuses_above_the_limit_and_admits_again_below_it_with_hysteresis() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut g = CpuGuard::new(90, 2);
        assert_eq!(
            g.sample(0.0, at(0)),
            None,
            "the first sample only sets the baseline"
        );
        assert_eq!(g.sample(1.0, at(1)), None, "50% of 2 CPUs");
        assert_eq!(g.sample(2.9, at(2)), Some(true), "95%");
        assert_eq!(
            g.sample(4.6, at(3)),
            None,
            "85%: still within the hysteresis"
        );
        assert_eq!(g.sample(6.0, at(4)), Some(false), "70%");
        assert_eq!(g.sample(6.0, at(4)), None, "no time passed");
    }

    #[test]
    fn reads_its_own_cpu_time() {
        let spent = process_cpu_seconds().expect("/proc/self/stat");
        assert!(spent >= 0.0);
    }
}

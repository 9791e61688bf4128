//! Log lines about bad input at a bounded rate: a flood of junk packets must not become a flood
//! of log lines (a 20-second flood once wrote 530 MB). Each call site has its own [`LogLimit`];
//! the first line after a quiet spell says how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines per window per call site.
const LINES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(10);

pub struct LogLimit(Mutex<State>);

struct State {
    window: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new() -> Self {
        Self(Mutex::new(State {
            window: None,
            lines: 0,
            suppressed: 0,
        }))
    }

    /// `Some(n)` when a line may be written now (`n`: lines left out before it), else `None`.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut s = self.0.lock().ok()?;
        if s.window
            .is_none_or(|w| now.saturating_duration_since(w) >= WINDOW)
        {
            s.window = Some(now);
            s.lines = 0;
        }
        if s.lines >= LINES {
            s.suppressed += 1;
            return None;
        }
        s.lines += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_per_window_then_a_count_of_the_rest() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| limit.check(t0).is_some()).count();
        assert_eq!(allowed, 10);
        assert_eq!(
            limit.check(t0 + WINDOW),
            Some(990),
            "the next window says how many"
        );
        assert_eq!(limit.check(t0 + WINDOW), Some(0));
    }
}

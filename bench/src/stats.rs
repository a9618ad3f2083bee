//! Percentiles of latency samples (nearest-rank on a sorted copy).

use std::fmt;
use std::time::Duration;

/// The value at or below which `p` percent of `sorted` lie (nearest rank); `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50 / p90 / p99 and mean of a sample set, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` when there are no samples.
    pub fn of_ms(samples: &[f64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            n: sorted.len(),
            p50: percentile(&sorted, 50.0)?,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }

    /// Microsecond samples (Postgres' `queue_wait_us`), summarized in milliseconds.
    pub fn of_us(samples: &[i64]) -> Option<Self> {
        Self::of_ms(&samples.iter().map(|us| *us as f64 / 1000.0).collect::<Vec<_>>())
    }
}

impl fmt::Display for Summary {
    /// `p50 / p90 / p99` in milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {} / {} ms", ms(self.p50), ms(self.p90), ms(self.p99))
    }
}

/// A duration in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds with a precision that suits their size (`0.412`, `12.3`, `1520`).
pub fn ms(v: f64) -> String {
    match v.abs() {
        a if a < 10.0 => format!("{v:.3}"),
        a if a < 100.0 => format!("{v:.1}"),
        _ => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let one_to_hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&one_to_hundred, 50.0), Some(50.0));
        assert_eq!(percentile(&one_to_hundred, 90.0), Some(90.0));
        assert_eq!(percentile(&one_to_hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&one_to_hundred, 100.0), Some(100.0));
        assert_eq!(percentile(&one_to_hundred, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_averages() {
        let s = Summary::of_ms(&[3.0, 1.0, 2.0, 4.0]).expect("samples");
        assert_eq!((s.n, s.p50, s.p99, s.mean), (4, 2.0, 4.0, 2.5));
        let us = Summary::of_us(&[500, 1500]).expect("samples");
        assert_eq!((us.p50, us.p99), (0.5, 1.5));
        assert!(Summary::of_ms(&[]).is_none());
    }
}

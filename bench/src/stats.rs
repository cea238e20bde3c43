//! The small statistics the reports print: means, medians, changes in
//! percent, and the machine's load (other work skews latencies).

use std::fs;

/// The 1-minute load average (0 when unreadable).
pub(crate) fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `(a / b − 1)·100`; NaN when `b` is not positive.
pub(crate) fn pct(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b - 1.0) * 100.0
    } else {
        f64::NAN
    }
}

/// The mean; 0 for none.
pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The median of values already sorted; NaN for none.
pub(crate) fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The median, lowest and highest of `v` (NaN for none).
pub(crate) fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        median(&sorted),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_means_and_changes() {
        assert!((median(&[1.0, 2.0, 3.0, 4.0]) - 2.5).abs() < 1e-9);
        assert!(median(&[]).is_nan());
        assert_eq!(mean(&[]), 0.0);
        assert!((pct(110.0, 100.0) - 10.0).abs() < 1e-9);
        assert!(pct(1.0, 0.0).is_nan());
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
    }
}

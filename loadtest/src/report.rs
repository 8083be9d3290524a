//! Percentile lines.

use std::time::Duration;

use hdrhistogram::Histogram;

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

pub fn print(what: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        println!("{what}: no samples");
        return;
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{what}: n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms mean={:.2}ms",
        h.len(),
        ms(0.50),
        ms(0.90),
        ms(0.99),
        h.max() as f64 / 1000.0,
        h.mean() / 1000.0
    );
}

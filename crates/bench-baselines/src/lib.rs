//! Baselines for `bench/run.sh` (programs that do the least work the real services do, so the
//! benchmark reports ratios) and `loadgen`, the one HTTP load generator.

/// Latency summary of samples in µs (sorted in place): mean and nearest-rank p50/p90/p99/max,
/// in ms; `null` when there are none.
pub fn percentiles(v: &mut [u32]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_unstable();
    let at =
        |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1000.0;
    serde_json::json!({
        "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0),
        "mean_ms": mean, "n": v.len(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_are_nearest_rank_in_ms() {
        let mut v: Vec<u32> = (1..=100).rev().map(|i| i * 1000).collect();
        let p = super::percentiles(&mut v);
        assert_eq!(p["p50_ms"], 50.0);
        assert_eq!(p["p99_ms"], 99.0);
        assert_eq!(p["max_ms"], 100.0);
        assert_eq!(p["mean_ms"], 50.5);
        assert!(super::percentiles(&mut []).is_null());
    }
}

//! Criterion micro-benchmarks for Volley. The benchmarks are in `benches/` (one scenario per
//! file, `harness = false`); run them with `cargo bench -p volley-benches`.

//! Placeholder: replaced by the Redis limiter benchmark.
fn main() {}

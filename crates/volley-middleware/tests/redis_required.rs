//! Compiled whatever the features: with `VOLLEY_REQUIRE_REDIS=1`, `cargo test -p
//! volley-middleware` without `--features redis` (its Redis tests not compiled) or without
//! `-- --include-ignored` (compiled but ignored) fails here instead of passing without them.

#[test]
fn redis_tests_run_when_required() {
    volley_testkit::redis::assert_required_tests_run("volley-middleware", cfg!(feature = "redis"));
}

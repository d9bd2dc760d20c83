//! Runs of many requests against a rate-limited server, as the self-tuning tests check them.

use std::fmt::Debug;

/// Prints a run's outcome (lines, failed lines, the attempts and 429s the server counted, the
/// limits the client learned) and asserts that no line failed.
///
/// # Panics
/// When a line failed, with the first error.
pub fn assert_no_line_failed<T, E: Debug>(
    results: &[Result<T, E>],
    attempts: u64,
    rate_limited: u64,
    learned: impl Debug,
) {
    let failed = results.iter().filter(|r| r.is_err()).count();
    eprintln!(
        "{} lines: {failed} failed; {attempts} attempts, {rate_limited} 429s; learned {learned:?}",
        results.len()
    );
    assert_eq!(
        failed,
        0,
        "{:?}",
        results.iter().find_map(|r| r.as_ref().err())
    );
}

//! The report of a finished (or interrupted) run.

use std::collections::BTreeMap;
use std::time::Duration;

/// What a [`BatchRunner::run`](super::BatchRunner::run) did. Counts are of this run; lines
/// recorded by an earlier run are [`skipped`](Self::skipped).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Non-blank input lines read (with an interruption, fewer than the input has).
    pub lines: u64,
    /// Lines skipped because the output already had their outcome.
    pub skipped: u64,
    /// Of the skipped lines, those whose recorded outcome is not a 2xx response.
    pub skipped_failed: u64,
    /// Lines whose outcome is a 2xx response.
    pub succeeded: u64,
    /// Lines whose request failed: a final HTTP error, or an error without a response.
    pub failed: u64,
    /// Invalid input lines (nothing sent).
    pub invalid: u64,
    /// HTTP attempts the client made (retries included, cache hits excluded), from its
    /// connection pool's counter.
    pub attempts: u64,
    /// Attempts beyond each request's first: `attempts` minus the requests that made an
    /// attempt (those that failed with `invalid_input`, `config` or `cancelled` made none,
    /// nor did those the cache answered). Hedged copies are among them: the client's count of
    /// requests sent does not tell a copy from a retry.
    pub retries: u64,
    /// Requests the client's cache answered (`x-volley-cache: hit`): no HTTP attempt. Their
    /// outcomes count as any other's, among [`succeeded`](Self::succeeded) as a rule (a
    /// cached 2xx whose body is not the expected JSON is a failure, as it was when stored).
    pub cached: u64,
    /// Prompt (input) tokens reported in the responses' `usage`; a cache hit's replayed
    /// usage is not counted (it was billed when the answer first came).
    pub tokens_in: u64,
    /// Completion (output) tokens reported in the responses' `usage`, cache hits' left out
    /// as for [`tokens_in`](Self::tokens_in).
    pub tokens_out: u64,
    /// Wall-clock time of the sending, from the first line taken to the last outcome: the
    /// resume scan of the output before it and the last flush after it are not in it.
    pub wall: Duration,
    /// The runner's requests in flight, averaged over the wall time (a time-weighted mean).
    pub mean_in_flight: f64,
    /// Whether the shutdown future stopped the run before the end of the input. Lines
    /// without a recorded outcome are sent by the next run.
    pub interrupted: bool,
    /// Requests cancelled in flight when the stop's grace period ended (or a second stop
    /// ended it): they have no outcome and are sent again by the next run. Those the client
    /// had sent already may have been billed.
    pub cancelled: u64,
    /// Set when a request ended in HTTP 401 or 403 and the run stopped taking lines (see
    /// [Stopping on rejected credentials](crate#stopping-on-rejected-credentials) and
    /// [`BatchOptions::stop_on_auth_failure`](super::BatchOptions::stop_on_auth_failure)):
    /// the status and the provider's message, as `HTTP 401: Incorrect API key provided`.
    /// Lines not read have no outcome; resume with
    /// [`BatchOptions::retry_failed`](super::BatchOptions::retry_failed) once the key is fixed.
    pub credentials_rejected: Option<String>,
    /// Set when a request ended in a 429 saying the account's quota or credit is used up
    /// (OpenAI's `insufficient_quota`) and the run stopped taking lines, as for rejected
    /// credentials: `HTTP 429: <the provider's message>`. Resume with
    /// [`BatchOptions::retry_failed`](super::BatchOptions::retry_failed) once there is credit.
    pub quota_exhausted: Option<String>,
    /// Set when the run's first 16 lines all ended in HTTP 404 and it stopped taking lines
    /// (see
    /// [`BatchOptions::stop_on_auth_failure`](super::BatchOptions::stop_on_auth_failure)): a
    /// base URL without its `/v1`, or every line's `url` or `model` wrong. `HTTP 404: <the
    /// provider's message>`. Resume with
    /// [`BatchOptions::retry_failed`](super::BatchOptions::retry_failed) once it is fixed.
    pub nothing_found: Option<String>,
    /// Set when a request could not be sent because of the client's own settings
    /// (`ErrorKind::Config`), for example when the shared rate limiter's Redis refused its
    /// password or its ACL the limiter's script mid-run, and the run stopped taking lines, as
    /// for rejected credentials: every other line would fail the same way. The client's
    /// message. Resume with [`BatchOptions::retry_failed`](super::BatchOptions::retry_failed)
    /// once the settings are fixed.
    pub cannot_send: Option<String>,
    /// Outcomes other than success by code: `http_<status>` for a final HTTP error, the error
    /// code (`timeout`, `invalid_json`, …) otherwise.
    pub errors_by_code: BTreeMap<String, u64>,
}

impl Summary {
    /// Whether every line of the input has a successful outcome: nothing failed or was
    /// invalid in this run, no skipped line had failed in an earlier one, and the run was not
    /// interrupted.
    pub fn all_succeeded(&self) -> bool {
        self.failed == 0
            && self.invalid == 0
            && self.skipped_failed == 0
            && !self.interrupted
            && self.credentials_rejected.is_none()
            && self.quota_exhausted.is_none()
            && self.nothing_found.is_none()
            && self.cannot_send.is_none()
    }

    /// Lines read but left without an outcome by an interruption (sent again on resume).
    pub fn unfinished(&self) -> u64 {
        self.lines
            .saturating_sub(self.skipped + self.succeeded + self.failed + self.invalid)
    }
}

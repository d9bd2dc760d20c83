//! Process limits.

/// Raises the open-file soft limit to the hard limit: 1 024 slots need more than 1 024 file
/// descriptors. When `needed` is given and the hard limit is lower, says so in one line.
pub(crate) fn raise_open_file_limit(needed: Option<u64>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit");
            if let Some(needed) = needed
                && limit < needed
            {
                eprintln!(
                    "volley: the open-file limit is {limit}, below the {needed} this run needs; \
                     raise the hard limit (ulimit -Hn) or lower the concurrency"
                );
            }
        }
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
}

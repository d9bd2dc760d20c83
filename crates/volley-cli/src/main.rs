//! `volley`: call LLM APIs at very high concurrency from the command line.
//!
//! `main` parses the command line, sets up logging and dispatches; each subcommand lives in
//! its own module and calls library code.

/// `eprintln!` that ignores a failed write. stderr may be a pipe whose reader is gone (`volley
/// run 2>&1 | tee log`, then Ctrl-C, which stops `tee` too), and `eprintln!` panics then: in
/// the middle of a run that would drop its requests in flight, answers paid for.
macro_rules! say {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stderr(), "{}", $crate::terminal_safe(&text));
    }};
}

/// `text` as it may be written to a terminal: control characters other than line breaks and
/// tabs escaped (`\u{1b}`), so that text from a file, a server or a file name cannot move the
/// cursor, rewrite what the user reads, or set the clipboard (OSC 52).
pub(crate) fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    // Control characters, and the bidirectional overrides and isolates, which reorder what
    // the reader sees ("Trojan Source").
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            safe.extend(c.escape_unicode());
        } else {
            safe.push(c);
        }
    }
    std::borrow::Cow::Owned(safe)
}

mod bench;
mod chat;
mod config;
mod limits;
mod mock;
mod progress;
mod run;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The binary's allocator. hyper gives every response a fresh 8 KiB read buffer and frees the
/// last one, a size glibc's malloc serves from its shared bins rather than its per-thread
/// cache; jemalloc serves it from per-thread size classes. Measured with `volley bench -c 64
/// -n 20000` against nginx (`benches/nginx`) under callgrind: 656.8 M instructions with glibc,
/// 630.0 M with jemalloc (−4.1 %); whole-process CPU of 200 000 requests, four alternating
/// runs: median 11.0 µs → 10.7 µs per request. The peak RSS of 10 000 connections goes from
/// 310 to 320 MB; mimalloc saved as much CPU but took it to 437 MB. The library crates leave
/// the choice to their users.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, built in (`_RJEM_MALLOC_CONF` in the environment still overrides them).
///
/// - `slab_sizes:8192-8192:16`: hyper's 8 KiB read buffers come from 64 KiB slabs of eight.
///   jemalloc's default slab for that size holds one buffer, so each buffer the thread cache
///   does not hold costs a slab from the page allocator, and each one freed gives it back.
/// - `tcache_nslots_small_min:200`: the thread cache holds up to 200 objects of each small
///   size (20 by default), so fewer of the buffers freed when many answers end at once go
///   back to their slabs.
///
/// Measured under callgrind against nginx (`benches/nginx`): 1 024 connections, 4 096 and
/// 8 192 requests, the difference giving the cost per request and per connection. Per request
/// 34.6 k → 33.8 k instructions, per new connection 50.8 k → 40.1 k; with 64 connections
/// (20 000 requests) 30.8 k → 30.1 k per request. Whole-process CPU of 20 480 requests at
/// 1 024 connections, three alternating runs: median 21.2 → 20.7 µs per request. Peak RSS of
/// 10 000 connections: 318 → 311 MB.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
// SAFETY: jemalloc reads this C `const char *` once, before `main`, as an option string; it
// names a NUL-terminated string that lives as long as the process and is never written. The
// symbol is jemalloc's weak `malloc_conf`, prefixed as tikv-jemalloc-sys builds it.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&'static std::ffi::c_char> =
    Some(unsafe { &*c"slab_sizes:8192-8192:16,tcache_nslots_small_min:200".as_ptr() });

/// Call LLM HTTP APIs at very high concurrency: chat, run (batch JSONL), bench (load tests
/// with reports), mock.
///
/// Logging goes to stderr and is set with RUST_LOG (for example RUST_LOG=volley=debug).
#[derive(Debug, Parser)]
#[command(name = "volley", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // Its help comes from `ChatArgs`'s docs.
    Chat(Box<chat::ChatArgs>),
    // Its help comes from `RunArgs`'s docs.
    Run(Box<run::RunArgs>),
    // Its help comes from `BenchArgs`'s docs.
    Bench(Box<bench::BenchArgs>),
    /// Run the OpenAI-compatible mock server (for tests and benchmarks).
    Mock(Box<mock::MockArgs>),
    /// Manage trust in a volley.toml found in the working directory.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Trust ./volley.toml (or PATH) as it is now: its base_url, api_key_env, shared_limit,
    /// disk or Redis cache and other settings that decide where your key, prompts and answers
    /// go, and those that may pay for a request more than once (hedging, max_retries above 3,
    /// a timeout below 10 minutes), are used only once it is trusted (or named with
    /// --config). Recorded by hash in $XDG_CONFIG_HOME/volley/trusted; any change to the file
    /// needs trusting again.
    Trust {
        /// The file to trust [default: ./volley.toml].
        path: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
    limits::raise_open_file_limit(None);

    // The load tester builds its own runtimes, one per thread (--threads).
    let command = match cli.command {
        Command::Bench(args) => return finish(bench::main(*args)),
        Command::Config(ConfigCommand::Trust { path }) => {
            let path = path.unwrap_or_else(|| config::CONFIG_FILE.into());
            let trusted = config::trust::trust(&path).map(|message| println!("{message}"));
            return finish(trusted.map(|()| ExitCode::SUCCESS).map_err(Into::into));
        }
        other => other,
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("volley: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        catch_file_size_signal();
        match command {
            Command::Chat(args) => chat::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Run(args) => run::run(*args).await,
            Command::Mock(args) => mock::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Bench(_) | Command::Config(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    // Do not wait for blocking threads still parked in a read (standard input after an
    // interrupted run): the run has flushed and reported everything by now.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    finish(result)
}

/// Catches SIGXFSZ, which a write past the file-size limit (`ulimit -f`) raises and whose
/// default action kills the process with a core dump: caught, the write fails with EFBIG
/// instead, and `volley run` stops with exit code 1 naming the file, with its outcomes
/// flushed, as for a full disk. tokio's handler stays installed for the life of the process.
fn catch_file_size_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    if let Err(e) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        tracing::debug!("could not catch SIGXFSZ: {e}");
    }
}

/// Whether log lines are coloured: only on a terminal, and never with `NO_COLOR` set to
/// anything but the empty string (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The exit code of a command's result; errors are printed.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            // Each cause once, outermost first (anyhow's `{:#}` repeats causes that
            // libraries also print in their own message).
            say!("volley: {}", volley::ErrorReport::new(e.as_ref()));
            // Mistakes in flags or configuration exit as clap's usage errors do.
            if e.downcast_ref::<config::UsageError>().is_some() {
                ExitCode::from(run::EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_the_terminal_keeps_line_breaks_and_escapes_other_controls() {
        assert!(matches!(
            terminal_safe("plain\ttext\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            terminal_safe("a\u{1b}]0;x\u{7}b\r\n"),
            "a\\u{1b}]0;x\\u{7}b\\u{d}\n"
        );
    }

    #[test]
    fn log_lines_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".as_ref())));
        assert!(!colour(true, Some("1".as_ref())));
        assert!(!colour(false, None));
        assert!(!colour(false, Some("1".as_ref())));
    }
}

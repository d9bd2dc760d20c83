//! Volley's automation entry point: `cargo xtask <command>`.
//!
//! `main` only dispatches; each command is a module.

mod bench;
mod ci;
mod mutants;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  bench   criterion micro-benchmarks and the end-to-end scenarios S1-S6 against
          their targets, with reports (--quick, --baseline DIR, --help)
  ci      run what CI runs (.ci/run): fmt, clippy, tests, docs, the main job
  mutants mutation testing (cargo-mutants) of the modules .cargo/mutants.toml lists, and
          the kill rate per file; arguments go to cargo mutants (--shard 0/4, --in-diff F)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("ci") => ci::run(),
        Some("mutants") => mutants::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask mutants`: mutation testing of the modules `.cargo/mutants.toml` lists, with
//! cargo-mutants, and the kill rate per file.
//!
//! Arguments after `mutants` go to `cargo mutants` (e.g. `--shard 0/4`, `--in-diff FILE`,
//! `-j 2`). Results are in `target/mutants/mutants.out`; the summary is read from its
//! `outcomes.json`.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, bail};

use crate::ci::workspace_root;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let installed = Command::new("cargo")
        .args(["mutants", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !installed {
        bail!("cargo-mutants is not installed: cargo install --locked cargo-mutants");
    }
    let out = root.join("target/mutants");
    let status = Command::new("cargo")
        .arg("mutants")
        .arg("--output")
        .arg(&out)
        .args(args)
        .current_dir(&root)
        .status()
        .context("running cargo mutants")?;
    let outcomes = out.join("mutants.out/outcomes.json");
    let text = std::fs::read_to_string(&outcomes)
        .with_context(|| format!("reading {}", outcomes.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).context("parsing outcomes.json")?;
    print!("{}", summary(&json));
    // cargo-mutants exits 2 when a mutant survived, 3 on timeouts: the summary says which.
    if !status.success() && status.code() != Some(2) && status.code() != Some(3) {
        bail!("cargo mutants failed ({status})");
    }
    Ok(())
}

/// Caught, missed, timed-out and unviable mutants per file, and the kill rate of the viable
/// ones (caught and timed out count as killed).
fn summary(json: &serde_json::Value) -> String {
    let mut files: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for outcome in json["outcomes"].as_array().into_iter().flatten() {
        let Some(file) = outcome["scenario"]["Mutant"]["file"].as_str() else {
            continue;
        };
        let slot = match outcome["summary"].as_str() {
            Some("CaughtMutant") => 0,
            Some("MissedMutant") => 1,
            Some("Timeout") => 2,
            Some("Unviable") => 3,
            _ => continue,
        };
        files.entry(file.to_owned()).or_default()[slot] += 1;
    }
    let mut out = String::from(
        "file                                                  caught missed timeout unviable  killed\n",
    );
    let mut total = [0u64; 4];
    for (file, counts) in &files {
        out.push_str(&line(file, counts));
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    out.push_str(&line("all", &total));
    out
}

fn line(name: &str, [caught, missed, timeout, unviable]: &[u64; 4]) -> String {
    let viable = caught + missed + timeout;
    let killed = if viable == 0 {
        "-".to_owned()
    } else {
        format!("{:.0} %", 100.0 * (caught + timeout) as f64 / viable as f64)
    };
    format!("{name:<54}{caught:>6} {missed:>6} {timeout:>7} {unviable:>8} {killed:>7}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_per_file_and_kills_over_viable() {
        let json = serde_json::json!({"outcomes": [
            {"scenario": "Baseline", "summary": "Success"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "CaughtMutant"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "CaughtMutant"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "MissedMutant"},
            {"scenario": {"Mutant": {"file": "a.rs"}}, "summary": "Timeout"},
            {"scenario": {"Mutant": {"file": "b.rs"}}, "summary": "Unviable"},
        ]});
        let text = summary(&json);
        let a = text.lines().find(|l| l.starts_with("a.rs")).unwrap();
        assert!(a.ends_with("75 %"), "{a}");
        let b = text.lines().find(|l| l.starts_with("b.rs")).unwrap();
        assert!(b.ends_with('-'), "{b}");
        let all = text.lines().last().unwrap();
        assert!(all.starts_with("all") && all.ends_with("75 %"), "{all}");
    }
}

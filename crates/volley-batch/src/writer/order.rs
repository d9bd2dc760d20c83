//! Ordered mode: the reorder buffer, which releases records in sequence order, and the
//! bookkeeping of the holding file, where every record that has to wait is written at once.

use std::collections::BTreeMap;

use super::Window;
use crate::held;

/// The records waiting for the ones before them.
#[derive(Default)]
pub(crate) struct Reorder {
    waiting: BTreeMap<u64, Waiting>,
    /// The sequence number of the next record to release.
    next_seq: u64,
    /// The approximate size of the waiting records (what the dispatch loop bounds).
    held_bytes: u64,
    /// Records accepted since the last [`spill`](Self::spill), by sequence number.
    fresh: Vec<u64>,
    /// The bytes of the holding file's entries whose record still waits.
    live_bytes: u64,
}

/// A formatted record that waits.
struct Waiting {
    line: u64,
    bytes: Vec<u8>,
    failed: bool,
    approx: u64,
    /// The size of its entry in the holding file, once written there.
    entry: Option<u64>,
}

impl Reorder {
    /// Takes the formatted record `bytes` of input line `line` at position `seq`, then hands
    /// every record that is now in order to `release` (its bytes and whether it failed).
    pub(crate) fn accept(
        &mut self,
        seq: u64,
        line: u64,
        bytes: Vec<u8>,
        failed: bool,
        approx: u64,
        mut release: impl FnMut(&[u8], bool),
    ) {
        if seq == self.next_seq {
            // The common case needs no trip through the map.
            release(&bytes, failed);
            self.next_seq += 1;
        } else {
            self.held_bytes += approx;
            self.fresh.push(seq);
            let waiting = Waiting {
                line,
                bytes,
                failed,
                approx,
                entry: None,
            };
            self.waiting.insert(seq, waiting);
        }
        while let Some(waiting) = self.waiting.remove(&self.next_seq) {
            self.forget(&waiting);
            release(&waiting.bytes, waiting.failed);
            self.next_seq += 1;
        }
    }

    /// Hands every waiting record to `release` in sequence order, gaps and all (an
    /// interrupted run leaves gaps).
    pub(crate) fn release_all(&mut self, mut release: impl FnMut(&[u8], bool)) {
        for waiting in std::mem::take(&mut self.waiting).into_values() {
            release(&waiting.bytes, waiting.failed);
        }
        self.held_bytes = 0;
        self.live_bytes = 0;
        self.fresh.clear();
    }

    /// Appends to `out` the holding-file entries of the records accepted since the last call
    /// that still wait.
    pub(crate) fn spill(&mut self, out: &mut Vec<u8>) {
        for seq in self.fresh.drain(..) {
            if let Some(waiting) = self.waiting.get_mut(&seq) {
                let before = out.len();
                held::push_entry(out, waiting.line, &waiting.bytes);
                let size = (out.len() - before) as u64;
                waiting.entry = Some(size);
                self.live_bytes += size;
            }
        }
    }

    /// Appends to `out` the entries of every waiting record, for a new holding file.
    pub(crate) fn rewrite(&mut self, out: &mut Vec<u8>) {
        self.fresh.clear();
        self.live_bytes = 0;
        for waiting in self.waiting.values_mut() {
            let before = out.len();
            held::push_entry(out, waiting.line, &waiting.bytes);
            let size = (out.len() - before) as u64;
            waiting.entry = Some(size);
            self.live_bytes += size;
        }
    }

    /// The bytes of the holding file that are still needed.
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Whether no record waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// What the dispatch loop needs to know to keep the window.
    pub(crate) fn window(&self) -> Window {
        Window {
            released: self.next_seq,
            held_bytes: self.held_bytes,
        }
    }

    fn forget(&mut self, waiting: &Waiting) {
        self.held_bytes -= waiting.approx;
        self.live_bytes -= waiting.entry.unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(reorder: &mut Reorder, seq: u64, out: &mut Vec<u8>) {
        let bytes = format!("{{\"id\":\"r{seq}\"}}\n").into_bytes();
        reorder.accept(seq, seq + 1, bytes, seq % 2 == 1, 100, |b, _| {
            out.extend_from_slice(b)
        });
    }

    #[test]
    fn records_are_released_in_order_and_only_waiting_ones_spill() {
        let (mut reorder, mut out, mut spilled) = (Reorder::default(), Vec::new(), Vec::new());
        accept(&mut reorder, 0, &mut out);
        accept(&mut reorder, 2, &mut out);
        accept(&mut reorder, 3, &mut out);
        assert_eq!(out, b"{\"id\":\"r0\"}\n");
        assert_eq!(
            reorder.window(),
            Window {
                released: 1,
                held_bytes: 200
            }
        );

        reorder.spill(&mut spilled);
        assert_eq!(spilled, b"3 {\"id\":\"r2\"}\n4 {\"id\":\"r3\"}\n");
        assert_eq!(reorder.live_bytes(), spilled.len() as u64);

        accept(&mut reorder, 1, &mut out);
        assert_eq!(
            out,
            b"{\"id\":\"r0\"}\n{\"id\":\"r1\"}\n{\"id\":\"r2\"}\n{\"id\":\"r3\"}\n"
        );
        assert_eq!(
            reorder.window(),
            Window {
                released: 4,
                held_bytes: 0
            }
        );
        assert_eq!(reorder.live_bytes(), 0);
        assert!(reorder.is_empty());
        let before = spilled.len();
        reorder.spill(&mut spilled);
        assert_eq!(spilled.len(), before, "released at once: nothing to hold");
    }

    #[test]
    fn an_interrupted_run_releases_the_rest_with_gaps_and_rewrites_what_waits() {
        let (mut reorder, mut out) = (Reorder::default(), Vec::new());
        accept(&mut reorder, 5, &mut out);
        accept(&mut reorder, 3, &mut out);
        let mut file = Vec::new();
        reorder.rewrite(&mut file);
        assert_eq!(file, b"4 {\"id\":\"r3\"}\n6 {\"id\":\"r5\"}\n");
        assert_eq!(reorder.live_bytes(), file.len() as u64);
        reorder.release_all(|b, _| out.extend_from_slice(b));
        assert_eq!(out, b"{\"id\":\"r3\"}\n{\"id\":\"r5\"}\n");
        assert!(reorder.is_empty());
        assert_eq!(reorder.window().held_bytes, 0);
    }
}

//! A number for the calling thread, for the pool's preference of connections driven by it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

/// The calling thread, as a number that is never 0. Ids wrap after 2³² threads; two threads
/// that then share one prefer each other's connections as their own, which costs wakeups,
/// never a connection.
pub(crate) fn this_thread() -> u32 {
    thread_local! {
        static THIS: Cell<u32> = const { Cell::new(0) };
    }
    static NEXT: AtomicU32 = AtomicU32::new(1);
    THIS.with(|this| {
        let id = this.get();
        if id != 0 {
            return id;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed).max(1);
        this.set(id);
        id
    })
}

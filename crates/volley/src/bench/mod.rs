//! The load tester behind `volley bench`.
pub mod results;

//! The control plane's error type and the shorthands the daemon and the drivers use.
//!
//! For now this re-exports `anyhow`'s names (the daemon's errors carry a chain of contexts
//! that the CLI prints as `outer: inner`); code in `control/` names them through this module
//! only, so the type can become a `thiserror` enum in one place.

pub use anyhow::{anyhow as err, bail, Context, Error, Result};

/// The error of a transaction that failed: the first error, and what undoing the steps already
/// done could not undo (each named by its step). With no undo failure it is the first error
/// unchanged.
pub fn with_undo_failures(first: Error, failures: Vec<(String, Error)>) -> Error {
    if failures.is_empty() {
        return first;
    }
    let undo: Vec<String> = failures
        .iter()
        .map(|(what, e)| format!("{what}: {e:#}"))
        .collect();
    err!(
        "{first:#} (and undoing the steps already done failed: {})",
        undo.join("; ")
    )
}

//! The one transactional helper of the control plane: do steps, record how to undo each, and
//! on failure undo the done ones in reverse order.
//!
//! ```text
//! Transaction::run(&mut ctx, |tx, ctx| {
//!     let id = ctx.open_port()?;                          // a step...
//!     tx.undo("close the port", move |ctx| ctx.close(id)); // ...and its undo, once it is done
//!     ctx.add_peer(id)?;                                  // fails: "close the port" runs
//!     Ok(id)
//! })
//! ```
//!
//! A step that fails must leave nothing behind itself (it is not undone: it was not done). The
//! error is the first error; an undo that fails too is appended to it, named, and the other
//! undos still run ([`with_undo_failures`]). The body commits by returning `Ok`: the undos are
//! dropped.

use super::error::{with_undo_failures, Error, Result};

type Undo<'a, C> = Box<dyn FnOnce(&mut C) -> Result<()> + 'a>;

/// The undos of the steps done so far (see the module documentation).
pub struct Transaction<'a, C: ?Sized> {
    done: Vec<(String, Undo<'a, C>)>,
}

impl<C: ?Sized> std::fmt::Debug for Transaction<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let steps: Vec<&str> = self.done.iter().map(|(w, _)| w.as_str()).collect();
        f.debug_struct("Transaction").field("done", &steps).finish()
    }
}

impl<'a, C: ?Sized> Transaction<'a, C> {
    /// Runs `body` on `ctx`; if it fails, runs the undos it recorded, last first, and returns
    /// its error (with any undo failure appended).
    pub fn run<T>(
        ctx: &mut C,
        body: impl FnOnce(&mut Transaction<'a, C>, &mut C) -> Result<T>,
    ) -> Result<T> {
        let mut tx = Transaction { done: Vec::new() };
        match body(&mut tx, ctx) {
            Ok(v) => Ok(v),
            Err(e) => Err(tx.roll_back(ctx, e)),
        }
    }

    /// Records that the step `what` was done and how to undo it.
    pub fn undo(&mut self, what: impl Into<String>, undo: impl FnOnce(&mut C) -> Result<()> + 'a) {
        self.done.push((what.into(), Box::new(undo)));
    }

    /// Undoes the done steps, last first; every undo runs even when an earlier one failed.
    fn roll_back(self, ctx: &mut C, first: Error) -> Error {
        let mut failures = Vec::new();
        for (what, undo) in self.done.into_iter().rev() {
            if let Err(e) = undo(ctx) {
                failures.push((what, e));
            }
        }
        with_undo_failures(first, failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::error::{bail, err};

    /// A log of what was done and undone.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Log {
        fn step(&mut self, what: &str, fail: bool) -> Result<()> {
            if fail {
                bail!("{what} failed");
            }
            self.0.push(format!("do {what}"));
            Ok(())
        }
    }

    #[test]
    fn success_keeps_every_step_and_runs_no_undo() {
        let mut log = Log::default();
        let v = Transaction::run(&mut log, |tx, log| {
            log.step("a", false)?;
            tx.undo("a", |log: &mut Log| {
                log.0.push("undo a".into());
                Ok(())
            });
            log.step("b", false)?;
            tx.undo("b", |log: &mut Log| {
                log.0.push("undo b".into());
                Ok(())
            });
            Ok(7)
        })
        .unwrap();
        assert_eq!(v, 7);
        assert_eq!(log.0, ["do a", "do b"]);
    }

    #[test]
    fn failure_undoes_the_done_steps_in_reverse_and_returns_the_first_error() {
        let mut log = Log::default();
        let e = Transaction::run(&mut log, |tx, log| {
            for s in ["a", "b", "c"] {
                log.step(s, false)?;
                tx.undo(s, move |log: &mut Log| {
                    log.0.push(format!("undo {s}"));
                    Ok(())
                });
            }
            log.step("d", true)?;
            tx.undo("d", |log: &mut Log| {
                log.0.push("undo d".into());
                Ok(())
            });
            Ok(())
        })
        .unwrap_err();
        assert_eq!(format!("{e:#}"), "d failed");
        // The failed step is not undone (it was not done); the others are, last first.
        assert_eq!(
            log.0,
            ["do a", "do b", "do c", "undo c", "undo b", "undo a"]
        );
    }

    #[test]
    fn an_undo_failure_is_reported_with_the_first_error_and_the_other_undos_still_run() {
        let mut log = Log::default();
        let e = Transaction::run(&mut log, |tx, log| {
            log.step("a", false)?;
            tx.undo("remove a", |log: &mut Log| {
                log.0.push("undo a".into());
                Ok(())
            });
            log.step("b", false)?;
            tx.undo("remove b", |_: &mut Log| Err(err!("b is stuck")));
            log.step("c", true)?;
            Ok(())
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.starts_with("c failed"), "{msg}");
        assert!(msg.contains("remove b: b is stuck"), "{msg}");
        assert_eq!(log.0, ["do a", "do b", "undo a"]);
    }

    #[test]
    fn undos_see_the_context_as_the_steps_left_it() {
        // The undo of a step runs on the context, not on a copy taken when it was recorded.
        let mut v: Vec<u32> = Vec::new();
        let _ = Transaction::run(&mut v, |tx, v| {
            v.push(1);
            tx.undo("pop", |v: &mut Vec<u32>| {
                assert_eq!(v.as_slice(), [1, 2], "the later push is visible");
                v.clear();
                Ok(())
            });
            v.push(2);
            Err::<(), _>(err!("stop"))
        });
        assert!(v.is_empty());
    }
}

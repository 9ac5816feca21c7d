//! The control plane's error type ([`Error`], a `thiserror` enum) and the shorthands the
//! daemon and the drivers use: [`err!`] makes an error from a message, [`bail!`] returns one,
//! [`Context::context`] puts a step's description in front of a cause.
//!
//! Messages are written for the person at the CLI: what was wrong and what to do. `{e:#}`
//! prints the whole chain (`cannot use eth9 as the parent of network lan: parent interface eth9
//! is not usable: ...`), which is what the control socket replies; `{e}` only the outermost
//! part. Through [`std::error::Error::source`] the chain is also there for `anyhow` in the
//! binary.

use crate::netns::NetnsError;
use std::fmt;

/// A result of the control plane.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request that cannot be done as asked, or a failure described in words; the message
    /// says what was wrong and what to do.
    Msg(String),
    /// The step `context` failed because of `source`.
    Context { context: String, source: Box<Error> },
    /// A system call, a file or a reply from the worker.
    Io(std::io::Error),
    /// Netlink or a network namespace.
    Netns(NetnsError),
    /// Opening a port of the switch (AF_PACKET, TAP, VXLAN).
    Port(crate::port::sys::PortError),
    /// The state file at start.
    State(super::state::StateError),
    /// A request or reply that is not the JSON it should be.
    Json(serde_json::Error),
    /// A transaction failed (`error`), and undoing some of its done steps failed too (each
    /// named by its step).
    Rollback {
        error: Box<Error>,
        undo: Vec<(String, Error)>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Msg(m) => f.write_str(m),
            Error::Context { context, source } => {
                f.write_str(context)?;
                if f.alternate() {
                    write!(f, ": {source:#}")?;
                }
                Ok(())
            }
            Error::Io(e) => e.fmt(f),
            Error::Netns(e) => e.fmt(f),
            Error::Port(e) => e.fmt(f),
            Error::State(e) => e.fmt(f),
            Error::Json(e) => e.fmt(f),
            Error::Rollback { error, undo } => {
                write!(f, "{error:#} (and undoing the steps already done failed: ")?;
                for (i, (what, e)) in undo.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{what}: {e:#}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl Error {
    /// Puts `context` (the step that failed) in front of this error.
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error::Context {
            context: context.to_string(),
            source: Box::new(self),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<NetnsError> for Error {
    fn from(e: NetnsError) -> Self {
        Error::Netns(e)
    }
}

impl From<crate::port::sys::PortError> for Error {
    fn from(e: crate::port::sys::PortError) -> Self {
        Error::Port(e)
    }
}

impl From<crate::wire::ParseMacError> for Error {
    fn from(e: crate::wire::ParseMacError) -> Self {
        Error::Msg(e.to_string())
    }
}

impl From<super::state::StateError> for Error {
    fn from(e: super::state::StateError) -> Self {
        Error::State(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e)
    }
}

/// `.context(...)` and `.with_context(|| ...)` on results and options, as `anyhow`'s.
pub trait Context<T> {
    /// Names the step that failed in front of the error (or, on `None`, as the error).
    fn context(self, context: impl fmt::Display) -> Result<T>;
    /// [`Context::context`] with a message made only on failure.
    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::Msg(context.to_string()))
    }

    fn with_context<C: fmt::Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::Msg(f().to_string()))
    }
}

/// An [`Error`] from a message: `err!("network {name} not found")`.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::control::error::Error::Msg(format!($($arg)*))
    };
}

/// Returns an [`Error`] from a message: `bail!("network {name} not found")`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::control::error::err!($($arg)*).into())
    };
}

pub(crate) use {bail, err};

/// The error of a transaction that failed: the first error, and what undoing the steps already
/// done could not undo (each named by its step). With no undo failure it is the first error
/// unchanged.
pub fn with_undo_failures(first: Error, failures: Vec<(String, Error)>) -> Error {
    if failures.is_empty() {
        return first;
    }
    Error::Rollback {
        error: Box::new(first),
        undo: failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alternate_form_prints_the_chain_and_anyhow_sees_it_too() {
        let leaf: Result<()> = Err(std::io::Error::other("Address in use").into());
        let e = leaf
            .context("cannot open the socket")
            .context("cannot add peer 10.0.0.2")
            .unwrap_err();
        assert_eq!(e.to_string(), "cannot add peer 10.0.0.2");
        assert_eq!(
            format!("{e:#}"),
            "cannot add peer 10.0.0.2: cannot open the socket: Address in use"
        );
        let a = anyhow::Error::from(e);
        assert_eq!(
            format!("{a:#}"),
            "cannot add peer 10.0.0.2: cannot open the socket: Address in use"
        );
    }

    #[test]
    fn a_rollback_names_the_first_error_and_each_failed_undo() {
        let e = with_undo_failures(
            err!("peer failed").context("cannot create o1"),
            vec![("close the tunnel".into(), err!("busy"))],
        );
        assert_eq!(
            format!("{e:#}"),
            "cannot create o1: peer failed (and undoing the steps already done failed: close the tunnel: busy)"
        );
        let none = with_undo_failures(err!("x"), Vec::new());
        assert!(matches!(none, Error::Msg(_)));
    }
}

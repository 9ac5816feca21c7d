//! The error type of the `netns` module.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while creating namespaces or configuring links.
///
/// Each variant's message says which operation failed on which object, so that the daemon can
/// pass it to the user unchanged.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The kernel refused a netlink request (an error ACK), e.g.
    /// `netlink: creating veth vsw1234 failed: File exists (os error 17)`.
    #[error("netlink: {op} failed: {source}{}", ext_ack_suffix(.ext_ack))]
    Netlink {
        /// What was being done, e.g. `creating veth vsw1234`.
        op: String,
        /// The errno the kernel answered with.
        source: io::Error,
        /// The kernel's extended-ACK message, when it sent one.
        ext_ack: Option<String>,
    },
    /// A netlink reply could not be decoded.
    #[error("netlink: {op}: could not decode the kernel's reply: {detail}")]
    Decode {
        /// What was being done.
        op: String,
        /// The decoder's message.
        detail: String,
    },
    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done, naming the object, e.g. `opening /run/netns/c1`.
        op: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A namespace name that iproute2 would not accept either.
    #[error("invalid network namespace name {0:?}: use 1-255 characters, no '/', not '.' or '..'")]
    InvalidName(String),
    /// An interface name the kernel would refuse.
    #[error(
        "invalid interface name {0:?}: use 1-15 characters, no '/', ':' or whitespace, not '.' or '..'"
    )]
    InvalidIfName(String),
    /// The named namespace does not exist.
    #[error("network namespace {name:?} does not exist (no {path}); create it first")]
    NoSuchNetns {
        /// The name asked for.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A path that is not a network namespace file.
    #[error("{0} is not a network namespace (expected /run/netns/NAME or /proc/PID/ns/net)")]
    NotANetns(PathBuf),
    /// A link that does not exist in the namespace the handle belongs to.
    #[error("netlink: no link named {0:?} in this network namespace")]
    NoSuchLink(String),
    /// An argument out of range, e.g. an IPv4 prefix longer than 32.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn ext_ack_suffix(ext: &Option<String>) -> String {
    match ext {
        Some(m) if !m.is_empty() => format!(" (kernel: {m})"),
        _ => String::new(),
    }
}

impl NetnsError {
    /// The errno behind this error, if it came from the kernel (`EEXIST`, `ENODEV`, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetnsError::Netlink { source, .. } | NetnsError::Io { source, .. } => {
                source.raw_os_error()
            }
            NetnsError::NoSuchLink(_) => Some(libc::ENODEV),
            NetnsError::NoSuchNetns { .. } => Some(libc::ENOENT),
            _ => None,
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> NetnsError {
        NetnsError::Io {
            op: op.into(),
            source,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_error_message_names_op_and_errno() {
        let e = NetnsError::Netlink {
            op: "creating veth vsw1234".into(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
            ext_ack: None,
        };
        assert_eq!(
            e.to_string(),
            "netlink: creating veth vsw1234 failed: File exists (os error 17)"
        );
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let e = NetnsError::Netlink {
            op: "adding address".into(),
            source: io::Error::from_raw_os_error(libc::EINVAL),
            ext_ack: Some("Invalid prefix".into()),
        };
        assert!(e
            .to_string()
            .ends_with("(os error 22) (kernel: Invalid prefix)"));
    }
}

//! The error type of every `new_checked`, `parse` and builder in this crate.

/// Why a frame or header could not be used. Values are small and `Copy`: building one
/// allocates nothing, so the data path may create them freely (though it usually just counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header or the length it announces.
    #[error("{what} truncated: need {need} bytes, have {have}; the frame is malformed or was cut short by the port's buffer")]
    Truncated {
        /// Which header or field.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A header field holds a value that makes the header inconsistent (e.g. IHL < 5).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which header.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Well-formed, but not something this code handles (e.g. ARP for a non-IPv4 protocol).
    #[error("unsupported {what}: {reason}")]
    Unsupported {
        /// Which header.
        what: &'static str,
        /// What is not supported.
        reason: &'static str,
    },
    /// A checksum does not verify.
    #[error("bad {what} checksum; the frame was corrupted, or carries a partial checksum (finish it with wire::checksum::finish_partial_checksum first)")]
    Checksum {
        /// Which header.
        what: &'static str,
    },
    /// The output buffer given to an `emit` or builder is too small.
    #[error(
        "output buffer too small for {what}: need {need} bytes, have {have}; pass a larger slot"
    )]
    BufferTooSmall {
        /// What was being written.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

impl WireError {
    #[inline]
    pub(crate) fn truncated(what: &'static str, need: usize, have: usize) -> Self {
        WireError::Truncated { what, need, have }
    }

    #[inline]
    pub(crate) fn malformed(what: &'static str, reason: &'static str) -> Self {
        WireError::Malformed { what, reason }
    }

    #[inline]
    pub(crate) fn unsupported(what: &'static str, reason: &'static str) -> Self {
        WireError::Unsupported { what, reason }
    }

    #[inline]
    pub(crate) fn too_small(what: &'static str, need: usize, have: usize) -> Self {
        WireError::BufferTooSmall { what, need, have }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_and_how_much() {
        let e = WireError::truncated("IPv4 header", 20, 7);
        let s = e.to_string();
        assert!(
            s.contains("IPv4 header") && s.contains("20") && s.contains('7'),
            "{s}"
        );
        let e = WireError::Checksum { what: "UDP" };
        assert!(e.to_string().contains("finish_partial_checksum"));
    }
}

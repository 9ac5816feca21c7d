//! Views over frame bytes, in smoltcp's style: `new_checked` validates untrusted input once,
//! after which no accessor panics; typed getters and setters for the fields the switch rewrites.

mod mac;

pub use mac::MacAddr;

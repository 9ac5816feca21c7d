//! The switch's small integer ids, as types: a [`PortId`] is not a [`NetworkId`], and neither
//! is a VLAN id, a VNI or a frame index, though all fit in a `u16`.
//!
//! Both are `#[repr(transparent)]` wrappers of a `u16` with a public field: every `u16` is a
//! valid id (there is no invariant to guard), the tables index by `id.index()`, and the
//! compiled hot path is the same as with a bare `u16`. Construct with `PortId(3)` (also in
//! `const` context) or `PortId::from(3u16)`; read with `.0` or `u16::from(id)`. With the
//! `serde` feature they serialize as the bare number.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        #[cfg_attr(feature = "serde", serde(transparent))]
        pub struct $name(pub u16);

        impl $name {
            /// The largest id (`u16::MAX`), which tables use as "none".
            pub const MAX: Self = $name(u16::MAX);

            /// The id as an index into a table (`usize`).
            #[inline(always)]
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl From<u16> for $name {
            #[inline(always)]
            fn from(v: u16) -> Self {
                $name(v)
            }
        }

        impl From<$name> for u16 {
            #[inline(always)]
            fn from(v: $name) -> u16 {
                v.0
            }
        }

        impl From<$name> for u32 {
            #[inline(always)]
            fn from(v: $name) -> u32 {
                u32::from(v.0)
            }
        }

        impl From<$name> for usize {
            #[inline(always)]
            fn from(v: $name) -> usize {
                usize::from(v.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

id_type!(
    /// A port of the switch: the index of its slot in the worker's port table (and in the
    /// pipeline's per-port tables). Port 0 is a real port.
    PortId
);

id_type!(
    /// A network (a broadcast domain): the first half of every MAC table key, and what a port's
    /// role maps each frame to (an access port's network, a trunk's VLAN -> network map).
    NetworkId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_their_number_and_convert_both_ways() {
        let p = PortId(7);
        assert_eq!(p.to_string(), "7");
        assert_eq!(format!("{p:?}"), "PortId(7)");
        assert_eq!(format!("{:?}", NetworkId(300)), "NetworkId(300)");
        assert_eq!(u16::from(p), 7);
        assert_eq!(PortId::from(7u16), p);
        assert_eq!(NetworkId(65535).index(), 65535);
        assert!(PortId(1) < PortId(2));
    }

    #[test]
    fn ids_are_as_small_as_a_u16() {
        assert_eq!(std::mem::size_of::<PortId>(), 2);
        assert_eq!(std::mem::size_of::<Option<NetworkId>>(), 4);
        assert_eq!(std::mem::align_of::<NetworkId>(), 2);
    }
}

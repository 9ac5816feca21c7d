//! An anonymous private memory mapping, owned and unmapped on drop: the MAC table's slot array
//! ([`crate::fdb`]) and the AF_XDP port's UMEM ([`crate::port::xdp`]) live in one each.

use std::io;

/// Transparent huge pages are this big (x86-64, arm64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// How an [`AnonMap`] is backed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Start on a 2 MiB boundary and advise transparent huge pages before any page is touched,
    /// when the mapping is at least 2 MiB: the kernel backs a huge page only where a whole
    /// aligned 2 MiB range is advised, and advising first makes the huge pages come at the
    /// first fault instead of from a later collapse.
    pub huge: bool,
    /// Fault every page in now (`MAP_POPULATE`), not at first use.
    pub populate: bool,
}

/// `len` bytes of zeroed, private, read-write memory at an address the kernel picks, page-aligned
/// (2 MiB-aligned with [`MapOptions::huge`] when `len` ≥ [`HUGE_PAGE`]).
#[derive(Debug)]
pub struct AnonMap {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively (like a `Box<[u8]>`); moving the owner to another
// thread moves the only access to it.
unsafe impl Send for AnonMap {}
// SAFETY: `&AnonMap` gives out only the address and length; reading or writing through them
// is the user's unsafe responsibility, as for a raw pointer.
unsafe impl Sync for AnonMap {}

impl AnonMap {
    /// Maps `len` (> 0) bytes. With [`MapOptions::huge`] and `len` a multiple of the page size
    /// of at least [`HUGE_PAGE`], the mapping is trimmed to a 2 MiB-aligned range.
    pub fn new(len: usize, opts: MapOptions) -> io::Result<AnonMap> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let huge = opts.huge && len >= HUGE_PAGE && len.is_multiple_of(4096);
        // Room to slide the start up to the next 2 MiB boundary.
        let total = if huge {
            len.checked_add(HUGE_PAGE)
                .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "mapping too large"))?
        } else {
            len
        };
        let flags = libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | if opts.populate && !huge {
                libc::MAP_POPULATE
            } else {
                0
            };
        // SAFETY: an anonymous private mapping at an address the kernel picks; no existing
        // memory is affected. The result is checked against MAP_FAILED below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut start = raw as usize;
        if huge {
            let aligned = start.next_multiple_of(HUGE_PAGE);
            let head = aligned - start;
            let tail = total - head - len;
            // SAFETY: [start, aligned) and [aligned + len, start + total) lie inside the
            // mapping just made, which nothing else refers to yet; unmapping them leaves
            // exactly [aligned, aligned + len). `len` is a multiple of the page size and
            // `aligned` of 2 MiB, so both ends are page-aligned. madvise only changes how the
            // kernel backs the (untouched) range.
            unsafe {
                if head > 0 {
                    libc::munmap(raw, head);
                }
                if tail > 0 {
                    libc::munmap((aligned + len) as *mut libc::c_void, tail);
                }
                libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
                if opts.populate {
                    // Fault the pages in now, as MAP_POPULATE would have (after the advice,
                    // so that they come as huge pages).
                    libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
                }
            }
            start = aligned;
        }
        let ptr = std::ptr::NonNull::new(start as *mut u8)
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(AnonMap { ptr, len })
    }

    /// The first byte.
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe the (trimmed) mapping made in `new`, unmapped only here;
        // whoever handed its address to the kernel or made references into it (the MAC table,
        // the UMEM) is gone before the owner is dropped.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_is_zeroed_writable_and_huge_ones_are_2mib_aligned() {
        for (len, opts) in [
            (4096, MapOptions::default()),
            (
                3 * 4096,
                MapOptions {
                    huge: true,
                    populate: true,
                },
            ),
            (
                HUGE_PAGE,
                MapOptions {
                    huge: true,
                    populate: false,
                },
            ),
            (
                2 * HUGE_PAGE,
                MapOptions {
                    huge: true,
                    populate: true,
                },
            ),
        ] {
            let m = AnonMap::new(len, opts).expect("mmap");
            assert_eq!(m.len(), len);
            assert_eq!(m.as_ptr() as usize % 4096, 0);
            if opts.huge && len >= HUGE_PAGE {
                assert_eq!(m.as_ptr() as usize % HUGE_PAGE, 0, "{len} {opts:?}");
            }
            // SAFETY: the mapping is `len` bytes of read-write memory owned by `m`.
            let s = unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), len) };
            assert!(s.iter().all(|&b| b == 0));
            s[0] = 1;
            s[len - 1] = 2;
            assert_eq!((s[0], s[len - 1]), (1, 2));
        }
        assert!(AnonMap::new(0, MapOptions::default()).is_err());
    }
}

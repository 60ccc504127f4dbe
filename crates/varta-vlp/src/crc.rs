//! CRC-32C (Castagnoli) over frame bytes.
//!
//! With `std` the `crc32c` crate picks the SSE4.2 / ARMv8 instruction at
//! runtime; without it (no CPU feature detection in `core`) the `crc` crate's
//! const-generated slice-by-16 table does the work. Both are the same
//! function: the property tests check them against each other.

/// CRC-32C of `bytes` (reflected polynomial `0x82F63B78`, init and xor-out
/// `0xFFFF_FFFF`), as carried in bytes 28..32 of every frame.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    #[cfg(feature = "std")]
    {
        ::crc32c::crc32c(bytes)
    }
    #[cfg(not(feature = "std"))]
    {
        portable(bytes)
    }
}

#[cfg_attr(feature = "std", allow(dead_code))]
const PORTABLE: ::crc::Crc<u32, ::crc::Table<16>> =
    ::crc::Crc::<u32, ::crc::Table<16>>::new(&::crc::CRC_32_ISCSI);

/// The no_std implementation; public to the crate so tests can compare the
/// two paths.
#[cfg_attr(feature = "std", allow(dead_code))]
#[doc(hidden)]
pub fn portable(bytes: &[u8]) -> u32 {
    PORTABLE.checksum(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(portable(b"123456789"), 0xe306_9283);
    }
}

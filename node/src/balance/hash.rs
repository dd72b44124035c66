//! The one hash every node computes alike: FNV-1a over the bytes, finished
//! with MurmurHash3's 64-bit mixer so every input bit reaches every output
//! bit. Written here rather than taken from std, whose `DefaultHasher` may
//! change between Rust versions — Maglev's table and hashed keys must be
//! identical on every node, whatever build it runs. Not for untrusted keys
//! where collisions could be forced against a secret-free hash: a client can
//! choose its key, but only ever moves itself.

use std::net::{IpAddr, SocketAddr};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Seeds for the uses of [`hash`], so they are independent of each other.
pub mod seed {
    /// A request's key (source IP, header, cookie or path).
    pub const KEY: u64 = 0x006b_6579;
    /// A backend's identity, for rendezvous hashing.
    pub const BACKEND: u64 = 0x6261_636b;
    /// Maglev's offset of a backend's permutation.
    pub const OFFSET: u64 = 0x6f66_6673;
    /// Maglev's skip of a backend's permutation.
    pub const SKIP: u64 = 0x736b_6970;
}

/// MurmurHash3's finaliser: a bijection on `u64` with full avalanche.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The hash of `bytes` under `seed`.
pub fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ mix(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

/// The hash of an IP address (4 bytes for IPv4, 16 for IPv6).
pub fn ip(seed: u64, ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash(seed, &v4.octets()),
        IpAddr::V6(v6) => hash(seed, &v6.octets()),
    }
}

/// The hash of a backend's identity, its address: the IP's bytes, then the
/// port's, big-endian.
pub fn address(seed: u64, address: SocketAddr) -> u64 {
    let mut bytes = [0u8; 18];
    let len = match address.ip() {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            bytes[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    bytes[len..len + 2].copy_from_slice(&address.port().to_be_bytes());
    hash(seed, &bytes[..len + 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_fixed_forever() {
        // Changing these moves every hashed client on an upgrade, and
        // makes nodes of two versions disagree: never change them. (Checked
        // against an independent implementation of the same definition.)
        assert_eq!(hash(0, b""), mix(FNV_OFFSET ^ mix(0)));
        assert_eq!(hash(seed::KEY, b"alice"), 0xf24e_cfd5_71d8_69b7);
        assert_eq!(
            address(seed::OFFSET, "10.0.0.1:80".parse().unwrap()),
            0xa4de_7e04_abf0_ba96
        );
    }

    #[test]
    fn seeds_and_families_differ() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_ne!(address(seed::OFFSET, a), address(seed::SKIP, a));
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_ne!(ip(seed::KEY, v4), ip(seed::KEY, v6));
    }
}

//! Routing QUIC by connection ID on a `udp` listener (`quic = true`): a
//! client whose address changes mid-connection (NAT rebinding, a move
//! from Wi-Fi to mobile, a VIP that moved to another balancer) keeps its
//! backend. UDP sessions are keyed by the client's address, so a changed
//! address opens a new session; its first datagram's destination
//! connection ID says which backend already serves that connection.
//!
//! Backends need not cooperate (QUIC-LB's encoded server IDs): the IDs a
//! backend issues appear in clear as the source connection ID of its
//! long-header datagrams (the handshake), and are learned from there:
//!
//! - in a table of this listener (bounded, the oldest forgotten first),
//!   which also gives the lengths to try on short headers (whose ID
//!   length is not written in the datagram);
//! - in the pool's sticky table when the pool has one (`[pool.sticky]`,
//!   e.g. `kind = "source_ip"`), committed through Raft like any session,
//!   so that every balancer routes a migrated connection, the one the VIP
//!   moved to included. There every length QUIC allows is tried.
//!
//! IDs a backend issues later (in encrypted frames) are not seen; a client
//! that switches to one while its address also changes is balanced anew,
//! as without this routing.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// The longest connection ID QUIC v1 allows.
const MAX_CID: usize = 20;
/// The shortest ID looked up in a short header: shorter ones are too
/// likely to collide, and no common stack issues them.
const MIN_CID: usize = 4;

/// The destination connection ID of a long-header datagram (byte 0's top
/// bit set), `None` for a short header or a malformed datagram.
pub fn long_header_dcid(datagram: &[u8]) -> Option<&[u8]> {
    if datagram.first()? & 0x80 == 0 {
        return None;
    }
    let len = usize::from(*datagram.get(5)?);
    (len <= MAX_CID).then_some(())?;
    datagram.get(6..6 + len)
}

/// The source connection ID of a long-header datagram: what its sender
/// wants to be addressed by.
pub fn long_header_scid(datagram: &[u8]) -> Option<&[u8]> {
    let dcid = long_header_dcid(datagram)?;
    let at = 6 + dcid.len();
    let len = usize::from(*datagram.get(at)?);
    (len <= MAX_CID && len > 0).then_some(())?;
    datagram.get(at + 1..at + 1 + len)
}

/// The candidate destination IDs of a client datagram: the one a long
/// header states, or a short header's first `len` bytes after byte 0 for
/// each `len` in `lengths`.
pub fn candidates<'a>(datagram: &'a [u8], lengths: &'a [usize]) -> Vec<&'a [u8]> {
    if let Some(dcid) = long_header_dcid(datagram) {
        return if dcid.len() >= MIN_CID {
            vec![dcid]
        } else {
            Vec::new()
        };
    }
    // A short header (top bit clear). Its fixed bit (0x40) is not looked
    // at: peers that allow it grease that bit (RFC 9287), as quinn does.
    match datagram.first() {
        Some(_) => lengths
            .iter()
            .filter_map(|&len| datagram.get(1..1 + len))
            .collect(),
        None => Vec::new(),
    }
}

/// Every ID length a short header may carry, for lookups in a table that
/// does not say which lengths it holds.
pub fn every_length() -> Vec<usize> {
    (MIN_CID..=MAX_CID).collect()
}

/// One listener's learned connection IDs and the backends that issued them.
#[derive(Debug)]
pub struct CidTable {
    backends: HashMap<Vec<u8>, SocketAddr>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<Vec<u8>>,
    capacity: usize,
    /// ID lengths seen so far, most recent first.
    lengths: Vec<usize>,
}

impl CidTable {
    pub fn new(capacity: usize) -> Self {
        CidTable {
            backends: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            lengths: Vec::new(),
        }
    }

    /// Records that `backend` issued `cid`; whether it is new.
    pub fn learn(&mut self, cid: &[u8], backend: SocketAddr) -> bool {
        if cid.len() < MIN_CID {
            return false;
        }
        if let Some(known) = self.backends.get_mut(cid) {
            let new = *known != backend;
            *known = backend;
            return new;
        }
        while self.backends.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => self.backends.remove(&old),
                None => break,
            };
        }
        self.backends.insert(cid.to_vec(), backend);
        self.order.push_back(cid.to_vec());
        if !self.lengths.contains(&cid.len()) {
            self.lengths.insert(0, cid.len());
        }
        true
    }

    /// The backend that issued the ID a client datagram is addressed to.
    pub fn backend_of(&self, datagram: &[u8]) -> Option<SocketAddr> {
        candidates(datagram, &self.lengths)
            .into_iter()
            .find_map(|cid| self.backends.get(cid).copied())
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(dcid: &[u8], scid: &[u8]) -> Vec<u8> {
        let mut d = vec![0xc0, 0, 0, 0, 1, dcid.len() as u8];
        d.extend_from_slice(dcid);
        d.push(scid.len() as u8);
        d.extend_from_slice(scid);
        d.extend_from_slice(&[0; 20]);
        d
    }

    #[test]
    fn ids_are_read_from_long_headers_and_tried_on_short_ones() {
        let backend: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let from_backend = long(b"client01", b"server-id-8");
        assert_eq!(long_header_scid(&from_backend), Some(&b"server-id-8"[..]));
        let mut table = CidTable::new(10);
        assert!(table.learn(long_header_scid(&from_backend).unwrap(), backend));
        let mut short = vec![0x41];
        short.extend_from_slice(b"server-id-8");
        short.extend_from_slice(&[7; 30]);
        assert_eq!(table.backend_of(&short), Some(backend));
        assert_eq!(table.backend_of(&long(b"server-id-8", b"x")), Some(backend));
        // The fixed bit greased (RFC 9287): the same ID.
        short[0] = 0x01;
        assert_eq!(table.backend_of(&short), Some(backend));
        // Unknown ID, too short, garbage: nothing.
        short[1] ^= 1;
        assert_eq!(table.backend_of(&short), None);
        assert_eq!(table.backend_of(&[0x01, 2, 3]), None);
        assert_eq!(table.backend_of(&[]), None);
        assert_eq!(long_header_dcid(&[0xc0, 0, 0, 0, 1, 200, 1]), None);
    }

    #[test]
    fn the_table_forgets_its_oldest_ids_first() {
        let backend: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let mut table = CidTable::new(2);
        for id in [b"id-aaaa", b"id-bbbb", b"id-cccc"] {
            table.learn(id, backend);
        }
        assert_eq!(table.len(), 2);
        let short = |id: &[u8]| [&[0x40][..], id, &[0; 8][..]].concat();
        assert_eq!(table.backend_of(&short(b"id-aaaa")), None);
        assert_eq!(table.backend_of(&short(b"id-cccc")), Some(backend));
    }
}

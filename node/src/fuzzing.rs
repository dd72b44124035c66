//! Entry points for the fuzz targets in `fuzz/` (README "Fuzzing"): the
//! parsers and decoders a client, a backend or a peer can reach, re-exported
//! as they are so the targets drive the code the node runs. Not an API.

use crate::control::state_machine;
use raftlb_config::{ClusterState, StickyTables};

pub use crate::dataplane::l7::chunked::{Chunked, Malformed, Step};
pub use crate::dataplane::l7::h1_client::{Framing, Parsed, final_response_began, parse_head};
pub use crate::dataplane::l7::h1_server::head::{
    BodyFraming, HeadLimits, Refused, parse as parse_request_head,
};
pub use crate::dataplane::l7::h2_frames::FrameFollower;
pub use crate::dataplane::proxy_protocol::header as proxy_header;

/// `snapshot.bin`'s bytes as [`StateMachine::open`](state_machine::StateMachine::open)
/// reads them: the cluster state, and the sticky tables restored into `sticky`.
pub fn snapshot_file(bytes: &[u8], sticky: &StickyTables) -> Result<ClusterState, String> {
    let stored = state_machine::decode_file(bytes)?;
    state_machine::decode_data(&stored.data, sticky)
}

/// A snapshot's data as a follower installs it from its leader.
pub fn snapshot_data(data: &[u8], sticky: &StickyTables) -> Result<ClusterState, String> {
    state_machine::decode_data(data, sticky)
}

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
pub use crate::gslb::answer::{AMPLIFICATION, Transport, respond as dns_respond};

/// A small GSLB zone (names, geo regions, NS with glue) for the DNS target.
pub fn dns_zone() -> &'static crate::gslb::Zone {
    static ZONE: std::sync::OnceLock<crate::gslb::Zone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        let file = "[node]\nid = 1\n\n[gslb]\nbind = \"127.0.0.1:53\"\nzone = \"gslb.test\"\n\
                    ns = [\"ns1.gslb.test\"]\nglue = { \"ns1.gslb.test\" = [\"192.0.2.1\", \"2001:db8::1\"] }\n\n\
                    [[gslb.regions]]\ncidr = \"10.0.0.0/8\"\nregion = \"us\"\n\n\
                    [[gslb.names]]\nname = \"www.gslb.test\"\npolicy = \"geo\"\n\n\
                    [[gslb.names.sites]]\nname = \"a\"\naddress = [\"192.0.2.10\", \"2001:db8::10\"]\n\n\
                    [[gslb.names.sites]]\nname = \"b\"\naddress = \"192.0.2.20\"\nregion = \"us\"\n";
        let spec = crate::gslb::fuzz_spec(file);
        crate::gslb::Zone::build(&spec, &Default::default(), [1; 32]).unwrap_or_else(|e| panic!("the fuzz zone: {e}"))
    })
}

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

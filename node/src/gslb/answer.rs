//! One DNS query in, one response out (or none): the authoritative answer
//! from a [`Zone`], with hickory-proto doing every byte of the wire
//! format. No I/O and no clock, so it is tested (and fuzzed) as a function.
//! Over UDP a response is never more than [`AMPLIFICATION`] times the
//! query unless the query carries this node's DNS cookie (RFC 7873): a
//! larger one goes out truncated, so the client retries over TCP.

use super::Zone;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

/// Over UDP without a valid cookie, no response is more than this many
/// times its query's size.
pub const AMPLIFICATION: usize = 4;
/// The largest UDP query read; a larger datagram is dropped.
pub const MAX_UDP_QUERY: usize = 4096;
/// The largest plain-DNS (no EDNS) UDP message (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The UDP payload this server offers (the DNS flag day 2020 figure).
const OUR_PAYLOAD: u16 = 1232;
/// The length of the server cookie this node returns.
const SERVER_COOKIE: usize = 16;

/// How the query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The response to `query` from `client` (the resolver's address), or
/// `None` when nothing should be sent: a datagram that is not a query,
/// too large, or not even a DNS header. `seed` picks among weighted sites.
pub fn respond(
    zone: &Zone,
    query: &[u8],
    client: IpAddr,
    transport: Transport,
    seed: u64,
) -> Option<Vec<u8>> {
    let udp = transport == Transport::Udp;
    if udp && query.len() > MAX_UDP_QUERY {
        return None;
    }
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return form_error(query),
    };
    if request.message_type() != MessageType::Query {
        return None;
    }
    let edns = request.extensions().as_ref();
    if udp && edns.is_none() && query.len() > CLASSIC_UDP {
        return None;
    }
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .add_queries(request.queries().iter().cloned());
    let mut cookie_ok = false;
    if let Some(edns) = edns {
        let mut ours = Edns::new();
        ours.set_max_payload(OUR_PAYLOAD);
        if let Some(EdnsOption::Unknown(_, data)) = edns.option(EdnsCode::Cookie) {
            match cookie(zone, data, client) {
                Some((valid, echoed)) => {
                    cookie_ok = valid;
                    ours.options_mut()
                        .insert(EdnsOption::Unknown(u16::from(EdnsCode::Cookie), echoed));
                }
                None => {
                    response.set_response_code(ResponseCode::FormErr);
                    response.set_edns(ours);
                    return finish(response, query.len(), transport, false, None);
                }
            }
        }
        response.set_edns(ours);
    }
    if request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return finish(response, query.len(), transport, cookie_ok, edns);
    }
    if request.queries().len() != 1 {
        response.set_response_code(ResponseCode::FormErr);
        return finish(response, query.len(), transport, cookie_ok, edns);
    }
    let subnet = edns.and_then(|e| match e.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
        _ => None,
    });
    let scope = answer(zone, &request, &mut response, client, subnet.as_ref(), seed);
    if let (Some(subnet), Some(edns)) = (subnet, response.extensions_mut().as_mut()) {
        let echoed = ClientSubnet::new(
            subnet.addr(),
            subnet.source_prefix(),
            scope.min(subnet.source_prefix()),
        );
        edns.options_mut().insert(EdnsOption::Subnet(echoed));
    }
    finish(response, query.len(), transport, cookie_ok, edns)
}

/// Fills `response` for the one question of `request`; returns the ECS
/// scope prefix the answer holds for.
fn answer(
    zone: &Zone,
    request: &Message,
    response: &mut Message,
    client: IpAddr,
    subnet: Option<&ClientSubnet>,
    seed: u64,
) -> u8 {
    let question = &request.queries()[0];
    let qname = question.name().to_lowercase().to_ascii();
    let name = qname.strip_suffix('.').unwrap_or(&qname);
    let qtype = question.query_type();
    let spec = &zone.spec;
    if question.query_class() != DNSClass::IN || !spec.in_zone(name) {
        response.set_response_code(ResponseCode::Refused);
        return 0;
    }
    response.set_authoritative(true);
    let owner = question.name().clone();
    let mut scope = 0;
    let records: Vec<Record> = if name == spec.zone {
        match qtype {
            RecordType::SOA => vec![zone.soa.clone()],
            RecordType::NS => {
                response.add_additionals(zone.glue.iter().cloned());
                zone.ns.clone()
            }
            _ => Vec::new(),
        }
    } else if let Some(gslb_name) = spec.name(name) {
        let (region, prefix, source) = match subnet.filter(|s| s.source_prefix() > 0) {
            Some(s) => {
                let (region, prefix) = spec.region_of(s.addr());
                (region, prefix, s.source_prefix())
            }
            None => {
                let (region, prefix) = spec.region_of(client);
                (region, prefix, 0)
            }
        };
        let Some(choice) = spec.answer(gslb_name, &zone.verdicts, region, seed) else {
            return 0;
        };
        if gslb_name.policy == raftlb_config::gslb::Policy::Geo {
            scope = if choice.by_region && prefix > 0 {
                prefix
            } else {
                source
            };
        }
        let ttl = gslb_name.ttl.unwrap_or(spec.ttl);
        addresses(&owner, ttl, qtype, &gslb_name.sites[choice.site].addresses)
    } else if let Some(ns) = spec
        .ns
        .iter()
        .find(|ns| ns.name == name && !ns.addresses.is_empty())
    {
        addresses(&owner, spec.soa.minimum.max(spec.ttl), qtype, &ns.addresses)
    } else if spec.unknown == raftlb_config::gslb::Unknown::Refused {
        response.set_authoritative(false);
        response.set_response_code(ResponseCode::Refused);
        return 0;
    } else {
        response.set_response_code(ResponseCode::NXDomain);
        response.add_name_server(zone.soa.clone());
        return 0;
    };
    if records.is_empty() {
        // NODATA: the name exists, not with this type.
        response.add_name_server(zone.soa.clone());
    }
    response.add_answers(records);
    scope
}

/// The A (or AAAA, or both for ANY) records of `addresses`.
fn addresses(
    owner: &hickory_proto::rr::Name,
    ttl: u32,
    qtype: RecordType,
    addresses: &[IpAddr],
) -> Vec<Record> {
    addresses
        .iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A::from(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA::from(*v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(owner.clone(), ttl, rdata))
        .collect()
}

/// Checks a COOKIE option: `(whether its server cookie is ours, the
/// option to answer with)`, or `None` when it is malformed (RFC 7873 §5.2).
fn cookie(zone: &Zone, data: &[u8], client: IpAddr) -> Option<(bool, Vec<u8>)> {
    if data.len() != 8 && !(16..=40).contains(&data.len()) {
        return None;
    }
    let ours = server_cookie(zone, &data[..8], client);
    let valid = data.len() == 8 + SERVER_COOKIE && data[8..] == ours;
    let mut echoed = data[..8].to_vec();
    echoed.extend_from_slice(&ours);
    Some((valid, echoed))
}

/// HMAC-SHA256 of the client cookie and address under the node's secret.
fn server_cookie(zone: &Zone, client_cookie: &[u8], client: IpAddr) -> [u8; SERVER_COOKIE] {
    let mut out = [0; SERVER_COOKIE];
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&zone.cookie_secret) else {
        return out;
    };
    mac.update(client_cookie);
    match client {
        IpAddr::V4(v4) => mac.update(&v4.octets()),
        IpAddr::V6(v6) => mac.update(&v6.octets()),
    }
    out.copy_from_slice(&mac.finalize().into_bytes()[..SERVER_COOKIE]);
    out
}

/// Encodes `response` within the transport's limits: over UDP, no larger
/// than the client's payload and, without a valid cookie, than
/// [`AMPLIFICATION`] × the query; else truncated (TC, no records).
fn finish(
    mut response: Message,
    query_len: usize,
    transport: Transport,
    cookie_ok: bool,
    edns: Option<&Edns>,
) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if transport == Transport::Tcp {
        return (bytes.len() <= usize::from(u16::MAX)).then_some(bytes);
    }
    let payload = edns.map_or(CLASSIC_UDP, |e| {
        usize::from(e.max_payload().clamp(512, OUR_PAYLOAD))
    });
    let amplified = !cookie_ok && bytes.len() > AMPLIFICATION * query_len;
    if bytes.len() <= payload && !amplified {
        return Some(bytes);
    }
    response.take_answers();
    response.take_name_servers();
    response.take_additionals();
    response.set_truncated(true);
    let truncated = response.to_vec().ok()?;
    let fits = truncated.len() <= payload && (cookie_ok || truncated.len() <= AMPLIFICATION * query_len);
    fits.then_some(truncated)
}

/// FORMERR for a query whose header reads but the rest does not; nothing
/// for anything else. The answer is the bare header: never longer than
/// the query.
fn form_error(query: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Header::new();
    reply
        .set_id(header.id())
        .set_message_type(MessageType::Response)
        .set_op_code(header.op_code())
        .set_response_code(ResponseCode::FormErr);
    let mut response = Message::new();
    response.set_header(reply);
    response.to_vec().ok()
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;

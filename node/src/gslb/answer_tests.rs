//! The answers of `answer::respond`, decoded back with hickory-proto.

use super::*;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use raftlb_config::gslb::{
    GslbName, GslbSpec, NameServer, Policy, RegionRule, Site, SiteVerdict, SiteVerdicts, Soa, Unknown,
};

fn site(name: &str, ip: &str, region: &str) -> Site {
    Site {
        name: name.into(),
        addresses: vec![ip.parse().unwrap()],
        weight: 1,
        region: Some(region.into()),
        check: None,
    }
}

fn zone(verdicts: SiteVerdicts) -> Zone {
    let spec = GslbSpec {
        bind: "127.0.0.1:5353".parse().unwrap(),
        zone: "gslb.test".into(),
        ttl: 5,
        unknown: Unknown::NxDomain,
        soa: Soa {
            mname: "ns1.gslb.test".into(),
            rname: "hostmaster.gslb.test".into(),
            refresh: 60,
            retry: 30,
            expire: 600,
            minimum: 5,
        },
        ns: (1..=8)
            .map(|i| NameServer {
                name: format!("ns{i}.gslb.test"),
                addresses: vec![
                    format!("198.18.0.{i}").parse().unwrap(),
                    format!("2001:db8::{i}").parse().unwrap(),
                ],
            })
            .collect(),
        names: vec![
            GslbName {
                name: "www.gslb.test".into(),
                policy: Policy::Failover,
                ttl: None,
                sites: vec![site("a", "198.18.1.1", "eu"), site("b", "198.18.2.1", "us")],
            },
            GslbName {
                name: "geo.gslb.test".into(),
                policy: Policy::Geo,
                ttl: Some(3),
                sites: vec![site("a", "198.18.1.1", "eu"), site("b", "198.18.2.1", "us")],
            },
        ],
        regions: vec![RegionRule {
            cidr: "10.1.0.0/16".parse().unwrap(),
            region: "us".into(),
        }],
        default_region: Some("eu".into()),
    };
    Zone::build(&spec, &verdicts, [7; 32]).unwrap()
}

fn query(name: &str, qtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(42)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

fn ask(zone: &Zone, bytes: &[u8], transport: Transport) -> Message {
    let client = "192.0.2.9".parse().unwrap();
    Message::from_vec(&respond(zone, bytes, client, transport, 0).expect("an answer")).unwrap()
}

fn a_records(message: &Message) -> Vec<String> {
    message.answers().iter().map(|r| r.data().to_string()).collect()
}

#[test]
fn a_known_name_gets_its_first_healthy_site_authoritatively() {
    let mut verdicts = SiteVerdicts::default();
    let zone_up = zone(verdicts.clone());
    let answer = ask(
        &zone_up,
        &query("www.gslb.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert!(answer.authoritative());
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert_eq!(a_records(&answer), ["198.18.1.1"]);
    assert_eq!(answer.answers()[0].ttl(), 5);
    verdicts.set("www.gslb.test", "a", SiteVerdict { up: false, load: 0 });
    let answer = ask(
        &zone(verdicts),
        &query("WWW.gslb.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(a_records(&answer), ["198.18.2.1"]);
}

#[test]
fn unknown_names_nodata_and_outside_names() {
    let zone = zone(SiteVerdicts::default());
    let nx = ask(
        &zone,
        &query("nope.gslb.test.", RecordType::A, None),
        Transport::Udp,
    );
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert_eq!(nx.name_servers()[0].record_type(), RecordType::SOA);
    let nodata = ask(
        &zone,
        &query("www.gslb.test.", RecordType::AAAA, None),
        Transport::Udp,
    );
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.answers().is_empty());
    assert_eq!(nodata.name_servers()[0].record_type(), RecordType::SOA);
    let outside = ask(&zone, &query("example.com.", RecordType::A, None), Transport::Udp);
    assert_eq!(outside.response_code(), ResponseCode::Refused);
    assert!(!outside.authoritative());
    let soa = ask(&zone, &query("gslb.test.", RecordType::SOA, None), Transport::Udp);
    assert_eq!(soa.answers()[0].record_type(), RecordType::SOA);
}

#[test]
fn ecs_picks_the_region_and_is_echoed_with_its_scope() {
    let zone = zone(SiteVerdicts::default());
    let with_subnet = |ip: &str, prefix| {
        let mut edns = Edns::new();
        edns.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            ip.parse().unwrap(),
            prefix,
            0,
        )));
        query("geo.gslb.test.", RecordType::A, Some(edns))
    };
    let us = ask(&zone, &with_subnet("10.1.2.0", 24), Transport::Udp);
    assert_eq!(a_records(&us), ["198.18.2.1"]);
    let Some(EdnsOption::Subnet(echoed)) = us.extensions().as_ref().unwrap().option(EdnsCode::Subnet) else {
        panic!("no ECS in the answer");
    };
    assert_eq!((echoed.source_prefix(), echoed.scope_prefix()), (24, 16));
    let eu = ask(&zone, &with_subnet("10.2.2.0", 24), Transport::Udp);
    assert_eq!(a_records(&eu), ["198.18.1.1"]);
}

#[test]
fn large_udp_answers_are_truncated_to_the_amplification_limit() {
    let zone = zone(SiteVerdicts::default());
    let bytes = query("gslb.test.", RecordType::NS, None);
    let full = respond(&zone, &bytes, "192.0.2.9".parse().unwrap(), Transport::Tcp, 0).unwrap();
    assert!(
        full.len() > AMPLIFICATION * bytes.len(),
        "the NS answer with glue is large"
    );
    let udp = respond(&zone, &bytes, "192.0.2.9".parse().unwrap(), Transport::Udp, 0).unwrap();
    assert!(udp.len() <= AMPLIFICATION * bytes.len());
    let udp = Message::from_vec(&udp).unwrap();
    assert!(udp.truncated());
    assert!(udp.answers().is_empty());
}

#[test]
fn a_valid_cookie_lifts_the_amplification_limit() {
    let zone = zone(SiteVerdicts::default());
    let client: IpAddr = "192.0.2.9".parse().unwrap();
    let with_cookie = |data: Vec<u8>| {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut().insert(EdnsOption::Unknown(10, data));
        query("gslb.test.", RecordType::NS, Some(edns))
    };
    let first = ask(&zone, &with_cookie(vec![1; 8]), Transport::Udp);
    assert!(first.truncated());
    let Some(EdnsOption::Unknown(10, cookie)) = first.extensions().as_ref().unwrap().option(EdnsCode::Cookie)
    else {
        panic!("no cookie echoed");
    };
    let again = respond(&zone, &with_cookie(cookie.clone()), client, Transport::Udp, 0).unwrap();
    let again = Message::from_vec(&again).unwrap();
    assert!(!again.truncated());
    assert_eq!(again.answers().len(), 8);
    let malformed = ask(&zone, &with_cookie(vec![1; 5]), Transport::Udp);
    assert_eq!(malformed.response_code(), ResponseCode::FormErr);
}

#[test]
fn garbage_is_dropped_or_formerr_never_larger() {
    let zone = zone(SiteVerdicts::default());
    let client: IpAddr = "192.0.2.9".parse().unwrap();
    assert!(respond(&zone, b"", client, Transport::Udp, 0).is_none());
    assert!(respond(&zone, &[0xff; 5], client, Transport::Udp, 0).is_none());
    // A header announcing a question that is not there: FORMERR, 12 bytes.
    let mut cut = query("www.gslb.test.", RecordType::A, None);
    cut.truncate(14);
    let formerr = respond(&zone, &cut, client, Transport::Udp, 0).unwrap();
    assert!(formerr.len() <= cut.len());
    assert_eq!(
        Message::from_vec(&formerr).unwrap().response_code(),
        ResponseCode::FormErr
    );
    // Larger than 512 bytes without EDNS: dropped.
    let mut big = query("www.gslb.test.", RecordType::A, None);
    big.resize(600, 0);
    assert!(respond(&zone, &big, client, Transport::Udp, 0).is_none());
    let mut seed = 1u64;
    for len in 0..600 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        if let Some(out) = respond(&zone, &bytes, client, Transport::Udp, 0) {
            assert!(out.len() <= AMPLIFICATION * bytes.len(), "{len}");
        }
    }
}

#[test]
fn other_opcodes_get_notimp() {
    let zone = zone(SiteVerdicts::default());
    let mut message = Message::from_vec(&query("www.gslb.test.", RecordType::A, None)).unwrap();
    message.set_op_code(OpCode::Status);
    let answer = ask(&zone, &message.to_vec().unwrap(), Transport::Udp);
    assert_eq!(answer.response_code(), ResponseCode::NotImp);
}

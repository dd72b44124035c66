//! Every shape of header, well-formed and not.

use super::*;

fn addresses(source: &str, destination: &str) -> Addresses {
    Addresses {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

fn complete(bytes: &[u8]) -> (usize, Option<Addresses>) {
    match parse(bytes) {
        Ok(Parsed::Complete { len, addresses }) => (len, addresses),
        other => panic!("{other:?} for {bytes:?}"),
    }
}

#[test]
fn a_v1_line_names_the_client_and_stops_at_its_end() {
    let bytes = b"PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\nGET / HTTP/1.1\r\n";
    let (len, found) = complete(bytes);
    assert_eq!(len, 45);
    assert_eq!(found, Some(addresses("192.0.2.1:51000", "198.51.100.7:443")));
    let (_, six) = complete(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
    assert_eq!(six, Some(addresses("[2001:db8::1]:1", "[::1]:2")));
    assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (15, None));
    assert_eq!(complete(b"PROXY UNKNOWN whatever follows\r\n").1, None);
}

#[test]
fn a_v2_header_names_the_client_and_skips_its_tlvs() {
    let mut bytes = encode(ProxyVersion::V2, Some(addresses("10.1.2.3:4000", "10.0.0.1:80")));
    // One TLV (type 0x04, NOOP, 3 bytes), counted in the length.
    bytes[15] += 6;
    bytes.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]);
    let header_len = bytes.len();
    bytes.extend_from_slice(b"payload");
    assert_eq!(
        complete(&bytes),
        (header_len, Some(addresses("10.1.2.3:4000", "10.0.0.1:80")))
    );
    let six = encode(
        ProxyVersion::V2,
        Some(addresses("[2001:db8::9]:1", "[2001:db8::1]:2")),
    );
    assert_eq!(
        complete(&six),
        (52, Some(addresses("[2001:db8::9]:1", "[2001:db8::1]:2")))
    );
}

#[test]
fn local_and_unknown_keep_the_peer() {
    assert_eq!(complete(&encode(ProxyVersion::V2, None)), (16, None));
    assert_eq!(complete(&encode(ProxyVersion::V1, None)), (15, None));
    // A LOCAL header may still carry addresses: they are ignored.
    let mut local = encode(ProxyVersion::V2, Some(addresses("10.1.2.3:4000", "10.0.0.1:80")));
    local[12] = 0x20;
    assert_eq!(complete(&local).1, None);
    // Unix sockets name no IP.
    let mut unix = V2_SIGNATURE.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
    unix.extend_from_slice(&[0; 216]);
    assert_eq!(complete(&unix), (232, None));
}

#[test]
fn every_truncation_asks_for_more() {
    for whole in [
        encode(
            ProxyVersion::V1,
            Some(addresses("192.0.2.1:51000", "198.51.100.7:443")),
        ),
        encode(
            ProxyVersion::V2,
            Some(addresses("192.0.2.1:51000", "198.51.100.7:443")),
        ),
        encode(
            ProxyVersion::V2,
            Some(addresses("[2001:db8::9]:1", "[2001:db8::1]:2")),
        ),
    ] {
        for cut in 0..whole.len() {
            assert_eq!(
                parse(&whole[..cut]),
                Ok(Parsed::Incomplete),
                "cut at {cut} of {whole:?}"
            );
        }
    }
}

#[test]
fn a_wrong_signature_is_refused_at_once() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Malformed::Signature));
    assert_eq!(parse(b"PROXX"), Err(Malformed::Signature));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQUIZ"), Err(Malformed::Signature));
    assert_eq!(parse(b"proxy TCP4"), Err(Malformed::Signature));
}

#[test]
fn a_v1_line_too_long_is_refused() {
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(MAX_V1_LEN, b'x');
    assert_eq!(parse(&long), Err(Malformed::V1TooLong));
    // The longest line allowed still parses.
    long.truncate(MAX_V1_LEN - 2);
    long.extend_from_slice(b"\r\n");
    assert_eq!(complete(&long), (MAX_V1_LEN, None));
}

#[test]
fn malformed_v1_fields_are_named() {
    for (line, field) in [
        (&b"PROXY TCP5 1.1.1.1 2.2.2.2 1 2\r\n"[..], "protocol"),
        (b"PROXY TCP4 1.1.1 2.2.2.2 1 2\r\n", "source address"),
        (b"PROXY TCP4 ::1 2.2.2.2 1 2\r\n", "source address"),
        (b"PROXY TCP6 ::1 2.2.2.2 1 2\r\n", "destination address"),
        (b"PROXY TCP4 1.1.1.1 2.2.2.2 65536 2\r\n", "source port"),
        (b"PROXY TCP4 1.1.1.1 2.2.2.2 +1 2\r\n", "source port"),
        (b"PROXY TCP4 1.1.1.1 2.2.2.2 1\r\n", "destination port"),
        (b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2 3\r\n", "field count"),
        (b"PROXY TCP4  1.1.1.1 2.2.2.2 1 2\r\n", "source address"),
        (b"PROXY \xff\r\n", "text"),
    ] {
        assert_eq!(
            parse(line),
            Err(Malformed::V1Field(field)),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

fn v2(ver_cmd: u8, family: u8, len: u16, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, family]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn malformed_v2_headers_are_refused() {
    assert_eq!(parse(&v2(0x11, 0x11, 12, &[0; 12])), Err(Malformed::Version(1)));
    assert_eq!(parse(&v2(0x22, 0x11, 12, &[0; 12])), Err(Malformed::Command(2)));
    assert_eq!(parse(&v2(0x21, 0x41, 12, &[0; 12])), Err(Malformed::Family(0x41)));
    assert_eq!(parse(&v2(0x21, 0x13, 12, &[0; 12])), Err(Malformed::Family(0x13)));
    assert_eq!(parse(&v2(0x21, 0x11, 11, &[0; 11])), Err(Malformed::Short(11)));
    assert_eq!(parse(&v2(0x21, 0x21, 12, &[0; 12])), Err(Malformed::Short(12)));
    assert_eq!(
        parse(&v2(0x21, 0x11, 4000, &[0; 12])),
        Err(Malformed::TooLong(4000))
    );
    // A length beyond the bytes so far: more are needed.
    assert_eq!(parse(&v2(0x21, 0x11, 20, &[0; 12])), Ok(Parsed::Incomplete));
}

#[test]
fn mixed_families_are_written_as_ipv6() {
    let mixed = addresses("10.0.0.9:1000", "[::1]:80");
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let (_, found) = complete(&encode(version, Some(mixed)));
        assert_eq!(found, Some(addresses("[::ffff:10.0.0.9]:1000", "[::1]:80")));
    }
}

//! The `[[vip]]` sections of the file: the virtual IPs and where they live.

use crate::reader::{Reader, Section};
use crate::spec::{Placement, VipSpec};

/// `[[vip]]`: `address = "198.18.0.100/24"` (or `"2001:db8::100/64"`),
/// `interface = "eth0"`, `placement = "leader"`.
pub(super) fn vip(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<VipSpec> {
    let address = s.required(reader, "address").and_then(|f| {
        let text = reader.str(&f)?;
        let parsed = text.split_once('/').and_then(|(ip, prefix)| {
            Some((ip.parse::<std::net::IpAddr>().ok()?, prefix.parse::<u8>().ok()?))
        });
        let Some((ip, prefix)) = parsed else {
            reader.field_error(
                &f,
                format!(
                    "invalid VIP \"{text}\" (expected ADDRESS/PREFIX, e.g. \"10.10.0.100/24\" or \"2001:db8::100/64\")"
                ),
            );
            return None;
        };
        let (family, longest) = if ip.is_ipv4() { ("IPv4", 32) } else { ("IPv6", 128) };
        if prefix > longest {
            reader.field_error(
                &f,
                format!("invalid VIP \"{text}\": an {family} prefix is at most /{longest}"),
            );
            return None;
        }
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            reader.field_error(
                &f,
                format!("invalid VIP \"{text}\": a VIP is a unicast address of the interface's subnet"),
            );
            return None;
        }
        Some((ip, prefix))
    });
    let interface = s.required(reader, "interface").and_then(|f| {
        let name = reader.str(&f)?;
        // Linux interface names: 1 to 15 bytes, no '/', no whitespace.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\t', '\n']) {
            reader.field_error(&f, format!("invalid interface name \"{name}\""));
            return None;
        }
        Some(name.to_string())
    });
    let placement = match s.optional("placement") {
        Some(f) => reader.choice(
            &f,
            "placement",
            &[("leader", Placement::Leader), ("spread", Placement::Spread)],
        ),
        None => Some(Placement::Leader),
    };
    s.finish(reader);
    let (address, prefix_len) = address?;
    Some(VipSpec {
        address,
        prefix_len,
        interface: interface?,
        placement: placement?,
    })
}

//! `[listener.limits]`: what one client may do on one listener of one
//! node — connections held at once, new connections and HTTP requests per
//! second — and what counts as one client (its address, or the network of
//! `source_prefix` bits holding it). Each node counts what it sees: with
//! traffic spread over N nodes, a client may reach N times a limit in all.

use serde::{Deserialize, Serialize};

/// Per-source limits of one listener; `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientLimits {
    /// Connections (UDP: sessions) one source holds at once; one more is
    /// closed at accept (UDP: its datagram dropped).
    pub connections: u32,
    /// New connections (UDP: sessions) per second one source may open,
    /// on average, and how many at once above that rate (the bucket).
    pub connection_rate: u32,
    pub connection_burst: u32,
    /// HTTP requests per second one source may send, and the burst; one
    /// more is answered `429 Too Many Requests` with `Retry-After`.
    pub request_rate: u32,
    pub request_burst: u32,
    /// The network counted as one source: IPv4 and IPv6 prefix lengths
    /// (`/32`: each address; `/64`: each IPv6 subnet).
    pub source_prefix: u8,
    pub source_prefix_v6: u8,
}

impl Default for ClientLimits {
    /// Generous enough for a NAT gateway's office, low enough that one
    /// address cannot hold a listener's 10 000 connections or flood it.
    fn default() -> Self {
        ClientLimits {
            connections: 1000,
            connection_rate: 1000,
            connection_burst: 2000,
            request_rate: 10_000,
            request_burst: 20_000,
            source_prefix: 32,
            source_prefix_v6: 64,
        }
    }
}

impl ClientLimits {
    /// The keys of `[listener.limits]`, in the order the docs list them.
    pub const KEYS: [&'static str; 7] = [
        "connections",
        "connection_rate",
        "connection_burst",
        "request_rate",
        "request_burst",
        "source_prefix",
        "source_prefix_v6",
    ];

    /// The value of `key` (one of [`KEYS`](Self::KEYS)).
    pub fn get(&self, key: &str) -> Option<u32> {
        Some(match key {
            "connections" => self.connections,
            "connection_rate" => self.connection_rate,
            "connection_burst" => self.connection_burst,
            "request_rate" => self.request_rate,
            "request_burst" => self.request_burst,
            "source_prefix" => self.source_prefix.into(),
            "source_prefix_v6" => self.source_prefix_v6.into(),
            _ => return None,
        })
    }

    /// Sets `key` to `value` if `value` is within its bounds, or says why not.
    pub fn set(&mut self, key: &str, value: u64) -> Result<(), String> {
        let (min, max) = Self::bounds(key)
            .ok_or_else(|| format!("unknown limit \"{key}\" (known: {})", Self::KEYS.join(", ")))?;
        crate::validate::in_range(&value, min, max).map_err(|why| format!("{key} {why}"))?;
        let narrow = value as u32;
        match key {
            "connections" => self.connections = narrow,
            "connection_rate" => self.connection_rate = narrow,
            "connection_burst" => self.connection_burst = narrow,
            "request_rate" => self.request_rate = narrow,
            "request_burst" => self.request_burst = narrow,
            "source_prefix" => self.source_prefix = narrow as u8,
            _ => self.source_prefix_v6 = narrow as u8,
        }
        Ok(())
    }

    /// The smallest and largest value of `key`.
    pub fn bounds(key: &str) -> Option<(u64, u64)> {
        use crate::limits::{MAX_CONNECTIONS, MAX_RATE};
        Some(match key {
            "connections" => (0, MAX_CONNECTIONS.into()),
            "connection_rate" | "connection_burst" | "request_rate" | "request_burst" => (0, MAX_RATE.into()),
            "source_prefix" => (0, 32),
            "source_prefix_v6" => (0, 128),
            _ => return None,
        })
    }

    /// Every value within its bounds, and each burst at least its rate
    /// (a bucket smaller than a second's worth would refuse an even flow).
    pub fn check(&self) -> Result<(), String> {
        for key in Self::KEYS {
            let (min, max) = Self::bounds(key).unwrap_or((0, 0));
            let value = u64::from(self.get(key).unwrap_or(0));
            crate::validate::in_range(&value, min, max).map_err(|why| format!("limits.{key} {why}"))?;
        }
        for (rate, burst, rate_value, burst_value) in [
            (
                "connection_rate",
                "connection_burst",
                self.connection_rate,
                self.connection_burst,
            ),
            (
                "request_rate",
                "request_burst",
                self.request_rate,
                self.request_burst,
            ),
        ] {
            if burst_value < rate_value {
                return Err(format!(
                    "limits.{burst} {burst_value} is below limits.{rate} {rate_value} (a burst holds at least one second of the rate)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_their_own_checks_and_keys_round_trip() {
        let mut limits = ClientLimits::default();
        limits.check().unwrap();
        for key in ClientLimits::KEYS {
            let value = limits.get(key).unwrap();
            limits.set(key, value.into()).unwrap();
        }
        assert_eq!(limits, ClientLimits::default());
    }

    #[test]
    fn refusals_name_the_key() {
        let mut limits = ClientLimits::default();
        assert_eq!(
            limits.set("source_prefix", 33).unwrap_err(),
            "source_prefix 33 is above 32"
        );
        assert!(
            limits
                .set("per_ip", 1)
                .unwrap_err()
                .contains("unknown limit \"per_ip\"")
        );
        limits.request_burst = 10;
        assert!(
            limits
                .check()
                .unwrap_err()
                .contains("limits.request_burst 10 is below limits.request_rate")
        );
    }
}

//! IP ranges in the configuration (`pull.allow_private_cidrs`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a CIDR in the configuration is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `address/prefix` (or a bare address): carries the text as given.
    #[error("{0:?} is not a CIDR (address/prefix, e.g. 10.1.2.0/24)")]
    Syntax(String),
    /// The prefix is longer than the address (over 32 for IPv4, 128 for IPv6).
    #[error("{0:?}: the prefix length is larger than the address")]
    Prefix(String),
    /// Bits are set past the prefix: the text as given and the network it probably means.
    #[error("{0:?}: the address has bits set past the prefix (did you mean {1}?)")]
    HostBits(String, String),
}

/// An IP range an operator allows (`pull.allow_private_cidrs`), e.g. their own media servers at `10.1.2.0/24`.
/// Exists so private sources can be allowed range by range instead of all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` is in the range (an IPv4-mapped IPv6 address is judged as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `a.b.c.d/n`, `x::y/n`, or a bare address (a single host: /32 or /128).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| CidrError::Syntax(s.to_string()))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 {
                    return Err(CidrError::Syntax(s.to_string()));
                }
                p.parse::<u8>().map_err(|_| CidrError::Syntax(s.to_string()))?
            }
        };
        if prefix > max {
            return Err(CidrError::Prefix(s.to_string()));
        }
        let cidr = Cidr { addr, prefix };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0)).into()),
            IpAddr::V6(a) => {
                IpAddr::V6((u128::from(a) & u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0)).into())
            }
        };
        if network != addr {
            return Err(CidrError::HostBits(s.to_string(), format!("{network}/{prefix}")));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.2.0/24".parse().unwrap();
        assert!(c.contains(ip("10.1.2.0")));
        assert!(c.contains(ip("10.1.2.255")));
        assert!(c.contains(ip("::ffff:10.1.2.7")), "IPv4-mapped IPv6 is judged as IPv4");
        assert!(!c.contains(ip("10.1.3.0")));
        assert!(!c.contains(ip("10.1.1.255")));
        assert!(!c.contains(ip("::1")));
        assert_eq!(c.to_string(), "10.1.2.0/24");

        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));

        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.168.1.1")));
        assert!(!all.contains(ip("fd00::1")));

        let v6: Cidr = "fd00:1::/32".parse().unwrap();
        assert!(v6.contains(ip("fd00:1::5")));
        assert!(!v6.contains(ip("fd00:2::5")));
        assert!(" 192.168.0.0/16 ".parse::<Cidr>().is_ok());
    }

    #[test]
    fn bad_cidrs_are_refused_with_a_reason() {
        for bad in [
            "",
            "10.1.2.0/",
            "10.1.2.0/x",
            "10.1.2/24",
            "host/24",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
        ] {
            assert!(matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))), "{bad:?}");
        }
        assert!(matches!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix(_))));
        assert!(matches!("::/129".parse::<Cidr>(), Err(CidrError::Prefix(_))));
        let e = "10.1.2.3/24".parse::<Cidr>().unwrap_err();
        assert!(e.to_string().contains("10.1.2.0/24"), "{e}");
    }

    #[test]
    fn cidrs_round_trip_through_serde() {
        #[derive(Serialize, Deserialize)]
        struct T {
            c: Vec<Cidr>,
        }
        let t: T = toml::from_str("c = [\"10.1.2.0/24\", \"fd00::/8\"]").unwrap();
        assert_eq!(
            toml::to_string(&t).unwrap().trim(),
            "c = [\"10.1.2.0/24\", \"fd00::/8\"]"
        );
        let e = toml::from_str::<T>("c = [\"10.1.2.1/24\"]").err().unwrap();
        assert!(e.to_string().contains("10.1.2.0/24"), "{e}");
    }
}

//! The address policy of pull sources (SSRF protection), in one place: which IP addresses a task's connections
//! may reach. The pre-flight, its HTTP client's resolver and the libav proxy all ask the same `AddressPolicy`,
//! so a name checked once cannot be connected somewhere else later.

use super::source::is_public_ip;
use crate::config::Cidr;
use std::net::IpAddr;

/// Which addresses one task may connect to: public ones, the operator's allowed ranges, or everything
/// (`pull.allow_private_sources`, or a source the gateway chose itself).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// Every address is allowed (`pull.allow_private_sources`, or a source the gateway chose itself).
    pub allow_all: bool,
    /// Non-public ranges allowed all the same (`pull.allow_private_cidrs`).
    pub allowed: Vec<Cidr>,
}

impl AddressPolicy {
    /// The policy of the configuration (`trusted`: the demo task's own loopback source).
    pub fn from_config(pull: &crate::config::PullConfig, trusted: bool) -> AddressPolicy {
        AddressPolicy {
            allow_all: pull.allow_private_sources || trusted,
            allowed: pull.allow_private_cidrs.clone(),
        }
    }

    /// Whether a connection to `ip` is allowed: a public address, one in `allowed`, or any with `allow_all`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_all || is_public_ip(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }

    /// The first address of `ips` the policy refuses (a name is refused when any of its addresses is).
    pub fn first_refused(&self, ips: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
        ips.into_iter().find(|ip| !self.allows(*ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_policy_allows_public_and_listed_addresses_only() {
        let p = AddressPolicy {
            allow_all: false,
            allowed: vec!["10.1.2.0/24".parse().unwrap(), "127.0.0.1/32".parse().unwrap()],
        };
        assert!(p.allows(ip("8.8.8.8")));
        assert!(p.allows(ip("10.1.2.9")));
        assert!(p.allows(ip("127.0.0.1")));
        assert!(!p.allows(ip("127.0.0.2")));
        assert!(!p.allows(ip("10.1.3.1")));
        assert!(!p.allows(ip("169.254.169.254")));
        assert_eq!(
            p.first_refused([ip("10.1.2.1"), ip("192.168.0.1")]),
            Some(ip("192.168.0.1"))
        );
        assert_eq!(p.first_refused([ip("10.1.2.1"), ip("1.1.1.1")]), None);
        let open = AddressPolicy {
            allow_all: true,
            allowed: vec![],
        };
        assert!(open.allows(ip("169.254.169.254")));
    }
}

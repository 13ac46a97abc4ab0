//! SSRF guard: which addresses egress may dial.
//!
//! Applied to the address actually dialed (after resolution, in the connector), never to a name,
//! so a name that resolves to a private address, or rebinds between two lookups, is caught.
//! Host literals are parsed the way libc's `inet_aton` and browsers do (decimal, hex, octal,
//! mixed and short forms), so every spelling of `127.0.0.1` is the same address here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Parses an IP literal in any notation a client or libc would accept: dotted quad, 1-3 part
/// short forms (`127.1`, `10.1.2`), a single 32-bit number (`2130706433`), hex (`0x7f.1`),
/// octal (`0177.0.0.01`), mixed, a trailing dot, IPv6 with or without brackets and with a zone
/// id (`fe80::1%eth0`, `[fe80::1%25eth0]`). Returns `None` when `host` is a name.
pub fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if h.contains(':') {
        let no_zone = h.split('%').next().unwrap_or(h);
        return no_zone.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    parse_ipv4_loose(h).map(IpAddr::V4)
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(x) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (x, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // "0x" alone is 0 for inet_aton.
        return if radix == 16 { Some(0) } else { None };
    }
    if digits.len() > 32 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn parse_ipv4_loose(h: &str) -> Option<Ipv4Addr> {
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x' || b == b'X')
    {
        return None;
    }
    let parts: Vec<&str> = h.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| parse_ipv4_part(p))
        .collect::<Option<_>>()?;
    let (last, init) = nums.split_last()?;
    let mut v: u64 = 0;
    for (i, n) in init.iter().enumerate() {
        if *n > 255 {
            return None;
        }
        v |= n << (24 - 8 * i);
    }
    let rest_bits = 32 - 8 * init.len() as u32;
    if *last >= (1u64 << rest_bits) {
        return None;
    }
    v |= last;
    Some(Ipv4Addr::from(v as u32))
}

/// Why an IPv4 address may not be dialed, or `None` when it is public.
fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [169, 254, 169, 254] => "cloud metadata address",
        [100, 100, 100, 200] => "cloud metadata address",
        [0, ..] => "unspecified/this-network address",
        [127, ..] => "loopback address",
        [10, ..] => "private address",
        [172, b, ..] if (16..32).contains(&b) => "private address",
        [192, 168, ..] => "private address",
        [169, 254, ..] => "link-local address",
        [100, b, ..] if (64..128).contains(&b) => "shared (CGNAT) address",
        [192, 0, 0, _] => "IETF protocol assignment",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation address",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking address",
        [255, 255, 255, 255] => "broadcast address",
        [a, ..] if (224..240).contains(&a) => "multicast address",
        [a, ..] if a >= 240 => "reserved address",
        _ => return None,
    })
}

/// IPv4 embedded in an IPv6 address by a translation scheme (mapped, compatible, NAT64, 6to4).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated but still routed by some stacks)
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        // ::ffff:0:a.b.c.d (SIIT)
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        // 64:ff9b::/96 NAT64 well-known prefix and 64:ff9b:1::/48 local-use
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 6to4
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    if let Some(v4) = embedded_v4(ip) {
        // ::a.b.c.d with a public a.b.c.d is still an odd thing to dial, but the v4 rules decide.
        return v4_reason(v4).or(if ip.segments()[..6] == [0; 6] {
            Some("IPv4-compatible address")
        } else {
            None
        });
    }
    let s = ip.segments();
    Some(match s[0] {
        x if x & 0xffc0 == 0xfe80 => "link-local address",
        x if x & 0xffc0 == 0xfec0 => "site-local address",
        x if x & 0xfe00 == 0xfc00 => {
            if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                "cloud metadata address"
            } else {
                "unique local address"
            }
        }
        x if x & 0xff00 == 0xff00 => "multicast address",
        0x2001 if s[1] == 0x0db8 => "documentation address",
        0x2001 if s[1] == 0 => "Teredo address",
        0x0100 if s[1] == 0 && s[2] == 0 && s[3] == 0 => "discard-only address",
        0x3fff if s[1] < 0x1000 => "documentation address",
        _ => return None,
    })
}

/// Why `ip` may not be dialed regardless of configuration, or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

/// The guard: the fixed rules plus the operator's `ssrf_allow_cidrs` exceptions.
#[derive(Debug, Clone, Default)]
pub struct SsrfGuard {
    allow: Vec<IpNet>,
}

impl SsrfGuard {
    pub fn new(allow: Vec<IpNet>) -> SsrfGuard {
        SsrfGuard { allow }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allow
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
    }

    /// `Ok` when egress may dial `ip`; otherwise the reason, fit for an `X-Bottle-Block` header.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        match forbidden_reason(ip) {
            None => Ok(()),
            Some(_) if self.allowed(ip) => Ok(()),
            Some(reason) => Err(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_table() {
        // (spelling, canonical address, refused by default)
        let table: &[(&str, &str, bool)] = &[
            ("127.0.0.1", "127.0.0.1", true),
            ("127.1", "127.0.0.1", true),
            ("127.0.1", "127.0.0.1", true),
            ("2130706433", "127.0.0.1", true),
            ("0x7f000001", "127.0.0.1", true),
            ("0x7f.0.0.1", "127.0.0.1", true),
            ("0x7F.1", "127.0.0.1", true),
            ("0177.0.0.1", "127.0.0.1", true),
            ("0177.0.0.01", "127.0.0.1", true),
            ("017700000001", "127.0.0.1", true),
            ("0x7f.0.0x0.1", "127.0.0.1", true),
            ("127.0.0.1.", "127.0.0.1", true),
            ("0", "0.0.0.0", true),
            ("0.0.0.0", "0.0.0.0", true),
            ("10.0.0.1", "10.0.0.1", true),
            ("012.1", "10.0.0.1", true),
            ("167772161", "10.0.0.1", true),
            ("172.16.0.1", "172.16.0.1", true),
            ("172.31.255.255", "172.31.255.255", true),
            ("192.168.1.1", "192.168.1.1", true),
            ("0xc0.0xa8.1.1", "192.168.1.1", true),
            ("3232235777", "192.168.1.1", true),
            ("169.254.169.254", "169.254.169.254", true),
            ("0xa9fea9fe", "169.254.169.254", true),
            ("2852039166", "169.254.169.254", true),
            ("0251.0376.0251.0376", "169.254.169.254", true),
            ("169.254.43518", "169.254.169.254", true),
            ("100.64.0.1", "100.64.0.1", true),
            ("100.100.100.200", "100.100.100.200", true),
            ("224.0.0.1", "224.0.0.1", true),
            ("255.255.255.255", "255.255.255.255", true),
            ("4294967295", "255.255.255.255", true),
            ("::1", "::1", true),
            ("[::1]", "::1", true),
            ("0:0:0:0:0:0:0:1", "::1", true),
            ("::", "::", true),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1", true),
            ("[::ffff:7f00:1]", "::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", "::ffff:169.254.169.254", true),
            ("::127.0.0.1", "::127.0.0.1", true),
            ("::ffff:0:10.0.0.1", "::ffff:0:a00:1", true),
            ("64:ff9b::10.0.0.1", "64:ff9b::a00:1", true),
            ("2002:7f00:1::", "2002:7f00:1::", true),
            ("fe80::1%eth0", "fe80::1", true),
            ("[fe80::1%25eth0]", "fe80::1", true),
            ("fc00::1", "fc00::1", true),
            ("fd00:ec2::254", "fd00:ec2::254", true),
            ("ff02::1", "ff02::1", true),
            ("fec0::1", "fec0::1", true),
            ("8.8.8.8", "8.8.8.8", false),
            ("134744072", "8.8.8.8", false),
            ("0x08.0x08.0x08.0x08", "8.8.8.8", false),
            ("172.32.0.1", "172.32.0.1", false),
            ("100.128.0.1", "100.128.0.1", false),
            ("2606:4700::1111", "2606:4700::1111", false),
            ("::ffff:8.8.8.8", "::ffff:8.8.8.8", false),
            ("64:ff9b::8.8.8.8", "64:ff9b::808:808", false),
        ];
        let guard = SsrfGuard::default();
        for (spelling, canonical, refused) in table {
            let ip = parse_ip_literal(spelling)
                .unwrap_or_else(|| panic!("{spelling} not parsed as an IP literal"));
            assert_eq!(ip, canonical.parse::<IpAddr>().unwrap(), "{spelling}");
            assert_eq!(guard.check(ip).is_err(), *refused, "{spelling} -> {ip}");
        }
        assert!(table.len() >= 30);
    }

    #[test]
    fn names_are_not_literals() {
        for name in [
            "example.com",
            "api.example.test",
            "127.0.0.1.nip.io",
            "0x7f.example",
            "deadbeef",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.16777216",
            "",
            "0x1g",
        ] {
            assert_eq!(parse_ip_literal(name), None, "{name}");
        }
    }

    #[test]
    fn allow_cidrs_are_exceptions() {
        let guard = SsrfGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(guard.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(guard.check("::1".parse().unwrap()).is_err());
        assert_eq!(
            guard.check("169.254.169.254".parse().unwrap()),
            Err("cloud metadata address")
        );
    }
}

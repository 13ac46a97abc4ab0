//! The roles of a bottle and what each one is to the others: its name (in
//! labels, `--sidecar-image ROLE=…`, `restart ID ROLE`), network alias,
//! binary, port, uid and fixed host octet. Every other place reads them
//! from here.

/// Environment variable carrying the per-bottle broker key (egress and cred-proxy).
pub use crate::handoff::BROKER_KEY_ENV;
/// Environment variable carrying the canary (agent; egress and git-gate get it in config/files).
pub const CANARY_ENV: &str = "BOT_BOTTLE_CANARY";

/// The roles of a bottle (DESIGN.md roles table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Agent,
    Egress,
    CredProxy,
    GitGate,
    Supervise,
}

impl Role {
    pub const SIDECARS: [Role; 4] = [
        Role::Egress,
        Role::CredProxy,
        Role::GitGate,
        Role::Supervise,
    ];

    /// Name used in labels, `--sidecar-image ROLE=…`, `restart ID ROLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Egress => "egress",
            Role::CredProxy => "cred-proxy",
            Role::GitGate => "git-gate",
            Role::Supervise => "supervise",
        }
    }

    /// Network alias of the sidecar (what the agent's `ExtraHosts` name).
    pub fn alias(self) -> &'static str {
        self.as_str()
    }

    /// Binary (and image) name of the sidecar.
    pub fn binary(self) -> Option<&'static str> {
        match self {
            Role::Agent => None,
            Role::Egress => Some("egress"),
            Role::CredProxy => Some("cred-proxy"),
            Role::GitGate => Some("git-gate"),
            Role::Supervise => Some("supervise-mcp"),
        }
    }

    /// Port the sidecar listens on.
    pub fn port(self) -> Option<u16> {
        match self {
            Role::Agent => None,
            Role::Egress => Some(3128),
            Role::CredProxy => Some(9099),
            Role::GitGate => Some(9418),
            Role::Supervise => Some(9100),
        }
    }

    /// Numeric uid the sidecar image runs as (the agent is 1000).
    pub fn uid(self) -> u32 {
        match self {
            Role::Agent => 1000,
            Role::Egress => 10001,
            Role::CredProxy => 10002,
            Role::GitGate => 10003,
            Role::Supervise => 10004,
        }
    }

    /// Host part of the fixed address inside each /28 of the bottle.
    pub fn host_octet(self) -> u8 {
        match self {
            Role::Egress => 2,
            Role::CredProxy => 3,
            Role::GitGate => 4,
            Role::Supervise => 5,
            Role::Agent => 10,
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "agent" => Role::Agent,
            "egress" => Role::Egress,
            "cred-proxy" | "cred_proxy" => Role::CredProxy,
            "git-gate" | "git_gate" => Role::GitGate,
            "supervise" | "supervise-mcp" => Role::Supervise,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Role;
    use std::net::SocketAddr;

    /// A sidecar started with its schema's default listens where the
    /// orchestrator wires the agent's connections to it.
    #[test]
    fn default_listen_addresses_use_the_roles_ports() {
        for (role, listen) in [
            (Role::Egress, crate::egress::DEFAULT_LISTEN),
            (Role::CredProxy, crate::cred_proxy::DEFAULT_LISTEN),
            (Role::GitGate, crate::git_gate::DEFAULT_LISTEN),
        ] {
            let addr: SocketAddr = listen.parse().expect("a socket address");
            assert_eq!(Some(addr.port()), role.port(), "{role:?}");
        }
    }
}

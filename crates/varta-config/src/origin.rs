//! Where an agent's beats come from — part of the configuration because
//! `[[agent]]` rules match on it and recovery is allowed per origin.

/// How a beat reached the observer, and so how far its pid can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentOrigin {
    /// Unix socket with `SCM_CREDENTIALS`: pid and uid attested by the kernel.
    KernelAttested,
    /// Plaintext UDP: nothing verified.
    NetworkUnverified,
    /// Secure UDP: verified by key possession.
    NetworkVerified,
}

impl AgentOrigin {
    /// Label used in exports and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            AgentOrigin::KernelAttested => "kernel_attested",
            AgentOrigin::NetworkUnverified => "network_unverified",
            AgentOrigin::NetworkVerified => "network_verified",
        }
    }
}

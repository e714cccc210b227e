//! Who may call the agent: a bearer token over TCP and TLS, the peer's uid over the Unix socket.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use trove_guest_core::Secret;

use super::AgentState;
use super::error::{ApiError, with_disclosure};
use crate::api::kinds;

/// How callers of the agent are authenticated.
///
/// Over TCP and TLS a request must carry `Authorization: Bearer <token>` when a token is set
/// (compared in constant time); without one it is answered `401` with `WWW-Authenticate:
/// Bearer`. Over the Unix socket the peer's uid (from the kernel, `SO_PEERCRED`) must be one of
/// `allowed_uids`, and no token is asked for; a connection from another uid is closed unanswered
/// and logged.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AgentAuth {
    /// The bearer token every TCP/TLS request must carry; `None`: no token is asked for (keep
    /// such an agent on a listener only trusted processes reach).
    pub token: Option<Secret>,
    /// The uids allowed on the Unix socket; empty: the agent's own uid and root.
    pub allowed_uids: Vec<u32>,
}

impl AgentAuth {
    /// No token; the Unix socket admits the agent's own uid and root.
    pub fn new() -> Self {
        AgentAuth::default()
    }

    /// Requires `token` on every TCP/TLS request.
    pub fn with_token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    /// Admits `uids` on the Unix socket (instead of the agent's own uid and root).
    pub fn with_allowed_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Self {
        self.allowed_uids = uids.into_iter().collect();
        self
    }

    /// The uids admitted on the Unix socket.
    pub fn effective_uids(&self) -> Vec<u32> {
        if self.allowed_uids.is_empty() {
            let own = nix::unistd::geteuid().as_raw();
            if own == 0 { vec![0] } else { vec![own, 0] }
        } else {
            self.allowed_uids.clone()
        }
    }
}

/// Whether `presented` is `expected`, in time independent of where they differ (both are
/// hashed first, so neither does the length of the expected token show).
fn token_matches(presented: &[u8], expected: &Secret) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected.expose().as_bytes());
    a.ct_eq(&b).into()
}

/// Middleware of the TCP/TLS router: checks the bearer token, then handles the request with the
/// agent's error disclosure.
pub(crate) async fn require_token(
    State(state): State<Arc<AgentState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.options.auth.token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let ok = presented.is_some_and(|p| token_matches(p, expected));
        if !ok {
            tracing::warn!(
                method = %req.method(),
                path = %req.uri().path(),
                token = if presented.is_some() { "wrong" } else { "missing" },
                "refused a request without the agent's token"
            );
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                kinds::UNAUTHORIZED,
                "this agent needs `Authorization: Bearer <token>` with its token",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"trove-guest-agent\""),
            );
            return resp;
        }
    }
    with_disclosure(state.options.errors, next.run(req)).await
}

/// Middleware of the Unix-socket router (the peer's uid was checked when it connected).
pub(crate) async fn peer_checked(
    State(state): State<Arc<AgentState>>,
    req: Request,
    next: Next,
) -> Response {
    with_disclosure(state.options.errors, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_matches() {
        let t = Secret::new("s3cr3t-token");
        assert!(token_matches(b"s3cr3t-token", &t));
        assert!(!token_matches(b"s3cr3t-tokem", &t));
        assert!(!token_matches(b"s3cr3t-token ", &t));
        assert!(!token_matches(b"", &t));
    }

    #[test]
    fn the_socket_admits_own_uid_and_root_by_default() {
        let uids = AgentAuth::new().effective_uids();
        assert!(uids.contains(&0));
        assert!(uids.contains(&nix::unistd::geteuid().as_raw()));
        assert_eq!(
            AgentAuth::new().with_allowed_uids([7]).effective_uids(),
            [7]
        );
    }
}

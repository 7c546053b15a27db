//! Who may call: bearer-token authentication and roles, shared by both HTTP services.
//!
//! A caller presents a JWT signed with HS256 and the shared `JWT_SECRET`; the token
//! names the caller (`sub`) and one [`Role`]. The algorithm is pinned (a token with any
//! other `alg`, `none` included, is refused), and `exp`, `iss` and `aud` are required
//! and checked. Handlers receive a [`Principal`] through an axum extractor, never a name
//! from a header or a body: the actor recorded on every event is the token's subject.
//!
//! WebSocket clients that cannot set a header (browsers) exchange their token for a
//! short-lived **ticket** (a JWT with audience [`TICKET_AUDIENCE`], valid for
//! [`TICKET_TTL`]) and pass it as `?ticket=`. The handshake also checks `Origin`.
//!
//! `AUTH_DISABLED=true` turns all of this off for local experiments: every request acts
//! as an admin named [`DISABLED_PRINCIPAL`], and the service says so loudly and often.
//! It is never the default: a service with neither a secret nor that setting refuses to
//! start.

mod extract;
pub(crate) mod openapi;
mod origin;
mod rejection;
mod settings;
mod token;

pub use extract::bearer_token;
pub use openapi::BearerSecurity;
pub use rejection::AuthError;
pub use settings::{AuthArgs, Secret, DEFAULT_AUDIENCE, DEFAULT_ISSUER, MIN_SECRET_BYTES};
pub use token::{issue_token, Authenticator, Claims, ConfigError, IssueError, Ticket};

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Audience of WebSocket tickets: a ticket is not an API token and vice versa.
pub const TICKET_AUDIENCE: &str = "synapse-ws";
/// How long a WebSocket ticket is valid: long enough to open the socket, too short to
/// be worth stealing from a log or a browser history.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// The name every request acts under when `AUTH_DISABLED=true`.
pub const DISABLED_PRINCIPAL: &str = "auth-disabled";
/// Longest accepted subject: it becomes the `actor` of events.
pub const MAX_SUBJECT_LEN: usize = 128;

/// What a caller may do. Roles are ordered: each includes the ones below it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: queries, the live feed, the rule list.
    Viewer,
    /// Changes assets, imports CSV files, executes rules (and previews them).
    Engineer,
    /// Defines and versions rules, rolls batches back.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "engineer" => Ok(Role::Engineer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: use viewer, engineer or admin"
            )),
        }
    }
}

/// The authenticated caller: the token's subject and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`; recorded as the `actor` of every event the caller causes.
    pub name: String,
    pub role: Role,
    /// When the token that authenticated the caller expires (seconds since the Unix
    /// epoch): a live-feed session ends then. None with authentication disabled.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// `Ok` if the caller's role includes `role`, else a 403 problem.
    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                required: role,
                granted: self.role,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_viewer_engineer_admin() {
        assert!(Role::Viewer < Role::Engineer);
        assert!(Role::Engineer < Role::Admin);
        let admin = Principal {
            name: "a".into(),
            role: Role::Admin,
            expires_at: None,
        };
        let viewer = Principal {
            name: "v".into(),
            role: Role::Viewer,
            expires_at: None,
        };
        assert!(admin.require(Role::Engineer).is_ok());
        assert!(viewer.require(Role::Viewer).is_ok());
        assert!(matches!(
            viewer.require(Role::Engineer),
            Err(AuthError::Forbidden {
                required: Role::Engineer,
                granted: Role::Viewer
            })
        ));
    }

    #[test]
    fn roles_parse_from_their_wire_names() {
        assert_eq!("Engineer".parse::<Role>(), Ok(Role::Engineer));
        assert!("root".parse::<Role>().is_err());
        assert_eq!(serde_json::json!(Role::Admin), serde_json::json!("admin"));
    }
}

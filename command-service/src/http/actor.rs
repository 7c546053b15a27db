//! Who is calling, and whether their role allows the command.
//!
//! The caller is the subject of the request's bearer token (see
//! `synapse_shared::auth`); every event records it as its `actor`. It is never taken
//! from a header such as `X-Synapse-Actor` or from a body, so a caller cannot act in
//! someone else's name. Handlers state the role they need in their signature:
//! `Engineer(actor): Engineer` runs only for engineers and admins, and the 403 is
//! answered before the body is even read.
//!
//! **Invariant:** `Actor` itself is not an extractor, so a new handler cannot take a
//! caller without choosing a role: it must name [`Viewer`], [`Engineer`] or [`Admin`]
//! (and a handler that writes must not pick `Viewer`).

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use synapse_shared::auth::{AuthError, Authenticator, Principal, Role};

/// The authenticated caller: `.0` is the name recorded on events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String, Role);

impl Actor {
    pub fn role(&self) -> Role {
        self.1
    }

    /// `Ok` if the caller's role includes `role`, else a 403 problem.
    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if self.1 >= role {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                required: role,
                granted: self.1,
            })
        }
    }
}

impl From<Principal> for Actor {
    fn from(principal: Principal) -> Self {
        Actor(principal.name, principal.role)
    }
}

/// Extractors that authenticate the caller and require a role.
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Actor);

        impl<S> FromRequestParts<S> for $name
        where
            Authenticator: FromRef<S>,
            S: Send + Sync,
        {
            type Rejection = AuthError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let actor = Actor::from(Principal::from_request_parts(parts, state).await?);
                actor.require($role)?;
                Ok($name(actor))
            }
        }
    };
}

role_extractor!(
    /// Any authenticated caller (reads).
    Viewer,
    Role::Viewer
);
role_extractor!(
    /// An engineer or admin: asset changes, imports, executions and their dry runs.
    Engineer,
    Role::Engineer
);
role_extractor!(
    /// An admin: rule definitions and rollbacks.
    Admin,
    Role::Admin
);

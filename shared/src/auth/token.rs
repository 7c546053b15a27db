//! Issuing and checking tokens: the pinned algorithm, the required claims, tickets.

use super::origin::AllowedOrigins;
use super::{
    AuthArgs, AuthError, Principal, Role, DISABLED_PRINCIPAL, MAX_SUBJECT_LEN, MIN_SECRET_BYTES,
    TICKET_AUDIENCE, TICKET_TTL,
};
use crate::shutdown::CancellationToken;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The one algorithm accepted. Pinning it (rather than trusting the token's `alg`)
/// is what stops `alg: none` and algorithm-confusion tokens.
const ALGORITHM: Algorithm = Algorithm::HS256;
/// Clock skew tolerated on `exp`, in seconds: small, because tickets live 30 s.
const LEEWAY_SECONDS: u64 = 5;
/// How often a service with authentication disabled repeats its warning.
const DISABLED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The claims of a SYNAPSE token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller; becomes the `actor` of events.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    /// One audience; a token may also name several (RFC 7519 §4.1.3: a list, as
    /// identity providers issue), which the validation checks for ours, and of which
    /// the first is kept.
    #[serde(deserialize_with = "one_audience")]
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch (optional, as in RFC 7519: 0 when the
    /// issuer left it out).
    #[serde(default)]
    pub iat: u64,
    /// A ticket's id: a ticket opens one connection ([`Authenticator::authenticate_ticket`]).
    /// API tokens have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A ticket's: when the token it was issued for expires, which ends the session
    /// it opens. API tokens have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// `aud` as one string or the first of a list of them.
fn one_audience<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Several(Vec<String>),
    }
    match Audience::deserialize(deserializer)? {
        Audience::One(audience) => Ok(audience),
        Audience::Several(audiences) => audiences
            .into_iter()
            .next()
            .ok_or_else(|| serde::de::Error::custom("an empty list of audiences")),
    }
}

/// The configuration cannot work: the service must not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "authentication is not configured: set JWT_SECRET (an HS256 secret of at least \
         {MIN_SECRET_BYTES} bytes), or set AUTH_DISABLED=true to run without authentication \
         (local experiments only)"
    )]
    Unconfigured,
    #[error(
        "JWT_SECRET and AUTH_DISABLED=true are both set: unset one (a leftover \
         AUTH_DISABLED would silently open a service that was given a secret)"
    )]
    Contradictory,
    #[error("JWT_SECRET is too short: use at least {MIN_SECRET_BYTES} bytes")]
    SecretTooShort,
    #[error("JWT_ISSUER and JWT_AUDIENCE must not be empty")]
    EmptyClaim,
    #[error("ALLOWED_ORIGINS: {0}")]
    Origin(String),
}

/// A token could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("signing a token: {0}")]
pub struct IssueError(#[from] jsonwebtoken::errors::Error);

/// A WebSocket ticket and how long it is valid.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` when opening the WebSocket.
    pub ticket: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Sign a token for `subject` with `role`, valid for `ttl`: for the demo's ready-made
/// tokens, tests and tools. Services only verify.
pub fn issue_token(
    secret: &str,
    subject: &str,
    role: Role,
    ttl: Duration,
    issuer: &str,
    audience: &str,
) -> Result<String, IssueError> {
    let now = now();
    let claims = Claims {
        sub: subject.to_owned(),
        role,
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        exp: now.saturating_add(ttl.as_secs()),
        iat: now,
        jti: None,
        until: None,
    };
    sign(secret, &claims)
}

fn sign(secret: &str, claims: &Claims) -> Result<String, IssueError> {
    let key = EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&Header::new(ALGORITHM), claims, &key)?)
}

/// Checks bearer tokens and WebSocket tickets; cheap to clone (shared state).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when authentication is disabled.
    keys: Option<Keys>,
    origins: AllowedOrigins,
    /// The ids of the tickets redeemed and not expired yet, with their expiry: a ticket
    /// travels in a URL (`/ws?ticket=`), where logs and proxies may keep it, so it
    /// opens one connection. Per process: a replica cannot know what another redeemed.
    redeemed: Mutex<HashMap<String, u64>>,
}

struct Keys {
    secret: crate::auth::Secret,
    decoding: DecodingKey,
    issuer: String,
    api: Validation,
    tickets: Validation,
}

impl Authenticator {
    /// Build from the settings, refusing settings that would leave the service open
    /// by accident (no secret and not explicitly disabled) or weak (a short secret).
    pub fn from_args(args: &AuthArgs) -> Result<Self, ConfigError> {
        let origins = AllowedOrigins::parse(&args.allowed_origins).map_err(ConfigError::Origin)?;
        if args.auth_disabled && args.jwt_secret.is_some() {
            return Err(ConfigError::Contradictory);
        }
        if args.auth_disabled {
            return Ok(Self {
                inner: Arc::new(Inner {
                    keys: None,
                    origins,
                    redeemed: Mutex::default(),
                }),
            });
        }
        let secret = args.jwt_secret.clone().ok_or(ConfigError::Unconfigured)?;
        if secret.expose().len() < MIN_SECRET_BYTES {
            return Err(ConfigError::SecretTooShort);
        }
        if args.jwt_issuer.trim().is_empty() || args.jwt_audience.trim().is_empty() {
            return Err(ConfigError::EmptyClaim);
        }
        let keys = Keys {
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            secret,
            issuer: args.jwt_issuer.clone(),
            api: validation(&args.jwt_issuer, &args.jwt_audience),
            tickets: validation(&args.jwt_issuer, TICKET_AUDIENCE),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                keys: Some(keys),
                origins,
                redeemed: Mutex::default(),
            }),
        })
    }

    /// True when `AUTH_DISABLED=true`: every request is the admin `auth-disabled`.
    pub fn is_disabled(&self) -> bool {
        self.inner.keys.is_none()
    }

    /// The caller of an API request bearing `token`.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        match &self.inner.keys {
            None => Ok(disabled_principal()),
            Some(keys) => verify(token, &keys.decoding, &keys.api),
        }
    }

    /// The caller presenting a WebSocket `ticket` (see [`Authenticator::issue_ticket`]),
    /// which is redeemed: it opens no second connection.
    pub fn authenticate_ticket(&self, ticket: &str) -> Result<Principal, AuthError> {
        let Some(keys) = &self.inner.keys else {
            return Ok(disabled_principal());
        };
        let claims = verify_claims(ticket, &keys.decoding, &keys.tickets)?;
        let id = claims
            .jti
            .clone()
            .ok_or(AuthError::Invalid("the ticket has no id"))?;
        let mut redeemed = self
            .inner
            .redeemed
            .lock()
            .map_err(|_| AuthError::Invalid("tickets cannot be checked now"))?;
        let now = now();
        redeemed.retain(|_, expiry| expiry.saturating_add(LEEWAY_SECONDS) >= now);
        if redeemed.insert(id, claims.exp).is_some() {
            return Err(AuthError::Invalid(
                "the ticket was used already: ask POST /ws/ticket for another",
            ));
        }
        // The session it opens lasts as long as the token it was issued for.
        let until = claims.until;
        Ok(Principal {
            expires_at: until,
            ..principal(claims)
        })
    }

    /// A ticket for `principal` to open the WebSocket feed: a JWT with the ticket
    /// audience, so it is useless as an API token, valid for [`TICKET_TTL`].
    pub fn issue_ticket(&self, principal: &Principal) -> Result<Ticket, IssueError> {
        let ticket = match &self.inner.keys {
            None => (DISABLED_PRINCIPAL.to_owned(), TICKET_TTL.as_secs()),
            Some(keys) => {
                let now = now();
                // Never beyond the token it is issued for.
                let exp = now
                    .saturating_add(TICKET_TTL.as_secs())
                    .min(principal.expires_at.unwrap_or(u64::MAX));
                let claims = Claims {
                    sub: principal.name.clone(),
                    role: principal.role,
                    iss: keys.issuer.clone(),
                    aud: TICKET_AUDIENCE.to_owned(),
                    exp,
                    iat: now,
                    jti: Some(uuid::Uuid::new_v4().to_string()),
                    until: principal.expires_at,
                };
                (
                    sign(keys.secret.expose(), &claims)?,
                    exp.saturating_sub(now),
                )
            }
        };
        let (ticket, expires_in) = ticket;
        Ok(Ticket { ticket, expires_in })
    }

    /// The browser origins `ALLOWED_ORIGINS` lists (normalized); empty when only the
    /// service's own host may open the feed.
    pub fn allowed_origins(&self) -> &[String] {
        self.inner.origins.listed()
    }

    /// Refuse a browser handshake from an origin that is not allowed.
    pub fn check_origin(&self, headers: &axum::http::HeaderMap) -> Result<(), AuthError> {
        self.inner.origins.check(headers)
    }

    /// When authentication is disabled, log a warning now and every minute until
    /// `shutdown`, so nobody runs an open service without noticing.
    pub fn warn_while_disabled(&self, service: &'static str, shutdown: CancellationToken) {
        if !self.is_disabled() {
            return;
        }
        tokio::spawn(async move {
            let mut every = tokio::time::interval(DISABLED_WARNING_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => tracing::warn!(
                        service,
                        "AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): every request acts \
                         as admin `{DISABLED_PRINCIPAL}`; never run like this outside a local demo"
                    ),
                }
            }
        });
    }
}

fn validation(issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(ALGORITHM);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.leeway = LEEWAY_SECONDS;
    // A token is not good before its `nbf` (RFC 7519 §4.1.5) when it has one.
    validation.validate_nbf = true;
    validation
}

fn verify(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Principal, AuthError> {
    verify_claims(token, key, validation).map(principal)
}

/// The claims of a valid `token`.
fn verify_claims(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Claims, AuthError> {
    let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|error| {
        let reason = match error.kind() {
            ErrorKind::ExpiredSignature => return AuthError::Expired,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                "the token is not signed with HS256"
            }
            ErrorKind::InvalidSignature => "the token's signature is not valid",
            ErrorKind::InvalidIssuer => "the token has another issuer",
            ErrorKind::InvalidAudience => "the token is meant for another audience",
            ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
            ErrorKind::ImmatureSignature => "the token is not valid yet (its `nbf` is to come)",
            ErrorKind::Json(error) if error.to_string().starts_with("missing field") => {
                "the token lacks a required claim (sub, role, iss, aud and exp are)"
            }
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                "the token's header or claims are not what SYNAPSE issues"
            }
            _ => "the token is malformed",
        };
        AuthError::Invalid(reason)
    })?;
    let claims = data.claims;
    let subject_ok = !claims.sub.trim().is_empty()
        && claims.sub.len() <= MAX_SUBJECT_LEN
        && !claims.sub.chars().any(char::is_control);
    if !subject_ok {
        return Err(AuthError::Invalid(
            "the token's subject must be 1 to 128 printable characters",
        ));
    }
    Ok(claims)
}

fn principal(claims: Claims) -> Principal {
    Principal {
        name: claims.sub,
        role: claims.role,
        expires_at: Some(claims.exp),
    }
}

fn disabled_principal() -> Principal {
    Principal {
        name: DISABLED_PRINCIPAL.to_owned(),
        role: Role::Admin,
        expires_at: None,
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};

    const SECRET: &str = "unit-test-secret-that-is-long-enough-for-hs256";
    const HOUR: Duration = Duration::from_secs(3600);

    fn authenticator() -> Authenticator {
        Authenticator::from_args(&AuthArgs::with_secret(SECRET)).expect("valid settings")
    }

    fn token(role: Role) -> String {
        issue_token(
            SECRET,
            "alice",
            role,
            HOUR,
            DEFAULT_ISSUER,
            DEFAULT_AUDIENCE,
        )
        .expect("signs")
    }

    /// `claims` signed with the test secret.
    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(ALGORITHM),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs")
    }

    fn refusal(token: &str) -> AuthError {
        authenticator()
            .authenticate(token)
            .expect_err("the token is refused")
    }

    #[test]
    fn a_valid_token_names_its_subject_and_role() {
        let principal = authenticator()
            .authenticate(&token(Role::Engineer))
            .expect("accepted");
        assert_eq!(principal.name, "alice");
        assert_eq!(principal.role, Role::Engineer);
    }

    #[test]
    fn a_token_with_the_documented_claims_and_no_iat_is_accepted() {
        let claims = serde_json::json!({"sub": "alice", "role": "viewer",
            "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "exp": now() + 60});
        let token = jsonwebtoken::encode(
            &Header::new(ALGORITHM),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs");
        let principal = authenticator().authenticate(&token).expect("accepted");
        assert_eq!(
            (principal.name.as_str(), principal.role),
            ("alice", Role::Viewer)
        );
    }

    #[test]
    fn a_secret_and_auth_disabled_together_stop_the_service() {
        let both = AuthArgs {
            auth_disabled: true,
            ..AuthArgs::with_secret(SECRET)
        };
        assert!(matches!(
            Authenticator::from_args(&both),
            Err(ConfigError::Contradictory)
        ));
    }

    #[test]
    fn a_token_signed_with_another_hmac_algorithm_is_refused() {
        let claims = Claims {
            sub: "mallory".into(),
            role: Role::Admin,
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            exp: now() + 3600,
            iat: now(),
            jti: None,
            until: None,
        };
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs");
        assert!(matches!(
            refusal(&hs384),
            AuthError::Invalid("the token is not signed with HS256")
        ));
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"sub":"mallory","role":"admin","iss":"synapse",
        // "aud":"synapse-api","exp":4102444800,"iat":0} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJtYWxsb3J5Iiwicm9sZSI6ImFkbWluIiwiaXNzIjoic3luYXBzZSIsImF1ZCI6InN5bmFwc2UtYXBpIiwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjB9.";
        assert!(matches!(refusal(none), AuthError::Invalid(_)));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let claims = Claims {
            sub: "alice".into(),
            role: Role::Admin,
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            exp: now() - 60,
            iat: now() - 120,
            jti: None,
            until: None,
        };
        let expired = jsonwebtoken::encode(
            &Header::new(ALGORITHM),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs");
        assert!(matches!(refusal(&expired), AuthError::Expired));
    }

    #[test]
    fn an_audience_list_naming_ours_is_accepted_and_a_missing_claim_is_named_as_such() {
        // Identity providers issue `aud` as a list (RFC 7519 §4.1.3): before, such a
        // token was refused as "not what SYNAPSE issues".
        let claims = serde_json::json!({"sub": "alice", "role": "engineer", "iss": DEFAULT_ISSUER,
            "aud": ["other-api", DEFAULT_AUDIENCE], "exp": now() + 3600});
        let principal = authenticator()
            .authenticate(&sign(claims))
            .expect("accepted");
        assert_eq!(
            (principal.name.as_str(), principal.role),
            ("alice", Role::Engineer)
        );
        let elsewhere = serde_json::json!({"sub": "alice", "role": "engineer",
            "iss": DEFAULT_ISSUER, "aud": ["other-api"], "exp": now() + 3600});
        assert_eq!(
            refusal(&sign(elsewhere)),
            AuthError::Invalid("the token is meant for another audience")
        );
        for missing in ["sub", "role"] {
            let mut claims = serde_json::json!({"sub": "alice", "role": "engineer",
                "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "exp": now() + 3600});
            claims.as_object_mut().map(|claims| claims.remove(missing));
            assert_eq!(
                refusal(&sign(claims)),
                AuthError::Invalid(
                    "the token lacks a required claim (sub, role, iss, aud and exp are)"
                ),
                "{missing}"
            );
        }
    }

    #[test]
    fn a_token_not_good_before_tomorrow_is_refused_today() {
        let claims = |nbf: i64| {
            serde_json::json!({"sub": "alice", "role": "admin", "iss": DEFAULT_ISSUER,
                "aud": DEFAULT_AUDIENCE, "exp": now() + 3600, "iat": now(), "nbf": nbf})
        };
        let now = i64::try_from(now()).unwrap_or(i64::MAX);
        assert_eq!(
            refusal(&sign(claims(now + 86_400))),
            AuthError::Invalid("the token is not valid yet (its `nbf` is to come)")
        );
        assert!(authenticator()
            .authenticate(&sign(claims(now - 60)))
            .is_ok());
    }

    #[test]
    fn a_token_from_another_issuer_is_refused() {
        let other = issue_token(
            SECRET,
            "alice",
            Role::Admin,
            HOUR,
            "elsewhere",
            DEFAULT_AUDIENCE,
        )
        .expect("signs");
        assert!(matches!(
            refusal(&other),
            AuthError::Invalid("the token has another issuer")
        ));
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let other = issue_token(
            SECRET,
            "alice",
            Role::Admin,
            HOUR,
            DEFAULT_ISSUER,
            "other-api",
        )
        .expect("signs");
        assert!(matches!(
            refusal(&other),
            AuthError::Invalid("the token is meant for another audience")
        ));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let forged = issue_token(
            "another-secret-that-is-also-long-enough!!",
            "alice",
            Role::Admin,
            HOUR,
            DEFAULT_ISSUER,
            DEFAULT_AUDIENCE,
        )
        .expect("signs");
        assert!(matches!(
            refusal(&forged),
            AuthError::Invalid("the token's signature is not valid")
        ));
    }

    #[test]
    fn garbage_and_unknown_roles_are_refused() {
        assert!(matches!(refusal("not-a-jwt"), AuthError::Invalid(_)));
        let mut claims = serde_json::json!({
            "sub": "alice", "role": "root", "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE,
            "exp": now() + 60, "iat": now(),
        });
        let root = jsonwebtoken::encode(
            &Header::new(ALGORITHM),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs");
        assert!(matches!(refusal(&root), AuthError::Invalid(_)));
        claims["role"] = "admin".into();
        claims["sub"] = "".into();
        let anonymous = jsonwebtoken::encode(
            &Header::new(ALGORITHM),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs");
        assert!(matches!(refusal(&anonymous), AuthError::Invalid(_)));
    }

    #[test]
    fn a_ticket_lasts_no_longer_than_the_token_it_was_issued_for() {
        let auth = authenticator();
        let token = issue_token(
            SECRET,
            "bob",
            Role::Viewer,
            Duration::from_secs(10),
            DEFAULT_ISSUER,
            DEFAULT_AUDIENCE,
        )
        .expect("signs");
        let bob = auth.authenticate(&token).expect("valid");
        let ticket = auth.issue_ticket(&bob).expect("issued");
        assert!(ticket.expires_in <= 10, "{}", ticket.expires_in);
        let opened = auth.authenticate_ticket(&ticket.ticket).expect("valid");
        assert_eq!(opened.expires_at, bob.expires_at);
        assert!(bob.expires_at.is_some());
    }

    #[test]
    fn tickets_and_api_tokens_are_not_interchangeable() {
        let auth = authenticator();
        let alice = Principal {
            name: "alice".into(),
            role: Role::Viewer,
            expires_at: None,
        };
        let ticket = auth.issue_ticket(&alice).expect("issued");
        assert_eq!(ticket.expires_in, 30);
        assert_eq!(
            auth.authenticate_ticket(&ticket.ticket).ok(),
            Some(alice.clone())
        );
        assert!(auth.authenticate(&ticket.ticket).is_err());
        // A ticket opens one connection; another ticket opens the next.
        assert!(matches!(
            auth.authenticate_ticket(&ticket.ticket),
            Err(AuthError::Invalid(reason)) if reason.contains("used already")
        ));
        let next = auth.issue_ticket(&alice).expect("issued");
        assert_ne!(next.ticket, ticket.ticket);
        assert_eq!(auth.authenticate_ticket(&next.ticket).ok(), Some(alice));
        assert!(auth.authenticate_ticket(&token(Role::Viewer)).is_err());
    }

    #[test]
    fn a_service_without_secret_or_explicit_opt_out_refuses_to_start() {
        let mut args = AuthArgs::with_secret(SECRET);
        args.jwt_secret = None;
        assert!(matches!(
            Authenticator::from_args(&args),
            Err(ConfigError::Unconfigured)
        ));
        assert!(matches!(
            Authenticator::from_args(&AuthArgs::with_secret("short")),
            Err(ConfigError::SecretTooShort)
        ));
        let open = Authenticator::from_args(&AuthArgs::disabled()).expect("explicitly disabled");
        assert!(open.is_disabled());
        let principal = open.authenticate("anything").expect("let through");
        assert_eq!(principal.name, DISABLED_PRINCIPAL);
        assert_eq!(principal.role, Role::Admin);
    }
}

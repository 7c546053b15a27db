//! The authentication settings every HTTP service reads from the environment.

/// Default `iss` of tokens.
pub const DEFAULT_ISSUER: &str = "synapse";
/// Default `aud` of API tokens.
pub const DEFAULT_AUDIENCE: &str = "synapse-api";
/// Shortest accepted `JWT_SECRET`: HS256 wants a key at least as long as its hash
/// (RFC 7518 §3.2), and a short secret is brute-forced from any one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// A secret string whose `Debug` never shows it, so a logged `Config` leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: only for building keys, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

/// Bearer-token settings. Either `JWT_SECRET` or `AUTH_DISABLED=true` must be set: a
/// service with neither refuses to start.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// HS256 shared secret (at least 32 bytes) that signs and verifies tokens. Tokens
    /// signed with any other algorithm are refused.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Required `iss` of every token.
    #[arg(long, env = "JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    /// Required `aud` of API tokens (WebSocket tickets use `synapse-ws`).
    #[arg(long, env = "JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub jwt_audience: String,
    /// Turn authentication OFF: every request acts as an admin named `auth-disabled`.
    /// For local experiments only; the service logs a warning at start and every minute.
    #[arg(long, env = "AUTH_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub auth_disabled: bool,
    /// Query service: origins allowed to open the WebSocket feed (comma-separated, e.g.
    /// `https://ops.example.com`). Empty: only clients that send no `Origin` (non-browser
    /// clients) or whose `Origin` host equals the `Host` header. Other services ignore it.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

impl AuthArgs {
    /// Tokens signed with `secret`, the default issuer and audience, no extra origins.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            jwt_secret: Some(Secret::new(secret)),
            jwt_issuer: DEFAULT_ISSUER.to_owned(),
            jwt_audience: DEFAULT_AUDIENCE.to_owned(),
            auth_disabled: false,
            allowed_origins: Vec::new(),
        }
    }

    /// Authentication switched off (every request is the admin `auth-disabled`).
    pub fn disabled() -> Self {
        Self {
            jwt_secret: None,
            auth_disabled: true,
            ..Self::with_secret("")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthArgs,
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let args = AuthArgs::with_secret("correct horse battery staple, really long");
        let printed = format!("{args:?}");
        assert!(!printed.contains("horse"), "{printed}");
        assert!(printed.contains("redacted"));
    }

    #[test]
    fn defaults_have_no_secret_and_auth_enabled() {
        let cli = Cli::try_parse_from(["service"]).expect("parses");
        assert!(cli.auth.jwt_secret.is_none());
        assert!(!cli.auth.auth_disabled);
        assert_eq!(cli.auth.jwt_issuer, "synapse");
        assert_eq!(cli.auth.jwt_audience, "synapse-api");
        let cli = Cli::try_parse_from([
            "service",
            "--allowed-origins",
            "https://a.example,https://b.example",
        ])
        .expect("parses");
        assert_eq!(cli.auth.allowed_origins.len(), 2);
    }
}

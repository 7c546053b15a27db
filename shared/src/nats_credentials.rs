//! Who a service is to NATS: the optional per-service credentials of SPEC §10.
//!
//! Each process may connect as its own NATS user so that the server enforces what it may
//! publish and subscribe to (`deploy/nats/synapse-auth.conf` gives the relay the events
//! subjects and the read side only its consumers). Exactly one way to authenticate may
//! be configured; none means an anonymous connection, as on a development machine, or
//! the user and password in `NATS_URL` (`nats://user:pass@host:4222`, see
//! [`crate::nats::connect_options`]).

use crate::auth::Secret;
use std::path::{Path, PathBuf};

/// The credentials settings, read from the environment (or the command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsCredentials {
    /// NATS user of this service (with `NATS_PASSWORD`).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// Password of `NATS_USER`.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// A token, for servers configured with `authorization { token: ... }`.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,
    /// A file holding this service's nkey seed (`SU...`), for servers that list the
    /// user by its public nkey.
    #[arg(long, env = "NATS_NKEY_FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// A `.creds` file (user JWT + nkey seed), for servers in operator/JWT mode.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
}

/// How the service authenticates, once the settings are checked.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsAuth<'a> {
    /// No credentials (or only those in `NATS_URL`).
    Anonymous,
    UserPassword {
        user: &'a str,
        password: &'a Secret,
    },
    Token(&'a Secret),
    NkeyFile(&'a Path),
    CredsFile(&'a Path),
}

/// Settings that cannot work: refused at start-up, before anything connects.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("NATS_USER is set without NATS_PASSWORD")]
    UserWithoutPassword,
    #[error("NATS_PASSWORD is set without NATS_USER")]
    PasswordWithoutUser,
    #[error(
        "several NATS credentials are set ({0}): set only one of NATS_USER+NATS_PASSWORD, \
         NATS_TOKEN, NATS_NKEY_FILE or NATS_CREDS"
    )]
    Several(String),
    #[error("reading the NATS credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the nkey file {0} holds no seed")]
    EmptySeed(PathBuf),
}

impl NatsCredentials {
    /// A user and password (tests and code that assemble a configuration).
    pub fn user_password(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            nats_user: Some(user.into()),
            nats_password: Some(Secret::new(password)),
            ..Self::default()
        }
    }

    /// The one configured way to authenticate, or why the settings are contradictory.
    pub fn auth(&self) -> Result<NatsAuth<'_>, CredentialsError> {
        let configured: Vec<&str> = [
            (
                self.nats_user.is_some() || self.nats_password.is_some(),
                "NATS_USER+NATS_PASSWORD",
            ),
            (self.nats_token.is_some(), "NATS_TOKEN"),
            (self.nats_nkey_file.is_some(), "NATS_NKEY_FILE"),
            (self.nats_creds.is_some(), "NATS_CREDS"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if configured.len() > 1 {
            return Err(CredentialsError::Several(configured.join(", ")));
        }
        Ok(match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => NatsAuth::UserPassword { user, password },
            (Some(_), None) => return Err(CredentialsError::UserWithoutPassword),
            (None, Some(_)) => return Err(CredentialsError::PasswordWithoutUser),
            (None, None) => {
                if let Some(token) = &self.nats_token {
                    NatsAuth::Token(token)
                } else if let Some(path) = &self.nats_nkey_file {
                    NatsAuth::NkeyFile(path)
                } else if let Some(path) = &self.nats_creds {
                    NatsAuth::CredsFile(path)
                } else {
                    NatsAuth::Anonymous
                }
            }
        })
    }

    /// `options` with these credentials applied; files are read now, so a missing or
    /// empty one stops the service at start-up with its path in the message.
    pub async fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, CredentialsError> {
        Ok(match self.auth()? {
            NatsAuth::Anonymous => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.to_owned(), password.expose().to_owned())
            }
            NatsAuth::Token(token) => options.token(token.expose().to_owned()),
            NatsAuth::NkeyFile(path) => options.nkey(read_seed(path).await?),
            NatsAuth::CredsFile(path) => {
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| CredentialsError::Read {
                        path: path.to_owned(),
                        source,
                    })?
            }
        })
    }
}

/// The seed in an nkey file: its first non-empty line (`nk -gen user` writes one line).
async fn read_seed(path: &Path) -> Result<String, CredentialsError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| CredentialsError::EmptySeed(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_is_an_anonymous_connection() {
        assert_eq!(
            NatsCredentials::default().auth().unwrap(),
            NatsAuth::Anonymous
        );
    }

    #[test]
    fn a_user_and_password_are_one_method() {
        let credentials = NatsCredentials::user_password("synapse-relay", "s3cret");
        match credentials.auth().unwrap() {
            NatsAuth::UserPassword { user, password } => {
                assert_eq!(user, "synapse-relay");
                assert_eq!(password.expose(), "s3cret");
            }
            other => panic!("expected user and password, got {other:?}"),
        }
    }

    #[test]
    fn half_a_user_password_pair_is_refused() {
        let user_only = NatsCredentials {
            nats_user: Some("synapse-relay".into()),
            ..NatsCredentials::default()
        };
        assert!(matches!(
            user_only.auth(),
            Err(CredentialsError::UserWithoutPassword)
        ));
        let password_only = NatsCredentials {
            nats_password: Some(Secret::new("s3cret")),
            ..NatsCredentials::default()
        };
        assert!(matches!(
            password_only.auth(),
            Err(CredentialsError::PasswordWithoutUser)
        ));
    }

    #[test]
    fn two_methods_at_once_are_refused_naming_both() {
        let credentials = NatsCredentials {
            nats_token: Some(Secret::new("t")),
            nats_creds: Some("/etc/synapse/relay.creds".into()),
            ..NatsCredentials::default()
        };
        let error = credentials.auth().unwrap_err().to_string();
        assert!(error.contains("NATS_TOKEN, NATS_CREDS"), "{error}");
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let credentials = NatsCredentials::user_password("synapse-relay", "s3cret");
        let printed = format!("{credentials:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("synapse-relay"), "{printed}");
    }

    #[tokio::test]
    async fn a_missing_nkey_file_is_refused_with_its_path() {
        let credentials = NatsCredentials {
            nats_nkey_file: Some("/nonexistent/synapse.nk".into()),
            ..NatsCredentials::default()
        };
        let error = credentials
            .apply(async_nats::ConnectOptions::new())
            .await
            .err()
            .map(|error| error.to_string());
        assert_eq!(
            error.as_deref(),
            Some("reading the NATS credentials file /nonexistent/synapse.nk")
        );
    }

    #[tokio::test]
    async fn an_empty_nkey_file_is_refused() {
        let path = std::env::temp_dir().join(format!("synapse-empty-{}.nk", uuid::Uuid::new_v4()));
        std::fs::write(&path, "\n  \n").unwrap();
        let credentials = NatsCredentials {
            nats_nkey_file: Some(path.clone()),
            ..NatsCredentials::default()
        };
        let outcome = credentials.apply(async_nats::ConnectOptions::new()).await;
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(outcome, Err(CredentialsError::EmptySeed(_))));
    }
}

//! Tokens for tests: the in-process services trust [`TEST_SECRET`], and [`token`] mints
//! a token for any role and subject, as the demo's run script does for people.

use std::time::Duration;
use synapse_shared::auth::{issue_token, AuthArgs, DEFAULT_AUDIENCE, DEFAULT_ISSUER};

pub use synapse_shared::auth::Role;

/// The HS256 secret every in-process service of the tests is started with.
pub const TEST_SECRET: &str = "synapse-tests-only-secret-0123456789abcdef";
/// The subject of the default (admin) test client: the actor on events tests cause.
pub const TEST_ADMIN: &str = "test-admin";
/// Validity of test tokens: longer than any test.
const TEST_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The authentication settings of in-process services.
pub fn args() -> AuthArgs {
    AuthArgs::with_secret(TEST_SECRET)
}

/// A valid API token for `subject` with `role`.
pub fn token(role: Role, subject: &str) -> String {
    issue_token(
        TEST_SECRET,
        subject,
        role,
        TEST_TOKEN_TTL,
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
    )
    // HS256 signing of a fixed-shape claim set with a non-empty key cannot fail.
    .expect("signing a test token")
}

/// The `Authorization` header value for `token(role, subject)`.
pub fn bearer(role: Role, subject: &str) -> String {
    format!("Bearer {}", token(role, subject))
}

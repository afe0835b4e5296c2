//! Verifies the Google-signed OIDC token on Function URL requests.
//!
//! Pub/Sub push subscriptions and Cloud Scheduler both attach an ID token for
//! a service account; Lambda Function URLs run with auth `NONE` (Google cannot
//! sign SigV4), so the handler checks the token before reading anything else:
//! signature (Google's JWKS, cached), issuer, audience, expiry, and the
//! service-account email.

use google_cloud_auth::credentials::idtoken::verifier::{Builder, Verifier};

use backstop_core::config::{ConfigError, Env};
use backstop_core::events::HttpRequest;

use crate::timeouts::{Timeouts, within};

/// Google's JWKS endpoint for ID tokens (RS256), what the verifier fetches
/// unless `BACKSTOP_OIDC_JWKS_URL` overrides it.
const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "request has no `Authorization: Bearer <token>` header; callers must send a Google-signed OIDC token"
    )]
    MissingToken,
    #[error("OIDC token rejected: {0}")]
    Rejected(String),
    #[error("could not load Google's token signing keys ({0}); the request can be retried")]
    KeysUnavailable(String),
}

impl backstop_core::error::Classify for AuthError {
    /// Google's keys may be reachable later; a bad or missing token stays bad.
    fn retry(&self) -> backstop_core::error::Retry {
        match self {
            AuthError::KeysUnavailable(_) => backstop_core::error::Retry::Transient,
            _ => backstop_core::error::Retry::Permanent,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub audience: String,
    pub service_account: String,
    /// Overrides Google's JWKS endpoint (tests serve their own keys).
    pub jwks_url: Option<String>,
}

impl OidcConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            audience: env.required(
                "BACKSTOP_OIDC_AUDIENCE",
                "the audience Google puts in the OIDC token: this function's URL",
            )?,
            service_account: env.required(
                "BACKSTOP_OIDC_SERVICE_ACCOUNT",
                "the service-account email allowed to call this function (push subscription / scheduler)",
            )?,
            jwks_url: env.optional("BACKSTOP_OIDC_JWKS_URL"),
        })
    }
}

/// Verifies Google-signed OIDC tokens. The underlying verifier (and its
/// HTTP client for Google's JWKS) is built on the first HTTP request, so that
/// direct invocations, which carry no token, do not pay for it at cold start.
#[derive(Debug)]
pub struct OidcVerifier {
    config: OidcConfig,
    verifier: std::sync::OnceLock<Verifier>,
    timeouts: Timeouts,
}

impl OidcVerifier {
    /// A verifier with the default [`Timeouts`] for fetching Google's keys
    /// (see [`OidcVerifier::with_timeouts`]).
    pub fn new(config: &OidcConfig) -> Self {
        Self {
            config: config.clone(),
            verifier: std::sync::OnceLock::new(),
            timeouts: Timeouts::default(),
        }
    }

    /// How long fetching Google's keys may take (connect + request): the
    /// verifier fetches them with a client of its own that has no timeout.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    fn verifier(&self) -> &Verifier {
        self.verifier.get_or_init(|| {
            let mut builder = Builder::new([self.config.audience.clone()])
                .with_email(self.config.service_account.clone());
            if let Some(url) = &self.config.jwks_url {
                builder = builder.with_jwks_url(url.clone());
            }
            builder.build()
        })
    }

    /// Checks the request's bearer token; returns the verified email.
    pub async fn verify(&self, req: &HttpRequest) -> Result<String, AuthError> {
        let token = req
            .header("authorization")
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        // Only a key fetch waits on the network (keys are cached), and a
        // caller waiting on it should be told to come back, not held.
        let verified = within(self.timeouts.answer(), self.verifier().verify(token))
            .await
            .ok_or_else(|| {
                let url = self.config.jwks_url.as_deref().unwrap_or(GOOGLE_JWKS_URL);
                AuthError::KeysUnavailable(self.timeouts.no_answer(url))
            })?;
        let claims = verified.map_err(|e| {
            if e.is_load_cert() && keys_unavailable(&e) {
                AuthError::KeysUnavailable(e.to_string())
            } else {
                AuthError::Rejected(e.to_string())
            }
        })?;
        Ok(claims
            .get("email")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string())
    }
}

/// Whether a key-loading failure is worth a retry (network error, 5xx from
/// the JWKS endpoint). A token naming a `kid` that Google does not publish
/// also fails while "loading the certificate", permanently: that token is
/// badly signed (401), not a reason to have the caller retry (503).
fn keys_unavailable(e: &google_cloud_auth::credentials::idtoken::verifier::Error) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<google_cloud_auth::errors::CredentialsError>())
        .is_some_and(|c| c.is_transient())
}

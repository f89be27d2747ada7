//! The suite's own tokens: RS256 JWTs issued by its identity service
//! ("Core", issuer `hivematrix-core`), verified against the keys it
//! publishes at `<core_url>/.well-known/jwks.json`. The key set is cached;
//! a token naming a key the cache lacks fetches it again, at most once a
//! minute, so a stream of forged `kid`s cannot make Codex hammer Core.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The issuer the suite's tokens carry.
pub const ISSUER: &str = "hivematrix-core";

/// How often the key set may be fetched when a token names an unknown key.
const REFETCH_EVERY: Duration = Duration::from_secs(60);

/// How long fetching the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token was refused; the message is safe to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is not a well-formed RS256 JWT with a `kid`.
    #[error("the token is not an RS256 JWT with a key id")]
    Malformed,
    /// No key of the published set has the token's `kid`.
    #[error("the token's signing key is not one Core publishes")]
    UnknownKey,
    /// The key set could not be fetched or read.
    #[error("Core's signing keys could not be fetched")]
    KeysUnavailable,
    /// Bad signature, wrong issuer, expired, or not yet valid.
    #[error("the token is invalid or expired")]
    Invalid,
}

/// Verifies tokens against one Core's published keys.
pub struct Verifier {
    core_url: String,
    jwks_url: String,
    refetch_every: Duration,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    keys: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

impl Verifier {
    /// A verifier for the Core at `core_url` (no trailing slash needed).
    pub fn new(core_url: &str) -> Verifier {
        Verifier {
            core_url: core_url.to_string(),
            jwks_url: format!("{}/.well-known/jwks.json", core_url.trim_end_matches('/')),
            refetch_every: REFETCH_EVERY,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Whether this verifier checks tokens of the Core at `core_url`.
    pub fn serves(&self, core_url: &str) -> bool {
        self.core_url == core_url
    }

    /// Checks `token`: signed by a published key, issued by Core, not expired.
    pub fn verify(&self, token: &str) -> Result<(), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = match (header.alg, header.kid) {
            (Algorithm::RS256, Some(kid)) => kid,
            _ => return Err(TokenError::Malformed),
        };
        let key = self.key(&kid)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[ISSUER]);
        // The suite's tokens name no audience; the predecessor checks none.
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map(drop)
            .map_err(|_| TokenError::Invalid)
    }

    /// The key `kid`, from the cache or, when it is not there and the last
    /// fetch is a minute old, from Core.
    fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cache.find(kid) {
            return key;
        }
        if cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.refetch_every)
        {
            return Err(if cache.keys.is_some() {
                TokenError::UnknownKey
            } else {
                TokenError::KeysUnavailable
            });
        }
        cache.fetched_at = Some(Instant::now());
        match fetch(&self.jwks_url) {
            Ok(keys) => cache.keys = Some(keys),
            Err(error) => {
                log::warn!(
                    "cannot fetch Core's signing keys from {}: {error}",
                    self.jwks_url
                );
                if cache.keys.is_none() {
                    return Err(TokenError::KeysUnavailable);
                }
            }
        }
        cache.find(kid).unwrap_or(Err(TokenError::UnknownKey))
    }
}

impl Cache {
    fn find(&self, kid: &str) -> Option<Result<DecodingKey, TokenError>> {
        let jwk = self.keys.as_ref()?.find(kid)?;
        Some(DecodingKey::from_jwk(jwk).map_err(|_| TokenError::KeysUnavailable))
    }
}

fn fetch(url: &str) -> Result<JwkSet, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .user_agent(concat!("codex/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not a JWK set: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_is_not_a_jwt_is_malformed() {
        let verifier = Verifier::new("http://127.0.0.1:9");
        assert_eq!(verifier.verify("abc"), Err(TokenError::Malformed));
    }

    #[test]
    fn an_hs256_token_is_refused_before_any_key_is_fetched() {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"iss": ISSUER, "exp": 4_000_000_000u64}),
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let verifier = Verifier::new("http://127.0.0.1:9");
        assert_eq!(verifier.verify(&token), Err(TokenError::Malformed));
        assert!(verifier.cache.lock().unwrap().fetched_at.is_none());
    }

    /// A token with `kid` whose signature is not checked before the key is found.
    fn token_with_kid(kid: &str) -> String {
        let header = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#),
        );
        format!("{header}.e30.c2ln")
    }

    #[test]
    fn an_unknown_key_fetches_the_set_again_once_the_interval_has_passed() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let kid = std::sync::Arc::new(Mutex::new("old"));
        let published = kid.clone();
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let kid = *published.lock().unwrap();
                let set = serde_json::json!({"keys": [
                    {"kty": "RSA", "kid": kid, "alg": "RS256", "n": "sXch", "e": "AQAB"}
                ]});
                let _ = request.respond(tiny_http::Response::from_string(set.to_string()));
            }
        });
        let mut verifier = Verifier::new(&url);
        verifier.refetch_every = Duration::from_millis(200);
        // The first token fetches the set; "new" is not in it.
        assert_eq!(
            verifier.verify(&token_with_kid("new")),
            Err(TokenError::UnknownKey)
        );
        *kid.lock().unwrap() = "new";
        // Within the interval the set is not fetched again.
        assert_eq!(
            verifier.verify(&token_with_kid("new")),
            Err(TokenError::UnknownKey)
        );
        let fetched = verifier.cache.lock().unwrap().fetched_at.unwrap();
        while fetched.elapsed() < verifier.refetch_every {
            std::thread::park_timeout(verifier.refetch_every - fetched.elapsed());
        }
        // After it, the unknown key fetches the set, finds the key, and the
        // (bogus) signature is what fails.
        assert_eq!(
            verifier.verify(&token_with_kid("new")),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn an_unreachable_core_is_asked_once_a_minute_at_most() {
        let token = token_with_kid("k1");
        let verifier = Verifier::new("http://127.0.0.1:9");
        assert_eq!(verifier.verify(&token), Err(TokenError::KeysUnavailable));
        let first = verifier.cache.lock().unwrap().fetched_at;
        assert!(first.is_some());
        assert_eq!(verifier.verify(&token), Err(TokenError::KeysUnavailable));
        assert_eq!(verifier.cache.lock().unwrap().fetched_at, first);
    }
}

//! Body signatures, for senders that sign what they send (`[webhooks]
//! signature`): Standard Webhooks (as Svix and relays such as Hookdeck
//! send) and GitHub-style `X-Hub-Signature-256`. A signature covers the
//! raw body, so it is checked once the body is read, after the checks of
//! the request head.
//!
//! Every comparison is constant-time (`Mac::verify_slice`), and every
//! configured secret is tried, so a rotation can run with old and new
//! secrets side by side.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{Secret, SignatureScheme};

/// How far a `webhook-timestamp` may be from Codex's clock, either way.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// The longest `webhook-id` accepted; Svix's are about 30 characters.
const MAX_ID_BYTES: usize = 256;
/// The most message ids remembered at once. Each costs a fixed ~125 bytes
/// whatever its length (ids are kept as 128 bits of their SHA-256): 8 MB
/// measured at the cap. Only senders holding a signing secret add to it.
pub const MAX_SEEN_IDS: usize = 65_536;
/// How long past its timestamp's tolerance an id is remembered, so that a
/// clock step on either side cannot reopen a replay.
const MARGIN: Duration = Duration::from_secs(60);

/// Why a delivery's signature was not accepted (each answered 401).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// A header the scheme needs is absent.
    #[error("the {0} header is missing")]
    Missing(&'static str),
    /// A header is present but not in the scheme's form.
    #[error("the {header} header is not {expected}")]
    Malformed {
        header: &'static str,
        expected: &'static str,
    },
    /// The timestamp is more than `TOLERANCE` from Codex's clock.
    #[error(
        "the webhook-timestamp is {0} s away from Codex's clock (at most 300 s is accepted); \
         check the sender's and this host's clocks"
    )]
    Stale(i64),
    /// No signature matches the body under any configured secret.
    #[error("the body's signature does not match any of [webhooks] signing_secrets")]
    Mismatch,
}

/// A verified Standard Webhooks message: its id, to be answered as a
/// duplicate when it comes again, and its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub timestamp: i64,
}

/// Checks `body` against `scheme`. `header` looks up a request header by
/// name (any case); `now` is Unix seconds. A Standard Webhooks delivery
/// returns its message id.
pub fn verify(
    scheme: SignatureScheme,
    secrets: &[Secret],
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
) -> Result<Option<Message>, SignatureError> {
    match scheme {
        SignatureScheme::None => Ok(None),
        SignatureScheme::HmacSha256 => {
            let given = header("X-Hub-Signature-256")
                .ok_or(SignatureError::Missing("X-Hub-Signature-256"))?;
            verify_hub(secrets, &given, body).map(|()| None)
        }
        SignatureScheme::StandardWebhooks => {
            let id = header("webhook-id").ok_or(SignatureError::Missing("webhook-id"))?;
            let timestamp =
                header("webhook-timestamp").ok_or(SignatureError::Missing("webhook-timestamp"))?;
            let signatures =
                header("webhook-signature").ok_or(SignatureError::Missing("webhook-signature"))?;
            verify_standard(secrets, &id, &timestamp, &signatures, body, now).map(Some)
        }
    }
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`;
/// `None` when the secret is not in that form.
pub fn standard_key(secret: &Secret) -> Option<Vec<u8>> {
    let encoded = secret.expose().trim().strip_prefix("whsec_")?;
    STANDARD.decode(encoded).ok().filter(|key| !key.is_empty())
}

/// `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the raw body
/// under one of `secrets`.
fn verify_hub(secrets: &[Secret], given: &str, body: &[u8]) -> Result<(), SignatureError> {
    let malformed = SignatureError::Malformed {
        header: "X-Hub-Signature-256",
        expected: "sha256=<64 hex digits>",
    };
    let hex = given
        .trim()
        .strip_prefix("sha256=")
        .ok_or(malformed.clone())?;
    let signature = decode_hex(hex).ok_or(malformed)?;
    let keys = secrets.iter().map(|s| s.expose().as_bytes().to_vec());
    if any_matches(keys, &[body], &[&signature]) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Standard Webhooks: one of the space-separated `v1,<base64>` entries is
/// the HMAC-SHA256 of `{id}.{timestamp}.{body}` under one of `secrets`,
/// and the timestamp is within `TOLERANCE` of `now`.
fn verify_standard(
    secrets: &[Secret],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<Message, SignatureError> {
    let id = id.trim();
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(SignatureError::Malformed {
            header: "webhook-id",
            expected: "a message id of 1 to 256 bytes",
        });
    }
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed {
            header: "webhook-timestamp",
            expected: "Unix seconds",
        })?;
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > TOLERANCE.as_secs() {
        return Err(SignatureError::Stale(skew));
    }
    let given: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect();
    if given.is_empty() {
        return Err(SignatureError::Malformed {
            header: "webhook-signature",
            expected: "space-separated v1,<base64> entries",
        });
    }
    let given: Vec<&[u8]> = given.iter().map(Vec::as_slice).collect();
    let prefix = format!("{id}.{timestamp}.");
    let keys = secrets.iter().filter_map(standard_key);
    if any_matches(keys, &[prefix.as_bytes(), body], &given) {
        Ok(Message {
            id: id.to_string(),
            timestamp,
        })
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// True when one of `given` is the HMAC-SHA256 of `content` (the parts
/// concatenated) under one of `keys`. Every pair is compared, in constant
/// time each.
fn any_matches(keys: impl Iterator<Item = Vec<u8>>, content: &[&[u8]], given: &[&[u8]]) -> bool {
    let mut matched = false;
    for key in keys {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            continue;
        };
        for part in content {
            mac.update(part);
        }
        for signature in given {
            matched |= mac.clone().verify_slice(signature).is_ok();
        }
    }
    matched
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What `SeenIds::begin` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The id is new; it is now held for this delivery until `finish`.
    New,
    /// A delivery with this id was stored already: answer it as a duplicate.
    Done,
    /// A delivery with this id is being handled right now.
    InProgress,
    /// The set is full of ids still within their window.
    Full,
}

/// The Standard Webhooks message ids seen lately, so that a repeated id is
/// answered as a duplicate without a second write. An id is kept until its
/// timestamp is out of `TOLERANCE` (plus a margin): past that, the
/// timestamp check refuses a replay anyway. At most `MAX_SEEN_IDS` are kept.
#[derive(Default)]
pub struct SeenIds {
    inner: Mutex<SeenInner>,
}

#[derive(Default)]
struct SeenInner {
    /// Id hash -> (forget after, Unix seconds; stored already).
    ids: HashMap<u128, (i64, bool)>,
    /// The same ids by when they are forgotten, to sweep in order.
    expiry: BTreeSet<(i64, u128)>,
}

impl SeenIds {
    /// Looks `message` up at `now`, and holds it when it is new.
    pub fn begin(&self, message: &Message, now: i64) -> Seen {
        let key = hash(&message.id);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.sweep(now);
        match inner.ids.get(&key) {
            Some((_, true)) => return Seen::Done,
            Some((_, false)) => return Seen::InProgress,
            None => {}
        }
        if inner.ids.len() >= MAX_SEEN_IDS {
            return Seen::Full;
        }
        let keep = (TOLERANCE + MARGIN).as_secs() as i64;
        let until = message.timestamp.max(now).saturating_add(keep);
        inner.ids.insert(key, (until, false));
        inner.expiry.insert((until, key));
        Seen::New
    }

    /// Ends the hold `begin` took: `stored` remembers the id as done, else
    /// it is forgotten so the sender's retry is handled afresh.
    pub fn finish(&self, message: &Message, stored: bool) {
        let key = hash(&message.id);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if stored {
            if let Some(entry) = inner.ids.get_mut(&key) {
                entry.1 = true;
            }
        } else if let Some((until, _)) = inner.ids.remove(&key) {
            inner.expiry.remove(&(until, key));
        }
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.ids.len()
    }
}

impl SeenInner {
    /// Forgets the ids whose window has passed.
    fn sweep(&mut self, now: i64) {
        while let Some(&(until, key)) = self.expiry.first() {
            if until > now {
                break;
            }
            self.expiry.pop_first();
            self.ids.remove(&key);
        }
    }
}

/// An id's key: 128 bits of its SHA-256, a fixed size whatever the id's
/// length (two of 65,536 ids collide with odds of about 1 in 10^29).
fn hash(id: &str) -> u128 {
    let digest = Sha256::digest(id.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published vector.
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: i64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    /// GitHub's published vector.
    const HUB_SECRET: &str = "It's a Secret to Everybody";
    const HUB_BODY: &[u8] = b"Hello, World!";
    const HUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn standard(
        secrets: &[&str],
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Option<Message>, SignatureError> {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        let header = |name: &str| match name {
            "webhook-id" => Some(SW_ID.to_string()),
            "webhook-timestamp" => Some(SW_TIMESTAMP.to_string()),
            "webhook-signature" => Some(signature.to_string()),
            _ => None,
        };
        verify(
            SignatureScheme::StandardWebhooks,
            &secrets,
            &header,
            body,
            now,
        )
    }

    fn hub(secrets: &[&str], signature: &str, body: &[u8]) -> Result<(), SignatureError> {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        let header = |name: &str| (name == "X-Hub-Signature-256").then(|| signature.to_string());
        verify(SignatureScheme::HmacSha256, &secrets, &header, body, 0).map(|_| ())
    }

    #[test]
    fn standard_webhooks_published_vector() {
        let message = standard(&[SW_SECRET], SW_SIGNATURE, SW_BODY, SW_TIMESTAMP).unwrap();
        assert_eq!(
            message,
            Some(Message {
                id: SW_ID.to_string(),
                timestamp: SW_TIMESTAMP
            })
        );
    }

    #[test]
    fn standard_webhooks_takes_any_listed_signature_and_secret() {
        let other = "v1,Ym9ndXNzaWduYXR1cmVib2d1c3NpZ25hdHVyZWJvZ3Vz";
        let listed = format!("v1a,abc {other} {SW_SIGNATURE}");
        assert!(standard(&[SW_SECRET], &listed, SW_BODY, SW_TIMESTAMP).is_ok());
        let rotated = ["whsec_b2xkIHNlY3JldCBvZiB0aGUgc2VuZGVy", SW_SECRET];
        assert!(standard(&rotated, SW_SIGNATURE, SW_BODY, SW_TIMESTAMP).is_ok());
    }

    #[test]
    fn standard_webhooks_refusals() {
        let now = SW_TIMESTAMP;
        assert_eq!(
            standard(&[SW_SECRET], SW_SIGNATURE, br#"{"test": 2432232315}"#, now),
            Err(SignatureError::Mismatch)
        );
        let wrong = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx";
        assert_eq!(
            standard(&[wrong], SW_SIGNATURE, SW_BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            standard(&[SW_SECRET], SW_SIGNATURE, SW_BODY, now + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            standard(&[SW_SECRET], SW_SIGNATURE, SW_BODY, now - 301),
            Err(SignatureError::Stale(-301))
        );
        assert!(standard(&[SW_SECRET], SW_SIGNATURE, SW_BODY, now + 300).is_ok());
        assert!(matches!(
            standard(&[SW_SECRET], "v2,abc", SW_BODY, now),
            Err(SignatureError::Malformed { .. })
        ));
        let none = |_: &str| None;
        assert_eq!(
            verify(SignatureScheme::StandardWebhooks, &[], &none, SW_BODY, now),
            Err(SignatureError::Missing("webhook-id"))
        );
    }

    #[test]
    fn hub_signature_published_vector_and_refusals() {
        assert_eq!(hub(&[HUB_SECRET], HUB_SIGNATURE, HUB_BODY), Ok(()));
        assert_eq!(
            hub(
                &["another", HUB_SECRET],
                &HUB_SIGNATURE.to_uppercase().replace("SHA256", "sha256"),
                HUB_BODY
            ),
            Ok(())
        );
        assert_eq!(
            hub(&[HUB_SECRET], HUB_SIGNATURE, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            hub(&["It's a Secret to Everybody!"], HUB_SIGNATURE, HUB_BODY),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            hub(&[HUB_SECRET], "sha1=abcd", HUB_BODY),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            hub(&[HUB_SECRET], &HUB_SIGNATURE[..70], HUB_BODY),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn standard_keys_need_the_whsec_prefix_and_base64() {
        assert_eq!(
            standard_key(&Secret::new(SW_SECRET)).map(|k| k.len()),
            Some(24)
        );
        assert_eq!(
            standard_key(&Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            None
        );
        assert_eq!(standard_key(&Secret::new("whsec_not base64!")), None);
        assert_eq!(standard_key(&Secret::new("whsec_")), None);
    }

    #[test]
    fn seen_ids_answer_duplicates_and_forget_after_the_window() {
        let seen = SeenIds::default();
        let message = Message {
            id: "msg_1".into(),
            timestamp: 1_000,
        };
        assert_eq!(seen.begin(&message, 1_000), Seen::New);
        assert_eq!(seen.begin(&message, 1_001), Seen::InProgress);
        seen.finish(&message, false);
        assert_eq!(seen.begin(&message, 1_002), Seen::New);
        seen.finish(&message, true);
        assert_eq!(seen.begin(&message, 1_003), Seen::Done);
        // Past the window the id is forgotten (a replay is then refused as stale).
        assert_eq!(seen.begin(&message, 1_002 + 361), Seen::New);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn seen_ids_are_bounded() {
        let seen = SeenIds::default();
        for n in 0..MAX_SEEN_IDS {
            let message = Message {
                id: format!("msg_{n}"),
                timestamp: 0,
            };
            assert_eq!(seen.begin(&message, 0), Seen::New);
        }
        let one_more = Message {
            id: "msg_last".into(),
            timestamp: 0,
        };
        assert_eq!(seen.begin(&one_more, 0), Seen::Full);
        assert_eq!(seen.len(), MAX_SEEN_IDS);
        // Once the window has passed, the old ones make room.
        assert_eq!(seen.begin(&one_more, 361), Seen::New);
        assert_eq!(seen.len(), 1);
    }
}

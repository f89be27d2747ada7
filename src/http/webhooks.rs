//! The webhook handlers: `/webhooks/<provider>/ticket` and
//! `/webhooks/test`. Each reads its request (body, signature, Standard
//! Webhooks id), calls one domain function (`delivery::deliver`) and maps
//! its typed outcome to an answer; failures go through `failure.rs`.

use std::io::Cursor;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tiny_http::{Request, Response};

use super::failure::Failure;
use super::response::json_response;
use super::routes::Scope;
use super::signature::{self, Seen};
use crate::config::SignatureScheme;
use crate::delivery::{self, Delivered, NotDelivered};
use crate::metrics;
use crate::psa::Provider;
use crate::store::Outcome;
use crate::timestamp;

/// A handler waits this long for its commit. Freshservice gives up after
/// about 15 s; answering 503 before that lets it retry cleanly.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// `POST /webhooks/<provider>/ticket`: the answer, with the delivery's log
/// line and metrics.
pub(super) fn ticket(
    state: &Scope,
    request: &mut Request,
    provider: Provider,
    client_ip: IpAddr,
    started: Instant,
) -> Response<Cursor<Vec<u8>>> {
    let outcome = read_body(request, state.config.server.max_body_bytes)
        .and_then(|body| deliver_signed(state, request, provider, client_ip, body));
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(answered) => {
            let outcome = answered.body["status"].as_str().unwrap_or("-");
            metrics::metrics().delivery(provider, outcome, answered.status);
            log::info!(
                "{provider} ticket={} event={} outcome={outcome} status={} {elapsed:.1}ms ip={client_ip}",
                answered.body["ticket_id"],
                answered.event,
                answered.status,
            );
            json_response(answered.status, &answered.body)
        }
        Err(failure) => {
            let answer = failure.answer();
            metrics::metrics().delivery(provider, "refused", answer.status);
            log::warn!(
                "{provider} ticket=- event=- outcome=refused status={} {elapsed:.1}ms ip={client_ip}: {}",
                answer.status,
                answer.message()
            );
            answer.into_response()
        }
    }
}

/// `POST /webhooks/test`: with a signature scheme, its body (often empty)
/// must be signed like a delivery's; the id of a Standard Webhooks test is
/// not remembered.
pub(super) fn test(
    state: &Scope,
    request: &mut Request,
    client_ip: IpAddr,
) -> Result<Response<Cursor<Vec<u8>>>, Failure> {
    if state.config.webhooks.signature != SignatureScheme::None {
        let body = read_body(request, state.config.server.max_body_bytes)?;
        verify_signature(state, request, &body)?;
    }
    Ok(json_response(
        200,
        &json!({
            "status": "ok",
            "message": "Webhook authentication successful",
            "source_ip": client_ip.to_string(),
            "timestamp": timestamp::now(),
        }),
    ))
}

/// The body, which tiny_http has read already (within `[server]
/// body_timeout`); one over `max` was left unread or cut short, and its
/// connection is closed after the answer.
fn read_body(request: &mut Request, max: usize) -> Result<Vec<u8>, Failure> {
    if request.body_length().is_some_and(|n| n > max) {
        return Err(Failure::BodyTooLarge { max });
    }
    // Taken, not copied: the body held is the one the in-flight budget
    // counted ([server] max_inflight_body_bytes).
    let body = request.take_body();
    if body.len() > max {
        return Err(Failure::BodyTooLarge { max });
    }
    Ok(body)
}

/// Checks the body's signature under `[webhooks] signature`; a Standard
/// Webhooks delivery returns its message.
fn verify_signature(
    state: &Scope,
    request: &Request,
    body: &[u8],
) -> Result<Option<signature::Message>, Failure> {
    let webhooks = &state.config.webhooks;
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
    };
    signature::verify(
        webhooks.signature,
        &webhooks.signing_secrets,
        &header,
        body,
        signature::unix_now(),
    )
    .map_err(Failure::BadSignature)
}

/// A delivery's answer: status and body, and the event for the log line.
struct Answered {
    status: u16,
    body: Value,
    event: &'static str,
}

/// Verifies the body's signature, then delivers it; a Standard Webhooks
/// message whose id was stored already is answered as a duplicate and not
/// written again.
fn deliver_signed(
    state: &Scope,
    request: &Request,
    provider: Provider,
    client_ip: IpAddr,
    body: Vec<u8>,
) -> Result<Answered, Failure> {
    let deliver = |body| {
        delivery::deliver(
            state.store,
            state.config,
            provider,
            client_ip,
            body,
            COMMIT_WAIT,
        )
    };
    let Some(message) = verify_signature(state, request, &body)? else {
        return answer(provider, deliver(body));
    };
    match state.seen_ids.begin(&message, signature::unix_now()) {
        Seen::New => {}
        Seen::Done => {
            return Ok(Answered {
                status: 200,
                body: json!({
                    "status": "duplicate",
                    "webhook_id": message.id,
                    "provider": provider.as_str(),
                }),
                event: "-",
            });
        }
        Seen::InProgress => return Err(Failure::MessageInProgress),
        Seen::Full => return Err(Failure::TooManyMessageIds),
    }
    let outcome = deliver(body);
    // Kept as seen once the delivery is in the database (stored, or
    // journaled and refused); a failure the sender should retry forgets it.
    let stored = !matches!(outcome, Err(NotDelivered::Store(_)));
    state.seen_ids.finish(&message, stored);
    answer(provider, outcome)
}

/// The answer to what `delivery::deliver` did: 201 for a new ticket, 200
/// for any other write, a failure for a refused or uncommitted one.
fn answer(
    provider: Provider,
    outcome: Result<Delivered, NotDelivered>,
) -> Result<Answered, Failure> {
    let delivered = match outcome {
        Ok(delivered) => delivered,
        Err(NotDelivered::Refused { refusal, ticket_id }) => {
            return Err(Failure::Refused { refusal, ticket_id });
        }
        Err(NotDelivered::Store(error)) => return Err(Failure::Write(error)),
    };
    let mut body = json!({
        "status": delivered.outcome.as_str(),
        "ticket_id": delivered.ticket_id,
        "provider": provider.as_str(),
    });
    let map = body
        .as_object_mut()
        .expect("a json! object literal is an object");
    match &delivered.outcome {
        Outcome::Updated { changes, .. } => {
            map.insert("changes".into(), json!(changes));
        }
        Outcome::Deleted { new_status, .. } => {
            map.insert("new_status".into(), json!(new_status));
        }
        Outcome::Ignored { reason } => {
            map.insert("reason".into(), json!(reason));
        }
        Outcome::Stale { stored_updated_at } => {
            map.insert("stored_updated_at".into(), json!(stored_updated_at));
            map.insert("event_updated_at".into(), json!(delivered.event_updated_at));
        }
        Outcome::Created | Outcome::Unchanged | Outcome::Rejected => {}
    }
    if !delivered.warnings.is_empty() {
        map.insert("warnings".into(), json!(delivered.warnings));
    }
    let status = if delivered.outcome == Outcome::Created {
        201
    } else {
        200
    };
    Ok(Answered {
        status,
        body,
        event: delivered.event,
    })
}

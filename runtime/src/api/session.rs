//! Signing a browser in (ADR 33, 34): `EventSource` cannot send an
//! `Authorization` header, so a browser trades its token for an HttpOnly,
//! SameSite=Strict cookie holding a random session id (never the token),
//! `Secure` when reel serves TLS (`--tls-cert`),
//! checked like the header. A request
//! that changes anything and is signed in only by the cookie must also
//! carry `X-Reel-CSRF`: a header another site's page cannot add without a
//! CORS preflight, which reel never grants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::JsonBody;
use super::{ApiError, Services};
use crate::config::tokens::{Token, Tokens, sha256};

/// The cookie's name.
pub const COOKIE: &str = "reel_session";

/// The header a cookie-signed request that changes state must carry.
pub const CSRF_HEADER: &str = "x-reel-csrf";

/// How long a browser stays signed in.
const MAX_AGE_SECONDS: u32 = 12 * 3600;

/// Sessions kept at once; signing in past this forgets the oldest.
const MOST_SESSIONS: usize = 10_000;

/// Signed-in browsers: the SHA-256 of each session id, with the name of its
/// token and when it ends. Kept in memory: a restart signs every browser out.
#[derive(Clone, Default)]
pub struct Sessions {
    live: Arc<Mutex<HashMap<[u8; 32], Session>>>,
}

/// A session's token name and when it ends.
type Session = (String, Instant);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({})", self.live.lock().expect("not poisoned").len())
    }
}

impl Sessions {
    /// A new session of the token `name`: its id, for the cookie.
    fn open(&self, name: &str) -> Result<String, ApiError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("no randomness: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.live.lock().expect("not poisoned");
        live.retain(|_, (_, ends)| *ends > now);
        if live.len() >= MOST_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, (_, ends))| *ends).map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(sha256(&id), (name.to_owned(), now + Duration::from_secs(MAX_AGE_SECONDS.into())));
        Ok(id)
    }

    /// The token of the session `id`, while it lasts and the token exists.
    pub fn token<'a>(&self, tokens: &'a Tokens, id: &str) -> Option<&'a Token> {
        let live = self.live.lock().expect("not poisoned");
        let (name, ends) = live.get(&sha256(id))?;
        (*ends > Instant::now()).then(|| tokens.named(name)).flatten()
    }

    fn close(&self, id: &str) {
        self.live.lock().expect("not poisoned").remove(&sha256(id));
    }
}

/// `POST /session` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    token: String,
}

/// `GET /session`: whether reel asks for tokens, and who this browser is.
pub async fn show(State(services): State<Services>, headers: HeaderMap) -> Json<serde_json::Value> {
    let access = &services.access;
    let token = cookie(&headers).and_then(|id| access.sessions.token(&access.tokens, id));
    Json(json!({ "authentication": !access.tokens.is_empty(), "token": token.map(|t| &t.name) }))
}

/// `POST /session`: a token for a cookie.
pub async fn sign_in(
    State(services): State<Services>,
    JsonBody(SignIn { token }): JsonBody<SignIn>,
) -> Result<Response, ApiError> {
    let access = &services.access;
    let Some(found) = access.tokens.find(&token) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the token is not one reel accepts"));
    };
    let id = access.sessions.open(&found.name)?;
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECONDS}{}",
        if access.tls { "; Secure" } else { "" }
    );
    let cookie = HeaderValue::from_str(&cookie).expect("hex and ASCII");
    let mut response = Json(json!({ "token": found.name })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `DELETE /session`: sign out (the session ends, the cookie is dropped).
pub async fn sign_out(State(services): State<Services>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        services.access.sessions.close(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
    response
}

/// The session id in the session cookie, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

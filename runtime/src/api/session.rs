//! Signing a browser in (ADR 33): `EventSource` cannot send an
//! `Authorization` header, so a browser trades its token for an HttpOnly,
//! SameSite=Strict cookie holding it, checked like the header. A request
//! that changes anything and is signed in only by the cookie must also
//! carry `X-Reel-CSRF`: a header another site's page cannot add without a
//! CORS preflight, which reel never grants.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::JsonBody;
use super::{ApiError, Services};

/// The cookie's name.
pub const COOKIE: &str = "reel_session";

/// The header a cookie-signed request that changes state must carry.
pub const CSRF_HEADER: &str = "x-reel-csrf";

/// How long a browser stays signed in.
const MAX_AGE_SECONDS: u32 = 12 * 3600;

/// `POST /session` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    token: String,
}

/// `GET /session`: whether reel asks for tokens, and who this browser is.
pub async fn show(State(services): State<Services>, headers: HeaderMap) -> Json<serde_json::Value> {
    let access = &services.access;
    let token = cookie(&headers).and_then(|t| access.tokens.find(t));
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
    // A cookie value holds no `;`, `,`, space, quote or backslash.
    let cookie = HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECONDS}{}",
        if access.tls { "; Secure" } else { "" }
    ))
    .ok()
    .filter(|_| !token.contains([';', ',', '"', '\\']))
    .ok_or_else(|| ApiError::bad_request("this token holds characters a cookie cannot; make one with `reel token`"))?;
    let mut response = Json(json!({ "token": found.name })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `DELETE /session`: sign out (the cookie is dropped).
pub async fn sign_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
    response
}

/// The token in the session cookie, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

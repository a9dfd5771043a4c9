//! Deny by default (ADR 33): each route's scope is its operation's
//! `x-reel-scope` in `openapi.json` (`open`, `read`, `append` or `admin`),
//! read once and looked up by the route axum matched. A route whose
//! operation declares no scope is refused whether or not tokens are set,
//! so a new route cannot ship unguarded: declaring it is the only way in.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::session::{self, CSRF_HEADER};
use crate::config::Config;
use crate::config::tokens::{Scope, Token, Tokens};

/// Who may call what: the tokens, and whether `/metrics` is open.
#[derive(Clone, Debug)]
pub struct Access {
    /// Accepted tokens; none turns authentication off.
    pub tokens: Tokens,
    /// `GET /metrics` without a token (for scrapers that send none).
    pub metrics_open: bool,
    /// Served over TLS: the session cookie is `Secure`.
    pub tls: bool,
    /// How long an ordinary request may take; streaming routes are exempt.
    pub request_timeout: std::time::Duration,
    /// Requests in flight per route class, beyond which reel answers 503.
    pub classes: Classes,
    /// Host names allowed besides loopback names and addresses, without tokens.
    pub allowed_hosts: Vec<String>,
    /// Signed-in browsers.
    pub sessions: session::Sessions,
}

/// Caps on requests in flight, per route class: a flood of reads cannot
/// starve appends or an administrator's pause.
#[derive(Clone, Debug)]
pub struct Classes {
    read: Arc<tokio::sync::Semaphore>,
    append: Arc<tokio::sync::Semaphore>,
    admin: Arc<tokio::sync::Semaphore>,
    streams: Arc<tokio::sync::Semaphore>,
}

impl Classes {
    /// Caps for reads (and open routes), appends, admin calls and open streams.
    pub fn new(read: usize, append: usize, admin: usize, streams: usize) -> Self {
        let cap = |n| Arc::new(tokio::sync::Semaphore::new(n));
        Self { read: cap(read), append: cap(append), admin: cap(admin), streams: cap(streams) }
    }
}

impl Default for Classes {
    fn default() -> Self {
        let c = crate::config::RequestLimits::default();
        Self::new(c.reads, c.appends, c.admin, c.streams)
    }
}

impl Access {
    /// As configured.
    pub fn from_config(config: &Config) -> Arc<Self> {
        let r = &config.requests;
        Arc::new(Self {
            tokens: config.tokens.clone(),
            metrics_open: config.metrics_open,
            tls: config.tls.is_some(),
            request_timeout: r.timeout,
            classes: Classes::new(r.reads, r.appends, r.admin, r.streams),
            allowed_hosts: config.allowed_hosts.clone(),
            sessions: session::Sessions::default(),
        })
    }
}

impl Default for Access {
    fn default() -> Self {
        Self {
            tokens: Tokens::default(),
            metrics_open: false,
            tls: false,
            request_timeout: crate::config::RequestLimits::default().timeout,
            classes: Classes::default(),
            allowed_hosts: Vec::new(),
            sessions: session::Sessions::default(),
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: the dashboard's files, `/healthz`, `/openapi.json`.
    Open,
    /// A token with this scope.
    Token(Scope),
}

/// The scopes `openapi.json` declares, by (path template, method).
pub struct RouteScopes {
    scopes: HashMap<(String, Method), Needs>,
    paths: HashSet<String>,
    /// Operations answering `text/event-stream`: no total request timeout.
    streaming: HashSet<(String, Method)>,
    /// Operations whose `x-reel-scope` is missing or unknown (refused).
    pub undeclared: Vec<String>,
}

impl RouteScopes {
    /// Read the operations of an OpenAPI document.
    pub fn parse(openapi: &str) -> Self {
        let document: serde_json::Value = serde_json::from_str(openapi).expect("openapi.json is JSON");
        let mut routes =
            Self { scopes: HashMap::new(), paths: HashSet::new(), streaming: HashSet::new(), undeclared: Vec::new() };
        for (path, operations) in document["paths"].as_object().into_iter().flatten() {
            routes.paths.insert(path.clone());
            for (method, operation) in operations.as_object().into_iter().flatten() {
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else { continue };
                let needs = match operation["x-reel-scope"].as_str() {
                    Some("open") => Needs::Open,
                    Some("read") => Needs::Token(Scope::Read),
                    Some("append") => Needs::Token(Scope::Append),
                    Some("admin") => Needs::Token(Scope::Admin),
                    _ => {
                        routes.undeclared.push(format!("{method} {path}"));
                        continue;
                    }
                };
                if operation["responses"]["200"]["content"]["text/event-stream"].is_object() {
                    routes.streaming.insert((path.clone(), method.clone()));
                }
                routes.scopes.insert((path.clone(), method), needs);
            }
        }
        routes
    }

    /// What `method` on the route `template` (axum's syntax) needs.
    pub fn lookup(&self, template: &str, method: &Method) -> Lookup {
        // axum writes a catch-all `{*key}`; OpenAPI has no such syntax.
        let path = template.replace("{*", "{");
        let method = if method == Method::HEAD { &Method::GET } else { method };
        match self.scopes.get(&(path.clone(), method.clone())) {
            Some(needs) => Lookup::Declared(*needs),
            None if self.paths.contains(&path) => Lookup::OtherMethod,
            None => Lookup::Undeclared,
        }
    }
}

impl RouteScopes {
    /// Does `method` on `template` answer a stream?
    pub fn streams(&self, template: &str, method: &Method) -> bool {
        self.streaming.contains(&(template.replace("{*", "{"), method.clone()))
    }
}

/// A route's declaration.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Its operation's scope.
    Declared(Needs),
    /// The path is documented, this method is not: 405, as axum would.
    OtherMethod,
    /// Neither: refused.
    Undeclared,
}

/// The scopes of reel's own `openapi.json`.
pub static ROUTES: LazyLock<RouteScopes> = LazyLock::new(|| RouteScopes::parse(super::OPENAPI));

/// The middleware: the caller's token against the matched route's scope.
pub async fn guard(
    State(access): State<Arc<Access>>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(refused) = super::origin::refuse(&access, &request) {
        return refused;
    }
    let method = request.method().clone();
    let Some(matched) = matched else {
        // No route matched: reel's 404 (nothing behind it) once authenticated.
        return match caller(&access, &request) {
            _ if access.tokens.is_empty() => next.run(request).await,
            Ok(_) => next.run(request).await,
            Err(presented) => unauthorized(presented),
        };
    };
    let needs = match ROUTES.lookup(matched.as_str(), &method) {
        Lookup::Declared(needs) => needs,
        Lookup::OtherMethod => {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; see GET /openapi.json"),
            )
            .into_response();
        }
        Lookup::Undeclared => {
            tracing::error!("{method} {} has no x-reel-scope in openapi.json: refused", matched.as_str());
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "undeclared_route",
                format!("{method} {} declares no scope in reel's openapi.json; reel refuses it", matched.as_str()),
            )
            .into_response();
        }
    };
    let streaming = ROUTES.streams(matched.as_str(), &method);
    let scope = match needs {
        Needs::Open => return limited(&access, None, streaming, request, next).await,
        Needs::Token(scope) if access.tokens.is_empty() => {
            return limited(&access, Some(scope), streaming, request, next).await;
        }
        Needs::Token(scope) if access.metrics_open && matched.as_str() == "/metrics" => {
            return limited(&access, Some(scope), streaming, request, next).await;
        }
        Needs::Token(scope) => scope,
    };
    let token = match caller(&access, &request) {
        Ok(Caller::Header(token)) => token,
        Ok(Caller::Cookie(token)) if changes_nothing(&method) || request.headers().contains_key(CSRF_HEADER) => token,
        Ok(Caller::Cookie(_)) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                format!("a {method} signed in by the session cookie must carry the {CSRF_HEADER} header"),
            )
            .into_response();
        }
        Err(presented) => return unauthorized(presented),
    };
    // `read:NAME` names a projection: only the projections' routes take it.
    let projection = params
        .ok()
        .filter(|_| matched.as_str().starts_with("/projections/{name}"))
        .and_then(|p| p.iter().find(|(k, _)| *k == "name").map(|(_, v)| v.to_owned()));
    if !token.grants.allow(scope, projection.as_deref()) {
        let which = match (scope, &projection) {
            (Scope::Read, Some(name)) => format!("`read` (or `read:{name}`)"),
            _ => format!("`{}`", scope.name()),
        };
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token `{}` may not {method} {}: that needs scope {which}", token.name, matched.as_str()),
        )
        .into_response();
    }
    if scope == Scope::Admin {
        tracing::info!(token = %token.name, "{method} {}", request.uri().path());
    }
    limited(&access, Some(scope), streaming, request, next).await
}

/// Run an allowed request within its class's cap and, unless it streams,
/// the total request timeout (whose 503 leaves the outcome unknown: an
/// append may still commit, and retrying it with its expected version is safe).
async fn limited(access: &Access, scope: Option<Scope>, streaming: bool, request: Request, next: Next) -> Response {
    let class = match scope {
        _ if streaming => &access.classes.streams,
        Some(Scope::Append) => &access.classes.append,
        Some(Scope::Admin) => &access.classes.admin,
        Some(Scope::Read) | None => &access.classes.read,
    };
    let Ok(permit) = class.clone().try_acquire_owned() else {
        // `busy` answers carry `Retry-After` (api/error.rs).
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many requests of this kind in flight; try again in a moment",
        )
        .into_response();
    };
    if streaming {
        // The permit lives as long as the stream does.
        let response = next.run(request).await;
        return response.map(|body| {
            axum::body::Body::from_stream(futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
                let _held = &permit;
                chunk
            }))
        });
    }
    let limit = access.request_timeout;
    let response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!("the request took longer than {limit:?}; its outcome is unknown"),
        )
        .into_response(),
    };
    drop(permit);
    response
}

/// What a request presented, when it is not an accepted token.
#[derive(Debug, Clone, Copy)]
enum Presented {
    None,
    Unknown,
}

/// How a request presented its accepted token.
enum Caller<'a> {
    /// `Authorization: Bearer`.
    Header(&'a Token),
    /// The session cookie of a signed-in browser.
    Cookie(&'a Token),
}

/// The token of the request's `Authorization: Bearer`, or else of its
/// session cookie.
fn caller<'a>(access: &'a Access, request: &Request) -> Result<Caller<'a>, Presented> {
    let tokens = &access.tokens;
    let Some(header) = request.headers().get(header::AUTHORIZATION) else {
        let id = session::cookie(request.headers()).ok_or(Presented::None)?;
        return access.sessions.token(tokens, id).map(Caller::Cookie).ok_or(Presented::Unknown);
    };
    let value = header.to_str().map_err(|_| Presented::Unknown)?;
    let (kind, token) = value.split_once(' ').ok_or(Presented::Unknown)?;
    if !kind.eq_ignore_ascii_case("bearer") {
        return Err(Presented::Unknown);
    }
    tokens.find(token.trim()).map(Caller::Header).ok_or(Presented::Unknown)
}

/// Methods a cross-site page may send without a preflight, and which change
/// nothing in reel.
fn changes_nothing(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn unauthorized(presented: Presented) -> Response {
    let (message, challenge) = match presented {
        Presented::None => (
            "this route needs a token: send `Authorization: Bearer TOKEN` (the CLI: --token or REEL_TOKEN)",
            r#"Bearer realm="reel""#,
        ),
        Presented::Unknown => ("the token is not one reel accepts", r#"Bearer realm="reel", error="invalid_token""#),
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_route_without_a_declared_scope_is_refused_even_without_tokens() {
        let app = axum::Router::new()
            .route("/undeclared", axum::routing::get(|| async { "served" }))
            .layer(axum::middleware::from_fn_with_state(Arc::new(Access::default()), guard));
        let request = Request::builder().uri("/undeclared").body(axum::body::Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "undeclared_route");
        assert_eq!(
            body["error"]["message"],
            "GET /undeclared declares no scope in reel's openapi.json; reel refuses it"
        );
    }

    #[test]
    fn every_operation_of_openapi_declares_a_scope() {
        assert_eq!(ROUTES.undeclared, Vec::<String>::new(), "operations without a valid x-reel-scope");
    }

    #[tokio::test]
    async fn ordinary_requests_time_out_and_streams_do_not_and_classes_are_capped() {
        let slow = || async {
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            "late"
        };
        let access = Access {
            request_timeout: std::time::Duration::from_millis(100),
            classes: Classes::new(8, 8, 8, 1),
            ..Access::default()
        };
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(slow))
            .route("/events/live", axum::routing::get(slow))
            .layer(axum::middleware::from_fn_with_state(Arc::new(access), guard));
        let call =
            |uri: &str| app.clone().oneshot(Request::builder().uri(uri).body(axum::body::Body::empty()).unwrap());
        let response = call("/healthz").await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("request_timeout"));

        // A stream outlives the timeout, and holds its class's one place
        // until its body is dropped.
        let stream = call("/events/live").await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let busy = call("/events/live").await.unwrap();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        drop(stream);
        assert_eq!(call("/events/live").await.unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn routes_are_found_by_axum_template_and_method() {
        let routes = RouteScopes::parse(
            r#"{"paths": {"/a/{key}": {"get": {"x-reel-scope": "read"}, "post": {}}, "/b": {"get": {"x-reel-scope": "open"}}}}"#,
        );
        assert_eq!(routes.lookup("/a/{*key}", &Method::GET), Lookup::Declared(Needs::Token(Scope::Read)));
        assert_eq!(routes.lookup("/a/{*key}", &Method::HEAD), Lookup::Declared(Needs::Token(Scope::Read)));
        assert_eq!(routes.lookup("/a/{key}", &Method::POST), Lookup::OtherMethod);
        assert_eq!(routes.lookup("/b", &Method::GET), Lookup::Declared(Needs::Open));
        assert_eq!(routes.lookup("/c", &Method::GET), Lookup::Undeclared);
        assert_eq!(routes.undeclared, vec!["POST /a/{key}".to_owned()]);
    }
}

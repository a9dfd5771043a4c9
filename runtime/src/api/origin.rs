//! Requests a browser sends on another site's behalf (ADR 34). Tokens or
//! not, a request that may change something (any method but GET, HEAD and
//! OPTIONS) coming from a browser must come from reel's own origin or carry
//! `X-Reel-CSRF`, which no other site's page can add without a CORS
//! preflight that reel never grants. A request with neither `Origin` nor
//! `Sec-Fetch-Site` did not come from a browser (every current browser sends
//! `Origin` on such requests), so curl, the CLI and services pass.
//!
//! Without tokens, `Host` must also be a name only this machine resolves
//! (`localhost`, a name without a dot), an IP address, or one given with
//! `--allow-host`: a DNS-rebinding page reaches reel under its own domain
//! and would otherwise be same-origin with it.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::auth::Access;
use super::session::CSRF_HEADER;

/// The refusal of a request a browser sent for another site, if it is one.
pub fn refuse(access: &Access, request: &Request) -> Option<Response> {
    let headers = request.headers();
    if access.tokens.is_empty()
        && let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && !host_allowed(host, &access.allowed_hosts)
    {
        let name = host_name(host);
        return Some(
            ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "reel runs without tokens and answers only requests for localhost or an IP address, not for \
                     `{name}` (a page could rebind that name to this machine); open it by address, or start reel \
                     with --allow-host {name}"
                ),
            )
            .into_response(),
        );
    }
    let method = request.method();
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || headers.contains_key(CSRF_HEADER)
        || same_origin(headers)
    {
        return None;
    }
    Some(
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!(
                "a {method} from a page of another origin is refused; a client of reel's API sends no Origin \
                 header or adds the {CSRF_HEADER} header (any value)"
            ),
        )
        .into_response(),
    )
}

/// Sent by no browser, or by a page of reel's own origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    match (text("sec-fetch-site"), text(header::ORIGIN.as_str())) {
        // `none`: the user typed the address or used a bookmark.
        (Some(site), _) => site == "same-origin" || site == "none",
        // Browsers before `Sec-Fetch-Site` still send `Origin`; `null` is
        // an opaque origin (a sandboxed frame, a file), never reel's own.
        (None, Some(origin)) => {
            let authority = origin.split_once("://").map(|(_, rest)| rest);
            authority.is_some_and(|a| Some(a) == text(header::HOST.as_str()))
        }
        (None, None) => true,
    }
}

/// `host[:port]` without its port, lower-cased, without a trailing dot.
fn host_name(host: &str) -> String {
    let name = match host.strip_prefix('[') {
        Some(v6) => return format!("[{}]", v6.split(']').next().unwrap_or("")),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.starts_with('[')
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || !name.contains('.')
        || name.ends_with(".localhost")
        || allowed.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_rebinding_page_would_use_are_refused() {
        let allowed = vec!["reel.internal".to_owned()];
        for host in
            ["127.0.0.1:8080", "localhost:8080", "LOCALHOST.", "[::1]:80", "reel", "app.localhost:1", "10.0.0.2"]
        {
            assert!(host_allowed(host, &[]), "{host}");
        }
        assert!(host_allowed("reel.internal:8080", &allowed));
        for host in ["evil.example:8080", "evil.example", "127.0.0.1.nip.io:8080", "localhost.evil.example"] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
    }
}

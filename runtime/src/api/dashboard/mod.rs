//! The dashboard at `GET /`: plain HTML, CSS and JavaScript modules built
//! into the binary, no build step. The page holds no data of its own: it
//! polls the JSON routes every client can call (ADR 36).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::extract::Path;

/// A file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// A hash of `body` made at compile time: the page is revalidated on
    /// every load (a new reel serves new files) and a 304 saves the body.
    etag: &'static str,
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {{
        const BODY: &str = include_str!($name);
        const HASH: [u8; 18] = etag(BODY.as_bytes());
        Asset {
            name: $name,
            content_type: $content_type,
            body: BODY,
            etag: match std::str::from_utf8(&HASH) {
                Ok(etag) => etag,
                Err(_) => panic!("an etag is ASCII"),
            },
        }
    }};
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: [Asset; 6] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("dashboard.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("module.js", JS),
    asset!("view.js", JS),
];

/// What the page may do: its own scripts and styles, requests to this
/// server, nothing inline (every value is inserted as text, never as HTML).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the dashboard.
pub async fn page(headers: HeaderMap) -> Response {
    let mut response = serve(&ASSETS[0], &headers);
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /dashboard/{file}`: its scripts and styles.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().skip(1).find(|a| a.name == file) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found(format!("the dashboard has no file `{file}`")).into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let fresh = request.get(header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.to_str().is_ok_and(|tags| tags.split(',').any(|t| t.trim().trim_start_matches("W/") == asset.etag))
    });
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// `"` + 16 hex digits of FNV-1a over `bytes` + `"`, at compile time.
const fn etag(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let mut out = [b'"'; 18];
    let mut digit = 0;
    while digit < 16 {
        out[16 - digit] = b"0123456789abcdef"[(hash >> (4 * digit) & 0xf) as usize];
        digit += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served() {
        let html = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            let linked = html.contains(&format!("/dashboard/{}", asset.name))
                || ASSETS.iter().any(|a| a.body.contains(&format!("'./{}'", asset.name)));
            assert!(linked, "{} is served but nothing loads it", asset.name);
        }
        for script in ASSETS.iter().filter(|a| a.content_type == JS) {
            for import in script.body.lines().filter_map(|l| l.split("from './").nth(1)) {
                let name = import.split('\'').next().unwrap();
                assert!(ASSETS.iter().any(|a| a.name == name), "{} imports {name}, which is not served", script.name);
            }
        }
    }

    #[test]
    fn etags_differ_with_content() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(&etag(b"")[..], b"\"cbf29ce484222325\"");
    }
}

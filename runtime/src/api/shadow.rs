//! Shadow runs (ADR 48): a module built beside a projection's serving
//! version, compared with it at one position, then promoted or discarded.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Path, Query};
use super::{ApiError, Services};
use crate::deploy::DiffPage;
use crate::reads::ShadowInfo;

/// Largest module a shadow run takes (a Python component is tens of MB).
pub const MODULE_LIMIT: usize = 256 << 20;

/// Most differences on a page.
const MAX_PAGE: usize = 1000;

/// `POST /projections/{name}/shadow`, the component's bytes as the body:
/// built beside the serving version; compared once it has caught up.
pub async fn start(
    State(services): State<Services>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "send the module (a .wasm component) as the body: curl --data-binary @FILE -H 'Content-Type: application/wasm'",
        ));
    }
    let ns = services.deployments.shadow(&name, body.to_vec()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "projection": name, "shadow": ns.slug(), "version": ns.version }))))
}

/// `GET /projections/{name}/shadow`: its progress and comparison.
pub async fn show(State(services): State<Services>, Path(name): Path<String>) -> Result<Json<ShadowInfo>, ApiError> {
    Ok(Json(services.reads.shadow(&name).await?))
}

/// A page of differences.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    after: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// `GET /projections/{name}/shadow/diff?after=&limit=`: what differs
/// between the serving read model and the shadow's, at one position.
pub async fn diff(
    State(services): State<Services>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<DiffPage>, ApiError> {
    Ok(Json(services.deployments.shadow_diff(&name, page.after, page.limit.min(MAX_PAGE))?))
}

/// `POST /projections/{name}/shadow/compare`: compare again, at a later
/// position.
pub async fn compare(State(services): State<Services>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let compared = services.deployments.compare_shadow(&name).await?;
    Ok(Json(json!({
        "projection": name,
        "position": compared.cursor.id,
        "cursor": compared.cursor,
        "differences": compared.differences.len(),
    })))
}

/// `POST /projections/{name}/shadow/promote`: reads switch to the shadow
/// once it has caught up, as at a version's cut-over.
pub async fn promote(
    State(services): State<Services>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = services.deployments.promote(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "projection": name, "promoted": ns.slug() }))))
}

/// `DELETE /projections/{name}/shadow`: the shadow stops, its namespace and
/// module file are dropped.
pub async fn discard(State(services): State<Services>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let ns = services.deployments.discard_shadow(&name).await?;
    Ok(Json(json!({ "projection": name, "discarded": ns.slug() })))
}

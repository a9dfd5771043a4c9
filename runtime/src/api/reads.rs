//! Reads of a projection's read model: KV, tables, custom queries. Each
//! accepts `min_position=N` to wait until the projection has applied event N.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::extract::{JsonBody, Path, Query};
use super::{ApiError, Services};
use crate::store::TableRead;

/// Largest `limit` for KV scans and table reads.
const MAX_LIMIT: usize = 10_000;
/// `limit` when none is given.
const DEFAULT_LIMIT: usize = 100;

/// A KV value as JSON: the value itself if it is JSON, else a string (UTF-8)
/// or an array of bytes.
pub(super) fn value_json(bytes: &[u8]) -> Value {
    if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
        return json;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => bytes.iter().map(|b| Value::from(*b)).collect(),
    }
}

/// `order=col`, `col.asc` or `col.desc` (any case): the column and whether
/// descending.
fn order(value: &str) -> Result<(String, bool), ApiError> {
    let Some((column, direction)) = value.rsplit_once('.') else { return Ok((value.to_owned(), false)) };
    match direction.to_ascii_lowercase().as_str() {
        "asc" => Ok((column.to_owned(), false)),
        "desc" => Ok((column.to_owned(), true)),
        _ => Err(ApiError::bad_request(format!(
            "order `{value}`: the direction after the dot is `asc` or `desc`, not `{direction}`"
        ))),
    }
}

/// A number parameter, or a 400 naming it.
pub(super) fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| ApiError::bad_request(format!("{name} `{value}` is not a number")))
}

/// A `min_position` parameter, if given.
pub(super) fn min_position(value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value.map(|v| number("min_position", v)).transpose()
}

/// A `limit` parameter: 1 to 10,000, 100 when none is given.
pub(super) fn limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let limit = match limit {
        Some(value) => number("limit", value)?,
        None => DEFAULT_LIMIT,
    };
    match limit {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n if n > MAX_LIMIT => Err(ApiError::bad_request(format!("limit must be at most {MAX_LIMIT}"))),
        n => Ok(n),
    }
}

/// Parameters of a single-key read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyParams {
    min_position: Option<String>,
}

/// `GET /projections/{name}/kv/{key}`: the value, or 404.
pub async fn kv_get(
    State(services): State<Services>,
    Path((name, key)): Path<(String, String)>,
    Query(params): Query<KeyParams>,
) -> Result<impl IntoResponse, ApiError> {
    no_nul("key", &key)?;
    let min_position = min_position(params.min_position.as_deref())?;
    let wanted = key.clone();
    let value = services.reads.read_key(&name, min_position, move |ns| ns.kv_get(&wanted)).await?;
    match value {
        Some(bytes) => Ok(Json(value_json(&bytes))),
        None => Err(ApiError::not_found(format!("projection `{name}` has no key `{key}`"))),
    }
}

/// KV keys hold no NUL character (PostgreSQL's text cannot), so a read
/// naming one is malformed, on every backend.
fn no_nul(what: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::bad_request(format!("`{what}` contains a NUL character; KV keys hold none")));
    }
    Ok(())
}

/// Parameters of a KV scan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanParams {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// `GET /projections/{name}/kv?prefix=&after=&limit=`: entries in key order,
/// and `next` to pass as `after` for the following page.
pub async fn kv_scan(
    State(services): State<Services>,
    Path(name): Path<String>,
    Query(params): Query<ScanParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(params.limit.as_deref())?;
    let min_position = min_position(params.min_position.as_deref())?;
    let ScanParams { prefix, after, .. } = params;
    no_nul("prefix", &prefix)?;
    no_nul("after", after.as_deref().unwrap_or_default())?;
    let entries =
        services.reads.read(&name, min_position, move |ns| ns.kv_scan(&prefix, after.as_deref(), limit)).await?;
    let next = (entries.len() == limit).then(|| entries.last().map(|(k, _)| k.clone())).flatten();
    let entries: Vec<Value> =
        entries.iter().map(|(k, v)| serde_json::json!({ "key": k, "value": value_json(v) })).collect();
    Ok(Json(serde_json::json!({ "entries": entries, "next": next })))
}

/// `GET /projections/{name}/tables`: the projection's tables.
pub async fn tables(State(services): State<Services>, Path(name): Path<String>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(services.reads.read(&name, None, |ns| ns.tables()).await?))
}

/// `GET /projections/{name}/tables/{table}?col=value&order=col[.desc]&limit=`:
/// rows as JSON objects.
pub async fn table(
    State(services): State<Services>,
    Path((name, table)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let mut read = TableRead { table, limit: DEFAULT_LIMIT, ..TableRead::default() };
    let mut wait = None;
    let mut given = std::collections::HashSet::new();
    for (key, value) in params {
        if matches!(key.as_str(), "limit" | "order" | "min_position") && !given.insert(key.clone()) {
            return Err(ApiError::bad_request(format!("`{key}` is given twice")));
        }
        match key.as_str() {
            "limit" => read.limit = limit(Some(&value))?,
            "order" => read.order = Some(order(&value)?),
            "min_position" => wait = min_position(Some(&value))?,
            _ => read.filters.push((key, value)),
        }
    }
    let rows = services.reads.read(&name, wait, move |ns| ns.read_table(&read)).await?;
    let json = rows
        .iter()
        .map(|row| {
            let object: Map<String, Value> =
                rows.columns.iter().cloned().zip(row.values().iter().map(|v| v.to_json())).collect();
            Value::Object(object)
        })
        .collect();
    Ok(Json(json))
}

/// `GET /projections/{name}/checksum`: the digest of the whole read model
/// at the position it is at (ADR 37).
pub async fn checksum(
    State(services): State<Services>,
    Path(name): Path<String>,
    Query(params): Query<KeyParams>,
) -> Result<Json<Value>, ApiError> {
    let min_position = min_position(params.min_position.as_deref())?;
    let sum = services.reads.checksum(&name, min_position).await?;
    Ok(Json(serde_json::json!({
        "projection": name,
        "position": sum.position,
        "checksum": sum.checksum,
        "tables": sum.tables,
        "kv": sum.kv,
    })))
}

/// Parameters of a custom query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    args: Option<String>,
    min_position: Option<String>,
}

/// `GET /projections/{name}/query/{query}?args=<json>`: the projection's own read.
pub async fn query(
    State(services): State<Services>,
    Path((name, query)): Path<(String, String)>,
    Query(params): Query<QueryParams>,
) -> Result<impl IntoResponse, ApiError> {
    let args = params.args.unwrap_or_default();
    if !args.trim().is_empty() {
        serde_json::from_str::<Value>(&args)
            .map_err(|e| ApiError::bad_request(format!("args is not valid JSON: {e}")))?;
    }
    answer(services, name, query, args, params.min_position).await
}

/// `POST /projections/{name}/query/{query}` with the arguments as the JSON
/// body: no URL encoding to get wrong (`curl --json '{"n": 2}' ...`).
pub async fn query_posted(
    State(services): State<Services>,
    Path((name, query)): Path<(String, String)>,
    Query(params): Query<QueryParams>,
    JsonBody(args): JsonBody<Box<RawValue>>,
) -> Result<impl IntoResponse, ApiError> {
    if params.args.is_some() {
        return Err(ApiError::bad_request("args are given twice: in the body and as `?args=`; keep one"));
    }
    answer(services, name, query, args.get().to_owned(), params.min_position).await
}

async fn answer(
    services: Services,
    name: String,
    query: String,
    args: String,
    min_position: Option<String>,
) -> Result<impl IntoResponse, ApiError> {
    let min_position = self::min_position(min_position.as_deref())?;
    let json = services.reads.query(&name, query, args, min_position).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json))
}

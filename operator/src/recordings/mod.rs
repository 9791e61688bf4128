//! The recordings service: a JSON API and a web page to find, play and download recordings and
//! to request and fetch bulk exports, with every action reviewed by Kubernetes
//! ([`crate::recordings::access`]) and every play and download audited.
//!
//! Listing reads per-day indexes ([`crate::archive::index`]); audio streams from the store with HTTP
//! Range support so the browser can seek. A play or download is audited when its first byte is
//! requested (a seek is a later range of the same play), as a structured log line and as an
//! object `{id}.access/{millis}-{action}.json` beside the recording's record, which expires with
//! the recording's retention class.

pub mod access;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::TryStreamExt;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use opname_model::identity::normalize;
use serde::Deserialize;

use crate::archive::catalog::Catalog;
use crate::archive::index::{self, DayIndex, IndexEntry};
use crate::crd::{BulkExport, BulkExportSpec, Notify};
use crate::export::parts::{party, safe_component, stamp};
use crate::recordings::access::{Access, AccessError, Identity};
use opname_model::layout::Layout;

const COOKIE: &str = "opname_token";
/// How old an index may be before a listing refreshes it (in the background).
const REFRESH: Duration = Duration::from_secs(30);
/// Widest time range one listing walks.
const MAX_DAYS: i64 = 92;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("range not satisfiable")]
    Range(u64),
    #[error("store: {0}")]
    Store(String),
}

impl From<crate::archive::catalog::CatalogError> for ApiError {
    fn from(e: crate::archive::catalog::CatalogError) -> Self {
        ApiError::Store(e.to_string())
    }
}

impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => ApiError::NotFound,
            e => ApiError::Store(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match &self {
            ApiError::Access(AccessError::Unauthenticated) => StatusCode::UNAUTHORIZED,
            ApiError::Access(AccessError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ApiError::Access(AccessError::Review(_)) | ApiError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Range(_) => StatusCode::RANGE_NOT_SATISFIABLE,
        };
        if code == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %self, "recordings service");
        }
        let mut resp = (
            code,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if let ApiError::Range(size) = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

/// A namespace's day.
type DayKey = (String, jiff::civil::Date);

pub struct Service {
    catalog: Catalog,
    access: Access,
    client: Client,
    secure_cookie: bool,
    days: Mutex<HashMap<DayKey, (Instant, Arc<DayIndex>)>>,
    refreshing: Mutex<HashSet<DayKey>>,
}

impl Service {
    pub fn new(catalog: Catalog, client: Client, secure_cookie: bool) -> Arc<Self> {
        Arc::new(Self {
            catalog,
            access: Access::new(client.clone()),
            client,
            secure_cookie,
            days: Mutex::default(),
            refreshing: Mutex::default(),
        })
    }

    fn cached(&self, ns: &str, day: jiff::civil::Date) -> Option<(Instant, Arc<DayIndex>)> {
        self.days.lock().ok()?.get(&(ns.to_string(), day)).cloned()
    }

    fn remember(&self, ns: &str, day: jiff::civil::Date, idx: Arc<DayIndex>) {
        if let Ok(mut d) = self.days.lock() {
            // Bounded: recent and recently viewed days only.
            if d.len() > 4096 {
                d.clear();
            }
            d.insert((ns.to_string(), day), (Instant::now(), idx));
        }
    }

    /// Rebuilds a day's index in the background (once at a time per day).
    fn refresh(self: &Arc<Self>, ns: &str, day: jiff::civil::Date, previous: Arc<DayIndex>) {
        let key = (ns.to_string(), day);
        if !self
            .refreshing
            .lock()
            .is_ok_and(|mut r| r.insert(key.clone()))
        {
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            match index::build(&svc.catalog, &key.0, key.1, Some(&previous)).await {
                Ok(idx) => svc.remember(&key.0, key.1, Arc::new(idx)),
                Err(e) => {
                    tracing::warn!(namespace = %key.0, day = %key.1, error = %e, "index refresh failed")
                }
            }
            if let Ok(mut r) = svc.refreshing.lock() {
                r.remove(&key);
            }
        });
    }

    /// A day's index: from memory, else from the store, else built now; refreshed in the
    /// background when older than [`REFRESH`].
    async fn day(
        self: &Arc<Self>,
        ns: &str,
        day: jiff::civil::Date,
    ) -> Result<Arc<DayIndex>, ApiError> {
        if let Some((at, idx)) = self.cached(ns, day) {
            if at.elapsed() > REFRESH {
                self.refresh(ns, day, idx.clone());
            }
            return Ok(idx);
        }
        if let Some(stored) = index::load(&self.catalog, ns, day).await? {
            let stored = Arc::new(stored);
            let age = stored
                .built
                .map(|b| jiff::Timestamp::now().duration_since(b).unsigned_abs());
            self.remember(ns, day, stored.clone());
            if age.is_none_or(|a| a > REFRESH) {
                self.refresh(ns, day, stored.clone());
            }
            return Ok(stored);
        }
        let built = Arc::new(index::build(&self.catalog, ns, day, None).await?);
        self.remember(ns, day, built.clone());
        Ok(built)
    }

    /// Keeps today's and yesterday's indexes of every namespace fresh.
    pub async fn warm(self: Arc<Self>, every: Duration) {
        loop {
            let today = jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date();
            match index::namespaces(&self.catalog).await {
                Ok(namespaces) => {
                    for ns in namespaces {
                        for day in [today, today.yesterday().unwrap_or(today)] {
                            let previous = match self.cached(&ns, day) {
                                Some((_, idx)) => Some(idx),
                                None => index::load(&self.catalog, &ns, day)
                                    .await
                                    .ok()
                                    .flatten()
                                    .map(Arc::new),
                            };
                            match index::build(&self.catalog, &ns, day, previous.as_deref()).await {
                                Ok(idx) => self.remember(&ns, day, Arc::new(idx)),
                                Err(e) => {
                                    tracing::warn!(namespace = %ns, error = %e, "index warm-up failed")
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list namespaces to warm indexes"),
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn caller(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        Ok(self.access.authenticate(&token(headers)).await?)
    }

    /// The caller, if a review allows them `verb` on `resource` in `ns`.
    async fn allowed(
        &self,
        headers: &HeaderMap,
        verb: &str,
        resource: &str,
        ns: &str,
    ) -> Result<Identity, ApiError> {
        let who = self.caller(headers).await?;
        self.access.authorize(&who, verb, resource, ns).await?;
        Ok(who)
    }

    /// Finds a recording by id: UUIDv7 ids carry their start time, so one day's index (or a
    /// neighbour's, around midnight) holds it.
    async fn find(self: &Arc<Self>, ns: &str, id: &str) -> Result<IndexEntry, ApiError> {
        let day = id_time(id)
            .ok_or(ApiError::NotFound)?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let now = jiff::Timestamp::now();
        for d in [Some(day), day.yesterday().ok(), day.tomorrow().ok()]
            .into_iter()
            .flatten()
        {
            let idx = self.day(ns, d).await?;
            if let Some(e) = idx.entries.iter().find(|e| e.id == id) {
                return if e.visible(now) {
                    Ok(e.clone())
                } else {
                    Err(ApiError::NotFound)
                };
            }
        }
        Err(ApiError::NotFound)
    }
}

/// The bearer token: `Authorization: Bearer …` (API clients, an authenticating proxy) or the
/// login cookie (the page).
fn token(headers: &HeaderMap) -> String {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return t.trim().to_string();
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The start time in a UUIDv7 (its first 48 bits are Unix milliseconds).
pub fn id_time(id: &str) -> Option<jiff::Timestamp> {
    let hex: String = id.chars().filter(|c| *c != '-').take(12).collect();
    if hex.len() != 12 {
        return None;
    }
    jiff::Timestamp::from_millisecond(i64::from_str_radix(&hex, 16).ok()?).ok()
}

/// `2026-11-02_093000_+31201234567_bob_{id}.opus`: sorts by time, safe on every file system.
pub fn file_name(e: &IndexEntry) -> String {
    let (day, time) = stamp(e.start);
    format!(
        "{day}_{time}_{}_{}_{}.opus",
        party(e.parties.first().map(String::as_str)),
        party(e.parties.get(1).map(String::as_str)),
        safe_component(&e.id)
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub user: Option<String>,
    /// Any participant's number or AoR, compared in normalised form.
    pub party: Option<String>,
    pub from: Option<jiff::Timestamp>,
    pub to: Option<jiff::Timestamp>,
    pub min_duration: Option<f64>,
    pub complete: Option<bool>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// Whether an entry passes the filters (the time range is walked by day, checked here exactly).
pub fn matches(
    e: &IndexEntry,
    q: &ListQuery,
    from: jiff::Timestamp,
    to: jiff::Timestamp,
    now: jiff::Timestamp,
) -> bool {
    let party = q.party.as_deref().and_then(normalize);
    e.visible(now)
        && e.start.is_some_and(|s| s >= from && s < to)
        && q.user.as_ref().is_none_or(|u| &e.user == u)
        && q.min_duration.is_none_or(|d| e.duration_seconds >= d)
        && q.complete.is_none_or(|c| e.complete == c)
        && q.cursor.as_ref().is_none_or(|c| e.id < *c)
        && (q.party.is_none()
            || e.parties.iter().any(|p| {
                normalize(p).is_some_and(|k| Some(&k) == party.as_ref())
                    || q.party
                        .as_ref()
                        .is_some_and(|want| p.contains(want.as_str()))
            }))
}

fn item(ns: &str, e: &IndexEntry) -> serde_json::Value {
    let base = format!("/api/v1/namespaces/{ns}/recordings/{}", e.id);
    serde_json::json!({
        "id": e.id,
        "user": e.user,
        "start": e.start,
        "durationSeconds": e.duration_seconds,
        "from": e.parties.first(),
        "to": e.parties.get(1),
        "parties": e.parties,
        "complete": e.complete,
        "size": e.size,
        "held": e.held_audio.is_some(),
        "retainUntil": e.retain_until,
        "fileName": file_name(e),
        "audioUrl": format!("{base}/audio"),
        "downloadUrl": format!("{base}/audio?download=1"),
    })
}

async fn list(
    State(svc): State<Arc<Service>>,
    UrlPath(ns): UrlPath<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    svc.allowed(&headers, "list", "recordings", &ns).await?;
    let now = jiff::Timestamp::now();
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or_else(|| {
        to.checked_sub(jiff::SignedDuration::from_hours(24 * 7))
            .unwrap_or(to)
    });
    if from >= to || to.duration_since(from) > jiff::SignedDuration::from_hours(24 * MAX_DAYS) {
        return Err(ApiError::BadRequest(format!(
            "from must be before to, at most {MAX_DAYS} days apart"
        )));
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let utc = jiff::tz::TimeZone::UTC;
    let first = from.to_zoned(utc.clone()).date();
    // A cursor continues from the day of its recording.
    let mut day = q
        .cursor
        .as_deref()
        .and_then(id_time)
        .map(|t| t.to_zoned(utc.clone()).date())
        .unwrap_or_else(|| to.to_zoned(utc.clone()).date())
        .min(to.to_zoned(utc).date());
    let mut items = Vec::new();
    let mut last = None;
    'days: while day >= first {
        let idx = svc.day(&ns, day).await?;
        for e in idx.entries.iter().rev() {
            if matches(e, &q, from, to, now) {
                if items.len() == limit {
                    break 'days;
                }
                items.push(item(&ns, e));
                last = Some(e.id.clone());
            }
        }
        match day.yesterday() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    // A full page may have more after it; the cursor is the last id shown.
    let next = if items.len() == limit { last } else { None };
    Ok(axum::Json(
        serde_json::json!({ "items": items, "next": next }),
    ))
}

async fn one(
    State(svc): State<Arc<Service>>,
    UrlPath((ns, id)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    svc.allowed(&headers, "get", "recordings", &ns).await?;
    let e = svc.find(&ns, &id).await?;
    let store = svc.catalog.store();
    let bytes = match store.get(&Path::from(e.record.as_str())).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => match &e.held_audio {
            Some(held) => {
                let record = held.trim_end_matches(".opus").to_string() + ".json";
                store.get(&Path::from(record)).await?.bytes().await?
            }
            None => return Err(ApiError::NotFound),
        },
        Err(e) => return Err(e.into()),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against an object of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> Result<std::ops::Range<u64>, ApiError> {
    let spec = value
        .strip_prefix("bytes=")
        .filter(|s| !s.contains(','))
        .ok_or(ApiError::Range(size))?;
    let (a, b) = spec.split_once('-').ok_or(ApiError::Range(size))?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| ApiError::Range(size));
    let range = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => size.saturating_sub(num(b)?)..size,
        (false, true) => num(a)?..size,
        (false, false) => num(a)?..(num(b)? + 1).min(size),
        (true, true) => return Err(ApiError::Range(size)),
    };
    if range.start >= range.end || range.start >= size {
        return Err(ApiError::Range(size));
    }
    Ok(range)
}

#[derive(Deserialize)]
struct AudioQuery {
    download: Option<String>,
}

async fn audio(
    State(svc): State<Arc<Service>>,
    UrlPath((ns, id)): UrlPath<(String, String)>,
    Query(q): Query<AudioQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = svc.allowed(&headers, "get", "recordings", &ns).await?;
    let e = svc.find(&ns, &id).await?;
    let store = svc.catalog.store();
    let mut key = Path::from(e.audio.as_str());
    let meta = match store.head(&key).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) if e.held_audio.is_some() => {
            key = Path::from(e.held_audio.clone().unwrap_or_default());
            store.head(&key).await?
        }
        Err(err) => return Err(err.into()),
    };
    let size = meta.size;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size))
        .transpose()?;
    let download = q.download.is_some_and(|d| d != "0" && d != "false");
    if range.as_ref().is_none_or(|r| r.start == 0) {
        let action = if download { "download" } else { "play" };
        let from = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| peer.ip().to_string());
        audit(&svc.catalog, &who, action, &ns, &e, &from).await?;
    }
    let got = store
        .get_opts(
            &key,
            GetOptions {
                range: range.clone().map(GetRange::Bounded),
                ..Default::default()
            },
        )
        .await?;
    let body = Body::from_stream(got.into_stream().map_err(std::io::Error::other));
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "audio/ogg; codecs=opus")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, no-store");
    if download {
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", file_name(&e)),
        );
    }
    let resp = match range {
        Some(r) => resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            )
            .header(header::CONTENT_LENGTH, r.end - r.start),
        None => resp.header(header::CONTENT_LENGTH, size),
    };
    resp.body(body)
        .map_err(|err| ApiError::Store(err.to_string()))
}

/// Who heard which recording, when, from where: a log line and an object beside the record.
async fn audit(
    catalog: &Catalog,
    who: &Identity,
    action: &str,
    ns: &str,
    e: &IndexEntry,
    from: &str,
) -> Result<(), ApiError> {
    let now = jiff::Timestamp::now();
    tracing::info!(target: "opname::audit", user = %who.user, action, namespace = ns, recording = %e.id, from, "recording accessed");
    let key = Layout::access(
        &e.record,
        now.as_millisecond(),
        action,
        &safe_component(&who.user),
    );
    let body = serde_json::json!({
        "who": who.user, "groups": who.groups, "action": action, "namespace": ns,
        "recording": e.id, "when": now, "from": from,
    });
    catalog
        .store()
        .put(&key, body.to_string().into_bytes().into())
        .await?;
    Ok(())
}

async fn exports(
    State(svc): State<Arc<Service>>,
    UrlPath(ns): UrlPath<String>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    svc.allowed(&headers, "list", "bulkexports", &ns).await?;
    let list = Api::<BulkExport>::namespaced(svc.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| ApiError::Store(e.to_string()))?;
    let items: Vec<serde_json::Value> = list
        .items
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name_any(),
                "month": b.spec.month,
                "users": b.spec.users,
                "created": b.metadata.creation_timestamp,
                "status": b.status,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest {
    month: String,
    users: Option<Vec<String>>,
    emails: Option<Vec<String>>,
    #[serde(rename = "linkTTL")]
    link_ttl: Option<String>,
}

async fn create_export(
    State(svc): State<Arc<Service>>,
    UrlPath(ns): UrlPath<String>,
    headers: HeaderMap,
    axum::Json(req): axum::Json<ExportRequest>,
) -> Result<Response, ApiError> {
    let who = svc.allowed(&headers, "create", "bulkexports", &ns).await?;
    let mut bex = BulkExport::new(
        "",
        BulkExportSpec {
            month: req.month.clone(),
            users: req.users.filter(|u| !u.is_empty()),
            notify: req
                .emails
                .filter(|e| !e.is_empty())
                .map(|emails| Notify { emails }),
            link_ttl: req.link_ttl,
        },
    );
    bex.metadata.name = None;
    bex.metadata.generate_name = Some(format!("export-{}-", safe_component(&req.month)));
    bex.metadata.annotations = Some(
        [("opname.dev/requested-by".to_string(), who.user.clone())]
            .into_iter()
            .collect(),
    );
    match Api::<BulkExport>::namespaced(svc.client.clone(), &ns)
        .create(&PostParams::default(), &bex)
        .await
    {
        Ok(created) => {
            tracing::info!(target: "opname::audit", user = %who.user, action = "export", namespace = %ns, month = %req.month, export = %created.name_any(), "bulk export requested");
            Ok((
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "name": created.name_any() })),
            )
                .into_response())
        }
        // The schema's own message (a bad month, a too long linkTTL) goes back to the caller.
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
            Err(ApiError::BadRequest(s.message))
        }
        Err(e) => Err(ApiError::Store(e.to_string())),
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(svc): State<Arc<Service>>, Form(form): Form<Login>) -> Response {
    let token = form.token.trim().to_string();
    match svc.access.authenticate(&token).await {
        Ok(who) => {
            tracing::info!(target: "opname::audit", user = %who.user, action = "login", "signed in");
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=28800{}",
                if svc.secure_cookie { "; Secure" } else { "" }
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(_) => (
            StatusCode::UNAUTHORIZED,
            Html("<p>The token was not accepted. <a href=\"/\">Try again</a></p>"),
        )
            .into_response(),
    }
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn whoami(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let who = svc.caller(&headers).await?;
    Ok(axum::Json(
        serde_json::json!({ "user": who.user, "groups": who.groups }),
    ))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; media-src 'self'"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(include_str!("page.html")),
    )
        .into_response()
}

pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/namespaces/{ns}/recordings", get(list))
        .route("/api/v1/namespaces/{ns}/recordings/{id}", get(one))
        .route("/api/v1/namespaces/{ns}/recordings/{id}/audio", get(audio))
        .route(
            "/api/v1/namespaces/{ns}/bulkexports",
            get(exports).post(create_export),
        )
        .with_state(svc)
}

/// Serves until the process ends.
pub async fn serve(svc: Arc<Service>, listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    tokio::spawn(svc.clone().warm(Duration::from_secs(60)));
    tracing::info!(%listen, "recordings service listening");
    axum::serve(
        listener,
        router(svc).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> IndexEntry {
        IndexEntry {
            id: "019a4a6e-5a00-7000-8000-000000000001".into(),
            user: "alice".into(),
            start: Some("2026-11-02T09:30:00Z".parse().unwrap()),
            duration_seconds: 42.0,
            parties: vec![
                "sip:+31201234567@pbx.example".into(),
                "sip:bob@example.com".into(),
            ],
            complete: true,
            size: 1000,
            retention_days: 30,
            retain_until: Some("2026-12-02T09:31:00Z".parse().unwrap()),
            record: "rec/r30/acme/2026/11/02/x.json".into(),
            audio: "rec/r30/acme/2026/11/02/x.opus".into(),
            held_audio: None,
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000).unwrap(), 0..100);
        assert_eq!(parse_range("bytes=900-", 1000).unwrap(), 900..1000);
        assert_eq!(parse_range("bytes=-100", 1000).unwrap(), 900..1000);
        assert_eq!(parse_range("bytes=0-5000", 1000).unwrap(), 0..1000);
        assert!(parse_range("bytes=1000-", 1000).is_err());
        assert!(parse_range("bytes=0-1,5-6", 1000).is_err());
        assert!(parse_range("items=0-1", 1000).is_err());
    }

    #[test]
    fn filters() {
        let e = entry();
        let now = "2026-11-10T00:00:00Z".parse().unwrap();
        let (from, to) = (
            "2026-11-01T00:00:00Z".parse().unwrap(),
            "2026-11-03T00:00:00Z".parse().unwrap(),
        );
        let q = |f: fn(&mut ListQuery)| {
            let mut q = ListQuery::default();
            f(&mut q);
            matches(&e, &q, from, to, now)
        };
        assert!(q(|_| {}));
        assert!(q(|q| q.user = Some("alice".into())));
        assert!(!q(|q| q.user = Some("bob".into())));
        assert!(
            q(|q| q.party = Some("+31 20 123 4567".into())),
            "normalised number"
        );
        assert!(q(|q| q.party = Some("bob@example.com".into())));
        assert!(!q(|q| q.party = Some("+31201234568".into())));
        assert!(q(|q| q.min_duration = Some(42.0)));
        assert!(!q(|q| q.min_duration = Some(42.5)));
        assert!(!q(|q| q.complete = Some(false)));
        let mut at_cursor = ListQuery {
            cursor: Some(e.id.clone()),
            ..Default::default()
        };
        assert!(
            !matches(&e, &at_cursor, from, to, now),
            "the cursor's own item is done"
        );
        at_cursor.cursor = Some("019a4a6e-5a00-7000-8000-000000000002".into());
        assert!(
            matches(&e, &at_cursor, from, to, now),
            "older than the cursor"
        );
        assert!(!matches(
            &e,
            &ListQuery::default(),
            to,
            to.checked_add(jiff::SignedDuration::from_hours(1)).unwrap(),
            now
        ));
    }

    #[test]
    fn ids_carry_their_time_and_files_their_parties() {
        let e = entry();
        assert_eq!(
            id_time(&e.id).unwrap(),
            jiff::Timestamp::from_millisecond(0x019a4a6e5a00).unwrap()
        );
        assert_eq!(id_time("nonsense"), None);
        assert_eq!(
            file_name(&e),
            "2026-11-02_093000_+31201234567_bob_019a4a6e-5a00-7000-8000-000000000001.opus"
        );
    }

    #[test]
    fn token_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; opname_token=t1"),
        );
        assert_eq!(token(&h), "t1");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t2"));
        assert_eq!(token(&h), "t2");
        assert_eq!(token(&HeaderMap::new()), "");
    }
}

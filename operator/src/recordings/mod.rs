//! The recordings service: a JSON API and a web page to find, play and download recordings and
//! to request and fetch bulk exports, with every action reviewed by Kubernetes
//! ([`crate::recordings::access`]) and every play and download audited.
//!
//! Listing reads per-day indexes ([`crate::archive::index`]); audio streams from the store with HTTP
//! Range support so the browser can seek. Every audio response and record read that no play
//! session of the same person already covers is audited ([`guard::Sessions`]), whatever range it
//! asks for, as a structured log line and as an object `{id}.access/{millis}-{action}.json`
//! beside the recording's record, which expires with the recording's retention class.

pub mod access;
mod guard;

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
use crate::export::names::{party, safe_component, stamp};
use crate::recordings::access::{Access, AccessError, Identity};
use crate::settings::RecordingsSettings;
use opname_model::config::SourceRange;
use opname_model::layout::Layout;

mod audio;
mod exports;
mod list;

pub use audio::parse_range;
pub use list::{ListQuery, file_name, id_time, matches};

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
    #[error("that object is not this export's")]
    ForeignKey,
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
            ApiError::Access(AccessError::Throttled(_)) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Access(AccessError::Review(_)) | ApiError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::ForeignKey => StatusCode::FORBIDDEN,
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
        if let ApiError::Access(AccessError::Throttled(secs)) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A namespace's day.
type DayKey = (String, jiff::civil::Date);

/// An authenticated caller and where the request came from.
pub(crate) struct Caller {
    who: Identity,
    from: guard::Client,
}

pub struct Service {
    catalog: Catalog,
    access: Access,
    client: Client,
    secure_cookie: bool,
    trusted_proxies: Vec<SourceRange>,
    sessions: guard::Sessions,
    days: Mutex<HashMap<DayKey, (Instant, Arc<DayIndex>)>>,
    refreshing: Mutex<HashSet<DayKey>>,
}

impl Service {
    pub fn new(
        catalog: Catalog,
        client: Client,
        secure_cookie: bool,
        settings: &RecordingsSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            catalog,
            access: Access::new(client.clone(), settings.audiences.clone()),
            client,
            secure_cookie,
            trusted_proxies: settings.trusted_proxies.clone(),
            sessions: guard::Sessions::default(),
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
        // No recording starts after tomorrow: a crafted id or range reaches nothing there.
        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        if day > today.tomorrow().unwrap_or(today) {
            return Ok(Arc::new(DayIndex::default()));
        }
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

    async fn caller(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let from = guard::client(&self.trusted_proxies, peer.ip(), headers);
        let who = self
            .access
            .authenticate(&token(headers), from.address)
            .await?;
        Ok(Caller { who, from })
    }

    /// The caller, if a review allows them `verb` on `resource` in `ns` (a namespace that is no
    /// DNS label is refused before anything is reviewed or read).
    async fn allowed(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        verb: &str,
        resource: &str,
        ns: &str,
    ) -> Result<Caller, ApiError> {
        if !guard::valid_namespace(ns) {
            return Err(ApiError::BadRequest(format!(
                "{ns:?} is not a namespace name"
            )));
        }
        let caller = self.caller(peer, headers).await?;
        self.access
            .authorize(&caller.who, verb, resource, ns)
            .await?;
        Ok(caller)
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

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(
    State(svc): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    let token = form.token.trim().to_string();
    let from = guard::client(&svc.trusted_proxies, peer.ip(), &headers);
    match svc.access.authenticate(&token, from.address).await {
        Ok(who) => {
            tracing::info!(target: "opname::audit", user = %who.user, action = "login", from = %from.address, "signed in");
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=28800{}",
                if svc.secure_cookie { "; Secure" } else { "" }
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(AccessError::Throttled(secs)) => {
            ApiError::from(AccessError::Throttled(secs)).into_response()
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let who = svc.caller(peer, &headers).await?.who;
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
        .route("/api/v1/namespaces/{ns}/recordings", get(list::list))
        .route("/api/v1/namespaces/{ns}/recordings/{id}", get(list::one))
        .route(
            "/api/v1/namespaces/{ns}/recordings/{id}/audio",
            get(audio::audio),
        )
        .route(
            "/api/v1/namespaces/{ns}/bulkexports",
            get(exports::exports).post(exports::create_export),
        )
        .route(
            "/api/v1/namespaces/{ns}/bulkexports/{name}/parts/{n}",
            get(exports::part),
        )
        .layer(axum::middleware::from_fn(guard::refuse_cross_site))
        .with_state(svc)
}

/// Serves until the process ends.
pub async fn serve(svc: Arc<Service>, listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tokio::spawn(svc.clone().warm(Duration::from_secs(60)));
    tracing::info!(%listen, "recordings service listening");
    axum::serve(
        listener,
        router(svc).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
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
            other: Some("sip:bob@example.com".into()),
            outbound: Some(true),
            notice: None,
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

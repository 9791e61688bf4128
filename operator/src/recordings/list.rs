//! Listing a namespace's recordings (filters, cursor, newest first) and reading one record.

use super::*;

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
    let (day, time) = stamp(e.start, &jiff::tz::TimeZone::UTC);
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

pub(super) fn item(ns: &str, e: &IndexEntry) -> serde_json::Value {
    let base = format!("/api/v1/namespaces/{ns}/recordings/{}", e.id);
    serde_json::json!({
        "id": e.id,
        "user": e.user,
        "start": e.start,
        "durationSeconds": e.duration_seconds,
        "from": e.parties.first(),
        "to": e.parties.get(1),
        "otherParty": e.other,
        "direction": e.outbound.map(|o| if o { "outbound" } else { "inbound" }),
        "notice": e.notice,
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

pub(super) async fn list(
    State(svc): State<Arc<Service>>,
    UrlPath(ns): UrlPath<String>,
    Query(q): Query<ListQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    svc.allowed(peer, &headers, "list", "recordings", &ns)
        .await?;
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
    let organisation = organisation(&svc, &ns).await;
    Ok(axum::Json(serde_json::json!({
        "items": items,
        "next": next,
        "organisation": {
            "timeZone": organisation.zone_name(),
            "locale": organisation.locale.tag(),
        },
    })))
}

/// The organisation's time zone and language for the page. A namespace without them, with a
/// zone that is not an IANA name, or that cannot be read, shows UTC in English: the page
/// labels every time with its zone, so nothing is shown as local that is not.
async fn organisation(svc: &Service, ns: &str) -> crate::organisation::Organisation {
    use crate::organisation::Organisation;
    match Organisation::of_namespace(&svc.client, ns).await {
        Ok(Ok(organisation)) => organisation,
        Ok(Err(e)) => {
            tracing::warn!(namespace = ns, error = %e, "the page shows UTC");
            Organisation::default()
        }
        Err(e) => {
            tracing::warn!(namespace = ns, error = %e, "cannot read the organisation's time zone");
            Organisation::default()
        }
    }
}

pub(super) async fn one(
    State(svc): State<Arc<Service>>,
    UrlPath((ns, id)): UrlPath<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = svc
        .allowed(peer, &headers, "get", "recordings", &ns)
        .await?;
    let e = svc.find(&ns, &id).await?;
    // The record names the participants and their numbers: reading it is audited like a play.
    super::audio::audited(&svc, &caller, "record", &ns, &e).await?;
    let store = svc.catalog.store();
    let bytes = match store.get(&Path::from(e.record.as_str())).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => match &e.held_audio {
            Some(held) => match opname_model::layout::split_object(held) {
                Some((stem, _)) => {
                    let record = opname_model::layout::record_of(stem);
                    store.get(&record).await?.bytes().await?
                }
                None => return Err(ApiError::NotFound),
            },
            None => return Err(ApiError::NotFound),
        },
        Err(e) => return Err(e.into()),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

//! Audio responses: HTTP ranges, download names, and the audit of every play, download and
//! record read that no play session already covers.

use super::*;

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
pub(super) struct AudioQuery {
    download: Option<String>,
}

pub(super) async fn audio(
    State(svc): State<Arc<Service>>,
    UrlPath((ns, id)): UrlPath<(String, String)>,
    Query(q): Query<AudioQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = svc
        .allowed(peer, &headers, "get", "recordings", &ns)
        .await?;
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
    let range = requested(&headers, meta.size)?;
    let download = q.download.is_some_and(|d| d != "0" && d != "false");
    let action = if download { "download" } else { "play" };
    audited(&svc, &caller, action, &ns, &e).await?;
    let attachment = download.then(|| file_name(&e));
    stream(
        store,
        &key,
        meta.size,
        range,
        "audio/ogg; codecs=opus",
        attachment,
    )
    .await
}

/// The range a request asks for, checked against the object's size.
pub(super) fn requested(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ApiError> {
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size))
        .transpose()
}

/// Streams `key` (or `range` of it) from the store, never holding it in memory; `attachment`
/// names the file a browser saves.
pub(super) async fn stream(
    store: &Arc<dyn object_store::ObjectStore>,
    key: &Path,
    size: u64,
    range: Option<std::ops::Range<u64>>,
    content_type: &str,
    attachment: Option<String>,
) -> Result<Response, ApiError> {
    let got = store
        .get_opts(
            key,
            GetOptions {
                range: range.clone().map(GetRange::Bounded),
                ..Default::default()
            },
        )
        .await?;
    let body = Body::from_stream(got.into_stream().map_err(std::io::Error::other));
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, no-store");
    if let Some(name) = attachment {
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
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

/// Audits `action` unless a play session of the same person, recording and action covers it
/// (any range, first byte or not: a session starts on whatever the client asks first). Nothing
/// is served when the audit cannot be written.
pub(super) async fn audited(
    svc: &Service,
    caller: &Caller,
    action: &'static str,
    ns: &str,
    e: &IndexEntry,
) -> Result<(), ApiError> {
    audited_beside(svc, caller, action, ns, &e.id, &e.record).await
}

/// [`audited`] for any object: `subject` is what was accessed (a recording's id, an export
/// part's key), and the audit object goes beside `beside` so it expires with it.
pub(super) async fn audited_beside(
    svc: &Service,
    caller: &Caller,
    action: &'static str,
    ns: &str,
    subject: &str,
    beside: &str,
) -> Result<(), ApiError> {
    let digest = caller.who.digest();
    if !svc.sessions.starts(digest, subject, action) {
        return Ok(());
    }
    let written = audit(&svc.catalog, caller, action, ns, subject, beside).await;
    if written.is_err() {
        svc.sessions.forget(digest, subject, action);
    }
    written
}

/// Who heard which recording, when, from where: a log line and an object beside the record.
async fn audit(
    catalog: &Catalog,
    caller: &Caller,
    action: &str,
    ns: &str,
    subject: &str,
    beside: &str,
) -> Result<(), ApiError> {
    let now = jiff::Timestamp::now();
    let (who, from) = (&caller.who, &caller.from);
    tracing::info!(target: "opname::audit", user = %who.user, action, namespace = ns, recording = subject, from = %from.address, peer = %from.peer, forwarded_for = from.forwarded_for.as_deref(), "recording accessed");
    let key = Layout::access(
        beside,
        now.as_millisecond(),
        action,
        &safe_component(&who.user),
    );
    let body = opname_model::audit::Access {
        who: who.user.clone(),
        groups: who.groups.clone(),
        action: action.into(),
        namespace: ns.into(),
        recording: subject.into(),
        when: now,
        from: from.address.to_string(),
        peer: from.peer.to_string(),
        forwarded_for: from.forwarded_for.clone(),
    };
    catalog.store().put(&key, body.to_json().into()).await?;
    Ok(())
}

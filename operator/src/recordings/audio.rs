//! Audio responses: HTTP ranges, download names, and the audit of every play and download.

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
pub(super) async fn audit(
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

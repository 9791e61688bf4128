//! Listing and requesting BulkExports through the service, and downloading their parts from
//! stores that sign no links (a local directory), audited like a recording's download.

use super::*;

pub(super) async fn exports(
    State(svc): State<Arc<Service>>,
    UrlPath(ns): UrlPath<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    svc.allowed(peer, &headers, "list", "bulkexports", &ns)
        .await?;
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
                "users": b.spec.request.users,
                "created": b.metadata.creation_timestamp,
                "status": b.status,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

/// `GET …/bulkexports/{name}/parts/{n}`: part `n` (from 1) of a finished export, streamed from
/// the store, for callers allowed `get bulkexports`. Only keys under the export's own prefix
/// are served, whatever its status names.
pub(super) async fn part(
    State(svc): State<Arc<Service>>,
    UrlPath((ns, name, n)): UrlPath<(String, String, usize)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = svc
        .allowed(peer, &headers, "get", "bulkexports", &ns)
        .await?;
    let bex = Api::<BulkExport>::namespaced(svc.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(|e| ApiError::Store(e.to_string()))?
        .ok_or(ApiError::NotFound)?;
    let status = bex.status.unwrap_or_default();
    let part = n
        .checked_sub(1)
        .and_then(|i| status.parts.get(i))
        .ok_or(ApiError::NotFound)?;
    if !svc.catalog.layout().is_export_key(&ns, &name, &part.key) {
        tracing::warn!(target: "opname::audit", user = %caller.who.user, namespace = %ns, export = %name, key = %part.key, "export part outside its export refused");
        return Err(ApiError::ForeignKey);
    }
    let key = Path::from(part.key.as_str());
    let meta = svc.catalog.store().head(&key).await?;
    let range = super::audio::requested(&headers, meta.size)?;
    super::audio::audited_beside(&svc, &caller, "export-download", &ns, &part.key, &part.key)
        .await?;
    let file = format!(
        "{}-{}-part-{n}.zip",
        safe_component(&ns),
        safe_component(&name)
    );
    super::audio::stream(
        svc.catalog.store(),
        &key,
        meta.size,
        range,
        "application/zip",
        Some(file),
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExportRequest {
    month: String,
    users: Option<Vec<String>>,
    emails: Option<Vec<String>>,
    #[serde(rename = "linkTTL")]
    link_ttl: Option<String>,
}

pub(super) async fn create_export(
    State(svc): State<Arc<Service>>,
    UrlPath(ns): UrlPath<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Json(req): axum::Json<ExportRequest>,
) -> Result<Response, ApiError> {
    let who = svc
        .allowed(peer, &headers, "create", "bulkexports", &ns)
        .await?
        .who;
    let mut bex = BulkExport::new(
        "",
        BulkExportSpec {
            month: req.month.clone(),
            request: crate::crd::ExportRequest {
                users: req.users.filter(|u| !u.is_empty()),
                notify: req
                    .emails
                    .filter(|e| !e.is_empty())
                    .map(|emails| Notify { emails }),
                link_ttl: req.link_ttl,
            },
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

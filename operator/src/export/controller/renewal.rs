//! The links of a finished export: signed only for keys under the export's own prefix, dropped
//! from the status once the store's lifecycle has deleted the archives, and renewed on request
//! only while every archive is still there.

use super::*;
use object_store::ObjectStoreExt;

/// Signs a link for every part. A key outside `exports/{ns}/{name}/` is refused: the status is
/// writable by whoever may patch it, and a link to another key would hand out any object.
pub async fn sign_parts(
    signer: Option<&LinkSigner>,
    layout: &Layout,
    ns: &str,
    name: &str,
    parts: &mut [ExportPart],
    ttl: Option<&str>,
) -> Result<(), Error> {
    if let Some(foreign) = parts
        .iter()
        .find(|p| !layout.is_export_key(ns, name, &p.key))
    {
        return Err(Error::ForeignKey(foreign.key.clone()));
    }
    let Some(signer) = signer else { return Ok(()) };
    let ttl = ttl.map(parse_ttl).transpose()?;
    let now = jiff::Timestamp::now();
    for p in parts {
        let (url, expires) = signer.sign(&p.key, ttl, now).await?;
        p.url = Some(url);
        p.expires = Some(Time(expires));
    }
    Ok(())
}

/// When the archives of an export that started at `start` are deleted (`archive_days` after
/// it: no part is older, so no link outlives its archive); `None` when they are kept.
pub fn archives_expire(start: jiff::Timestamp, archive_days: u32) -> Option<jiff::Timestamp> {
    (archive_days > 0)
        .then(|| {
            start.checked_add(jiff::SignedDuration::from_hours(
                24 * i64::from(archive_days),
            ))
        })
        .and_then(Result::ok)
}

/// The parts without their links.
pub fn unlinked(parts: &[ExportPart]) -> Vec<ExportPart> {
    parts
        .iter()
        .map(|p| ExportPart {
            url: None,
            expires: None,
            ..p.clone()
        })
        .collect()
}

/// Drops the links of an export whose archives expired; otherwise says when to look again.
pub(super) async fn expire(
    bex: &BulkExport,
    api: &Api<BulkExport>,
    ctx: &Context,
) -> Result<Action, Error> {
    let status = bex.status.clone().unwrap_or_default();
    let Some(Time(at)) = status.archives_expire else {
        return Ok(Action::await_change());
    };
    let now = jiff::Timestamp::now();
    if now < at {
        let left = now.duration_until(at).unsigned_abs();
        return Ok(Action::requeue(left.min(Duration::from_secs(3600))));
    }
    if status.parts.iter().any(|p| p.url.is_some()) {
        let message = format!("the archives expired at {at}; their links are gone");
        patch_status(
            api,
            &bex.name_any(),
            serde_json::json!({ "parts": unlinked(&status.parts), "message": message }),
        )
        .await?;
        ctx.event(
            &bex.object_ref(&()),
            EventType::Normal,
            "ArchivesExpired",
            message,
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Signs the links again for the `opname.dev/renew-links` value `renew`, unless an archive
/// expired, is gone, or is not this export's: then the links are dropped and a Warning Event
/// (`ArchivesExpired`, `ArchivesGone`, `LinksRefused`) says why.
pub(super) async fn renew(
    bex: &BulkExport,
    api: &Api<BulkExport>,
    ctx: &Context,
    renew: &str,
) -> Result<(), Error> {
    let ns = bex.namespace().unwrap_or_default();
    let name = bex.name_any();
    let status = bex.status.clone().unwrap_or_default();
    let oref = bex.object_ref(&());
    let refusal = match status.archives_expire {
        Some(Time(at)) if jiff::Timestamp::now() >= at => Some((
            "ArchivesExpired",
            format!("the archives expired at {at}: nothing to link"),
        )),
        _ => gone(ctx, &ns, &name, &status.parts).await?,
    };
    let mut parts = status.parts.clone();
    let refusal = match refusal {
        Some(r) => Some(r),
        None => {
            let signer = LinkSigner::from_settings(
                &ctx.settings.store,
                ctx.settings.export.public_endpoint.as_deref(),
            )?;
            let layout = ctx.catalog.layout();
            let ttl = bex.spec.request.link_ttl.as_deref();
            match sign_parts(signer.as_ref(), layout, &ns, &name, &mut parts, ttl).await {
                Ok(()) => None,
                Err(Error::ForeignKey(key)) => Some((
                    "LinksRefused",
                    format!("part {key:?} is not under this export's own prefix: no link signed"),
                )),
                Err(e) => return Err(e),
            }
        }
    };
    match refusal {
        None => {
            patch_status(
                api,
                &name,
                serde_json::json!({ "parts": parts, "linksRenewedFor": renew }),
            )
            .await?;
            let note = format!("{} download links signed again", parts.len());
            ctx.event(&oref, EventType::Normal, "LinksRenewed", note)
                .await;
        }
        // Reasons differ per cause: Events of one reason and object are folded into a series.
        Some((reason, message)) => {
            patch_status(
                api,
                &name,
                serde_json::json!({
                    "parts": unlinked(&status.parts),
                    "linksRenewedFor": renew,
                    "message": message,
                }),
            )
            .await?;
            ctx.event(&oref, EventType::Warning, reason, message).await;
        }
    }
    Ok(())
}

/// Why the parts cannot be linked, if one of them is no longer in the store.
async fn gone(
    ctx: &Context,
    ns: &str,
    name: &str,
    parts: &[ExportPart],
) -> Result<Option<(&'static str, String)>, Error> {
    let layout = ctx.catalog.layout();
    for p in parts {
        // A foreign key is refused by the signer, without looking at it.
        if !layout.is_export_key(ns, name, &p.key) {
            continue;
        }
        match ctx
            .catalog
            .store()
            .head(&object_store::path::Path::from(p.key.as_str()))
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                let why = format!("archive {} is gone: nothing to link", p.key);
                return Ok(Some(("ArchivesGone", why)));
            }
            Err(e) => return Err(Error::Links(e.into())),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_expire_after_their_days_from_the_start() {
        let start: jiff::Timestamp = "2026-11-01T03:00:00Z".parse().unwrap();
        assert_eq!(
            archives_expire(start, 14),
            Some("2026-11-15T03:00:00Z".parse().unwrap())
        );
        assert_eq!(archives_expire(start, 0), None, "kept until deleted");
    }

    #[test]
    fn unlinked_parts_keep_everything_but_links() {
        let p = ExportPart {
            key: "k".into(),
            size: 1,
            sha256: "s".into(),
            recordings: 2,
            url: Some("https://x".into()),
            expires: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
        };
        let u = unlinked(std::slice::from_ref(&p));
        assert_eq!(u[0].url, None);
        assert_eq!(u[0].expires, None);
        assert_eq!((u[0].key.as_str(), u[0].recordings), ("k", 2));
    }
}

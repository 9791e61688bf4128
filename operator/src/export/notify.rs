//! The e-mail that tells an admin their export is ready (or failed), through the platform's SMTP
//! relay.

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::crd::{BulkExport, ExportPhase};
use crate::settings::SmtpSettings;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("address {0:?}: {1}")]
    Address(String, lettre::address::AddressError),
    #[error("message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

fn size(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// Subject and plain-text body for an export in a final phase.
pub fn compose(export: &BulkExport, namespace: &str, name: &str) -> (String, String) {
    let status = export.status.clone().unwrap_or_default();
    let month = &export.spec.month;
    let ok = status.phase == Some(ExportPhase::Succeeded);
    let subject = format!(
        "Call recordings export {namespace}/{name} for {month}: {}",
        if ok { "ready" } else { "failed" }
    );
    let mut body = format!(
        "Export {name} of the recordings of {namespace} for {month} {}.\n\n",
        if ok { "is ready" } else { "failed" }
    );
    if let Some(m) = &status.message {
        body.push_str(&format!("{m}\n\n"));
    }
    if ok {
        let recordings: i64 = status.parts.iter().map(|p| p.recordings).sum();
        body.push_str(&format!(
            "{recordings} recordings in {} ZIP file(s):\n\n",
            status.parts.len()
        ));
        for (i, p) in status.parts.iter().enumerate() {
            body.push_str(&format!(
                "Part {} of {}: {} recordings, {}\n  SHA-256 {}\n",
                i + 1,
                status.parts.len(),
                p.recordings,
                size(p.size),
                p.sha256
            ));
            match (&p.url, &p.expires) {
                (Some(url), Some(exp)) => {
                    body.push_str(&format!("  {url}\n  link valid until {}\n\n", exp.0));
                }
                _ => body.push_str(&format!(
                    "  download through the recordings service: {}\n\n",
                    p.key
                )),
            }
        }
        body.push_str(
            "Each ZIP file holds manifest.csv and manifest.json with every recording's metadata \
             and SHA-256; the last one also lists what every part holds. Expired links can be \
             renewed by annotating the BulkExport with opname.dev/renew-links.\n",
        );
    }
    (subject, body)
}

fn mailbox(s: &str) -> Result<Mailbox, NotifyError> {
    s.parse()
        .map_err(|e| NotifyError::Address(s.to_string(), e))
}

/// Sends one message to all recipients; credentials from `SMTP_USERNAME`/`SMTP_PASSWORD`.
pub async fn send(
    smtp: &SmtpSettings,
    to: &[String],
    subject: &str,
    body: String,
) -> Result<(), NotifyError> {
    let mut message = Message::builder()
        .from(mailbox(&smtp.from)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        message = message.to(mailbox(t)?);
    }
    let message = message.body(body)?;
    let mut transport = if smtp.starttls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
    }
    .port(smtp.port);
    if let (Ok(user), Ok(password)) = (
        std::env::var("SMTP_USERNAME"),
        std::env::var("SMTP_PASSWORD"),
    ) {
        transport = transport.credentials(Credentials::new(user, password));
    }
    transport.build().send(message).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BulkExportSpec, BulkExportStatus, ExportPart};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn body_lists_every_part_with_link_size_checksum_and_expiry() {
        let mut e = BulkExport::new(
            "nov",
            BulkExportSpec {
                month: "2026-11".into(),
                request: Default::default(),
            },
        );
        e.status = Some(BulkExportStatus {
            phase: Some(ExportPhase::Succeeded),
            parts: vec![ExportPart {
                key: "rec/exports/acme/nov/p1.zip".into(),
                size: 3 << 20,
                sha256: "ab".repeat(32),
                recordings: 12,
                url: Some("https://s3.example/p1.zip?X-Amz-Signature=x".into()),
                expires: Some(Time("2026-12-05T00:00:00Z".parse().unwrap())),
            }],
            ..Default::default()
        });
        let (subject, body) = compose(&e, "acme", "nov");
        assert_eq!(
            subject,
            "Call recordings export acme/nov for 2026-11: ready"
        );
        assert!(body.contains("12 recordings in 1 ZIP file(s)"));
        assert!(body.contains("3.0 MiB"));
        assert!(body.contains(&"ab".repeat(32)));
        assert!(body.contains("https://s3.example/p1.zip?X-Amz-Signature=x"));
        assert!(body.contains("valid until 2026-12-05T00:00:00Z"));
    }
}

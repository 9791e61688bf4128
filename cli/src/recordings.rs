//! `kubectl opname recordings list|get|download`: the recordings service's API, as the page
//! uses it, with a token for the service (minted for its audience: `kubectl create token NAME
//! --audience opname.dev/recordings`, or an OIDC token where the service trusts the cluster's).

use std::path::Path;

use crate::CliError;

/// Where the service is and who asks.
pub struct Service {
    pub url: String,
    pub token: String,
    pub namespace: String,
}

impl Service {
    fn path(&self, rest: &str) -> String {
        format!(
            "{}/api/v1/namespaces/{}/recordings{rest}",
            self.url.trim_end_matches('/'),
            self.namespace
        )
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, CliError> {
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let said: serde_json::Value = resp.json().await.unwrap_or_default();
        Err(CliError::Service(
            status.as_u16(),
            said["error"]
                .as_str()
                .unwrap_or(status.as_str())
                .to_string(),
        ))
    }
}

/// One page of recordings, newest first, as a table.
pub async fn list(svc: &Service, query: &[(&str, String)]) -> Result<(), CliError> {
    let mut url = reqwest::Url::parse(&svc.path("")).map_err(|e| CliError::Url(e.to_string()))?;
    url.query_pairs_mut()
        .extend_pairs(query.iter().filter(|(_, v)| !v.is_empty()));
    let page: serde_json::Value = svc.get(url.as_str()).await?.json().await?;
    let zone = page["organisation"]["timeZone"].as_str().unwrap_or("UTC");
    println!(
        "{:<38} {:<22} {:<24} {:<20} {:>7}  KEPT UNTIL",
        "ID",
        format!("START ({zone})"),
        "USER",
        "OTHER PARTY",
        "SECONDS"
    );
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let local = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map(|t| {
                t.to_zoned(tz.clone())
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|| "-".into())
    };
    for r in page["items"].as_array().into_iter().flatten() {
        let kept = if r["held"] == true {
            "held".to_string()
        } else {
            local(&r["retainUntil"])
        };
        println!(
            "{:<38} {:<22} {:<24} {:<20} {:>7.0}  {kept}",
            r["id"].as_str().unwrap_or("-"),
            local(&r["start"]),
            r["user"].as_str().unwrap_or("-"),
            r["otherParty"].as_str().or(r["to"].as_str()).unwrap_or("-"),
            r["durationSeconds"].as_f64().unwrap_or(0.0),
        );
    }
    if let Some(next) = page["next"].as_str() {
        println!("more: --cursor {next}");
    }
    Ok(())
}

/// The recording's JSON record (audited by the service, as a play is).
pub async fn get(svc: &Service, id: &str) -> Result<(), CliError> {
    let record: serde_json::Value = svc.get(&svc.path(&format!("/{id}"))).await?.json().await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&record).unwrap_or_default()
    );
    Ok(())
}

/// The recording's audio into `out` (a directory gets the service's file name).
pub async fn download(svc: &Service, id: &str, out: &Path) -> Result<(), CliError> {
    let resp = svc
        .get(&svc.path(&format!("/{id}/audio?download=1")))
        .await?;
    let name = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("filename=").nth(1))
        .map(|n| n.trim_matches('"').replace(['/', '\\'], "_"))
        .unwrap_or_else(|| format!("{id}.opus"));
    let path = if out.is_dir() {
        out.join(name)
    } else {
        out.to_path_buf()
    };
    let (size, sha256) = crate::download::save(resp, &path).await?;
    println!("{} ({size} bytes, SHA-256 {sha256})", path.display());
    Ok(())
}

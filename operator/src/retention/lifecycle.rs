//! The bucket's lifecycle configuration, read and written with SigV4-signed requests (object_store
//! has no bucket-level API; its signer is reused), and the enforcement step: read, merge, write
//! only when different, read back.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use futures::StreamExt;
use md5::{Digest, Md5};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::HttpRequestBody;
use object_store::path::Path;

use crate::retention::rules::{self, Configuration};
use crate::settings::StoreSettings;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("S3 request: {0}")]
    Http(String),
    #[error("S3 answered {0}: {1}")]
    Status(u16, String),
    #[error(transparent)]
    Retention(#[from] rules::RetentionError),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("the read-back lifecycle configuration differs from what was written")]
    NotInForce,
}

/// An S3 bucket's lifecycle subresource, path-style (works for AWS and S3-compatible servers).
pub struct Bucket {
    http: reqwest::Client,
    url: String,
    region: String,
    /// The same bucket through object_store: its credential chain signs the lifecycle calls
    /// too, and it tells whether a retired class still holds objects.
    s3: Arc<AmazonS3>,
}

impl Bucket {
    /// `None` for stores that are not S3 (they use the sweeper).
    pub fn from_settings(store: &StoreSettings) -> Result<Option<Self>, LifecycleError> {
        let Some(builder) = crate::store::s3_builder(store) else {
            return Ok(None);
        };
        // Where and for which region the client was configured, as object_store read it.
        let config = |key| builder.get_config_value(&key);
        let region = config(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let endpoint = config(AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let bucket = config(AmazonS3ConfigKey::Bucket).unwrap_or_default();
        Ok(Some(Self {
            http: reqwest::Client::new(),
            url: format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            region,
            s3: Arc::new(builder.build()?),
        }))
    }

    async fn send(
        &self,
        method: http::Method,
        body: Vec<u8>,
    ) -> Result<(u16, String), LifecycleError> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}?lifecycle", self.url))
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| LifecycleError::Http(e.to_string()))?;
        let credential = self.s3.credentials().get_credential().await?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut req, None)
            .map_err(|e| LifecycleError::Http(e.to_string()))?;
        let resp = self
            .http
            .request(method, req.uri().to_string())
            .headers(req.headers().clone())
            .body(body)
            .send()
            .await
            .map_err(|e| LifecycleError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| LifecycleError::Http(e.to_string()))?;
        Ok((status, text))
    }

    /// The current configuration ("" when the bucket has none).
    pub async fn get(&self) -> Result<String, LifecycleError> {
        match self.send(http::Method::GET, Vec::new()).await? {
            (200, body) => Ok(body),
            (404, body) if body.contains("NoSuchLifecycleConfiguration") => Ok(String::new()),
            (code, body) => Err(LifecycleError::Status(code, body)),
        }
    }

    pub async fn put(&self, xml: String) -> Result<(), LifecycleError> {
        match self.send(http::Method::PUT, xml.into_bytes()).await? {
            (200, _) => Ok(()),
            (code, body) => Err(LifecycleError::Status(code, body)),
        }
    }

    /// The bucket's objects, through object_store.
    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        self.s3.clone()
    }

    async fn holds_objects(&self, prefix: &str) -> bool {
        let prefix = Path::from(prefix.trim_end_matches('/'));
        matches!(self.s3.list(Some(&prefix)).next().await, Some(Ok(_)))
    }
}

/// What one enforcement did.
#[derive(Debug, Clone, PartialEq)]
pub struct Enforced {
    /// Whether the configuration had to be written.
    pub written: bool,
    /// opname's rules in force after the read-back.
    pub rules: Vec<rules::Rule>,
}

/// Brings opname's rules in line with the classes in use, keeping everyone else's rules, and
/// verifies the result by reading it back.
pub async fn enforce(
    bucket: &Bucket,
    prefix: &str,
    in_use: &BTreeSet<u32>,
    archive_days: u32,
) -> Result<Enforced, LifecycleError> {
    let current = rules::parse(&bucket.get().await?)?;
    let mut retired_with_objects = BTreeSet::new();
    for r in &current.ours {
        if let (Some(days), rules::Rule::Expire { prefix: p, .. }) = (r.class(), r)
            && !in_use.contains(&days)
            && bucket.holds_objects(p).await
        {
            retired_with_objects.insert(days);
        }
    }
    let classes = rules::classes_to_keep(in_use, &current, |d| retired_with_objects.contains(&d));
    let want = rules::desired(
        &opname_model::layout::Layout::new(prefix),
        &classes,
        archive_days,
    );
    let written = match rules::plan(&current, &want) {
        Some(xml) => {
            bucket.put(xml).await?;
            true
        }
        None => false,
    };
    let back: Configuration = rules::parse(&bucket.get().await?)?;
    let mut sorted = want.clone();
    sorted.sort();
    if back.ours != sorted || back.foreign.len() != current.foreign.len() {
        return Err(LifecycleError::NotInForce);
    }
    Ok(Enforced {
        written,
        rules: back.ours,
    })
}

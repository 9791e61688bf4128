//! The export Job: its spec (hardened like the recorder pods) and its program, the `export` subcommand that writes the parts and reports progress into the BulkExport's status.

use super::*;

/// `base` cut to fit a label value (63 characters) with a hash of `identity` after it, so that
/// different identities never share a value.
fn bounded(base: &str, identity: &str) -> String {
    let hash = hex::encode(&sha2::Sha256::digest(identity)[..4]);
    let mut base: String = base.chars().take(54).collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}-{hash}")
}

/// The Job's name: stable per BulkExport, within the 63 characters a pod label allows.
pub fn job_name(ns: &str, name: &str) -> String {
    bounded(
        &format!("opname-export-{ns}-{name}"),
        &format!("{ns}/{name}"),
    )
}

/// A label value for a BulkExport's name (which may be up to 253 characters): the name itself
/// when it fits.
pub fn name_label(name: &str) -> String {
    if name.len() <= 63 {
        name.to_string()
    } else {
        bounded(name, name)
    }
}

pub fn job_namespace(settings: &Settings) -> String {
    settings
        .export
        .job_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "opname-system".into())
}

/// The export Job for a BulkExport.
pub fn job(ns: &str, name: &str, settings: &Settings) -> Job {
    let s = &settings.export;
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "opname-operator".to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "opname-export".to_string(),
        ),
        (LABEL_NS.to_string(), ns.to_string()),
        (LABEL_NAME.to_string(), name_label(name)),
    ]);
    let q = |v: &str| Quantity(v.to_string());
    let container = Container {
        name: "export".into(),
        image: Some(s.image.clone()),
        security_context: Some(crate::kube::hardened_container()),
        args: Some(vec![
            "export".into(),
            "--config".into(),
            "/etc/opname/operator.yaml".into(),
            "--namespace".into(),
            ns.into(),
            "--name".into(),
            name.into(),
        ]),
        env: Some(
            std::iter::once(EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .chain(settings.log_format.env())
            .collect(),
        ),
        env_from: s.credentials_secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.clone(),
                    optional: Some(true),
                }),
                ..Default::default()
            }]
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: "/etc/opname".into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        // Bounded by design: a few upload chunks and one row per recording.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), q("200m")),
                ("memory".into(), q("64Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), q("256Mi"))])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut job = Job {
        metadata: ObjectMeta {
            name: Some(job_name(ns, name)),
            namespace: Some(job_namespace(settings)),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(LABEL_NAME.to_string(), name.to_string())])),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            ttl_seconds_after_finished: Some(7 * 24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    security_context: Some(crate::kube::hardened_pod()),
                    service_account_name: Some(s.service_account.clone()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: s.config_map.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    image_pull_secrets: crate::kube::pull_secrets(&settings.image_pull_secrets),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(pod) = job.spec.as_mut().and_then(|j| j.template.spec.as_mut()) {
        s.scheduling.apply(pod, &labels, None);
    }
    job
}

/// A Job stands for the BulkExport named in its annotation (its label may be shortened).
pub fn export_of(job: Job) -> Option<ObjectRef<BulkExport>> {
    let ns = job.metadata.labels.as_ref()?.get(LABEL_NS)?;
    let name = job.metadata.annotations.as_ref()?.get(LABEL_NAME)?;
    Some(ObjectRef::new(name).within(ns))
}

pub(super) fn progress_of(p: &parts::Progress) -> ExportProgress {
    ExportProgress {
        recordings_done: p.recordings_done as i64,
        recordings_total: p.recordings_total as i64,
        bytes_done: p.bytes_done as i64,
        bytes_total: p.bytes_total as i64,
    }
}

/// The `export` subcommand: what the Job's pod runs.
pub async fn run_job(settings: &Settings, ns: &str, name: &str) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let api = Api::<BulkExport>::namespaced(client, ns);
    let bex = api
        .get(name)
        .await
        .map_err(|e| format!("BulkExport {ns}/{name}: {e}"))?;
    let status = bex.status.clone().unwrap_or_default();
    if status.phase == Some(ExportPhase::Succeeded) {
        tracing::info!("already exported");
        return Ok(());
    }
    let store = crate::store::open(&settings.store).map_err(|e| e.to_string())?;
    let catalog = Catalog::new(store, &settings.store.prefix);
    let start = status.start_time.unwrap_or(Time(jiff::Timestamp::now()));
    patch_status(
        &api,
        name,
        serde_json::json!({ "phase": ExportPhase::Running, "startTime": start }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let organisation =
        Organisation::from_names(status.time_zone.as_deref(), status.locale.as_deref())
            .map_err(|e| e.to_string())?;
    let request = parts::Request {
        namespace: ns.to_string(),
        name: name.to_string(),
        month: bex.spec.month.clone(),
        users: bex.spec.request.users.clone(),
        min_retention_days: settings.export.min_retention_days,
        part_size: settings.export.part_size_bytes,
        bytes_per_second: settings.export.bytes_per_second,
        organisation,
    };
    // Progress goes to the status at most once a second.
    let (tx, mut rx) = tokio::sync::watch::channel(parts::Progress::default());
    let progress_api = api.clone();
    let progress_name = name.to_string();
    let reporter = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let progress = progress_of(&rx.borrow_and_update());
            if let Err(e) = patch_status(
                &progress_api,
                &progress_name,
                serde_json::json!({ "progress": progress }),
            )
            .await
            {
                tracing::warn!(error = %e, "cannot report progress");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let result = parts::run(&catalog, &request, |p| {
        let _ = tx.send(p.clone());
    })
    .await;
    let last = progress_of(&tx.borrow());
    drop(tx);
    let _ = reporter.await;
    let parts = match result {
        Ok(p) => p,
        Err(e) => {
            let message = format!("export attempt failed: {e}");
            let _ = patch_status(&api, name, serde_json::json!({ "message": message })).await;
            return Err(message);
        }
    };
    let signer =
        LinkSigner::from_settings(&settings.store, settings.export.public_endpoint.as_deref())
            .map_err(|e| e.to_string())?;
    let mut parts: Vec<ExportPart> = parts
        .into_iter()
        .map(|p| ExportPart {
            key: p.key,
            size: p.size as i64,
            sha256: p.sha256,
            recordings: p.recordings as i64,
            url: None,
            expires: None,
        })
        .collect();
    sign_parts(
        signer.as_ref(),
        catalog.layout(),
        ns,
        name,
        &mut parts,
        bex.spec.request.link_ttl.as_deref(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let total: i64 = parts.iter().map(|p| p.recordings).sum();
    let message = if parts.is_empty() {
        Some(format!(
            "no recordings in {}: nothing to export",
            bex.spec.month
        ))
    } else {
        status.message.clone()
    };
    patch_status(
        &api,
        name,
        serde_json::json!({
            "phase": ExportPhase::Succeeded,
            "completionTime": Time(jiff::Timestamp::now()),
            "archivesExpire": archives_expire(start.0, settings.export.archive_days).map(Time),
            "message": message,
            "parts": parts,
            "progress": last,
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(
        namespace = ns,
        export = name,
        recordings = total,
        "export complete"
    );
    Ok(())
}

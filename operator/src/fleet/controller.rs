//! The I/O around [`crate::fleet::plan`]: watch policies and children, apply what the plan says
//! with server-side apply, patch statuses, publish Events.
//!
//! Every reconcile of any policy plans its whole namespace (the namespace is the unit the fleet
//! serves), so reconciles are idempotent and order does not matter; [`fleet::planned`] makes
//! the other reconciles of a namespace just planned do nothing. The fleet has no owner
//! references (see `children::meta`): a sweep deletes the fleet of a namespace without policies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::RecordingPolicy;
use crate::fleet::{self, Children, NAME, TCP_SERVICE};
use crate::kube::MANAGER;
use crate::metrics::Metrics;
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    #[error("policy {0} has no namespace")]
    NoNamespace(String),
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub store: Store<RecordingPolicy>,
    /// How retention was last verified to be enforced (by the lifecycle task or the sweeper).
    pub retention: crate::retention::Enforced,
    pub planned: fleet::planned::Planned,
    pub applied: fleet::applied::Applied,
}

/// Status patches in flight at once: a readiness change in a namespace of 20,000 policies
/// rewrites every policy's `Ready`; one at a time that took minutes.
const STATUS_WRITES: usize = 32;

fn children_selector() -> watcher::Config {
    watcher::Config::default().labels(
        "app.kubernetes.io/managed-by=opname-operator,app.kubernetes.io/name=opname-recorder",
    )
}

/// An object of a namespace's fleet changed: the namespace is stale, and one of its policies
/// (other than `except`, a policy just deleted) stands for it — its reconcile plans them all.
fn namespace_of(
    ctx: &Context,
    ns: Option<String>,
    except: Option<String>,
) -> Option<ObjectRef<RecordingPolicy>> {
    let ns = ns?;
    ctx.planned.stale(&ns);
    ctx.store
        .find(|p| {
            p.namespace().as_deref() == Some(ns.as_str())
                && except.as_deref() != Some(p.name_any().as_str())
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
}

/// A child of a fleet changed: nothing to do if it is the echo of the operator's own write,
/// otherwise its namespace is planned (and the child applied) again.
fn child_changed<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
) -> Option<ObjectRef<RecordingPolicy>> {
    let meta = obj.meta();
    let (ns, name) = (meta.namespace.as_deref()?, meta.name.as_deref()?);
    if ctx
        .applied
        .observed(&K::kind(&()), ns, name, meta.resource_version.as_deref())
    {
        return None;
    }
    namespace_of(ctx, Some(ns.to_string()), None)
}

/// Runs the controller until the stream ends (signal) or `stop` resolves (leadership lost).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let policies = Api::<RecordingPolicy>::all(client.clone());
    // The reflector is built here rather than by `Controller::new` so that its initial sync is
    // announced on a watch: `Store::wait_until_ready` keeps only the last waiter's waker (a
    // oneshot under kube-runtime's DelayedInit), so a second waiter beside the controller's
    // own runner hangs forever — the lifecycle loop did, on a real API server, in one start
    // out of two.
    let (reader, writer) = kube::runtime::reflector::store();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let trigger = kube::runtime::reflector(writer, watcher(policies, watcher::Config::default()))
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                synced_tx.send_replace(true);
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(trigger, reader);
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let store = controller.store();
    let retention: crate::retention::Enforced = Arc::new(tokio::sync::watch::channel(None).0);
    let objects = crate::store::open(&settings.store)
        .inspect_err(
            |e| tracing::error!(error = %e, "retention sweeper is off: cannot open the store"),
        )
        .ok();
    crate::retention::start(
        &settings,
        store.clone(),
        synced,
        objects,
        metrics.clone(),
        retention.clone(),
    );
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        store,
        retention,
        client: client.clone(),
        settings,
        metrics,
        planned: fleet::planned::Planned::default(),
        applied: fleet::applied::Applied::default(),
    });
    tokio::spawn(sweep_orphans(ctx.clone()));
    let (c1, c2, c3, c4, c5, c6) = (
        ctx.clone(),
        ctx.clone(),
        ctx.clone(),
        ctx.clone(),
        ctx.clone(),
        ctx.clone(),
    );
    controller
        // Ready and the front door's dispatcher list follow the recorders' readiness.
        .watches(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={NAME}")),
            move |o: EndpointSlice| namespace_of(&c1, o.namespace(), None),
        )
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            children_selector(),
            move |o: ConfigMap| child_changed(&c2, &o),
        )
        .watches(
            Api::<Deployment>::all(client.clone()),
            children_selector(),
            move |o: Deployment| child_changed(&c3, &o),
        )
        .watches(
            Api::<Service>::all(client.clone()),
            children_selector(),
            move |o: Service| child_changed(&c4, &o),
        )
        // A deleted NetworkPolicy would open SIP to anyone.
        .watches(
            Api::<NetworkPolicy>::all(client.clone()),
            children_selector(),
            move |o: NetworkPolicy| child_changed(&c6, &o),
        )
        // A deleted policy leaves the namespace's plan (and others' claims) to be made again.
        .watches(
            Api::<RecordingPolicy>::all(client.clone()),
            watcher::Config::default(),
            move |p: RecordingPolicy| {
                let gone = c5.store.get(&ObjectRef::from_obj(&p)).is_none();
                if gone {
                    if let Some(ns) = p.namespace() {
                        c5.applied.forget(STATUS, &ns, &p.name_any());
                    }
                    namespace_of(&c5, p.namespace(), Some(p.name_any()))
                } else {
                    None
                }
            },
        )
        // Retention verified anew (a class got its rule, rules lost): every status says so now.
        .reconcile_all_on(futures::stream::unfold(
            ctx.retention.subscribe(),
            |mut rx| async move {
                rx.changed().await.ok()?;
                Some(((), rx))
            },
        ))
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

fn error_policy(policy: Arc<RecordingPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), namespace = ?policy.namespace(), %error, "reconcile failed");
    ctx.metrics.failures.inc();
    Action::requeue(Duration::from_secs(15))
}

async fn reconcile(policy: Arc<RecordingPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let ns = policy
        .namespace()
        .ok_or_else(|| Error::NoNamespace(policy.name_any()))?;
    let retention = ctx.retention.borrow().clone();
    if ctx.planned.current(&ns, &policy, retention.as_ref()) {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let lock = ctx.planned.lock(&ns);
    let _planning = lock.lock().await;
    // Another reconcile of the namespace may have planned it while this one waited.
    if ctx.planned.current(&ns, &policy, retention.as_ref()) {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let generation = ctx.planned.generation(&ns);
    let policies: Vec<RecordingPolicy> = ctx
        .store
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .map(|p| (*p).clone())
        .collect();
    let now = Time(jiff::Timestamp::now());
    let mut plan = fleet::plan(&ns, &policies, &ctx.settings, retention.as_ref(), &now)?;
    let slices = Api::<EndpointSlice>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={NAME}")))
        .await?;
    let recorders = fleet::serving::ready_recorders(&slices.items);
    fleet::serving::require_ready_recorders(
        &ns,
        &mut plan.statuses,
        &policies,
        recorders.len(),
        &now,
    );
    match &plan.children {
        Some(children) => {
            apply_children(&ctx, &ns, children).await?;
            if ctx.settings.front_door.enabled {
                apply_front_door(&ctx, &ns, &recorders).await?;
            }
        }
        None => delete_children(&ctx, &ns).await?,
    }
    write_statuses(&ctx, &ns, &policies, &plan.statuses).await?;
    for e in &plan.events {
        let Some(p) = policies.iter().find(|p| p.name_any() == e.policy) else {
            continue;
        };
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        crate::kube::publish(
            &ctx.recorder,
            &p.object_ref(&()),
            type_,
            e.reason,
            "Reconcile",
            e.note.clone(),
        )
        .await;
    }
    ctx.planned.record(&ns, generation, &policies, retention);
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Kind under which [`fleet::applied`] remembers the statuses written.
const STATUS: &str = "RecordingPolicy/status";

/// The statuses that differ from what the policies carry, [`STATUS_WRITES`] at a time. A status
/// just written is not written again while the cache has not caught up with it.
async fn write_statuses(
    ctx: &Context,
    ns: &str,
    policies: &[RecordingPolicy],
    statuses: &std::collections::BTreeMap<String, crate::crd::RecordingPolicyStatus>,
) -> Result<(), Error> {
    let api = Api::<RecordingPolicy>::namespaced(ctx.client.clone(), ns);
    let mut writes = Vec::new();
    for p in policies {
        let name = p.name_any();
        let Some(status) = statuses.get(&name) else {
            continue;
        };
        // Most statuses are as the policy carries them: no serialisation for those.
        if p.status.as_ref() == Some(status) {
            continue;
        }
        let fingerprint = fleet::applied::fingerprint(status);
        if ctx.applied.unchanged(STATUS, ns, &name, fingerprint) {
            continue;
        }
        let patch = serde_json::json!({
            "apiVersion": RecordingPolicy::api_version(&()),
            "kind": RecordingPolicy::kind(&()),
            "status": status,
        });
        let api = api.clone();
        writes.push(async move {
            let written = api
                .patch_status(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await?;
            Ok::<_, kube::Error>((name, fingerprint, written.resource_version()))
        });
    }
    let mut results = futures::stream::iter(writes).buffer_unordered(STATUS_WRITES);
    while let Some(result) = results.next().await {
        let (name, fingerprint, version) = result?;
        ctx.applied
            .record(STATUS, ns, &name, fingerprint, &version.unwrap_or_default());
    }
    Ok(())
}

/// Applies `obj` unless it is what the operator last applied and nobody changed since.
async fn apply<K>(ctx: &Context, ns: &str, obj: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let (kind, name) = (K::kind(&()), obj.meta().name.as_deref().unwrap_or(NAME));
    let fingerprint = fleet::applied::fingerprint(obj);
    if ctx.applied.unchanged(&kind, ns, name, fingerprint) {
        return Ok(());
    }
    let api = Api::<K>::namespaced(ctx.client.clone(), ns);
    let written = api
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    if let Some(version) = written.meta().resource_version.as_deref() {
        ctx.applied.record(&kind, ns, name, fingerprint, version);
    }
    Ok(())
}

async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&());
    if ctx.applied.absent(&kind, ns, name) {
        return Ok(());
    }
    match Api::<K>::namespaced(ctx.client.clone(), ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            ctx.applied.forget(&kind, ns, name);
            return Err(e.into());
        }
    }
    ctx.applied.record_absent(&kind, ns, name);
    Ok(())
}

async fn apply_children(ctx: &Context, ns: &str, c: &Children) -> Result<(), Error> {
    // Shards first: a recorder that reads the new configuration finds its policies.
    for shard in &c.shards {
        apply(ctx, ns, shard).await?;
    }
    let wanted: Vec<_> = c
        .shards
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    delete_shards(ctx, ns, &wanted).await?;
    apply(ctx, ns, &c.config_map).await?;
    match apply(ctx, ns, &c.service).await {
        // A Service from before the fleet went headless: its clusterIP cannot change in place.
        Err(Error::Kube(kube::Error::Api(s)))
            if s.code == 422 && s.message.contains("clusterIP") =>
        {
            tracing::info!(namespace = ns, "recorder Service recreated headless");
            delete::<Service>(ctx, ns, NAME).await?;
            apply(ctx, ns, &c.service).await?;
        }
        other => other?,
    }
    apply(ctx, ns, &c.tcp_service).await?;
    apply(ctx, ns, &c.deployment).await?;
    apply(ctx, ns, &c.pdb).await?;
    match &c.network_policy {
        Some(np) => apply(ctx, ns, np).await?,
        None => delete::<NetworkPolicy>(ctx, ns, NAME).await?,
    }
    match &c.hpa {
        Some(hpa) => apply(ctx, ns, hpa).await,
        None => delete::<HorizontalPodAutoscaler>(ctx, ns, NAME).await,
    }
}

/// The front door, configured with the recorders the EndpointSlices list as ready.
async fn apply_front_door(
    ctx: &Context,
    ns: &str,
    recorders: &[std::net::IpAddr],
) -> Result<(), Error> {
    let door = fleet::front_door::children(ns, &ctx.settings, recorders);
    apply(ctx, ns, &door.config_map).await?;
    apply(ctx, ns, &door.deployment).await?;
    apply(ctx, ns, &door.service).await
}

/// No active policy left (all suspended), or none at all (the orphan sweep): the fleet goes.
async fn delete_children(ctx: &Context, ns: &str) -> Result<(), Error> {
    delete::<HorizontalPodAutoscaler>(ctx, ns, NAME).await?;
    delete::<NetworkPolicy>(ctx, ns, NAME).await?;
    delete::<PodDisruptionBudget>(ctx, ns, NAME).await?;
    delete::<Deployment>(ctx, ns, NAME).await?;
    delete::<Service>(ctx, ns, TCP_SERVICE).await?;
    delete::<Service>(ctx, ns, NAME).await?;
    delete_shards(ctx, ns, &[]).await?;
    let door = fleet::front_door::FRONT_DOOR;
    delete::<Service>(ctx, ns, door).await?;
    delete::<Deployment>(ctx, ns, door).await?;
    delete::<ConfigMap>(ctx, ns, door).await?;
    delete::<ConfigMap>(ctx, ns, NAME).await
}

/// Deletes the namespace's policy shards other than `wanted`.
async fn delete_shards(ctx: &Context, ns: &str, wanted: &[String]) -> Result<(), Error> {
    let shards = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .list_metadata(&ListParams::default().labels(fleet::SHARD_LABEL))
        .await?;
    for name in shards.items.iter().filter_map(|s| s.metadata.name.clone()) {
        if !wanted.contains(&name) {
            delete::<ConfigMap>(ctx, ns, &name).await?;
        }
    }
    Ok(())
}

/// Every 30 s: the fleet of a namespace whose last policy is gone is deleted (the fleet has no
/// owner references for garbage collection to follow).
async fn sweep_orphans(ctx: Arc<Context>) {
    let deployments = Api::<Deployment>::all(ctx.client.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let list = match deployments
            .list_metadata(&ListParams::default().labels(
                "app.kubernetes.io/managed-by=opname-operator,app.kubernetes.io/name=opname-recorder",
            ))
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the fleets to find orphans");
                continue;
            }
        };
        for ns in list
            .items
            .iter()
            .filter_map(|d| d.metadata.namespace.clone())
        {
            // Asked of the API, not the cache: a cache not yet filled would look empty.
            let policies = Api::<RecordingPolicy>::namespaced(ctx.client.clone(), &ns)
                .list_metadata(&ListParams::default().limit(1))
                .await;
            if let Err(e) = &policies {
                tracing::warn!(namespace = ns, error = %e, "cannot list the namespace's policies");
            }
            if policies.is_ok_and(|p| p.items.is_empty()) {
                tracing::info!(namespace = ns, "last policy gone: deleting the fleet");
                match delete_children(&ctx, &ns).await {
                    Ok(()) => ctx.planned.forget(&ns),
                    Err(e) => tracing::warn!(namespace = ns, error = %e, "cannot delete the fleet"),
                }
            }
        }
    }
}

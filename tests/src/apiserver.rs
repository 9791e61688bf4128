//! A small Kubernetes API-server emulator for controller tests (no real API server can be
//! installed here). It speaks enough of the HTTP API for kube-rs clients, controllers and
//! kubectl-style tests, and says plainly what it does not do.
//!
//! Does: list and watch (resourceVersion, bookmarks, `410 Gone` for expired versions), get,
//! create (`generateName` too), replace, delete; merge, strategic-merge (as merge) and JSON
//! patches; server-side apply (last-applied tracking per field manager: fields a manager stops
//! applying are removed; conflicts between managers are reported unless `force`); the status
//! subresource; `metadata.generation` bumped on spec changes only; finalizers and
//! `deletionTimestamp`; owner-reference garbage collection (background); label and
//! `metadata.name` field selectors; `409` for existing names and stale resourceVersions;
//! validation of custom resources against the `openAPIV3Schema` in `crds/` (types, required,
//! patterns, bounds, enums, set-lists, defaults, pruning or strict rejection of unknown fields,
//! and `x-kubernetes-validations` CEL rules including transition rules, via kube-cel).
//!
//! Does not: authenticate or authorise, validate built-in kinds, run admission webhooks,
//! paginate (`limit` is ignored), track managed fields at field granularity across managers
//! (ownership is per last-applied configuration), or serve discovery.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

/// Watch history kept for resuming; older resourceVersions get 410.
const HISTORY: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    pub group: String,
    pub version: String,
    pub plural: String,
}

#[derive(Clone, Debug)]
struct KindInfo {
    kind: String,
    namespaced: bool,
    schema: Option<Value>,
    status_subresource: bool,
}

type Key = (Kind, String, String);

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: Kind,
    namespace: String,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
pub struct Store {
    rv: u64,
    kinds: HashMap<Kind, KindInfo>,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// Last configuration each field manager applied, per object (and per status).
    applied: HashMap<(Key, String, bool), Value>,
    next_uid: u64,
    /// TokenReview: token → (username, groups).
    tokens: HashMap<String, (String, Vec<String>)>,
    /// SubjectAccessReview: what is allowed, as (user, verb, group, resource, namespace).
    grants: Vec<(String, String, String, String, String)>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    pub store: Arc<Mutex<Store>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn builtins() -> Vec<(&'static str, &'static str, &'static str, &'static str, bool)> {
    vec![
        ("", "v1", "namespaces", "Namespace", false),
        ("", "v1", "configmaps", "ConfigMap", true),
        ("", "v1", "secrets", "Secret", true),
        ("", "v1", "services", "Service", true),
        ("", "v1", "pods", "Pod", true),
        ("", "v1", "events", "Event", true),
        ("", "v1", "serviceaccounts", "ServiceAccount", true),
        ("apps", "v1", "deployments", "Deployment", true),
        ("batch", "v1", "jobs", "Job", true),
        (
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        ),
        (
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
        ),
        ("events.k8s.io", "v1", "events", "Event", true),
        ("coordination.k8s.io", "v1", "leases", "Lease", true),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
        ),
    ]
}

#[derive(Debug)]
pub struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

fn err(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        reason,
        message: message.into(),
    }
}

impl ApiError {
    fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [("content-type", "application/json")],
            self.status().to_string(),
        )
            .into_response()
    }
}

fn api_version(k: &Kind) -> String {
    if k.group.is_empty() {
        k.version.clone()
    } else {
        format!("{}/{}", k.group, k.version)
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Store {
    fn info(&self, k: &Kind) -> Result<&KindInfo, ApiError> {
        self.kinds.get(k).ok_or_else(|| {
            err(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource ({})",
                    k.plural
                ),
            )
        })
    }

    fn record(
        &mut self,
        tx: &broadcast::Sender<Change>,
        kind: &Kind,
        namespace: &str,
        type_: &'static str,
        object: Value,
    ) {
        let change = Change {
            rv: self.rv,
            kind: kind.clone(),
            namespace: namespace.into(),
            type_,
            object,
        };
        self.history.push_back(change.clone());
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let _ = tx.send(change);
    }

    fn bump(&mut self, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
    }

    /// Defaults, pruning and validation of a custom resource; `old` for transition rules.
    fn admit(
        &self,
        kind: &Kind,
        obj: &mut Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<(), ApiError> {
        let info = self.info(kind)?;
        let Some(schema) = &info.schema else {
            return Ok(());
        };
        let mut problems = Vec::new();
        for key in ["spec", "status"] {
            if let (Some(sub_schema), Some(v)) = (schema["properties"].get(key), obj.get_mut(key)) {
                structural(sub_schema, v, key, strict, &mut problems);
            }
        }
        if let Some(v) = obj.as_object() {
            for k in v.keys() {
                if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str())
                    && schema["properties"].get(k).is_none()
                {
                    problems.push(format!("{k}: unknown field"));
                }
            }
        }
        for req in schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if obj.get(req).is_none() {
                problems.push(format!("{req}: Required value"));
            }
        }
        if problems.is_empty()
            && let Err(e) = kube::core::cel::Validator::new().validate(schema, obj, old)
        {
            problems.push(e.to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            Err(err(
                422,
                "Invalid",
                format!(
                    "{} \"{name}\" is invalid: {}",
                    info.kind,
                    problems.join("; ")
                ),
            ))
        }
    }
}

/// Applies defaults, prunes (or, strict, rejects) unknown fields, and checks types and bounds.
fn structural(schema: &Value, v: &mut Value, path: &str, strict: bool, problems: &mut Vec<String>) {
    if v.is_null() {
        if schema["nullable"] != true {
            problems.push(format!("{path}: Invalid value: null"));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !ok && schema["x-kubernetes-int-or-string"] != true {
        problems.push(format!("{path}: Invalid value: {v}: must be of type {ty}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        problems.push(format!(
            "{path}: Unsupported value: {v}: supported values: {}",
            Value::Array(allowed.clone())
        ));
    }
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            if let Some(props) = props {
                for (k, s) in props {
                    if !map.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
                for req in schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !map.contains_key(req) {
                        problems.push(format!("{path}.{req}: Required value"));
                    }
                }
            }
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                match sub {
                    Some(s) => {
                        if let Some(child) = map.get_mut(&k) {
                            structural(s, child, &format!("{path}.{k}"), strict, problems);
                        }
                    }
                    None if preserve => {}
                    None => {
                        if strict {
                            problems.push(format!("{path}.{k}: unknown field"));
                        } else {
                            map.remove(&k);
                        }
                    }
                }
            }
            if let Some(min) = schema["minProperties"].as_u64()
                && (map.len() as u64) < min
            {
                problems.push(format!("{path}: must have at least {min} properties"));
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                problems.push(format!(
                    "{path}: Invalid value: must have at least {min} items"
                ));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && (items.len() as u64) > max
            {
                problems.push(format!("{path}: Too many: must have at most {max} items"));
            }
            if schema["x-kubernetes-list-type"] == "set" {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].contains(a) {
                        problems.push(format!("{path}[{i}]: Duplicate value: {a}"));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), strict, problems);
                }
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64()
                && n < min
            {
                problems.push(format!(
                    "{path}: Invalid value: {s:?}: must be at least {min} characters"
                ));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && n > max
            {
                problems.push(format!(
                    "{path}: Too long: may not be more than {max} characters"
                ));
            }
            if let Some(p) = schema["pattern"].as_str() {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => {
                        problems.push(format!("{path}: Invalid value: {s:?}: should match '{p}'"))
                    }
                    Err(e) => problems.push(format!(
                        "{path}: schema pattern {p:?} does not compile: {e}"
                    )),
                    _ => {}
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema["minimum"].as_f64()
                && x < min
            {
                problems.push(format!(
                    "{path}: Invalid value: {x}: should be greater than or equal to {min}"
                ));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && x > max
            {
                problems.push(format!(
                    "{path}: Invalid value: {x}: should be less than or equal to {max}"
                ));
            }
        }
        _ => {}
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Removes from `target` the fields `prev` set that `next` no longer sets (objects recurse,
/// everything else is a leaf).
fn remove_dropped(target: &mut Value, prev: &Value, next: &Value) {
    let (Some(t), Some(p)) = (target.as_object_mut(), prev.as_object()) else {
        return;
    };
    for (k, pv) in p {
        match next.get(k) {
            None => {
                t.remove(k);
            }
            Some(nv) if pv.is_object() && nv.is_object() => {
                if let Some(tv) = t.get_mut(k) {
                    remove_dropped(tv, pv, nv);
                }
            }
            _ => {}
        }
    }
}

/// Drops from a manager's applied configuration the fields the object no longer has with that
/// value: someone else changed them, so this manager no longer owns them.
fn prune_owned(cfg: &mut Value, obj: &Value) {
    let Some(m) = cfg.as_object_mut() else { return };
    m.retain(|k, v| match obj.get(k) {
        Some(o) if v.is_object() && o.is_object() => {
            prune_owned(v, o);
            true
        }
        Some(o) => o == v,
        None => false,
    });
}

/// Leaf paths and values of an applied configuration (lists are atomic).
fn leaves(v: &Value, prefix: String, out: &mut Vec<(String, Value)>) {
    match v.as_object() {
        Some(m) => {
            for (k, x) in m {
                leaves(x, format!("{prefix}/{k}"), out);
            }
        }
        None => out.push((prefix, v.clone())),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test).
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), ApiError> {
    for op in ops
        .as_array()
        .ok_or_else(|| err(400, "BadRequest", "JSON patch must be an array"))?
    {
        let path = op["path"].as_str().unwrap_or_default();
        let parts: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = parts
            .split_last()
            .ok_or_else(|| err(400, "BadRequest", "empty JSON patch path"))?;
        let mut cur = &mut *target;
        for p in parents {
            cur = match cur {
                Value::Object(m) => m.get_mut(p),
                Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| {
                err(
                    422,
                    "Invalid",
                    format!("JSON patch path {path} does not exist"),
                )
            })?;
        }
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match (op["op"].as_str().unwrap_or_default(), cur) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), value);
            }
            ("add", Value::Array(a)) if last == "-" => a.push(value),
            ("add", Value::Array(a)) => {
                a.insert(last.parse().unwrap_or(a.len()).min(a.len()), value)
            }
            ("replace", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| err(422, "Invalid", "bad index"))?;
                *a.get_mut(i)
                    .ok_or_else(|| err(422, "Invalid", "index out of range"))? = value;
            }
            ("remove", Value::Object(m)) => {
                m.remove(last)
                    .ok_or_else(|| err(422, "Invalid", format!("{path} does not exist")))?;
            }
            ("remove", Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| err(422, "Invalid", "bad index"))?;
                if i >= a.len() {
                    return Err(err(422, "Invalid", "index out of range"));
                }
                a.remove(i);
            }
            ("test", Value::Object(m)) if m.get(last) == Some(&value) => {}
            // As the API server's json-patch: an absent member tests equal to null (kube-rs adds
            // the first finalizer with exactly this test).
            ("test", Value::Object(m)) if value.is_null() && !m.contains_key(last) => {}
            ("test", Value::Array(a))
                if last.parse::<usize>().ok().and_then(|i| a.get(i)) == Some(&value) => {}
            ("test", _) => return Err(err(422, "Invalid", format!("test failed at {path}"))),
            (o, _) => {
                return Err(err(
                    422,
                    "Invalid",
                    format!("unsupported JSON patch op {o}"),
                ));
            }
        }
    }
    Ok(())
}

/// `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
pub fn selector_matches(selector: &str, labels: &Map<String, Value>) -> bool {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    terms.push(cur);
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            let set = |s: &str| {
                s.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .collect::<Vec<_>>()
            };
            if let Some((k, vs)) = t.split_once(" notin ") {
                get(k.trim()).is_none_or(|v| !set(vs).iter().any(|x| x == v))
            } else if let Some((k, vs)) = t.split_once(" in ") {
                get(k.trim()).is_some_and(|v| set(vs).iter().any(|x| x == v))
            } else if let Some((k, v)) = t.split_once("!=") {
                get(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                get(k.trim()) == Some(v.trim())
            } else if let Some(k) = t.strip_prefix('!') {
                get(k.trim()).is_none()
            } else {
                get(t).is_some()
            }
        })
}

struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let kind = |plural: &str| Kind {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
    };
    let t = match rest {
        ["namespaces", ns, plural, rest @ ..] => Target {
            kind: kind(plural),
            namespace: Some(ns.to_string()),
            name: rest.first().map(|s| s.to_string()),
            status: rest.get(1) == Some(&"status"),
        },
        [plural, rest @ ..] => Target {
            kind: kind(plural),
            namespace: None,
            name: rest.first().map(|s| s.to_string()),
            status: rest.get(1) == Some(&"status"),
        },
        [] => return None,
    };
    Some(t)
}

fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

type Shared = (Arc<Mutex<Store>>, broadcast::Sender<Change>);

impl ApiServer {
    /// Starts on a free loopback port with the CRDs found in `crds_dir`.
    pub async fn start(crds_dir: &Path) -> Self {
        let mut store = Store::default();
        for (g, v, p, k, ns) in builtins() {
            store.kinds.insert(
                Kind {
                    group: g.into(),
                    version: v.into(),
                    plural: p.into(),
                },
                KindInfo {
                    kind: k.into(),
                    namespaced: ns,
                    schema: None,
                    // As in Kubernetes: writes to the object leave these kinds' status alone.
                    status_subresource: matches!(
                        p,
                        "jobs"
                            | "deployments"
                            | "pods"
                            | "horizontalpodautoscalers"
                            | "poddisruptionbudgets"
                    ),
                },
            );
        }
        for entry in std::fs::read_dir(crds_dir)
            .expect("crds directory")
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let crd: Value = serde_saphyr::from_str(&text).expect("CRD YAML");
            let spec = &crd["spec"];
            for ver in spec["versions"].as_array().into_iter().flatten() {
                store.kinds.insert(
                    Kind {
                        group: spec["group"].as_str().unwrap().into(),
                        version: ver["name"].as_str().unwrap().into(),
                        plural: spec["names"]["plural"].as_str().unwrap().into(),
                    },
                    KindInfo {
                        kind: spec["names"]["kind"].as_str().unwrap().into(),
                        namespaced: spec["scope"] == "Namespaced",
                        schema: Some(ver["schema"]["openAPIV3Schema"].clone()),
                        status_subresource: ver["subresources"].get("status").is_some(),
                    },
                );
            }
        }
        let (tx, _) = broadcast::channel(65_536);
        let store = Arc::new(Mutex::new(store));
        let shared: Shared = (store.clone(), tx);
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, store, task }
    }

    /// A kubeconfig pointing at this server (no authentication).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: http://{}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: test\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: test\n  user: {{}}\n",
            self.addr
        )
    }

    /// Objects of a kind in a namespace (for assertions and the process kubelet).
    pub fn list(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let store = self.store.lock().unwrap();
        store
            .objects
            .iter()
            .filter(|((k, ns, _), _)| {
                k.group == group
                    && k.version == version
                    && k.plural == plural
                    && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One HTTP request against the server; returns the status code and the JSON body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let resp = client
            .request(m, format!("http://{}{path}", self.addr))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates every document of a YAML file (as `kubectl create -f`), returning each status code
    /// and body.
    pub async fn create_yaml(&self, yaml: &str) -> Vec<(u16, Value)> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("YAML");
        let mut out = Vec::new();
        for d in docs.into_iter().filter(|d| d.is_object()) {
            out.push(
                self.request(
                    "POST",
                    &collection_path(&d),
                    "application/json",
                    &d.to_string(),
                )
                .await,
            );
        }
        out
    }

    /// A bearer token TokenReview accepts as `user`.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.store.lock().unwrap().tokens.insert(
            token.into(),
            (user.into(), groups.iter().map(|g| g.to_string()).collect()),
        );
    }

    /// Lets SubjectAccessReview allow `user` to `verb` `group`/`resource` in `namespace`.
    pub fn grant(&self, user: &str, verb: &str, group: &str, resource: &str, namespace: &str) {
        self.store.lock().unwrap().grants.push((
            user.into(),
            verb.into(),
            group.into(),
            resource.into(),
            namespace.into(),
        ));
    }

    /// Drops watch history so that older resourceVersions answer 410 (tests of relisting).
    pub fn compact(&self) {
        self.store.lock().unwrap().history.clear();
    }

    pub fn resource_version(&self) -> u64 {
        self.store.lock().unwrap().rv
    }
}

/// The collection URL of an object from its apiVersion, kind and namespace.
pub fn collection_path(obj: &Value) -> String {
    let av = obj["apiVersion"].as_str().unwrap_or("v1");
    let kind = obj["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "RecordingPolicy" => "recordingpolicies".to_string(),
        "PodDisruptionBudget" => "poddisruptionbudgets".to_string(),
        "HorizontalPodAutoscaler" => "horizontalpodautoscalers".to_string(),
        other => format!("{}s", other.to_lowercase()),
    };
    let prefix = if av.contains('/') {
        format!("/apis/{av}")
    } else {
        format!("/api/{av}")
    };
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if kind != "Namespace" => format!("{prefix}/namespaces/{ns}/{plural}"),
        _ => format!("{prefix}/{plural}"),
    }
}

async fn handle(State((store, tx)): State<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(&req);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    // Authentication and authorization reviews answer from the tables a test configures.
    if method == Method::POST
        && (path == "/apis/authentication.k8s.io/v1/tokenreviews"
            || path == "/apis/authorization.k8s.io/v1/subjectaccessreviews")
    {
        let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let s = store.lock().unwrap();
        review["status"] = if path.ends_with("tokenreviews") {
            match s
                .tokens
                .get(review["spec"]["token"].as_str().unwrap_or_default())
            {
                Some((user, groups)) => {
                    json!({"authenticated": true, "user": {"username": user, "groups": groups}})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        } else {
            let spec = &review["spec"];
            let a = &spec["resourceAttributes"];
            let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let asked = (
                field(&spec["user"]),
                field(&a["verb"]),
                field(&a["group"]),
                field(&a["resource"]),
                field(&a["namespace"]),
            );
            json!({"allowed": s.grants.contains(&asked)})
        };
        return (
            StatusCode::CREATED,
            [("content-type", "application/json")],
            review.to_string(),
        )
            .into_response();
    }
    if path == "/version" {
        let v = json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-opname-emulator"});
        return ([("content-type", "application/json")], v.to_string()).into_response();
    }
    let Some(t) = parse_path(&path) else {
        return err(404, "NotFound", format!("no route {path}")).into_response();
    };
    if method == Method::GET && q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(store, tx, t, q).await;
    }
    let result = {
        let mut s = store.lock().unwrap();
        dispatch(&mut s, &tx, &method, t, &q, &content_type, &body)
    };
    match result {
        Ok((code, v)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse_body(content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| err(400, "BadRequest", "body is not UTF-8"))?;
    if content_type.contains("yaml") {
        serde_saphyr::from_str(text).map_err(|e| err(400, "BadRequest", e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| err(400, "BadRequest", e.to_string()))
    }
}

fn with_type(mut v: Value, kind: &Kind, info: &KindInfo) -> Value {
    v["apiVersion"] = json!(api_version(kind));
    v["kind"] = json!(info.kind);
    v
}

/// Everything but metadata and status: a change here bumps `generation`.
fn spec_part(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

fn dispatch(
    s: &mut Store,
    tx: &broadcast::Sender<Change>,
    method: &Method,
    t: Target,
    q: &HashMap<String, String>,
    ct: &str,
    body: &Bytes,
) -> Result<(u16, Value), ApiError> {
    let key = (
        t.kind.clone(),
        if s.info(&t.kind)?.namespaced {
            t.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        },
        t.name.clone().unwrap_or_default(),
    );
    let manager = q.get("fieldManager").cloned().unwrap_or_default();
    let apply = ct.starts_with("application/apply-patch");
    let result = write(s, tx, method, t, q, ct, body)?;
    if matches!(*method, Method::PUT | Method::PATCH) {
        let obj = result.1.clone();
        for ((k, m, _), cfg) in s.applied.iter_mut() {
            if *k == key && !(apply && *m == manager) {
                prune_owned(cfg, &obj);
            }
        }
    }
    Ok(result)
}

fn write(
    s: &mut Store,
    tx: &broadcast::Sender<Change>,
    method: &Method,
    t: Target,
    q: &HashMap<String, String>,
    ct: &str,
    body: &Bytes,
) -> Result<(u16, Value), ApiError> {
    let info = s.info(&t.kind)?.clone();
    let ns = if info.namespaced {
        t.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let strict = q.get("fieldValidation").is_some_and(|v| v == "Strict");
    match (method.clone(), &t.name) {
        (Method::GET, None) => {
            let selector = q.get("labelSelector").cloned().unwrap_or_default();
            let field_name = q
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string));
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((k, ons, _), _)| *k == t.kind && (t.namespace.is_none() || *ons == ns))
                .filter(|(_, v)| {
                    selector_matches(
                        &selector,
                        v["metadata"]["labels"].as_object().unwrap_or(&Map::new()),
                    )
                })
                .filter(|((_, _, n), _)| field_name.as_ref().is_none_or(|f| f == n))
                .map(|(_, v)| v.clone())
                .collect();
            Ok((
                200,
                json!({"apiVersion": api_version(&t.kind), "kind": format!("{}List", info.kind), "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            ))
        }
        (Method::GET, Some(name)) => {
            let obj = s
                .objects
                .get(&(t.kind.clone(), ns.clone(), name.clone()))
                .cloned()
                .ok_or_else(|| {
                    err(
                        404,
                        "NotFound",
                        format!("{}.{} \"{name}\" not found", t.kind.plural, t.kind.group),
                    )
                })?;
            Ok((200, obj))
        }
        (Method::POST, None) => {
            let mut obj = with_type(parse_body(ct, body)?, &t.kind, &info);
            if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                let prefix = obj["metadata"]["generateName"]
                    .as_str()
                    .ok_or_else(|| err(422, "Invalid", "metadata.name: Required value"))?
                    .to_string();
                s.next_uid += 1;
                obj["metadata"]["name"] = json!(format!("{prefix}{:05x}", s.next_uid));
            }
            create(s, tx, &t.kind, &info, &ns, obj, strict).map(|v| (201, v))
        }
        (Method::PUT, Some(name)) => {
            let obj = with_type(parse_body(ct, body)?, &t.kind, &info);
            update(
                s,
                tx,
                &t.kind,
                &info,
                &ns,
                name,
                t.status,
                |_, _| Ok(obj.clone()),
                strict,
            )
            .map(|v| (200, v))
        }
        (Method::PATCH, Some(name)) => {
            let patch = parse_body(ct, body)?;
            let key = (t.kind.clone(), ns.clone(), name.clone());
            if ct.starts_with("application/apply-patch") {
                let manager = q.get("fieldManager").cloned().ok_or_else(|| {
                    err(
                        400,
                        "BadRequest",
                        "fieldManager is required for apply patches",
                    )
                })?;
                let force = q.get("force").is_some_and(|f| f == "true");
                let applied = with_type(patch, &t.kind, &info);
                let scope_key = (key.clone(), manager.clone(), t.status);
                if !force {
                    let mut mine = Vec::new();
                    leaves(&applied, String::new(), &mut mine);
                    for ((k, other, st), cfg) in s.applied.iter() {
                        if *k != key || *other == manager || *st != t.status {
                            continue;
                        }
                        let mut theirs = Vec::new();
                        leaves(cfg, String::new(), &mut theirs);
                        for (p, v) in &mine {
                            if p.starts_with("/metadata") || p == "/apiVersion" || p == "/kind" {
                                continue;
                            }
                            if theirs.iter().any(|(tp, tv)| tp == p && tv != v) {
                                return Err(err(
                                    409,
                                    "Conflict",
                                    format!(
                                        "Apply failed with 1 conflict: conflict with \"{other}\": {p}"
                                    ),
                                ));
                            }
                        }
                    }
                }
                let prev = s.applied.get(&scope_key).cloned();
                if !s.objects.contains_key(&key) {
                    if t.status {
                        return Err(err(
                            404,
                            "NotFound",
                            format!("{} \"{name}\" not found", t.kind.plural),
                        ));
                    }
                    let mut obj = applied.clone();
                    obj["metadata"]["name"] = json!(name);
                    let v = create(s, tx, &t.kind, &info, &ns, obj, strict)?;
                    s.applied.insert(scope_key, applied);
                    return Ok((201, v));
                }
                let v = update(
                    s,
                    tx,
                    &t.kind,
                    &info,
                    &ns,
                    name,
                    t.status,
                    |cur, _| {
                        let mut next = cur.clone();
                        if let Some(prev) = &prev {
                            remove_dropped(&mut next, prev, &applied);
                        }
                        merge(&mut next, &applied);
                        Ok(next)
                    },
                    strict,
                )?;
                s.applied.insert(scope_key, applied);
                Ok((200, v))
            } else {
                // JSON patch, or merge patch (strategic merge is treated as merge: no patch
                // strategies).
                let json = ct.starts_with("application/json-patch");
                update(
                    s,
                    tx,
                    &t.kind,
                    &info,
                    &ns,
                    name,
                    t.status,
                    |cur, _| {
                        let mut next = cur.clone();
                        if json {
                            json_patch(&mut next, &patch)?;
                        } else {
                            merge(&mut next, &patch);
                        }
                        Ok(next)
                    },
                    strict,
                )
                .map(|v| (200, v))
            }
        }
        (Method::DELETE, Some(name)) => {
            let key = (t.kind.clone(), ns.clone(), name.clone());
            let obj = s.objects.get(&key).cloned().ok_or_else(|| {
                err(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", t.kind.plural),
                )
            })?;
            let finalizers = obj["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if finalizers {
                if obj["metadata"]["deletionTimestamp"].is_null() {
                    let mut next = obj.clone();
                    next["metadata"]["deletionTimestamp"] = json!(now());
                    s.bump(&mut next);
                    s.objects.insert(key, next.clone());
                    s.record(tx, &t.kind, &ns, "MODIFIED", next.clone());
                    return Ok((202, next));
                }
                return Ok((202, obj));
            }
            remove(s, tx, &key);
            Ok((
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name, "kind": t.kind.plural}}),
            ))
        }
        _ => Err(err(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    }
}

/// Secrets: `stringData` is write-only and lands base64-encoded in `data`.
fn string_data(kind: &Kind, obj: &mut Value) {
    if kind.plural != "secrets" {
        return;
    }
    let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    for (k, v) in sd.as_object().into_iter().flatten() {
        obj["data"][k] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            v.as_str().unwrap_or_default()
        ));
    }
}

fn create(
    s: &mut Store,
    tx: &broadcast::Sender<Change>,
    kind: &Kind,
    info: &KindInfo,
    ns: &str,
    mut obj: Value,
    strict: bool,
) -> Result<Value, ApiError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = (kind.clone(), ns.to_string(), name.clone());
    if s.objects.contains_key(&key) {
        return Err(err(
            409,
            "AlreadyExists",
            format!("{}.{} \"{name}\" already exists", kind.plural, kind.group),
        ));
    }
    string_data(kind, &mut obj);
    if info.status_subresource {
        // The status of a resource with a status subresource is not set on create.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    s.admit(kind, &mut obj, None, strict)?;
    s.next_uid += 1;
    let meta = &mut obj["metadata"];
    if info.namespaced {
        meta["namespace"] = json!(ns);
    }
    meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", s.next_uid));
    meta["creationTimestamp"] = json!(now());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("deletionTimestamp");
        m.remove("resourceVersion");
    }
    s.bump(&mut obj);
    s.objects.insert(key, obj.clone());
    s.record(tx, kind, ns, "ADDED", obj.clone());
    Ok(obj)
}

#[allow(clippy::too_many_arguments)]
fn update(
    s: &mut Store,
    tx: &broadcast::Sender<Change>,
    kind: &Kind,
    info: &KindInfo,
    ns: &str,
    name: &str,
    status: bool,
    change: impl FnOnce(&Value, &Store) -> Result<Value, ApiError>,
    strict: bool,
) -> Result<Value, ApiError> {
    let key = (kind.clone(), ns.to_string(), name.to_string());
    let cur = s.objects.get(&key).cloned().ok_or_else(|| {
        err(
            404,
            "NotFound",
            format!("{}.{} \"{name}\" not found", kind.plural, kind.group),
        )
    })?;
    let mut next = change(&cur, s)?;
    if let Some(rv) = next["metadata"]["resourceVersion"].as_str()
        && rv
            != cur["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
    {
        return Err(err(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.plural
            ),
        ));
    }
    // Immutable metadata, and the part this endpoint may not change.
    for f in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "generation",
    ] {
        match cur["metadata"].get(f) {
            Some(v) => next["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if info.status_subresource {
        if status {
            let st = next.get("status").cloned();
            next = cur.clone();
            match st {
                Some(st) => next["status"] = st,
                None => {
                    if let Some(m) = next.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        } else {
            match cur.get("status") {
                Some(st) => next["status"] = st.clone(),
                None => {
                    if let Some(m) = next.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }
    string_data(kind, &mut next);
    s.admit(kind, &mut next, Some(&cur), strict)?;
    if spec_part(&next) != spec_part(&cur) {
        let g = cur["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        next["metadata"]["generation"] = json!(g);
    }
    let mut cmp = next.clone();
    cmp["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
    if cmp == cur {
        return Ok(cur);
    }
    let finalizing = !next["metadata"]["deletionTimestamp"].is_null()
        && next["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
    s.bump(&mut next);
    s.objects.insert(key.clone(), next.clone());
    s.record(tx, kind, ns, "MODIFIED", next.clone());
    if finalizing {
        remove(s, tx, &key);
    }
    Ok(next)
}

/// Deletes an object and, in the background, everything it owned alone.
fn remove(s: &mut Store, tx: &broadcast::Sender<Change>, key: &Key) {
    let Some(mut obj) = s.objects.remove(key) else {
        return;
    };
    s.applied.retain(|(k, _, _), _| k != key);
    s.bump(&mut obj);
    s.record(tx, &key.0, &key.1, "DELETED", obj);
    loop {
        let uids: std::collections::HashSet<String> = s
            .objects
            .values()
            .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let orphan = s.objects.iter().find(|(_, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    !refs.is_empty()
                        && refs
                            .iter()
                            .all(|r| !uids.contains(r["uid"].as_str().unwrap_or_default()))
                })
        });
        let Some((k, o)) = orphan.map(|(k, o)| (k.clone(), o.clone())) else {
            break;
        };
        if o["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            if o["metadata"]["deletionTimestamp"].is_null() {
                let mut next = o.clone();
                next["metadata"]["deletionTimestamp"] = json!(now());
                s.bump(&mut next);
                s.objects.insert(k.clone(), next.clone());
                s.record(tx, &k.0, &k.1, "MODIFIED", next);
            }
            // Waiting on its finalizers; GC comes back when they are removed.
            let mut next = s.objects.get(&k).cloned().unwrap_or(o);
            next["metadata"]["ownerReferences"] = json!([]);
            s.objects.insert(k, next);
            continue;
        }
        s.objects.remove(&k);
        s.applied.retain(|(ak, _, _), _| *ak != k);
        let mut gone = o;
        s.bump(&mut gone);
        s.record(tx, &k.0, &k.1, "DELETED", gone);
    }
}

async fn watch(
    store: Arc<Mutex<Store>>,
    tx: broadcast::Sender<Change>,
    t: Target,
    q: HashMap<String, String>,
) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let field_name = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string));
    let (replay, mut rx, expired, current, info) = {
        let s = store.lock().unwrap();
        let Ok(info) = s.info(&t.kind).cloned() else {
            return err(404, "NotFound", "unknown resource").into_response();
        };
        let oldest = s.history.front().map_or(s.rv + 1, |c| c.rv);
        let expired = from != 0 && from + 1 < oldest && from < s.rv;
        let replay: Vec<Change> = if from == 0 {
            // No version: current state as ADDED, then changes.
            s.objects
                .iter()
                .filter(|((k, _, _), _)| *k == t.kind)
                .map(|((k, ns, _), v)| Change {
                    rv: 0,
                    kind: k.clone(),
                    namespace: ns.clone(),
                    type_: "ADDED",
                    object: v.clone(),
                })
                .collect()
        } else {
            s.history.iter().filter(|c| c.rv > from).cloned().collect()
        };
        (replay, tx.subscribe(), expired, s.rv, info)
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let kind = t.kind.clone();
    let matches = move |c: &Change| {
        c.kind == t.kind
            && t.namespace.as_ref().is_none_or(|n| *n == c.namespace)
            && selector_matches(
                &selector,
                c.object["metadata"]["labels"]
                    .as_object()
                    .unwrap_or(&Map::new()),
            )
            && field_name
                .as_ref()
                .is_none_or(|f| c.object["metadata"]["name"].as_str() == Some(f))
    };
    tokio::spawn(async move {
        let line = |v: Value| Ok(Bytes::from(format!("{v}\n")));
        if expired {
            let status = err(
                410,
                "Expired",
                format!("too old resource version: {from} ({current})"),
            )
            .status();
            let _ = sender
                .send(line(json!({"type": "ERROR", "object": status})))
                .await;
            return;
        }
        let mut last = from.max(current);
        for c in replay.into_iter().filter(|c| matches(c)) {
            if sender
                .send(line(json!({"type": c.type_, "object": c.object})))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version(&kind), "kind": info.kind, "metadata": {"resourceVersion": last.to_string()}}});
                    if sender.send(line(bm)).await.is_err() { return; }
                }
                c = rx.recv() => match c {
                    Ok(c) => {
                        last = last.max(c.rv);
                        if c.rv > from && matches(&c) && sender.send(line(json!({"type": c.type_, "object": c.object}))).await.is_err() {
                            return;
                        }
                    }
                    // Fell behind: end the watch; the client resumes or relists.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

//! opname-operator: one binary, one room per role (ARCHITECTURE.md).
//!
//! - [`crd`]: the resources (`RecordingPolicy`, `RecordingHold`, `RecordingErasure`, `BulkExport`);
//! - [`kube`]: how the operator writes to the API server (field manager, Events);
//! - [`fleet`]: policies → a recorder fleet per namespace, as a pure plan applied by a thin layer;
//! - [`retention`]: lifecycle rules or the sweeper, and the loops that keep them in force;
//! - [`archive`]: what is stored — the catalog, listing indexes, legal holds and erasures;
//! - [`export`]: BulkExport — its controller and Job, the ZIP parts, links and e-mail;
//! - [`recordings`]: the recordings web service (API, page, access reviews, audit of plays);
//! - [`organisation`]: an organisation's time zone and language, from its namespace;
//! - [`settings`], [`metrics`], [`store`]: the configuration, metrics and store client all share.

pub mod archive;
pub mod crd;
pub mod export;
pub mod fleet;
pub mod kube;
pub mod metrics;
pub mod organisation;
pub mod recordings;
pub mod retention;
pub mod settings;
pub mod store;

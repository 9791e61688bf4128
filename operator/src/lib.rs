//! opname-operator: `RecordingPolicy` resources in, a recorder fleet per namespace out.
//!
//! `crd` defines the resources, `settings` the operator's configuration, `fleet` the pure
//! desired state, `controller` the thin layer that applies it.

pub mod access;
pub mod browser;
pub mod bulkexport;
pub mod catalog;
pub mod controller;
pub mod crd;
pub mod erasure;
pub mod export;
pub mod fleet;
pub mod hold;
pub mod index;
pub mod lifecycle;
pub mod links;
pub mod metrics;
pub mod notify;
pub mod requests;
pub mod retention;
pub mod settings;
pub mod sweeper;

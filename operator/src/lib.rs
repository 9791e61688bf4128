//! opname-operator: `RecordingPolicy` resources in, a recorder fleet per namespace out.
//!
//! `crd` defines the resources, `settings` the operator's configuration, `fleet` the pure
//! desired state, `controller` the thin layer that applies it.

pub mod controller;
pub mod crd;
pub mod fleet;
pub mod lifecycle;
pub mod metrics;
pub mod retention;
pub mod settings;
pub mod sweeper;

//! opname-model: the contract between the recorder that writes the archive and the operator that
//! reads, keeps, erases and exports it.
//!
//! - [`layout`]: every object key opname writes or reads, formatted and parsed here only;
//! - [`record`]: the JSON record stored beside each recording (and its partial form in the spool);
//! - [`audit`]: the audit object written for every deletion or release opname makes;
//! - [`identity`]: how the many spellings of a number or address become one key;
//! - [`policy`]: the rules both sides apply to policies (mode, keep code, retention, claims);
//! - [`config`]: the recorder's configuration file, rendered by the operator;
//! - [`store`]: the one way a store URL becomes an object store;
//! - [`logging`]: how every opname process logs (plain or JSON lines).
//!
//! It depends on no other workspace crate, on no Kubernetes client and on no codec.

pub mod audit;
pub mod config;
pub mod identity;
pub mod layout;
pub mod logging;
pub mod policy;
pub mod record;
pub mod store;

//! opname-recorder: a SIPREC Session Recording Server writing stereo Ogg Opus to object storage.
//!
//! Protocol cores are sans-IO (`sip`, `sdp`, `metadata`, `body`, `siprec`, `jitter`,
//! `recording`, `ogg`); `server` owns sockets, timers and files; `store` the object storage.

pub mod body;
pub mod capacity;
pub mod codec;
pub mod config;
pub mod dtmf;
pub mod identity;
pub mod jitter;
pub mod loadgen;
pub mod metadata;
pub mod metrics;
pub mod ogg;
pub mod record;
pub mod recording;
pub mod sdp;
pub mod server;
pub mod sip;
pub mod siprec;
pub mod store;

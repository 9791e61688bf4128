//! opname-recorder: a SIPREC Session Recording Server writing stereo Ogg Opus to object storage.
//!
//! Layers, innermost first (ARCHITECTURE.md):
//! - [`protocol`]: SIP framing and parsing, SDP, multipart bodies, SIPREC metadata — bytes in,
//!   typed messages out;
//! - [`siprec`]: the Session Recording Server core — transactions, dialogs, admission, the policy
//!   table and RTP ports — a sans-IO state machine fed messages and the time, returning actions;
//! - [`media`]: one call's audio — jitter buffers, codecs, DTMF, the stereo mixer and Ogg Opus;
//! - [`record`]: the call's record (the archive's own type, from `opname-model`);
//! - [`edge`]: sockets, tasks, the spool, uploads and configuration reload — the only I/O;
//! - [`log_limit`]: log lines about bad input at a bounded rate, for every layer.

pub mod edge;
pub mod log_limit;
pub mod media;
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod siprec;

//! The wire formats a SIPREC client sends, parsed without I/O: SIP messages and their framing,
//! multipart bodies, SDP offers and answers, RFC 7865 recording metadata, and the Via a response
//! carries back.

pub mod body;
pub mod crypto;
pub mod metadata;
pub mod sdp;
pub mod sip;
pub mod via;

//! One call's audio, sans-IO: jitter buffers, decoders, DTMF, the stereo mixer and the Ogg Opus
//! writer.

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub mod mixer;
pub mod ogg;

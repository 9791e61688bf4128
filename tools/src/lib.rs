//! opname-tools: what developers run around the recorder, kept out of the production binary —
//! the SIPREC load generator (benchmarks and end-to-end tests drive recorders with it) and the
//! local demo (the README's first command).

pub mod loadgen;

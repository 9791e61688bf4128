//! The operator's one way of writing to the API server: server-side apply under one field
//! manager, and Events whose notes fit the API's limit.

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};
use kube::runtime::events::{Event, EventType, Recorder};

pub mod scheduling;

pub use scheduling::{Scheduling, pull_secrets};

/// The user and group every opname container runs as (the images' non-root user).
pub const RUN_AS: i64 = 65532;

/// Field manager of everything the operator applies.
pub const MANAGER: &str = "opname-operator";

/// The API server refuses an Event whose note is longer than this (bytes).
pub const EVENT_NOTE_MAX: usize = 1024;

/// `note` cut to the Event limit at a character boundary, marked when cut.
pub fn event_note(mut note: String) -> String {
    if note.len() <= EVENT_NOTE_MAX {
        return note;
    }
    let mut end = EVENT_NOTE_MAX - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

/// The pod-level hardening every opname pod gets (recorders, export Jobs): non-root, the
/// runtime's seccomp profile — what PodSecurity `restricted` demands.
pub fn hardened_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container-level hardening: no privilege escalation, read-only root, no capabilities.
pub fn hardened_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Publishes an Event about `on`; a failure is logged, never fatal to a reconcile.
pub async fn publish(
    recorder: &Recorder,
    on: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(event_note(note)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, on).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_fit_the_event_limit() {
        assert_eq!(event_note("short".into()), "short");
        let long = "é".repeat(2000);
        let cut = event_note(long);
        assert!(cut.len() <= EVENT_NOTE_MAX);
        assert!(cut.ends_with('…'));
    }
}

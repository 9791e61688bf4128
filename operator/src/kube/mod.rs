//! The operator's one way of writing to the API server: server-side apply under one field
//! manager, and Events whose notes fit the API's limit.

use kube::runtime::events::{Event, EventType, Recorder};

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

//! Admission of a new recording session: the INVITE's body, the policy that records it, the
//! capacity to take it, and the answer — or one refusal.

use super::dialog::{rebuild_channels, uri_of};
use super::*;

impl Srs {
    pub(super) fn decline(
        &mut self,
        peer: Peer,
        msg: &Message,
        (status, reason): (u16, &str),
        warning: Option<&str>,
        outcome: Outcome,
        now: Instant,
    ) {
        let tag = self.unique();
        let retry = self.cfg.retry_after.to_string();
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if status == 503 {
            extra.push(("Retry-After", &retry));
        }
        if status == 415 {
            extra.push((
                "Accept",
                "application/sdp, multipart/mixed, application/rs-metadata+xml",
            ));
        }
        let warning = warning.map(|w| format!("399 opname \"{}\"", w.replace('"', "'")));
        if let Some(w) = &warning {
            extra.push(("Warning", w));
        }
        self.reply(
            peer,
            msg,
            Reply {
                status,
                reason,
                to_tag: Some(&tag),
                extra: &extra,
                body: None,
            },
            now,
        );
        self.out.push(Action::Outcome(outcome));
    }

    pub(super) fn on_invite(&mut self, peer: Peer, msg: &Message, now: Instant) {
        if self.draining {
            return self.decline(
                peer,
                msg,
                (503, "Service Unavailable"),
                Some("draining"),
                Outcome::Busy,
                now,
            );
        }
        if self.dialogs.len() >= self.cfg.max_calls || self.overloaded {
            let why = if self.overloaded {
                "CPU overloaded"
            } else {
                "at capacity"
            };
            return self.decline(
                peer,
                msg,
                (503, "Service Unavailable"),
                Some(why),
                Outcome::Busy,
                now,
            );
        }
        if self.dialogs.contains_key(msg.call_id()) {
            return self.decline(
                peer,
                msg,
                (482, "Loop Detected"),
                None,
                Outcome::BadRequest,
                now,
            );
        }
        let trying = sip::response(&ReplyHeaders::of(msg), 100, "Trying", None, &[], None);
        self.out.push(Action::Send { peer, data: trying });
        let parts = match body::split(msg.header("Content-Type"), &msg.body) {
            Ok(p) => p,
            Err(BodyError::Unsupported(t)) => {
                return self.decline(
                    peer,
                    msg,
                    (415, "Unsupported Media Type"),
                    Some(&t),
                    Outcome::Unusable,
                    now,
                );
            }
            Err(e) => {
                return self.decline(
                    peer,
                    msg,
                    (400, "Bad Request"),
                    Some(&e.to_string()),
                    Outcome::BadRequest,
                    now,
                );
            }
        };
        let Some(sdp_bytes) = parts.sdp else {
            return self.decline(
                peer,
                msg,
                (488, "Not Acceptable Here"),
                Some("an SDP offer is required"),
                Outcome::Unusable,
                now,
            );
        };
        let offer = match sdp::parse(sdp_bytes) {
            Ok(o) => o,
            Err(e) => {
                return self.decline(
                    peer,
                    msg,
                    (488, "Not Acceptable Here"),
                    Some(&e.to_string()),
                    Outcome::Unusable,
                    now,
                );
            }
        };
        let metadata = match parts.metadata.map(metadata::parse).transpose() {
            Ok(m) => m.unwrap_or_default(),
            Err(e) => {
                return self.decline(
                    peer,
                    msg,
                    (400, "Bad Request"),
                    Some(&e.to_string()),
                    Outcome::BadRequest,
                    now,
                );
            }
        };
        let negotiated = offer.negotiate();
        if !negotiated.iter().any(|s| s.accepted()) {
            return self.decline(
                peer,
                msg,
                (488, "Not Acceptable Here"),
                Some("no stream in a codec the recorder decodes (PCMU, PCMA, G722, opus)"),
                Outcome::Unusable,
                now,
            );
        }
        let Some((identity, policy)) = self.match_policy(msg, &metadata) else {
            tracing::info!(
                call_id = msg.call_id(),
                "no recording policy matches a participant; declined"
            );
            return self.decline(
                peer,
                msg,
                (603, "Decline"),
                Some("no recording policy for these participants"),
                Outcome::NotRecorded,
                now,
            );
        };
        let mut ports = vec![0u16; negotiated.len()];
        for (port, s) in ports.iter_mut().zip(&negotiated) {
            if s.accepted() {
                match self.ports.alloc() {
                    Some(p) => *port = p,
                    None => {
                        ports
                            .iter()
                            .filter(|p| **p != 0)
                            .for_each(|p| self.ports.free(*p));
                        return self.decline(
                            peer,
                            msg,
                            (503, "Service Unavailable"),
                            Some("no free RTP port"),
                            Outcome::Busy,
                            now,
                        );
                    }
                }
            }
        }
        let streams = build_streams(&negotiated, &ports, &metadata);
        let answer = sdp::answer(&offer, &negotiated, &ports, self.cfg.rtp_advertise, 1);
        let local_tag = self.unique();
        self.counter += 1;
        let call = CallRef(self.counter);
        let to = msg.header("To").unwrap_or_default();
        let correlation = CORRELATION_HEADERS
            .iter()
            .filter_map(|h| {
                msg.header(h)
                    .map(|v| (h.to_ascii_lowercase(), v.to_string()))
            })
            .collect();
        self.out.push(Action::Start(Box::new(StartRecording {
            call,
            policy,
            matched_identity: identity,
            namespace: self.policies.namespace().to_string(),
            sip_call_id: msg.call_id().to_string(),
            metadata: metadata.clone(),
            streams: streams.clone(),
            correlation,
        })));
        self.out.push(Action::Outcome(Outcome::Recorded));
        let data = self.answer_2xx(peer, msg, &local_tag, &answer, now);
        let cseq = msg.cseq().map_or(0, |c| c.0);
        self.dialogs.insert(
            msg.call_id().to_string(),
            Dialog {
                call,
                local: format!("{to};tag={local_tag}"),
                local_tag,
                remote: msg.header("From").unwrap_or_default().to_string(),
                target: msg
                    .contact_uri()
                    .unwrap_or_else(|| uri_of(msg.header("From").unwrap_or_default())),
                route_set: msg
                    .headers_named("Record-Route")
                    .map(str::to_string)
                    .collect(),
                peer,
                remote_cseq: cseq,
                local_cseq: 0,
                offer,
                streams,
                metadata,
                session_version: 1,
                answer,
                pending_2xx: (peer.transport == Transport::Udp)
                    .then(|| (cseq, Retransmit::new(data, now))),
                invite_branch: msg.branch().map(str::to_string),
            },
        );
    }

    /// Sends a 2xx with an SDP body, returning its bytes for retransmission.
    pub(super) fn answer_2xx(
        &mut self,
        peer: Peer,
        msg: &Message,
        local_tag: &str,
        sdp: &str,
        now: Instant,
    ) -> Vec<u8> {
        let contact = format!("<sip:opname@{}>;+sip.srs", self.cfg.sip_host);
        let session_expires = msg
            .header("Session-Expires")
            .map(|v| format!("{};refresher=uac", v.split(';').next().unwrap_or(v).trim()));
        let mut extra = vec![
            ("Contact", contact.as_str()),
            ("Allow", sip::ALLOW),
            ("Supported", "siprec, timer"),
        ];
        if let Some(se) = &session_expires {
            extra.push(("Session-Expires", se));
            extra.push(("Require", "timer"));
        }
        let data = sip::response(
            &ReplyHeaders::of(msg),
            200,
            "OK",
            Some(local_tag),
            &extra,
            Some(("application/sdp", sdp.as_bytes())),
        );
        // 2xx to INVITE is not kept in the transaction table: the dialog resends it until ACK.
        if msg.cseq().is_some_and(|c| c.1 != "INVITE") {
            self.txns.insert(
                Self::txn_key(msg, msg.cseq().map_or("", |c| c.1)),
                ServerTxn {
                    response: data.clone(),
                    peer,
                    expires: now + TIMEOUT_64T1,
                    retransmit: None,
                },
            );
        }
        self.out.push(Action::Send {
            peer,
            data: data.clone(),
        });
        data
    }

    pub(super) fn match_policy(
        &self,
        msg: &Message,
        md: &Metadata,
    ) -> Option<(String, Arc<ActivePolicy>)> {
        let from_metadata = md.participants.iter().filter_map(|p| p.aor.as_deref());
        // Without participants, the outer From/To are the best remaining evidence.
        let outer: Vec<String> = if md.participants.iter().any(|p| p.aor.is_some()) {
            Vec::new()
        } else {
            ["From", "To", "P-Asserted-Identity"]
                .iter()
                .filter_map(|h| msg.header(h).map(uri_of))
                .collect()
        };
        from_metadata
            .chain(outer.iter().map(String::as_str))
            .find_map(|aor| self.policies.lookup(aor))
            .map(|(key, policy)| (key.to_string(), policy))
    }
}

/// Streams with channels: the first participant (by convention the caller) on the left, everyone
/// else on the right; by position when the metadata does not associate streams; a lone stream
/// (a mixed one) on both.
pub(super) fn build_streams(
    negotiated: &[sdp::StreamAnswer],
    ports: &[u16],
    md: &Metadata,
) -> Vec<MediaStream> {
    let streams: Vec<MediaStream> = negotiated
        .iter()
        .map(|s| MediaStream {
            index: s.index,
            port: if s.accepted() {
                ports.get(s.index).copied().unwrap_or(0)
            } else {
                0
            },
            codec: s.codec,
            telephone_event: s.telephone_event,
            paused: s.paused,
            label: s.label.clone(),
            channel: Channel::Both,
        })
        .collect();
    rebuild_channels(&streams, md)
}

//! Admission of a new recording session: the INVITE's body, the policy that records it, the
//! capacity to take it, and the answer — or one refusal.

use super::streams::build_streams;
use super::*;
use crate::protocol::sip::uri_of;

/// The Warning of an offer with SRTP the recorder cannot decrypt.
pub(super) const SRTP_UNSUPPORTED: &str = "an SRTP stream the recorder cannot decrypt: it takes SDES (RTP/SAVP with a=crypto) in AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 or AEAD_AES_128_GCM, without MKI; not DTLS-SRTP";

/// Why a new session is refused; each cause has one answer (status, Warning, metric outcome).
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Draining,
    /// At `maxCalls`, or above the CPU limit (the reason says which).
    Full(&'static str),
    Loop,
    UnsupportedBody(String),
    BadBody(String),
    NoOffer,
    /// An SDP body that cannot be parsed.
    MalformedOffer(String),
    /// A parsed offer the recorder will not take (too many streams).
    BadOffer(String),
    BadMetadata(String),
    /// An audio stream offered as SRTP the recorder cannot decrypt.
    Encrypted,
    /// Plain RTP offered over TLS where `rtp.plainWithTls` is off.
    PlainOverTls,
    NoCodec,
    NoPolicy,
    NoPorts,
}

impl Refusal {
    fn status(&self) -> (u16, &'static str) {
        match self {
            Refusal::Draining | Refusal::Full(_) | Refusal::NoPorts => (503, "Service Unavailable"),
            Refusal::Loop => (482, "Loop Detected"),
            Refusal::UnsupportedBody(_) => (415, "Unsupported Media Type"),
            Refusal::BadBody(_) | Refusal::BadMetadata(_) | Refusal::MalformedOffer(_) => {
                (400, "Bad Request")
            }
            Refusal::NoOffer
            | Refusal::BadOffer(_)
            | Refusal::Encrypted
            | Refusal::PlainOverTls
            | Refusal::NoCodec => (488, "Not Acceptable Here"),
            Refusal::NoPolicy => (603, "Decline"),
        }
    }

    fn warning(&self) -> Option<String> {
        Some(match self {
            Refusal::Draining => "draining".into(),
            Refusal::Full(why) => why.to_string(),
            Refusal::Loop => return None,
            Refusal::UnsupportedBody(why)
            | Refusal::BadBody(why)
            | Refusal::BadOffer(why)
            | Refusal::MalformedOffer(why)
            | Refusal::BadMetadata(why) => why.clone(),
            Refusal::Encrypted => SRTP_UNSUPPORTED.into(),
            Refusal::PlainOverTls => {
                "plain RTP on a call signalled over TLS is refused (rtp.plainWithTls: false); offer SRTP"
                    .into()
            }
            Refusal::NoOffer => "an SDP offer is required".into(),
            Refusal::NoCodec => {
                "no stream in a codec the recorder decodes (PCMU, PCMA, G722, opus)".into()
            }
            Refusal::NoPolicy => "no recording policy for these participants".into(),
            Refusal::NoPorts => "no free RTP port".into(),
        })
    }

    fn outcome(&self) -> Outcome {
        match self {
            Refusal::Draining | Refusal::Full(_) | Refusal::NoPorts => Outcome::Busy,
            Refusal::Loop
            | Refusal::BadBody(_)
            | Refusal::BadMetadata(_)
            | Refusal::MalformedOffer(_) => Outcome::BadRequest,
            Refusal::UnsupportedBody(_)
            | Refusal::NoOffer
            | Refusal::BadOffer(_)
            | Refusal::Encrypted
            | Refusal::PlainOverTls
            | Refusal::NoCodec => Outcome::Unusable,
            Refusal::NoPolicy => Outcome::NotRecorded,
        }
    }
}

/// A session that passed admission: what the answer and the recording are made of.
struct Admitted {
    offer: Offer,
    negotiated: Vec<sdp::StreamAnswer>,
    metadata: Metadata,
    identity: String,
    policy: Arc<ActivePolicy>,
    ports: Vec<u16>,
}

impl Srs {
    /// Answers a refused INVITE.
    pub(super) fn decline(&mut self, peer: Peer, msg: &Message, refusal: Refusal, now: Instant) {
        let tag = self.unique();
        let retry = self.cfg.retry_after.to_string();
        let (status, reason) = refusal.status();
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
        let warning = refusal
            .warning()
            .map(|w| format!("399 opname \"{}\"", w.replace('"', "'")));
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
        self.out.push(Action::Outcome(refusal.outcome()));
    }

    /// Whether a new session may start at all (before its body is looked at).
    fn capacity(&self, msg: &Message) -> Result<(), Refusal> {
        if self.draining {
            return Err(Refusal::Draining);
        }
        if self.dialogs.len() >= self.cfg.max_calls || self.overloaded {
            return Err(Refusal::Full(if self.overloaded {
                "CPU overloaded"
            } else {
                "at capacity"
            }));
        }
        if self.dialogs.contains_key(msg.call_id()) {
            return Err(Refusal::Loop);
        }
        Ok(())
    }

    /// The INVITE's body, the policy that records it and RTP ports for its streams.
    fn admit(&mut self, msg: &Message) -> Result<Admitted, Refusal> {
        let parts = body::split(msg.header("Content-Type"), &msg.body).map_err(|e| match e {
            BodyError::Unsupported(t) => Refusal::UnsupportedBody(t),
            e => Refusal::BadBody(e.to_string()),
        })?;
        let sdp_bytes = parts.sdp.ok_or(Refusal::NoOffer)?;
        let offer = sdp::parse(sdp_bytes).map_err(|e| match e {
            sdp::SdpError::TooManyStreams => Refusal::BadOffer(e.to_string()),
            sdp::SdpError::NoMedia | sdp::SdpError::Malformed(_) => {
                Refusal::MalformedOffer(e.to_string())
            }
        })?;
        if offer.undecryptable_audio() {
            return Err(Refusal::Encrypted);
        }
        let metadata = parts
            .metadata
            .map(metadata::parse)
            .transpose()
            .map_err(|e| Refusal::BadMetadata(e.to_string()))?
            .unwrap_or_default();
        let negotiated = offer.negotiate();
        if !negotiated.iter().any(|s| s.accepted()) {
            return Err(Refusal::NoCodec);
        }
        let Some((identity, policy)) = self.match_policy(msg, &metadata) else {
            tracing::info!(
                call_id = msg.call_id(),
                "no recording policy matches a participant; declined"
            );
            return Err(Refusal::NoPolicy);
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
                        return Err(Refusal::NoPorts);
                    }
                }
            }
        }
        Ok(Admitted {
            offer,
            negotiated,
            metadata,
            identity,
            policy,
            ports,
        })
    }

    pub(super) fn on_invite(&mut self, peer: Peer, msg: &Message, now: Instant) {
        if let Err(refusal) = self.capacity(msg) {
            return self.decline(peer, msg, refusal, now);
        }
        let trying = sip::response(&ReplyHeaders::of(msg), 100, "Trying", None, &[], None);
        self.out.push(Action::Send { peer, data: trying });
        let Admitted {
            offer,
            negotiated,
            metadata,
            identity,
            policy,
            ports,
        } = match self.admit(msg) {
            Ok(a) => a,
            Err(refusal) => return self.decline(peer, msg, refusal, now),
        };
        let streams = build_streams(&negotiated, &ports, &metadata, &offer, self.cfg.latching);
        if peer.transport == Transport::Tls
            && !self.cfg.plain_with_tls
            && streams.iter().any(|s| s.port != 0 && s.srtp.is_none())
        {
            for p in ports.iter().filter(|p| **p != 0) {
                self.ports.free(*p);
            }
            return self.decline(peer, msg, Refusal::PlainOverTls, now);
        }
        let key = self.answer_key();
        let answer = sdp::answer(&offer, &negotiated, &ports, self.cfg.rtp_advertise, 1, &key);
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
                remote_tag: msg.from_tag().map(str::to_string),
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
        // In-dialog requests come back the way the INVITE came: over TLS to the TLS port.
        let host = match (peer.transport, &self.cfg.tls_host) {
            (Transport::Tls, Some(tls)) => tls.as_str(),
            _ => self.cfg.sip_host.as_str(),
        };
        let contact = format!("<sip:opname@{host}>;+sip.srs");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_answer() {
        let cases = [
            (Refusal::Draining, 503, Outcome::Busy),
            (Refusal::Full("at capacity"), 503, Outcome::Busy),
            (Refusal::NoPorts, 503, Outcome::Busy),
            (Refusal::Loop, 482, Outcome::BadRequest),
            (
                Refusal::UnsupportedBody("text/plain".into()),
                415,
                Outcome::Unusable,
            ),
            (
                Refusal::BadBody("no boundary".into()),
                400,
                Outcome::BadRequest,
            ),
            (
                Refusal::BadMetadata("not XML".into()),
                400,
                Outcome::BadRequest,
            ),
            (Refusal::NoOffer, 488, Outcome::Unusable),
            (
                Refusal::MalformedOffer("no m-line".into()),
                400,
                Outcome::BadRequest,
            ),
            (
                Refusal::BadOffer("too many streams".into()),
                488,
                Outcome::Unusable,
            ),
            (Refusal::Encrypted, 488, Outcome::Unusable),
            (Refusal::NoCodec, 488, Outcome::Unusable),
            (Refusal::NoPolicy, 603, Outcome::NotRecorded),
        ];
        for (refusal, status, outcome) in cases {
            assert_eq!(refusal.status().0, status, "{refusal:?}");
            assert_eq!(refusal.outcome(), outcome, "{refusal:?}");
            assert_eq!(refusal.warning().is_none(), refusal == Refusal::Loop);
        }
    }
}

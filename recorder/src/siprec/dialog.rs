//! Recording sessions as SIP dialogs: re-offers (RFC 7866 §8), BYE, and hang-up by the core.

use super::streams::{build_streams, rebuild_channels};
use super::*;

impl Srs {
    /// The dialog a request belongs to: Call-ID, our tag and the SRC's tag all match (RFC 3261
    /// §12; the SRC's From tag is the remote tag), so a Call-ID and a To tag seen on the wire are
    /// not enough to end or redirect a recording.
    pub(super) fn in_dialog(&self, msg: &Message) -> Option<&Dialog> {
        self.dialogs.get(msg.call_id()).filter(|d| {
            msg.to_tag() == Some(d.local_tag.as_str()) && msg.from_tag() == d.remote_tag.as_deref()
        })
    }

    /// re-INVITE or UPDATE inside a dialog: new offer, metadata update, or both.
    pub(super) fn on_reoffer(&mut self, peer: Peer, msg: &Message, now: Instant) {
        let is_invite = msg.method() == Some(&rsip::Method::Invite);
        if self.in_dialog(msg).is_none() {
            let tag = self.unique();
            return self.reply(
                peer,
                msg,
                Reply {
                    status: 481,
                    reason: "Call/Transaction Does Not Exist",
                    to_tag: Some(&tag),
                    extra: &[],
                    body: None,
                },
                now,
            );
        }
        let cseq = msg.cseq().map_or(0, |c| c.0);
        if is_invite {
            let trying = sip::response(&ReplyHeaders::of(msg), 100, "Trying", None, &[], None);
            self.out.push(Action::Send { peer, data: trying });
        }
        let parts = match body::split(msg.header("Content-Type"), &msg.body) {
            Ok(p) => p,
            Err(BodyError::Unsupported(t)) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 415,
                        reason: "Unsupported Media Type",
                        to_tag: None,
                        extra: &[
                            (
                                "Accept",
                                "application/sdp, multipart/mixed, application/rs-metadata+xml",
                            ),
                            ("Warning", &format!("399 opname \"{t}\"")),
                        ],
                        body: None,
                    },
                    now,
                );
            }
            Err(_) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 400,
                        reason: "Bad Request",
                        to_tag: None,
                        extra: &[],
                        body: None,
                    },
                    now,
                );
            }
        };
        let offer = match parts.sdp.map(sdp::parse).transpose() {
            Ok(Some(o)) if o.undecryptable_audio() => Err((
                488,
                "Not Acceptable Here",
                super::admission::SRTP_UNSUPPORTED.to_string(),
            )),
            Ok(o) => Ok(o),
            Err(e @ sdp::SdpError::TooManyStreams) => {
                Err((488, "Not Acceptable Here", e.to_string()))
            }
            Err(e) => Err((400, "Bad Request", e.to_string())),
        };
        let offer = match offer {
            Ok(o) => o,
            Err((status, reason, why)) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status,
                        reason,
                        to_tag: None,
                        extra: &[("Warning", &format!("399 opname \"{why}\""))],
                        body: None,
                    },
                    now,
                );
            }
        };
        let update = match parts.metadata.map(metadata::parse).transpose() {
            Ok(m) => m,
            Err(e) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 400,
                        reason: "Bad Request",
                        to_tag: None,
                        extra: &[("Warning", &format!("399 opname \"{e}\""))],
                        body: None,
                    },
                    now,
                );
            }
        };
        let Some(mut d) = self.dialogs.remove(msg.call_id()) else {
            return;
        };
        d.remote_cseq = d.remote_cseq.max(cseq);
        d.peer = peer;
        if let Some(u) = update {
            d.metadata.apply(u);
        }
        let mut sdp_out = None;
        if let Some(offer) = offer {
            let negotiated = offer.negotiate();
            let mut ports = vec![0u16; negotiated.len()];
            for (i, s) in negotiated.iter().enumerate() {
                let old = d.streams.get(i).map_or(0, |o| o.port);
                ports[i] = match (s.accepted(), old) {
                    (true, 0) => self.ports.alloc().unwrap_or(0),
                    (true, p) => p,
                    (false, _) => 0,
                };
            }
            for (i, old) in d.streams.iter().enumerate() {
                if old.port != 0 && ports.get(i).copied() != Some(old.port) {
                    self.ports.free(old.port);
                }
            }
            let negotiated: Vec<_> = negotiated
                .into_iter()
                .zip(&ports)
                .map(|(mut s, p)| {
                    if *p == 0 {
                        s.codec = None;
                    }
                    s
                })
                .collect();
            d.session_version += 1;
            let key = self.answer_key();
            d.answer = sdp::answer(
                &offer,
                &negotiated,
                &ports,
                self.cfg.rtp_advertise,
                d.session_version,
                &key,
            );
            d.streams = build_streams(&negotiated, &ports, &d.metadata, &offer, self.cfg.latching);
            d.offer = offer;
            sdp_out = Some(d.answer.clone());
        } else {
            d.streams = rebuild_channels(&d.streams, &d.metadata);
            if is_invite {
                // An offerless re-INVITE: our current session description is the offer.
                sdp_out = Some(d.answer.clone());
            }
        }
        self.out.push(Action::Update {
            call: d.call,
            streams: d.streams.clone(),
            metadata: Box::new(d.metadata.clone()),
        });
        let tag = d.local_tag.clone();
        match sdp_out {
            Some(sdp) => {
                let data = self.answer_2xx(peer, msg, &tag, &sdp, now);
                if is_invite {
                    if peer.transport == Transport::Udp {
                        d.pending_2xx = Some((cseq, Retransmit::new(data, now)));
                    }
                    d.invite_branch = msg.branch().map(str::to_string);
                }
            }
            None => self.reply(peer, msg, Reply::OK, now),
        }
        self.dialogs.insert(msg.call_id().to_string(), d);
    }

    pub(super) fn on_bye(&mut self, peer: Peer, msg: &Message, now: Instant) {
        if self.in_dialog(msg).is_none() {
            return self.reply(peer, msg, Reply::NO_DIALOG, now);
        }
        if let Some(d) = self.dialogs.remove(msg.call_id()) {
            self.release(&d);
            self.out.push(Action::Stop {
                call: d.call,
                reason: EndReason::Bye,
            });
        }
        self.reply(peer, msg, Reply::OK, now);
    }

    pub(super) fn release(&mut self, d: &Dialog) {
        for s in &d.streams {
            if s.port != 0 {
                self.ports.free(s.port);
            }
        }
    }

    /// Ends a dialog from our side: BYE to the SRC, media stopped.
    pub(super) fn hang_up(&mut self, call_id: &str, reason: EndReason, now: Instant) {
        let Some(mut d) = self.dialogs.remove(call_id) else {
            return;
        };
        self.release(&d);
        d.local_cseq = d.local_cseq.max(d.remote_cseq) + 1;
        let branch = format!("z9hG4bK{}", self.unique());
        let mut req = format!(
            "BYE {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n",
            d.target,
            d.peer.transport.via_name(),
            self.cfg.sip_host
        );
        for r in &d.route_set {
            req.push_str(&format!("Route: {r}\r\n"));
        }
        req.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {} BYE\r\nReason: SIP;cause=200;text=\"{reason:?}\"\r\nUser-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            d.local,
            d.remote,
            d.local_cseq,
            sip::SERVER
        ));
        let data = req.into_bytes();
        if d.peer.transport == Transport::Udp {
            self.clients.push(ClientTxn {
                branch,
                peer: d.peer,
                retransmit: Retransmit::new(data.clone(), now),
            });
        }
        self.out.push(Action::Send { peer: d.peer, data });
        self.out.push(Action::Stop {
            call: d.call,
            reason,
        });
    }

    pub(super) fn call_id_of(&self, call: CallRef) -> Option<String> {
        self.dialogs
            .iter()
            .find(|(_, d)| d.call == call)
            .map(|(k, _)| k.clone())
    }
}

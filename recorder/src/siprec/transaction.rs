//! SIP transactions: request routing, responses (and their retransmission), ACKs and
//! responses to the requests the core sends (RFC 3261 §17).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

/// Server transactions by key, bounded, with their timers in a heap: a flood of requests must
/// neither grow the table without end nor make every message scan it.
#[derive(Default)]
pub(super) struct Transactions {
    map: HashMap<String, (u64, ServerTxn)>,
    /// `(next event, generation, key)`; an entry whose generation is no longer the key's is stale.
    due: BinaryHeap<Reverse<(Instant, u64, String)>>,
    generation: u64,
}

impl Transactions {
    /// Transactions kept at once (each lives 32 s): past this, answers are still sent but not
    /// kept for retransmissions, which then get processed (and answered) again.
    pub const MAX: usize = 16_384;

    fn next_event(t: &ServerTxn) -> Instant {
        t.retransmit
            .as_ref()
            .map_or(t.expires, |r| r.next.min(t.expires))
    }

    pub fn insert(&mut self, key: String, txn: ServerTxn) {
        if self.map.len() >= Self::MAX && !self.map.contains_key(&key) {
            return;
        }
        self.generation += 1;
        self.due.push(Reverse((
            Self::next_event(&txn),
            self.generation,
            key.clone(),
        )));
        self.map.insert(key, (self.generation, txn));
    }

    pub fn get(&self, key: &str) -> Option<&ServerTxn> {
        self.map.get(key).map(|(_, t)| t)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Stops resending the final response (its ACK came).
    pub fn acknowledged(&mut self, key: &str) {
        if let Some((_, t)) = self.map.get_mut(key) {
            t.retransmit = None;
        }
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, ..))| *at)
    }

    /// Expires what is over and resends what is due, into `out`.
    pub fn run(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(Reverse((at, generation, key))) = self.due.peek().cloned()
            && at <= now
        {
            self.due.pop();
            let Some((live, t)) = self.map.get_mut(&key) else {
                continue;
            };
            if *live != generation {
                continue;
            }
            if t.expires <= now {
                self.map.remove(&key);
                continue;
            }
            if let Some(r) = &mut t.retransmit
                && r.next <= now
            {
                out.push(Action::Send {
                    peer: t.peer,
                    data: r.data.clone(),
                });
                r.backoff(now);
            }
            let next = Self::next_event(t);
            self.due.push(Reverse((next, generation, key)));
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

impl Srs {
    pub(super) fn txn_key(msg: &Message, method: &str) -> String {
        match msg.branch() {
            Some(b) if b.starts_with("z9hG4bK") => format!("{b}|{method}"),
            // RFC 2543 peers: no magic cookie, match on what identifies the request.
            _ => format!(
                "{}|{}|{}|{method}",
                msg.call_id(),
                msg.cseq().map_or(0, |c| c.0),
                msg.from_tag().unwrap_or_default()
            ),
        }
    }

    pub(super) fn reply(&mut self, peer: Peer, msg: &Message, r: Reply<'_>, now: Instant) {
        let Reply {
            status,
            reason,
            to_tag,
            extra,
            body,
        } = r;
        let data = sip::response(&ReplyHeaders::of(msg), status, reason, to_tag, extra, body);
        let method = msg.cseq().map_or("", |c| c.1).to_string();
        if status >= 200 {
            let retransmit =
                (status >= 300 && method == "INVITE" && peer.transport == Transport::Udp)
                    .then(|| Retransmit::new(data.clone(), now));
            self.txns.insert(
                Self::txn_key(msg, &method),
                ServerTxn {
                    response: data.clone(),
                    peer,
                    expires: now + TIMEOUT_64T1,
                    retransmit,
                },
            );
        }
        self.out.push(Action::Send { peer, data });
    }

    pub(super) fn on_request(&mut self, peer: Peer, msg: &Message, now: Instant) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        let cseq_method = msg.cseq().map_or("", |c| c.1).to_ascii_uppercase();
        if method == rsip::Method::Ack {
            self.on_ack(msg);
            return;
        }
        // A retransmitted request gets the response it got before.
        if let Some(t) = self.txns.get(&Self::txn_key(msg, &cseq_method)) {
            let data = t.response.clone();
            self.out.push(Action::Send { peer, data });
            return;
        }
        if method == rsip::Method::Invite
            && let Some(d) = self.dialogs.get(msg.call_id())
            && d.invite_branch.is_some()
            && d.invite_branch.as_deref() == msg.branch()
        {
            // The 2xx of an INVITE lives in the dialog, not the transaction table.
            if let Some((_, r)) = &d.pending_2xx {
                let data = r.data.clone();
                self.out.push(Action::Send { peer, data });
            }
            return;
        }
        let tag = msg.to_tag().map(str::to_string);
        match method {
            rsip::Method::Options => {
                let tag = self.unique();
                self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 200,
                        reason: "OK",
                        to_tag: Some(&tag),
                        extra: &[
                            ("Allow", sip::ALLOW),
                            ("Accept", "application/sdp, multipart/mixed"),
                            ("Supported", "siprec, timer"),
                        ],
                        body: None,
                    },
                    now,
                );
            }
            rsip::Method::Invite if tag.is_none() => self.on_invite(peer, msg, now),
            rsip::Method::Invite | rsip::Method::Update => self.on_reoffer(peer, msg, now),
            rsip::Method::Bye => self.on_bye(peer, msg, now),
            rsip::Method::Cancel => {
                let invite = self.txns.contains_key(&Self::txn_key(msg, "INVITE"))
                    || self.dialogs.get(msg.call_id()).is_some_and(|d| {
                        d.invite_branch.is_some() && d.invite_branch.as_deref() == msg.branch()
                    });
                if invite {
                    // The INVITE was already answered; the CANCEL has no effect (RFC 3261 §9.2).
                    self.reply(peer, msg, Reply::OK, now);
                } else {
                    self.reply(peer, msg, Reply::NO_DIALOG, now);
                }
            }
            rsip::Method::Info | rsip::Method::Notify => {
                if self.in_dialog(msg).is_some() {
                    self.reply(peer, msg, Reply::OK, now);
                } else {
                    self.reply(peer, msg, Reply::NO_DIALOG, now);
                }
            }
            _ => {
                let tag = self.unique();
                self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 405,
                        reason: "Method Not Allowed",
                        to_tag: Some(&tag),
                        extra: &[("Allow", sip::ALLOW)],
                        body: None,
                    },
                    now,
                );
            }
        }
    }

    pub(super) fn on_ack(&mut self, msg: &Message) {
        let cseq = msg.cseq().map_or(0, |c| c.0);
        if let Some(d) = self.dialogs.get_mut(msg.call_id())
            && msg.to_tag() == Some(d.local_tag.as_str())
            && msg.from_tag() == d.remote_tag.as_deref()
            && d.pending_2xx.as_ref().is_some_and(|(n, _)| *n == cseq)
        {
            d.pending_2xx = None;
            return;
        }
        self.txns.acknowledged(&Self::txn_key(msg, "INVITE"));
    }

    pub(super) fn on_response(&mut self, msg: &Message) {
        if let Some(branch) = msg.branch() {
            self.clients.retain(|c| c.branch != branch);
        }
    }
}

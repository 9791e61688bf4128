//! RTP sockets bound when the SIPREC core takes their port, before it answers; the call's media
//! task takes them from here when the recording starts.

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use crate::siprec::PortHolder;

/// Bound sockets waiting for their media task, by port. Holds at most the configured range.
#[derive(Clone, Debug)]
pub(super) struct BoundPorts {
    bind: IpAddr,
    sockets: Arc<Mutex<HashMap<u16, UdpSocket>>>,
}

impl BoundPorts {
    pub(super) fn new(bind: IpAddr) -> Self {
        Self {
            bind,
            sockets: Arc::default(),
        }
    }

    /// The socket held for `port`, once.
    pub(super) fn take(&self, port: u16) -> Option<UdpSocket> {
        self.sockets.lock().ok()?.remove(&port)
    }
}

impl PortHolder for BoundPorts {
    fn hold(&mut self, port: u16) -> bool {
        let socket = match UdpSocket::bind((self.bind, port)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(port, error = %e, "RTP port taken; skipped");
                return false;
            }
        };
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        self.sockets
            .lock()
            .map(|mut held| {
                held.insert(port, socket);
            })
            .is_ok()
    }

    fn release(&mut self, port: u16) {
        if let Ok(mut held) = self.sockets.lock() {
            held.remove(&port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_bound_elsewhere_is_not_held_and_a_held_one_is_taken_once() {
        let other = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        let taken = other.local_addr().unwrap().port();
        let mut ports = BoundPorts::new([127, 0, 0, 1].into());
        assert!(!ports.hold(taken), "bound by another socket");
        let free = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        assert!(ports.hold(port));
        assert!(
            UdpSocket::bind(("127.0.0.1", port)).is_err(),
            "held means bound"
        );
        assert!(ports.take(port).is_some());
        assert!(ports.take(port).is_none());
        ports.release(port);
    }
}

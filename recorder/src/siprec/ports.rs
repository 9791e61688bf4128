//! RTP ports of the recording server: even ports of the configured range, handed out round-robin
//! and held before an answer names them.

use std::collections::BTreeSet;

/// Holds RTP ports for the core. The core takes a port before it names it in an answer, and the
/// edge's holder binds the socket right then: an answer never names a port that another process
/// has, and a port that cannot be had is skipped for the next.
pub trait PortHolder: Send + std::fmt::Debug {
    /// Holds `port`; false when it cannot be had (bound by someone else).
    fn hold(&mut self, port: u16) -> bool;
    /// Gives a held port up.
    fn release(&mut self, port: u16);
}

/// The core on its own (unit tests, benches, fuzzing): every port can be had.
#[derive(Debug)]
pub struct AnyPort;

impl PortHolder for AnyPort {
    fn hold(&mut self, _: u16) -> bool {
        true
    }

    fn release(&mut self, _: u16) {}
}

/// Ports that cannot be had tried per allocation before the call is refused: bounds the work
/// one INVITE can cause when others hold the range.
const HOLD_ATTEMPTS: u16 = 64;

/// Even RTP ports handed out round-robin, so a port is reused as late as possible and stray
/// packets of an ended call do not land in a new one.
#[derive(Debug)]
pub(super) struct PortPool {
    min: u16,
    count: u16,
    next: u16,
    used: BTreeSet<u16>,
    holder: Box<dyn PortHolder>,
}

impl PortPool {
    pub(super) fn new(min: u16, max: u16) -> Self {
        let min = min + (min % 2);
        Self {
            min,
            // Every even port whose RTCP neighbour is in the range too.
            count: (max.saturating_sub(min).saturating_add(1) / 2).max(1),
            next: 0,
            used: BTreeSet::new(),
            holder: Box::new(AnyPort),
        }
    }

    pub(super) fn set_holder(&mut self, holder: Box<dyn PortHolder>) {
        self.holder = holder;
    }

    /// A held port, or `None` when every port is in use or cannot be had.
    pub(super) fn alloc(&mut self) -> Option<u16> {
        let mut refused = 0;
        for _ in 0..self.count {
            let port = self.min + 2 * self.next;
            self.next = (self.next + 1) % self.count;
            if self.used.contains(&port) {
                continue;
            }
            if self.holder.hold(port) {
                self.used.insert(port);
                return Some(port);
            }
            refused += 1;
            if refused == HOLD_ATTEMPTS {
                break;
            }
        }
        None
    }

    pub(super) fn free(&mut self, port: u16) {
        if self.used.remove(&port) {
            self.holder.release(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Refuses the ports in `taken`; records what it was asked.
    #[derive(Debug, Default, Clone)]
    struct Taken {
        taken: Vec<u16>,
        asked: Arc<Mutex<Vec<u16>>>,
        released: Arc<Mutex<Vec<u16>>>,
    }

    impl PortHolder for Taken {
        fn hold(&mut self, port: u16) -> bool {
            self.asked.lock().unwrap().push(port);
            !self.taken.contains(&port)
        }

        fn release(&mut self, port: u16) {
            self.released.lock().unwrap().push(port);
        }
    }

    #[test]
    fn ports_that_cannot_be_had_are_skipped() {
        let holder = Taken {
            taken: vec![20000, 20004],
            ..Default::default()
        };
        let mut pool = PortPool::new(20000, 20009);
        pool.set_holder(Box::new(holder.clone()));
        assert_eq!(pool.alloc(), Some(20002));
        assert_eq!(pool.alloc(), Some(20006));
        assert_eq!(pool.alloc(), Some(20008));
        // Wrapped round: 20000 and 20004 still taken, the rest in use.
        assert_eq!(pool.alloc(), None);
        pool.free(20006);
        assert_eq!(*holder.released.lock().unwrap(), [20006]);
        assert_eq!(pool.alloc(), Some(20006));
        // A port not in use is not released twice.
        pool.free(20001);
        assert_eq!(holder.released.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_range_held_by_others_costs_a_bounded_number_of_attempts() {
        let holder = Taken {
            taken: (16384..=32767).collect(),
            ..Default::default()
        };
        let mut pool = PortPool::new(16384, 32767);
        pool.set_holder(Box::new(holder.clone()));
        assert_eq!(pool.alloc(), None);
        assert_eq!(
            holder.asked.lock().unwrap().len(),
            usize::from(HOLD_ATTEMPTS)
        );
    }
}

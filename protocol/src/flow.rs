//! Flow control and half-close of the tunnel's streams (SPEC.md 6.3): what the two ends
//! agree on at start, and the arithmetic of a stream's window. No I/O: `clawker-bridge`
//! holds these behind its locks.
//!
//! Both of our ends announce a [`Hello`] (frame type 7, stream 0). The host sends its own
//! first thing (after PUBKEY, which upstream's container end insists on first); our
//! container end answers with its own when it reads the host's, and every stream it OPENs
//! after its answer is flow-controlled and may be half-closed, every stream before it is
//! not. The frame order on each direction makes that exact on both ends. Upstream's
//! container end ignores frames it does not know and never answers: its streams keep the
//! bounded queue of SPEC.md 6.
//!
//! A flow-controlled stream: the sender never has more than the receiver's window in
//! flight ([`Credit`]); the receiver counts what it took in and handed on ([`Intake`]) and
//! returns credit with a WINDOW frame (type 8) once a quarter of the window was handed on.
//! A sender that passes the window, or a receiver that returns more than was sent, is a
//! protocol error for that stream.

use thiserror::Error;

/// The window each of our ends grants a stream: what it holds for one stream at most.
pub const WINDOW: u32 = 256 * 1024;
/// Largest window an end may announce (the bridge's memory per stream).
pub const MAX_WINDOW: u32 = 16 * 1024 * 1024;

/// Capability bits of a [`Hello`].
pub mod caps {
    /// Per-stream windows and WINDOW frames.
    pub const WINDOW: u32 = 1;
    /// EOF frames: a stream closed in one direction.
    pub const HALF_CLOSE: u32 = 2;
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlowError {
    #[error("a HELLO payload of {0} bytes is shorter than 8")]
    ShortHello(usize),
    #[error("a window of {0} bytes is not between 1 and {MAX_WINDOW}")]
    BadWindow(u32),
    #[error("a WINDOW payload must be 4 bytes, not {0}")]
    BadWindowFrame(usize),
    #[error("the peer returned {granted} bytes of credit with only {outstanding} in flight")]
    TooMuchCredit { granted: u32, outstanding: u32 },
    #[error("the peer sent {sent} bytes with only {room} left in the window")]
    OverWindow { sent: usize, room: u32 },
}

/// What one end announces: `u32 BE capability bits · u32 BE window`; longer payloads are
/// later versions, their tail ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub caps: u32,
    /// Bytes this end holds for one stream before the sender must wait.
    pub window: u32,
}

impl Hello {
    /// What our ends announce.
    pub const OURS: Hello = Hello {
        caps: caps::WINDOW | caps::HALF_CLOSE,
        window: WINDOW,
    };

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.caps.to_be_bytes());
        b[4..].copy_from_slice(&self.window.to_be_bytes());
        b
    }

    pub fn decode(payload: &[u8]) -> Result<Self, FlowError> {
        let (Some(c), Some(w)) = (payload.get(..4), payload.get(4..8)) else {
            return Err(FlowError::ShortHello(payload.len()));
        };
        let caps = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        let window = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        if caps & caps::WINDOW != 0 && !(1..=MAX_WINDOW).contains(&window) {
            return Err(FlowError::BadWindow(window));
        }
        Ok(Self { caps, window })
    }

    /// What a stream gets when this end (`self`) and the peer (`theirs`) both said hello.
    pub fn agree(&self, theirs: &Hello) -> Agreed {
        let both = self.caps & theirs.caps;
        Agreed {
            window: (both & caps::WINDOW != 0).then_some(Windows {
                send: theirs.window,
                receive: self.window,
            }),
            half_close: both & caps::HALF_CLOSE != 0,
        }
    }
}

/// The windows of a flow-controlled stream, seen from one end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// The peer's window: what this end may have in flight.
    pub send: u32,
    /// This end's window: what the peer may have in flight.
    pub receive: u32,
}

/// What the streams opened after the HELLOs get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agreed {
    pub window: Option<Windows>,
    pub half_close: bool,
}

/// A WINDOW frame's payload.
pub fn window_payload(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

/// The credit a WINDOW frame returns (never 0).
pub fn parse_window(payload: &[u8]) -> Result<u32, FlowError> {
    let b: [u8; 4] = payload
        .try_into()
        .map_err(|_| FlowError::BadWindowFrame(payload.len()))?;
    match u32::from_be_bytes(b) {
        0 => Err(FlowError::BadWindow(0)),
        n => Ok(n),
    }
}

/// What a sender may still send on one stream: it starts at the peer's window, shrinks by
/// what is sent and grows by what the peer returns, never above the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    available: u32,
    max: u32,
}

impl Credit {
    pub fn new(window: u32) -> Self {
        Self {
            available: window,
            max: window,
        }
    }

    pub fn available(&self) -> u32 {
        self.available
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Takes `n` bytes of credit if there are that many.
    pub fn take(&mut self, n: u32) -> bool {
        match self.available.checked_sub(n) {
            Some(left) => {
                self.available = left;
                true
            }
            None => false,
        }
    }

    /// Credit returned by the peer's WINDOW frame; more than is in flight is an error
    /// and changes nothing.
    pub fn grant(&mut self, n: u32) -> Result<(), FlowError> {
        let outstanding = self.max - self.available;
        if n > outstanding {
            return Err(FlowError::TooMuchCredit {
                granted: n,
                outstanding,
            });
        }
        self.available += n;
        Ok(())
    }
}

/// A receiver's count for one stream: bytes taken in and not yet handed on (`held`), bytes
/// handed on whose credit is not yet returned (`unreturned`). A conforming sender keeps
/// their sum within the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intake {
    window: u32,
    held: u32,
    unreturned: u32,
}

impl Intake {
    pub fn new(window: u32) -> Self {
        Self {
            window,
            held: 0,
            unreturned: 0,
        }
    }

    /// DATA of `n` bytes arrived; past the window it is an error and nothing is counted.
    pub fn receive(&mut self, n: usize) -> Result<(), FlowError> {
        let room = self.window - self.held - self.unreturned;
        match u32::try_from(n) {
            Ok(n) if n <= room => {
                self.held += n;
                Ok(())
            }
            _ => Err(FlowError::OverWindow { sent: n, room }),
        }
    }

    /// `n` bytes were handed on (never more than are held); returns the credit to send
    /// back now, once a quarter of the window or more is owed.
    pub fn hand_on(&mut self, n: usize) -> Option<u32> {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.held);
        self.held -= n;
        self.unreturned += n;
        (self.unreturned >= self.window.div_ceil(4).max(1))
            .then(|| std::mem::take(&mut self.unreturned))
    }

    pub fn held(&self) -> u32 {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_agreement() {
        let ours = Hello::OURS;
        assert_eq!(ours.encode(), [0, 0, 0, 3, 0, 4, 0, 0]);
        assert_eq!(Hello::decode(&ours.encode()).unwrap(), ours);
        let mut longer = ours.encode().to_vec();
        longer.extend_from_slice(b"later");
        assert_eq!(
            Hello::decode(&longer).unwrap(),
            ours,
            "a longer hello is a later one"
        );
        assert_eq!(Hello::decode(&[0; 7]), Err(FlowError::ShortHello(7)));
        assert_eq!(
            Hello::decode(&[0, 0, 0, 1, 0, 0, 0, 0]),
            Err(FlowError::BadWindow(0))
        );
        let theirs = Hello {
            caps: caps::WINDOW,
            window: 1024,
        };
        assert_eq!(
            ours.agree(&theirs),
            Agreed {
                window: Some(Windows {
                    send: 1024,
                    receive: WINDOW
                }),
                half_close: false
            }
        );
        let none = Hello { caps: 0, window: 0 };
        assert_eq!(Hello::decode(&none.encode()).unwrap(), none);
        assert_eq!(ours.agree(&none), Agreed::default());
    }

    #[test]
    fn credit_never_passes_the_window() {
        let mut c = Credit::new(100);
        assert!(c.take(60));
        assert!(!c.take(41), "only 40 left");
        assert_eq!(c.available(), 40);
        assert_eq!(
            c.grant(61),
            Err(FlowError::TooMuchCredit {
                granted: 61,
                outstanding: 60
            })
        );
        assert_eq!(c.available(), 40, "a refused grant changes nothing");
        c.grant(60).unwrap();
        assert_eq!(c.available(), 100);
    }

    #[test]
    fn intake_returns_credit_by_quarters_and_refuses_overruns() {
        let mut i = Intake::new(100);
        i.receive(100).unwrap();
        assert_eq!(
            i.receive(1),
            Err(FlowError::OverWindow { sent: 1, room: 0 })
        );
        assert_eq!(i.hand_on(24), None);
        assert_eq!(i.hand_on(1), Some(25));
        assert_eq!(i.hand_on(75), Some(75));
        assert_eq!(i.held(), 0);
        i.receive(100).unwrap();
        assert_eq!(i.hand_on(500), Some(100), "never more than held");
        assert_eq!(parse_window(&window_payload(7)), Ok(7));
        assert!(parse_window(&[0, 0, 0, 0]).is_err());
        assert!(parse_window(&[0, 0, 1]).is_err());
    }

    proptest::proptest! {
        /// A sender and a receiver following the rules never error, and the sender's
        /// credit plus what the receiver holds and owes is always the window.
        #[test]
        fn a_conforming_pair_keeps_the_invariant(window in 1u32..4096, steps in proptest::collection::vec((0u8..3, 1u32..2048), 0..200)) {
            let mut c = Credit::new(window);
            let mut i = Intake::new(window);
            let mut in_flight = 0u32;
            for (op, n) in steps {
                match op {
                    0 => {
                        let n = n.min(c.available());
                        if n > 0 && c.take(n) {
                            i.receive(n as usize).unwrap();
                            in_flight += n;
                        }
                    }
                    _ => {
                        if let Some(back) = i.hand_on(n as usize) {
                            c.grant(back).unwrap();
                            in_flight -= back;
                        }
                    }
                }
                proptest::prop_assert_eq!(c.available() + in_flight, window);
                proptest::prop_assert!(i.held() <= window);
            }
        }
    }
}

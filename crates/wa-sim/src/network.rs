//! A realistic network on the chat socket, off unless asked for: every frame the server
//! sends a client leaves `latency` plus a random `0..=jitter` later, in the order it was
//! sent, while the connection goes on reading and answering. Real round trips to WhatsApp
//! take tens of milliseconds; an answer within a millisecond of the handshake hides races a
//! client has. Benchmarks leave it off.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The most latency or jitter the simulator takes, in milliseconds.
pub const MAX_MS: u32 = 10_000;

/// The delay every frame to a client takes (`GET`/`POST /admin/network`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub latency_ms: u32,
    #[serde(default)]
    pub jitter_ms: u32,
}

impl Network {
    pub fn is_off(&self) -> bool {
        self.latency_ms == 0 && self.jitter_ms == 0
    }

    /// One frame's delay: the latency and a uniform share of the jitter.
    fn sample(&self) -> Duration {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=self.jitter_ms)
        };
        Duration::from_millis(u64::from(self.latency_ms) + u64::from(jitter))
    }
}

/// The current setting, shared by every connection and read per frame.
#[derive(Default)]
pub struct Shaping(AtomicU64);

impl Shaping {
    pub fn get(&self) -> Network {
        let v = self.0.load(Ordering::Relaxed);
        Network {
            latency_ms: (v >> 32) as u32,
            jitter_ms: v as u32,
        }
    }

    pub fn set(&self, n: Network) {
        self.0.store(
            (u64::from(n.latency_ms) << 32) | u64::from(n.jitter_ms),
            Ordering::Relaxed,
        );
    }

    /// How long a frame sent now waits (before the handshake is done, when nothing else
    /// is in flight on the connection).
    pub fn delay(&self) -> Duration {
        self.get().sample()
    }
}

/// The frames of one connection on their way to the client: each leaves at its time, never
/// before one sent earlier.
#[derive(Default)]
pub struct InFlight {
    frames: VecDeque<(Instant, Vec<u8>)>,
}

impl InFlight {
    /// `bytes` to be written now, or `None` when they were put in flight instead.
    pub fn send(&mut self, network: Network, bytes: Vec<u8>) -> Option<Vec<u8>> {
        if network.is_off() && self.frames.is_empty() {
            return Some(bytes);
        }
        let at = Instant::now() + network.sample();
        let at = self.frames.back().map_or(at, |(last, _)| at.max(*last));
        self.frames.push_back((at, bytes));
        None
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.frames.front().map(|(at, _)| *at)
    }

    /// The frames due by now, in order.
    pub fn due(&mut self) -> Vec<Vec<u8>> {
        let now = Instant::now();
        let mut out = Vec::new();
        while self.frames.front().is_some_and(|(at, _)| *at <= now) {
            out.push(self.frames.pop_front().expect("checked").1);
        }
        out
    }

    /// Every frame still in flight with its time, to write them out before a close.
    pub fn drain(&mut self) -> impl Iterator<Item = (Instant, Vec<u8>)> + '_ {
        self.frames.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_leave_late_and_in_order() {
        let mut flight = InFlight::default();
        let off = Network::default();
        assert_eq!(
            flight.send(off, vec![0]),
            Some(vec![0]),
            "off: written at once"
        );
        let net = Network {
            latency_ms: 40,
            jitter_ms: 30,
        };
        let start = Instant::now();
        for i in 1..=50u8 {
            assert!(flight.send(net, vec![i]).is_none());
        }
        // Off again, but frames are in flight: they keep their place.
        assert!(flight.send(off, vec![51]).is_none());
        assert!(flight.due().is_empty(), "nothing leaves before the latency");
        let mut got = Vec::new();
        while let Some(at) = flight.next_due() {
            assert!(at >= start + Duration::from_millis(40));
            tokio::time::sleep_until(at).await;
            got.extend(flight.due().into_iter().map(|b| b[0]));
        }
        assert_eq!(got, (1..=51).collect::<Vec<u8>>());
    }

    #[test]
    fn the_setting_reads_back() {
        let s = Shaping::default();
        assert!(s.get().is_off());
        let n = Network {
            latency_ms: 25,
            jitter_ms: 10,
        };
        s.set(n);
        assert_eq!(s.get(), n);
    }
}

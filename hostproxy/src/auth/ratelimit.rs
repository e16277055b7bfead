//! A token bucket: `n` actions per minute, with a burst of `n`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `0` disables the limit.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            per_minute,
            state: Mutex::new((f64::from(per_minute), Instant::now())),
        }
    }

    /// Takes one token, or says how many seconds until one is available.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_minute) / 60.0;
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *guard;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate)
            .min(f64::from(self.per_minute));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

/// One limiter per (token, route), created on first use, and made anew when the rate asked
/// for changes (a config reload must not leave old keys on their first rate).
#[derive(Debug, Default)]
pub struct PerKey {
    limiters: Mutex<std::collections::HashMap<(String, &'static str), std::sync::Arc<RateLimiter>>>,
}

impl PerKey {
    pub fn try_acquire(
        &self,
        key: &str,
        route: &'static str,
        per_minute: u32,
    ) -> Result<(), Duration> {
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map
                .entry((key.to_string(), route))
                .or_insert_with(|| std::sync::Arc::new(RateLimiter::per_minute(per_minute)));
            if entry.per_minute != per_minute {
                *entry = std::sync::Arc::new(RateLimiter::per_minute(per_minute));
            }
            entry.clone()
        };
        limiter.try_acquire()
    }
}

/// How many host programs one identity may have running at once, per route (SPEC.md 11):
/// an identity at its cap is refused (429) while the others still find free global slots.
#[derive(Debug, Default)]
pub struct PerKeySlots {
    running: std::sync::Arc<Mutex<std::collections::HashMap<String, usize>>>,
}

/// A held slot of [`PerKeySlots`], given back on drop.
#[derive(Debug)]
pub struct KeySlot {
    running: std::sync::Arc<Mutex<std::collections::HashMap<String, usize>>>,
    key: String,
}

impl PerKeySlots {
    /// A slot for `key` on `route` when it holds fewer than `cap`.
    pub fn try_acquire(&self, key: &str, route: &str, cap: usize) -> Option<KeySlot> {
        let key = format!("{route} {key}");
        let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(KeySlot {
            running: self.running.clone(),
            key,
        })
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_key_are_given_back() {
        let s = PerKeySlots::default();
        let a1 = s.try_acquire("a", "/git", 2).unwrap();
        let _a2 = s.try_acquire("a", "/git", 2).unwrap();
        assert!(s.try_acquire("a", "/git", 2).is_none());
        assert!(
            s.try_acquire("b", "/git", 2).is_some(),
            "another identity is not held up"
        );
        assert!(s.try_acquire("a", "/docker", 2).is_some(), "per route");
        drop(a1);
        assert!(s.try_acquire("a", "/git", 2).is_some());
    }

    #[test]
    fn burst_then_refuse() {
        let r = RateLimiter::per_minute(3);
        for _ in 0..3 {
            assert!(r.try_acquire().is_ok());
        }
        let wait = r.try_acquire().unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(RateLimiter::per_minute(0).try_acquire().is_ok());
    }

    #[test]
    fn a_changed_rate_applies_to_keys_already_seen() {
        let k = PerKey::default();
        assert!(k.try_acquire("t", "/r", 1).is_ok());
        assert!(k.try_acquire("t", "/r", 1).is_err());
        // The rate was raised: the key gets the new budget at once.
        assert!(k.try_acquire("t", "/r", 5).is_ok());
    }
}

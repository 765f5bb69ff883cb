//! A per-person allowance for what costs a post or a message (commands, presses): someone
//! typing `/send_new` a hundred times or pressing buttons as fast as they can gets the first few
//! answered, then one polite "slow down", then nothing until their allowance refills. Their votes
//! are still kept; they use up no posts and delay nobody else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What to do with one person's next update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the allowance; `warn` is true once per `warn_every`, for the "slow down" reply.
    Refused {
        warn: bool,
    },
}

struct Allowance {
    tokens: f64,
    updated: Instant,
    warned: Option<Instant>,
}

pub struct FloodGuard {
    people: Mutex<HashMap<i64, Allowance>>,
    per_second: f64,
    burst: f64,
    warn_every: Duration,
}

impl FloodGuard {
    /// `per_minute` actions a minute on average, `burst` at once.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            people: Mutex::new(HashMap::new()),
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            warn_every: Duration::from_secs(60),
        }
    }

    pub fn check(&self, person: i64) -> Verdict {
        let now = Instant::now();
        let mut people = self.people.lock().expect("not poisoned");
        if people.len() > 100_000 {
            // Forget the people whose allowance is full again.
            let (per_second, burst) = (self.per_second, self.burst);
            people.retain(|_, a| a.tokens + (now - a.updated).as_secs_f64() * per_second < burst);
        }
        let allowance = people.entry(person).or_insert(Allowance {
            tokens: self.burst,
            updated: now,
            warned: None,
        });
        let refilled = (now - allowance.updated).as_secs_f64() * self.per_second;
        allowance.tokens = (allowance.tokens + refilled).min(self.burst);
        allowance.updated = now;
        if allowance.tokens >= 1.0 {
            allowance.tokens -= 1.0;
            return Verdict::Allowed;
        }
        let warn = allowance
            .warned
            .is_none_or(|at| now - at >= self.warn_every);
        if warn {
            allowance.warned = Some(now);
        }
        Verdict::Refused { warn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_warning_then_silence_until_the_allowance_refills() {
        let guard = FloodGuard::new(60, 3);
        let verdicts: Vec<Verdict> = (0..6).map(|_| guard.check(7)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Allowed,
                Verdict::Refused { warn: true },
                Verdict::Refused { warn: false },
                Verdict::Refused { warn: false },
            ]
        );
        assert_eq!(guard.check(8), Verdict::Allowed, "others have their own");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(guard.check(7), Verdict::Allowed, "one a second refills");
        assert_eq!(guard.check(7), Verdict::Refused { warn: false });
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(guard.check(7), Verdict::Allowed);
        }
        assert_eq!(guard.check(7), Verdict::Refused { warn: true });
    }
}

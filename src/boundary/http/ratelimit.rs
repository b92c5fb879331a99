//! Per-source rate limits where a request costs real CPU before it is refused: bearer
//! token checks (a hash and a database lookup) and hub node authentication (~25 ms of
//! PBKDF2 per unsigned request). GCRA buckets from `governor`, keyed by the source
//! address ([`super::Source`]); a source past its bucket gets 429 with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::ApiError;

/// One limit; `None` when the operator turned it off (0 per second).
pub struct Limit {
    limiter: Option<DefaultKeyedRateLimiter<Option<IpAddr>>>,
    what: &'static str,
}

impl Limit {
    /// `per_second` with bursts of twice that; 0 = unlimited.
    pub fn new(per_second: u32, what: &'static str) -> Limit {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not 0"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Limit { limiter, what }
    }

    /// Take one request from `source`'s bucket, or 429.
    pub fn check(&self, source: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&source).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::too_many_requests(self.what, secs.max(1))
        })
    }

    /// Forget sources whose buckets are full again, so memory follows the active set.
    fn forget_idle(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The limits of one `lxgate serve`.
pub struct Limits {
    pub token: Limit,
    pub hub: Limit,
}

impl Limits {
    pub fn new(config: &crate::config::Config) -> Limits {
        Limits {
            token: Limit::new(config.server.limits.token_auth_per_second, "token checks"),
            hub: Limit::new(config.hub_receiver.auth_per_second, "node authentications"),
        }
    }

    /// Forget idle sources every minute, for as long as the server runs.
    pub async fn forget_idle_forever(limits: std::sync::Arc<Limits>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limits.token.forget_idle();
            limits.hub.forget_idle();
        }
    }
}

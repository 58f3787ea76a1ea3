//! A minimum average data rate for transfers (as Postfix's smtpd_min_data_rate).

use std::time::Duration;

/// A minimum average data rate: after `grace`, a transfer must have moved `min_rate` bytes
/// for every further second (as Postfix's smtpd_min_data_rate).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub min_rate: u64,
    pub grace: Duration,
}

impl Pace {
    pub fn none() -> Pace {
        Pace {
            min_rate: 0,
            grace: Duration::ZERO,
        }
    }

    /// How long a transfer that has moved `received` bytes may have taken; `None`: no bound.
    pub fn allowed(&self, received: u64) -> Option<Duration> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        Some(self.grace.saturating_add(earned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_allows_time_in_proportion_to_data() {
        let pace = Pace {
            min_rate: 1000,
            grace: Duration::from_secs(30),
        };
        assert_eq!(pace.allowed(0), Some(Duration::from_secs(30)));
        assert_eq!(pace.allowed(5000), Some(Duration::from_secs(35)));
        assert_eq!(Pace::none().allowed(u64::MAX), None);
    }
}

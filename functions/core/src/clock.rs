//! Time as a dependency: handlers ask a [`Clock`] for "now", and waits go through a
//! [`Sleeper`], so tests can move time forward by thirty minutes in a microsecond instead of
//! waiting.
//!
//! The core never depends on an async runtime: the real sleeper (on tokio's timer) lives with
//! the binaries, and [`ManualClockSleeper`] serves the tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The least time a run that works until its invocation's deadline (a sweep, a lost-push
/// check) keeps in hand before it.
pub const DEADLINE_MARGIN: TimeDelta = TimeDelta::seconds(10);

/// `at` without its fraction of a second: how DynamoDB's TTL keeps a time, and how ECR's
/// event times are stamped.
pub fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

impl<T: Clock + ?Sized> Clock for &T {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The wall clock moved forward by an adjustable offset: for runs against real services whose
/// events carry real timestamps, where a test still needs "thirty minutes later" now.
#[derive(Debug, Default)]
pub struct OffsetClock(Mutex<TimeDelta>);

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut offset = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *offset += by;
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waiting as a dependency: a copy polling for a blob another copy is uploading, or the native
/// backfill waiting for ECR, sleeps through this.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

impl<T: Sleeper + ?Sized> Sleeper for &T {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        (**self).sleep(duration)
    }
}

impl<T: Sleeper + ?Sized> Sleeper for Arc<T> {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        (**self).sleep(duration)
    }
}

/// A sleeper that moves a [`ManualClock`] forward by the time asked and returns at once (after
/// letting other tasks run, as a real sleep would): minutes of claim expiry pass in a test in
/// microseconds.
#[derive(Debug, Clone)]
pub struct ManualClockSleeper {
    clock: Arc<ManualClock>,
}

impl ManualClockSleeper {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        Self { clock }
    }
}

impl Sleeper for ManualClockSleeper {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        self.clock
            .advance(TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX));
        yield_now()
    }
}

/// A future that is pending once: it gives the executor the chance to run other tasks, the
/// way an await on I/O would, without needing any particular runtime.
pub(crate) fn yield_now() -> impl Future<Output = ()> + Send {
    YieldOnce { yielded: false }
}

struct YieldOnce {
    yielded: bool,
}

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_runs_ahead_of_the_wall_clock() {
        let clock = OffsetClock::new();
        clock.advance(TimeDelta::minutes(31));
        let ahead = clock.now() - Utc::now();
        assert!(
            ahead > TimeDelta::minutes(30) && ahead <= TimeDelta::minutes(31),
            "{ahead}"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(TimeDelta::minutes(30));
        assert_eq!(clock.now(), start + TimeDelta::minutes(30));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[tokio::test]
    async fn a_manual_clock_sleeper_moves_the_clock_instead_of_waiting() {
        let start = Utc::now();
        let clock = Arc::new(ManualClock::new(start));
        let sleeper = ManualClockSleeper::new(clock.clone());
        let wall = std::time::Instant::now();
        sleeper.sleep(Duration::from_secs(600)).await;
        assert_eq!(clock.now(), start + TimeDelta::minutes(10));
        assert!(wall.elapsed() < Duration::from_secs(1));
    }
}

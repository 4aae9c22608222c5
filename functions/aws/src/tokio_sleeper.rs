//! The [`Sleeper`] port on tokio's timer: what the Lambda functions and the CLI wait with
//! (a copy waiting for a blob another copy uploads, a native backfill being followed).

use std::time::Duration;

use replwatch_core::clock::Sleeper;

/// Sleeps on the tokio runtime's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_at_least_the_duration_asked() {
        let started = std::time::Instant::now();
        TokioSleeper.sleep(Duration::from_millis(30)).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}

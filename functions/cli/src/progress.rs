//! Progress on standard error: a bar with images, bytes, rate and ETA on a terminal; nothing
//! when standard error is piped (CI logs get the final summary only).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display that is a no-op when not on a terminal or when disabled.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total_bytes` bytes, labelled with images done out of `total_images`.
    pub fn bytes(total_images: u64, total_bytes: u64, enabled: bool) -> Self {
        let bar = if enabled && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let template = if crate::output::colours_enabled() {
            "{spinner:.green} [{elapsed_precise}] [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, ETA {eta}) {msg}"
        } else {
            "[{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, ETA {eta}) {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("0/{total_images} images"));
        Self { bar }
    }

    pub fn add_bytes(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    pub fn set_images(&self, done: u64, total: u64, failed: u64) {
        if failed > 0 {
            self.bar
                .set_message(format!("{done}/{total} images, {failed} failed"));
        } else {
            self.bar.set_message(format!("{done}/{total} images"));
        }
    }

    /// A line above the bar (or on standard error when there is no bar).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

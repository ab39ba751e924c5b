//! Progress bars for file transfers, on stderr (drawn only on a terminal, so scripts and
//! `--json` readers see nothing of them).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nightjar_client::{TransferPhase, TransferProgress};

/// Transfers below this size get no bar: they are over before one would be drawn.
const SMALL: u64 = 1 << 20;

/// One bar that follows a transfer through its phases.
pub(crate) struct Bar {
    bar: Option<ProgressBar>,
    phase: Option<TransferPhase>,
}

impl Bar {
    pub(crate) fn new() -> Self {
        Self {
            bar: None,
            phase: None,
        }
    }

    /// Shows `p`, starting a new bar when the phase changes.
    pub(crate) fn update(&mut self, p: TransferProgress) {
        if p.total < SMALL {
            return;
        }
        if self.phase != Some(p.phase) {
            self.finish();
            let bar = ProgressBar::with_draw_target(Some(p.total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg:>11} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label(p.phase));
            self.bar = Some(bar);
            self.phase = Some(p.phase);
        }
        if let Some(bar) = &self.bar {
            bar.set_length(p.total);
            bar.set_position(p.done);
        }
    }

    /// Ends the bar on screen.
    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        self.phase = None;
    }
}

fn label(phase: TransferPhase) -> &'static str {
    match phase {
        TransferPhase::Encrypting => "encrypting",
        TransferPhase::Uploading => "uploading",
        TransferPhase::Downloading => "downloading",
        TransferPhase::Verifying => "verifying",
        TransferPhase::Decrypting => "decrypting",
    }
}

//! `marlhf-stages`' progress drawn on the terminal: a [`Progress`] whose bars
//! are indicatif bars in the house style and whose notes are stderr lines.

use indicatif::ProgressBar;
use marlhf_stages::progress::{Bar, Progress};

/// The stage binaries' [`Progress`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Bars;

struct Drawn(ProgressBar);

impl Progress for Bars {
    fn bar(&self, len: u64, what: &str) -> Box<dyn Bar> {
        Box::new(Drawn(crate::bar(len, what)))
    }

    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}

impl Bar for Drawn {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    fn set_position(&self, pos: u64) {
        self.0.set_position(pos);
    }

    fn set_message(&self, msg: String) {
        self.0.set_message(msg);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

//! How a stage reports long work without writing to the terminal itself:
//! the caller passes a [`Progress`]. The stage binaries implement it with
//! indicatif bars and stderr lines (`marlhf_cli::Bars`); a library user
//! passes [`Silent`], or their own.

/// Where a stage's progress goes.
pub trait Progress: Sync {
    /// A bar for `len` units of work, labelled `what`.
    fn bar(&self, len: u64, what: &str) -> Box<dyn Bar>;
    /// A line the user should see (a resumed run, a changed setting).
    fn note(&self, line: &str);
}

/// One piece of long work under way.
pub trait Bar: Send + Sync {
    fn inc(&self, n: u64);
    fn set_position(&self, pos: u64);
    fn set_message(&self, msg: String);
    /// The work is done: the bar goes away.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn bar(&self, _len: u64, _what: &str) -> Box<dyn Bar> {
        Box::new(Silent)
    }
    fn note(&self, _line: &str) {}
}

impl Bar for Silent {
    fn inc(&self, _n: u64) {}
    fn set_position(&self, _pos: u64) {}
    fn set_message(&self, _msg: String) {}
    fn finish(&self) {}
}

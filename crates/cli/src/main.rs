//! The `nightjar` command (under construction).
fn main() {}

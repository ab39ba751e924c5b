//! `nightjar-loadgen` (under construction).
fn main() {}

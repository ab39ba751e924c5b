//! Nightjar client (under construction).

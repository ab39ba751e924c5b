//! Nightjar server (under construction).

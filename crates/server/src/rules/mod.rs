//! Pure decision logic, free of IO so it can be tested exhaustively: which device lists may
//! follow the stored one, which messages the delivery service accepts in which order, and who
//! may stay in a group call.

pub(crate) mod calls;
pub(crate) mod commits;
pub(crate) mod consent;
pub(crate) mod delivery;
pub(crate) mod device_list;
pub(crate) mod key_packages;

//! Pure decision logic, free of IO so it can be tested exhaustively: which device lists may
//! follow the stored one, and which messages the delivery service accepts in which order.

pub(crate) mod commits;
pub(crate) mod consent;
pub(crate) mod delivery;
pub(crate) mod device_list;
pub(crate) mod key_packages;

//! OPAQUE registration and login: the client's half lives in [`nightjar_machine::auth`], shared
//! with the browser.

pub use nightjar_machine::auth::Password;
pub(crate) use nightjar_machine::auth::{
    login_finish, login_start, registration_finish, registration_start,
};

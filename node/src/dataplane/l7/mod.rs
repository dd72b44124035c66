//! Layer 7: HTTP/1.1 and cleartext HTTP/2 from clients, HTTP/1.1 with
//! keep-alive to backends.

pub(crate) mod backend_conn;
mod body;
pub(crate) mod chunked;
mod client_conn;
pub(crate) mod cookies;
pub(crate) mod framing;
pub(crate) mod h1_client;
pub(crate) mod h2_frames;
mod headers;
mod proxy;
pub mod request_body;
pub(crate) mod retry;
pub mod route;
mod send_clock;
pub mod server;
mod sticky;
mod upgrade;

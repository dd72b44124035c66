//! Layer 7: HTTP/1.x (raftlb's own server), HTTP/2 (hyper's) and HTTP/3
//! (h3 over quinn) from clients, HTTP/1.1 with keep-alive or HTTP/2 to
//! backends.

pub(crate) mod backend_conn;
mod body;
pub(crate) mod chunked;
mod client_body;
mod client_conn;
pub(crate) mod cookies;
pub(crate) mod h1_client;
pub(crate) mod h1_server;
pub(crate) mod h2_frames;
mod h3_body;
pub mod h3_server;
mod headers;
mod proxy;
pub mod request_body;
pub(crate) mod retry;
mod rewind;
pub mod route;
mod send_clock;
pub mod server;
mod sticky;
mod upgrade;

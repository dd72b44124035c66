//! A NAT of the tests' own between one UDP client and a server: it can
//! change the client's address as the server sees it (rebinding, the
//! client unaware) and send on to another server (as after a VIP move),
//! the client still talking to the NAT's one address. Like a real NAT's
//! connection tracking, it relays back only what comes from its current
//! target: a reply from any other address matches no mapping. It may
//! live on a host of a [`Lab`](crate::netns::Lab) ([`Nat::start_in`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A NAT between one client and the balancers: the client talks to
/// `front`; the NAT sends on from its current outbound socket to its
/// current target, and relays what comes back.
#[derive(Debug)]
pub struct Nat {
    front: Arc<UdpSocket>,
    state: Arc<Mutex<NatState>>,
    tasks: Vec<JoinHandle<()>>,
    /// Where a rebinding moves the client's datagrams' source.
    rebound_ip: [u8; 4],
    /// The namespace its sockets are made in (`None`: the test's own).
    ns: Option<String>,
}

#[derive(Debug)]
struct NatState {
    outbound: Arc<UdpSocket>,
    target: SocketAddr,
    client: Option<SocketAddr>,
}

impl Nat {
    /// A NAT whose outbound address is on `ip` (then `rebound_ip`).
    pub async fn start(target: SocketAddr, ip: [u8; 4], rebound_ip: [u8; 4]) -> Nat {
        Self::start_in(None, target, ip, rebound_ip)
    }

    /// [`Nat::start`] on the lab host whose namespace is `ns`: its front
    /// is that host's loopback address, its outbound sockets that host's.
    pub fn start_in(ns: Option<&str>, target: SocketAddr, ip: [u8; 4], rebound_ip: [u8; 4]) -> Nat {
        let ns = ns.map(str::to_string);
        let front = bind(ns.as_deref(), SocketAddr::from(([127, 0, 0, 1], 0)));
        let outbound = bind(ns.as_deref(), SocketAddr::from((ip, 0)));
        let state = Arc::new(Mutex::new(NatState {
            outbound: Arc::clone(&outbound),
            target,
            client: None,
        }));
        let mut nat = Nat {
            front: Arc::clone(&front),
            state: Arc::clone(&state),
            tasks: Vec::new(),
            rebound_ip,
            ns,
        };
        nat.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, client)) = front.recv_from(&mut buf).await {
                let (outbound, target) = {
                    let mut state = state.lock().expect("nat");
                    state.client = Some(client);
                    (Arc::clone(&state.outbound), state.target)
                };
                let _ = outbound.send_to(&buf[..len], target).await;
            }
        }));
        nat.relay_back(outbound);
        nat
    }

    /// Relays what comes to `outbound` back to the client.
    fn relay_back(&mut self, outbound: Arc<UdpSocket>) {
        let (front, state) = (Arc::clone(&self.front), Arc::clone(&self.state));
        self.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, from)) = outbound.recv_from(&mut buf).await {
                let (client, target) = {
                    let state = state.lock().expect("nat");
                    (state.client, state.target)
                };
                if from != target {
                    continue;
                }
                if let Some(client) = client {
                    let _ = front.send_to(&buf[..len], client).await;
                }
            }
        }));
    }

    pub fn address(&self) -> SocketAddr {
        self.front.local_addr().expect("front")
    }

    /// The client's datagrams leave from a new address from now on (a
    /// new IP too: the pool's `source_ip` table must not be what keeps it).
    pub async fn rebind(&mut self) -> SocketAddr {
        self.rebind_to(self.rebound_ip.into())
    }

    /// [`Nat::rebind`] to a port on `ip`.
    pub fn rebind_to(&mut self, ip: IpAddr) -> SocketAddr {
        let outbound = bind(self.ns.as_deref(), SocketAddr::new(ip, 0));
        let address = outbound.local_addr().expect("outbound");
        self.state.lock().expect("nat").outbound = Arc::clone(&outbound);
        self.relay_back(outbound);
        address
    }

    /// The client's datagrams go to `target` from now on.
    pub fn retarget(&self, target: SocketAddr) {
        self.state.lock().expect("nat").target = target;
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP socket bound to `address`, made in namespace `ns` if one is given.
fn bind(ns: Option<&str>, address: SocketAddr) -> Arc<UdpSocket> {
    let make = move || {
        let socket = std::net::UdpSocket::bind(address).expect("bind a NAT socket");
        socket.set_nonblocking(true).expect("non-blocking");
        socket
    };
    let socket = match ns {
        Some(ns) => crate::netns::on_host(ns, make),
        None => make(),
    };
    Arc::new(UdpSocket::from_std(socket).expect("register the NAT socket"))
}

//! A packet capture inside one network namespace: an `AF_PACKET` socket
//! that takes every frame of every interface there (the lab's bridge
//! namespace sees every frame between its hosts, on the ports it enters
//! and leaves by), kept whole in memory up to [`MAX_BYTES`], so a test can
//! search what crossed the wire for bytes that must never appear in it.
#![allow(unsafe_code)] // AF_PACKET sockets: std has none.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Frames kept at most, in bytes (the rest are counted, not kept).
pub const MAX_BYTES: usize = 1 << 30;
const ETH_P_ALL: u16 = 0x0003;

/// A running capture; [`Capture::finish`] stops it.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Frames>>,
    reading: std::thread::JoinHandle<()>,
}

/// What a capture saw.
#[derive(Debug, Default)]
pub struct Frames {
    pub frames: Vec<Vec<u8>>,
    pub bytes: usize,
    /// Frames seen but not kept (over [`MAX_BYTES`]).
    pub dropped: usize,
}

impl Frames {
    /// How many frames hold `needle` (searched whole, frame by frame).
    pub fn holding(&self, needle: &[u8]) -> usize {
        self.frames
            .iter()
            .filter(|frame| frame.windows(needle.len()).any(|w| w == needle))
            .count()
    }

    /// How many frames are TCP to or from `port` (IPv4 over Ethernet).
    pub fn tcp_port(&self, port: u16) -> usize {
        let port = port.to_be_bytes();
        self.frames
            .iter()
            .filter(|f| {
                f.len() >= 38 && f[12..14] == [0x08, 0x00] && f[23] == 6 && {
                    let header = usize::from(f[14] & 0x0f) * 4;
                    f.len() >= 14 + header + 4
                        && (f[14 + header..16 + header] == port || f[16 + header..18 + header] == port)
                }
            })
            .count()
    }
}

impl Capture {
    /// Starts capturing in namespace `ns`.
    pub fn start(ns: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Frames::default()));
        let socket = crate::netns::on_host(ns, packet_socket);
        let (stop_r, frames_r) = (Arc::clone(&stop), Arc::clone(&frames));
        let reading = std::thread::spawn(move || read(&socket, &stop_r, &frames_r));
        Capture {
            stop,
            frames,
            reading,
        }
    }

    /// Stops and returns every frame seen.
    pub fn finish(self) -> Frames {
        self.stop.store(true, Ordering::Relaxed);
        self.reading.join().expect("the capture thread");
        std::mem::take(&mut *self.frames.lock().expect("frames"))
    }
}

/// A packet socket for every frame, with a large receive buffer.
fn packet_socket() -> OwnedFd {
    let socket = crate::arp::packet_socket(ETH_P_ALL);
    crate::arp::receive_for_at_most_50ms(&socket);
    let buffer: libc::c_int = 64 << 20;
    // SAFETY: a valid option value of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const buffer).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket
}

fn read(socket: &OwnedFd, stop: &AtomicBool, frames: &Mutex<Frames>) {
    let mut frame = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: a buffer valid for the length given.
        let n = unsafe { libc::recv(socket.as_raw_fd(), frame.as_mut_ptr().cast(), frame.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let mut kept = frames.lock().expect("frames");
        if kept.bytes + n > MAX_BYTES {
            kept.dropped += 1;
            continue;
        }
        kept.bytes += n;
        kept.frames.push(frame[..n].to_vec());
    }
}

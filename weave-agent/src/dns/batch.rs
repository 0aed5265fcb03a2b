//! Datagrams in and out by the batch (recvmmsg and sendmmsg, through nix): a queue of queries
//! costs two system calls, not two per query, which is what lets one thread keep ahead of a
//! container that asks as fast as it can.

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddrV4,
    os::fd::RawFd,
};

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg};

/// Datagrams per system call, each way.
pub const BATCH: usize = 32;

/// Buffers and headers for one socket, allocated once.
pub struct Batch {
    buffers: Vec<Vec<u8>>,
    /// What the last [`Batch::receive`] read: buffer, length and sender.
    got: Vec<(usize, usize, SocketAddrV4)>,
    recv_headers: MultiHeaders<SockaddrIn>,
    send_headers: MultiHeaders<SockaddrIn>,
    /// Answers waiting for [`Batch::flush`].
    out: Vec<(Vec<u8>, SockaddrIn)>,
}

impl Batch {
    /// Room for [`BATCH`] datagrams of `max` bytes (longer ones are cut to it).
    pub fn new(max: usize) -> Self {
        Self {
            buffers: vec![vec![0u8; max]; BATCH],
            got: Vec::with_capacity(BATCH),
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            out: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what is queued on `fd`, up to [`BATCH`] datagrams, without waiting: WouldBlock
    /// when there is nothing.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.got.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buffers
            .iter_mut()
            .map(|b| [IoSliceMut::new(b)])
            .collect();
        let received = recvmmsg(
            fd,
            &mut self.recv_headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for (i, message) in received.enumerate() {
            if let Some(from) = message.address {
                self.got.push((i, message.bytes, from.into()));
            }
        }
        Ok(self.got.len())
    }

    /// The `i`th datagram the last [`Batch::receive`] read, and its sender.
    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddrV4) {
        let (buffer, len, from) = self.got[i];
        let buffer = &self.buffers[buffer];
        (&buffer[..len.min(buffer.len())], from)
    }

    pub fn received(&self) -> usize {
        self.got.len()
    }

    pub fn queue(&mut self, bytes: Vec<u8>, to: SocketAddrV4) {
        self.out.push((bytes, to.into()));
    }

    /// Sends what is queued, in as few calls as the kernel takes; whatever it will not take
    /// now (a full send buffer) is dropped, as the network may drop it, and the client asks
    /// again.
    pub fn flush(&mut self, fd: RawFd) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.out.len() {
            let pending = &self.out[sent..(sent + BATCH).min(self.out.len())];
            let slices: Vec<[IoSlice<'_>; 1]> = pending
                .iter()
                .map(|(bytes, _)| [IoSlice::new(bytes)])
                .collect();
            let addresses: Vec<Option<SockaddrIn>> =
                pending.iter().map(|(_, a)| Some(*a)).collect();
            let no_control: [ControlMessage<'_>; 0] = [];
            let done = sendmmsg(
                fd,
                &mut self.send_headers,
                &slices,
                &addresses,
                no_control,
                MsgFlags::MSG_DONTWAIT,
            );
            match done {
                Ok(results) => {
                    let n = results.count();
                    if n == 0 {
                        break;
                    }
                    sent += n;
                }
                Err(err) => {
                    self.out.clear();
                    return Err(err.into());
                }
            }
        }
        self.out.clear();
        Ok(())
    }
}

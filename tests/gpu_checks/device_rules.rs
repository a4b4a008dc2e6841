//! Rules of the `Device` trait that CUDA imposes, checked the same way on every device (emu here, cuda on
//! the emulated driver or a GPU): fresh memory reads as zero to the next operation on the device's stream.

use latentmas::backend::gpu::{DevBuf, Device};

/// Every fresh allocation reads as zero to the very next operations queued on the device's stream, and
/// its zeroing never lands later on memory the stream has written since. On the cuda device the zeroing is
/// queued on the same non-blocking stream; zeroing on the legacy default stream would race with them.
pub fn fresh_buffers_read_as_zero<D: Device>(dev: &mut D) {
    const BYTES: usize = 4 << 20;
    let mut host = vec![0u8; BYTES];
    let first_nonzero = |h: &[u8], want: u8| h.iter().position(|&v| v != want);
    for round in 0..8 {
        // a buffer the stream fills right after its allocation keeps what the stream wrote
        let c = DevBuf::alloc(dev, BYTES).unwrap();
        c.upload(dev, 0, &vec![0xA5u8; BYTES]).unwrap();
        c.download(dev, 0, &mut host).unwrap();
        if let Some(i) = first_nonzero(&host, 0xA5) {
            panic!(
                "round {round}: byte {i} of an uploaded buffer reads {:#x}: its zeroing ran after the upload",
                host[i]
            );
        }
        // a copy out of a fresh buffer, queued right after the allocation, copies zeros
        let a = DevBuf::alloc(dev, BYTES).unwrap();
        // SAFETY: both buffers hold BYTES bytes and do not overlap.
        unsafe { dev.copy(c.addr(), a.addr(), BYTES) }.unwrap();
        c.download(dev, 0, &mut host).unwrap();
        if let Some(i) = first_nonzero(&host, 0) {
            panic!("round {round}: byte {i} copied out of a fresh buffer reads {:#x}, not 0", host[i]);
        }
        // a download right after the allocation reads zeros
        let b = DevBuf::alloc(dev, BYTES).unwrap();
        host.fill(0x5A);
        b.download(dev, 0, &mut host).unwrap();
        if let Some(i) = first_nonzero(&host, 0) {
            panic!("round {round}: byte {i} of a fresh buffer reads {:#x}, not 0", host[i]);
        }
    }
}

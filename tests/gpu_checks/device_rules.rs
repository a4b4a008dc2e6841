//! Rules of the `Device` trait that CUDA imposes, checked the same way on every device (emu here, cuda on
//! the emulated driver or a GPU): fresh memory reads as zero to the next operation on the device's stream,
//! stream capture refuses what CUDA refuses there (and is invalidated by it), and buffers never grow inside
//! a capture.

use latentmas::backend::gpu::{DevBuf, Device, Grow};

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
        if let Some(i) = first_nonzero(&host[..], 0xA5) {
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
        if let Some(i) = first_nonzero(&host[..], 0) {
            panic!("round {round}: byte {i} copied out of a fresh buffer reads {:#x}, not 0", host[i]);
        }
        // a download right after the allocation reads zeros
        let b = DevBuf::alloc(dev, BYTES).unwrap();
        host.fill(0x5A);
        b.download(dev, 0, &mut host).unwrap();
        if let Some(i) = first_nonzero(&host[..], 0) {
            panic!("round {round}: byte {i} of a fresh buffer reads {:#x}, not 0", host[i]);
        }
    }
}

/// Starts a capture, runs `forbidden` (which must be refused), and checks that the refusal invalidated the
/// capture: later queued work fails, `end_capture` returns no graph, and the device is usable afterwards.
fn refused_and_invalidates<D: Device>(
    dev: &mut D,
    what: &str,
    scratch: &DevBuf<D::Buf>,
    forbidden: impl FnOnce(&mut D),
) {
    dev.begin_capture().unwrap();
    assert!(dev.capturing(), "{what}: capturing after begin_capture");
    forbidden(dev);
    // SAFETY: two non-overlapping 256-byte ranges of `scratch` (1024 bytes).
    let later = unsafe { dev.copy(scratch.addr() + 512, scratch.addr(), 256) };
    let err = later.expect_err(&format!("{what}: work queued after the refusal was accepted")).to_string();
    assert!(err.to_lowercase().contains("invalidated"), "{what}: {err}");
    let ended = dev.end_capture();
    assert!(!dev.capturing(), "{what}: still capturing after end_capture");
    let err = ended.err().unwrap_or_else(|| panic!("{what}: an invalidated capture returned a graph")).to_string();
    assert!(err.to_lowercase().contains("invalidated"), "{what}: {err}");
    // the device is usable again
    scratch.upload(dev, 0, &[1u8; 16]).unwrap();
    dev.synchronize().unwrap();
}

/// What CUDA refuses inside a stream capture (allocation, free, synchronous copies, synchronisation; and
/// replaying a graph, which our devices refuse too) is refused while capturing, with an error naming the
/// call, and invalidates the capture; a capture of allowed work still ends in a graph that replays.
pub fn capture_rules_hold<D: Device>(dev: &mut D) {
    let scratch = DevBuf::alloc(dev, 1024).unwrap();
    scratch.upload(dev, 0, &[7u8; 256]).unwrap();
    // an allowed capture: one device copy
    dev.begin_capture().unwrap();
    // SAFETY: two non-overlapping 256-byte ranges of the 1024-byte buffer.
    unsafe { dev.copy(scratch.addr() + 256, scratch.addr(), 256) }.unwrap();
    let graph = dev.end_capture().unwrap();
    dev.replay(&graph).unwrap();
    let mut back = [0u8; 256];
    scratch.download(dev, 256, &mut back).unwrap();
    assert!(back.iter().all(|&v| v == 7), "the replayed copy did not run");

    let refused = |r: latentmas::error::Result<()>, what: &str| {
        let err = r.err().unwrap_or_else(|| panic!("{what} was accepted while capturing")).to_string();
        assert!(err.contains("while capturing"), "{what}: {err}");
    };
    refused_and_invalidates(dev, "alloc", &scratch, |d| refused(d.alloc(64).map(drop), "an allocation"));
    refused_and_invalidates(dev, "upload", &scratch, |d| refused(scratch.upload(d, 0, &[1u8; 8]), "an upload"));
    refused_and_invalidates(dev, "download", &scratch, |d| {
        refused(scratch.download(d, 0, &mut [0u8; 8]), "a download")
    });
    refused_and_invalidates(dev, "synchronize", &scratch, |d| refused(d.synchronize(), "a synchronisation"));
    refused_and_invalidates(dev, "replay", &scratch, |d| refused(d.replay(&graph), "a graph replay"));
    // freeing cannot fail (a drop), but it invalidates the capture as cuMemFree inside one does
    let doomed = DevBuf::alloc(dev, 256).unwrap();
    refused_and_invalidates(dev, "free", &scratch, move |_| drop(doomed));
}

/// `Grow::fit` never allocates or frees while capturing: growing is refused with an error and leaves the
/// buffer (address and length) as it was, fitting within the buffer still works, and the capture stays
/// valid; after the capture the same growth succeeds.
pub fn growth_is_refused_while_capturing<D: Device>(dev: &mut D) {
    let mut g: Grow<D::Buf> = Grow::default();
    assert!(g.fit(dev, 64, 4).unwrap(), "first fit allocates");
    let addr = g.addr().unwrap();
    dev.begin_capture().unwrap();
    assert!(!g.fit(dev, 32, 4).unwrap(), "a fit within the buffer does not move it");
    assert_eq!(g.len, 32);
    let err = g.fit(dev, 4096, 4).expect_err("growth accepted while capturing").to_string();
    assert!(err.contains("while capturing"), "{err}");
    assert_eq!(g.addr().unwrap(), addr, "the refused growth moved the buffer");
    assert_eq!(g.len, 32, "the refused growth changed the length");
    dev.end_capture().expect("a refused growth must not invalidate the capture");
    assert!(g.fit(dev, 4096, 4).unwrap(), "outside a capture the buffer grows");
    assert!(g.get().unwrap().bytes() >= 4096 * 4);
}

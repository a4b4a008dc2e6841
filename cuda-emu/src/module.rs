//! Modules: what `cuModuleLoadData` finds in a fatbin (or a bare cubin): the SASS image for this device's
//! architecture (sm_90), its kernels by symbol name, and for each kernel what the driver needs to launch
//! it — the parameter table (ordinal, offset, size of every parameter, from `.nv.info.<kernel>`), the
//! parameter buffer size, the thread limit from `__launch_bounds__`, and the static shared memory.

use std::collections::HashMap;

/// The SM this device emulates (compute capability 9.0: H100/H200).
pub const SM: u32 = 90;

const FATBIN_MAGIC: u32 = 0xBA55_ED50;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const KIND_ELF: u16 = 2;

/// `.nv.info` attribute codes (EIATTR_*).
const EIATTR_MAX_THREADS: u8 = 0x05;
const EIATTR_KPARAM_INFO: u8 = 0x17;
const EIATTR_CBANK_PARAM_SIZE: u8 = 0x19;
/// `.nv.info` value formats (EIFMT_*).
const EIFMT_NVAL: u8 = 1;
const EIFMT_BVAL: u8 = 2;
const EIFMT_HVAL: u8 = 3;
const EIFMT_SVAL: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub ordinal: u16,
    pub offset: u16,
    pub size: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub name: String,
    /// Sorted by ordinal.
    pub params: Vec<Param>,
    pub param_bytes: usize,
    /// Threads per block the kernel was compiled for (`__launch_bounds__`), if it says.
    pub max_threads: Option<u32>,
    pub static_shared: u32,
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?))
}

/// How many bytes the image at `p` spans, read from its own headers (the driver gets no length).
///
/// # Safety
/// `p` points at a fatbin or an ELF image that is complete and readable.
pub unsafe fn image_len(p: *const u8) -> Option<usize> {
    // SAFETY: both formats start with at least 16 header bytes (caller's contract).
    let head = unsafe { std::slice::from_raw_parts(p, 64) };
    if u32_at(head, 0)? == FATBIN_MAGIC {
        let hsz = u16_at(head, 6)? as usize;
        let size = u64_at(head, 8)? as usize;
        return Some(hsz + size);
    }
    if &head[..4] == ELF_MAGIC && head[4] == 2 {
        let shoff = u64_at(head, 0x28)? as usize;
        let shentsize = u16_at(head, 0x3a)? as usize;
        let shnum = u16_at(head, 0x3c)? as usize;
        return Some(shoff + shentsize * shnum);
    }
    None
}

/// The kernels of the sm_90 cubin in `image` (a fatbin, possibly several concatenated, or a cubin).
pub fn parse(image: &[u8]) -> Result<HashMap<String, KernelInfo>, &'static str> {
    if image.starts_with(ELF_MAGIC) {
        return parse_cubin(image);
    }
    let mut off = 0;
    let mut archs_seen = false;
    while off + 16 <= image.len() {
        if u32_at(image, off) != Some(FATBIN_MAGIC) {
            return Err("not a fatbin or cubin");
        }
        let hsz = u16_at(image, off + 6).ok_or("truncated fatbin")? as usize;
        let size = u64_at(image, off + 8).ok_or("truncated fatbin")? as usize;
        let end = off + hsz + size;
        let mut p = off + hsz;
        while p + 32 <= end.min(image.len()) {
            let kind = u16_at(image, p).ok_or("truncated entry")?;
            let ehsz = u32_at(image, p + 4).ok_or("truncated entry")? as usize;
            let psz = u64_at(image, p + 8).ok_or("truncated entry")? as usize;
            let arch = u32_at(image, p + 28).ok_or("truncated entry")?;
            let payload = image.get(p + ehsz..p + ehsz + psz).ok_or("truncated entry")?;
            archs_seen = true;
            if kind == KIND_ELF && arch == SM && payload.starts_with(ELF_MAGIC) {
                return parse_cubin(payload);
            }
            p += ehsz + psz;
        }
        off = end;
    }
    Err(if archs_seen { "no sm_90 cubin in the fatbin" } else { "empty image" })
}

struct Section<'a> {
    name: String,
    data: &'a [u8],
    size: u64,
}

fn parse_cubin(elf: &[u8]) -> Result<HashMap<String, KernelInfo>, &'static str> {
    const BAD: &str = "malformed cubin";
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("cubin is not 64-bit little-endian ELF");
    }
    let shoff = u64_at(elf, 0x28).ok_or(BAD)? as usize;
    let shentsize = u16_at(elf, 0x3a).ok_or(BAD)? as usize;
    let shnum = u16_at(elf, 0x3c).ok_or(BAD)? as usize;
    let shstrndx = u16_at(elf, 0x3e).ok_or(BAD)? as usize;
    let hdr = |i: usize| -> Option<(u32, u32, u64, u64)> {
        let h = shoff + i * shentsize;
        Some((u32_at(elf, h)?, u32_at(elf, h + 4)?, u64_at(elf, h + 0x18)?, u64_at(elf, h + 0x20)?))
    };
    let (_, _, stroff, strsize) = hdr(shstrndx).ok_or(BAD)?;
    let strtab = elf.get(stroff as usize..(stroff + strsize) as usize).ok_or(BAD)?;
    let name_at = |o: u32| -> String {
        let s = &strtab[(o as usize).min(strtab.len())..];
        String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]).into_owned()
    };
    let mut secs = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let (name, ty, off, size) = hdr(i).ok_or(BAD)?;
        const SHT_NOBITS: u32 = 8;
        let data = if ty == SHT_NOBITS { &[][..] } else { elf.get(off as usize..(off + size) as usize).ok_or(BAD)? };
        secs.push(Section { name: name_at(name), data, size });
    }
    let mut out = HashMap::new();
    for s in &secs {
        let Some(kernel) = s.name.strip_prefix(".nv.info.") else { continue };
        if !secs.iter().any(|t| t.name.strip_prefix(".text.") == Some(kernel)) {
            continue;
        }
        let mut info = KernelInfo {
            name: kernel.to_string(),
            params: Vec::new(),
            param_bytes: 0,
            max_threads: None,
            static_shared: secs
                .iter()
                .find(|t| t.name.strip_prefix(".nv.shared.") == Some(kernel))
                .map_or(0, |t| t.size as u32),
        };
        let d = s.data;
        let mut p = 0;
        let mut cbank = None;
        while p + 2 <= d.len() {
            let (fmt, attr) = (d[p], d[p + 1]);
            match fmt {
                EIFMT_NVAL => p += 2,
                EIFMT_BVAL => p += 4,
                EIFMT_HVAL => {
                    let v = u16_at(d, p + 2).ok_or(BAD)?;
                    if attr == EIATTR_CBANK_PARAM_SIZE {
                        cbank = Some(v as usize);
                    }
                    p += 4;
                }
                EIFMT_SVAL => {
                    let n = u16_at(d, p + 2).ok_or(BAD)? as usize;
                    let v = d.get(p + 4..p + 4 + n).ok_or(BAD)?;
                    if attr == EIATTR_KPARAM_INFO && n >= 12 {
                        let packed = u32_at(v, 8).ok_or(BAD)?;
                        info.params.push(Param {
                            ordinal: u16_at(v, 4).ok_or(BAD)?,
                            offset: u16_at(v, 6).ok_or(BAD)?,
                            size: ((packed >> 18) & 0x3fff) as u16,
                        });
                    } else if attr == EIATTR_MAX_THREADS && n >= 12 {
                        let t = (0..3).map(|i| u32_at(v, 4 * i).unwrap_or(1).max(1)).product();
                        info.max_threads = Some(t);
                    }
                    p += 4 + n;
                }
                _ => return Err("unknown .nv.info attribute format"),
            }
        }
        info.params.sort_by_key(|q| q.ordinal);
        let extent = info.params.iter().map(|q| q.offset as usize + q.size as usize).max().unwrap_or(0);
        info.param_bytes = cbank.unwrap_or(extent).max(extent);
        out.insert(kernel.to_string(), info);
    }
    if out.is_empty() {
        return Err("the cubin has no kernels");
    }
    Ok(out)
}

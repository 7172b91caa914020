//! NVRTC: compiles a kernel family's CUDA C++ to a CUBIN for one GPU architecture, and caches
//! the result on disk so that only the first run on a machine pays the compile.
//!
//! CUBIN rather than PTX: a CUBIN from a newer NVRTC loads on an older driver of the same CUDA
//! major version, whereas PTX would need the driver to understand the newer PTX ISA.

use std::ffi::{CStr, CString, c_char, c_int};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use cudarc::nvrtc::sys;

use super::kernels::KernelFamily;
use crate::error::{Error, Result};

/// Whether libnvrtc can be loaded here.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen libnvrtc by its known names.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0 as c_int, 0 as c_int);
    // SAFETY: two valid out-pointers.
    check(
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) },
        "nvrtcVersion",
    )?;
    Ok((major, minor))
}

fn require_nvrtc() -> Result<()> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(Error::cuda(
            "NVRTC not found (libnvrtc.so could not be loaded): install the CUDA toolkit or the \
             PyPI wheel nvidia-cuda-nvrtc and put its lib folder on LD_LIBRARY_PATH",
        ))
    }
}

fn check(r: sys::nvrtcResult, call: &str) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::cuda(format!("{call} failed: {r:?}")))
    }
}

/// Compiles `family` for `sm_{arch}` (e.g. 90) and returns the CUBIN bytes.
pub fn compile_cubin(family: KernelFamily, arch: u32) -> Result<Vec<u8>> {
    require_nvrtc()?;
    let src = CString::new(family.source())
        .map_err(|_| Error::cuda(format!("{}: NUL byte in source", family.file_name())))?;
    let name = CString::new(family.file_name()).expect("file names have no NUL");
    let options: Vec<CString> = [
        format!("--gpu-architecture=sm_{arch}"),
        "--std=c++17".to_string(),
        "--use_fast_math".to_string(),
        "-default-device".to_string(),
    ]
    .into_iter()
    .map(|o| CString::new(o).expect("options have no NUL"))
    .collect();
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid C strings that outlive the program; no headers passed.
    check(
        unsafe {
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        },
        "nvrtcCreateProgram",
    )?;
    let result = (|| {
        // SAFETY: `prog` was created above; option pointers are valid for the call.
        let compiled = unsafe {
            sys::nvrtcCompileProgram(prog, option_ptrs.len() as c_int, option_ptrs.as_ptr())
        };
        if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(Error::cuda(format!(
                "compiling {} for sm_{arch} failed ({compiled:?}):\n{}",
                family.file_name(),
                program_log(prog)
            )));
        }
        let mut size = 0usize;
        // SAFETY: valid program and out-pointer.
        check(
            unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) },
            "nvrtcGetCUBINSize",
        )?;
        let mut cubin = vec![0u8; size];
        // SAFETY: the buffer holds `size` bytes, as NVRTC asked for.
        check(
            unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) },
            "nvrtcGetCUBIN",
        )?;
        Ok(cubin)
    })();
    // SAFETY: destroys the program created above, once.
    unsafe { sys::nvrtcDestroyProgram(&mut prog) };
    result
}

fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: valid program and out-pointer.
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut size) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return "(no log)".into();
    }
    let mut log = vec![0u8; size.max(1)];
    // SAFETY: the buffer holds `size` bytes.
    if unsafe { sys::nvrtcGetProgramLog(prog, log.as_mut_ptr().cast()) }
        != sys::nvrtcResult::NVRTC_SUCCESS
    {
        return "(no log)".into();
    }
    CStr::from_bytes_until_nul(&log)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where compiled kernels are cached: `$VLMPREP_CACHE_DIR`, else `$XDG_CACHE_HOME/vlmprep`,
/// else `~/.cache/vlmprep`; `None` when none of them is set (then nothing is cached).
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("VLMPREP_CACHE_DIR") {
        return Some(PathBuf::from(d).join("cuda"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("vlmprep").join("cuda"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vlmprep/cuda"))
}

/// The CUBIN of `family` for `sm_{arch}`: from the disk cache when the same source was compiled
/// by the same NVRTC before, else compiled now and stored (best effort: a cache that cannot be
/// written only costs the compile next time).
pub fn cached_cubin(family: KernelFamily, arch: u32) -> Result<Vec<u8>> {
    let (major, minor) = nvrtc_version()?;
    let mut h = DefaultHasher::new();
    (family.source(), arch, major, minor).hash(&mut h);
    let file = cache_dir().map(|d| {
        d.join(format!(
            "{}-sm{arch}-{:016x}.cubin",
            family.file_name().trim_end_matches(".cu"),
            h.finish()
        ))
    });
    if let Some(cubin) = file.as_ref().and_then(|f| std::fs::read(f).ok()) {
        return Ok(cubin);
    }
    let cubin = compile_cubin(family, arch)?;
    if let Some(f) = &file
        && let Some(dir) = f.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = f.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, f);
        }
    }
    Ok(cubin)
}

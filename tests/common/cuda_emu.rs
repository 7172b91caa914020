//! Runs the CUDA kernels of `cuda/` on the CPU: the source is compiled by the host C++ compiler
//! with `cuda_emu.h` in front (see that header for what is and is not modelled), loaded, and
//! launched through cuLaunchKernel's calling convention (one pointer per argument value). This
//! checks the kernels' own logic in CI, where there is no GPU; the GPU parity tests remain the
//! judge of how they behave on a device.
//!
//! Needs `c++` (or `$CXX`) with C++20. Without one, [`EmuModule::compile`] returns `None` and
//! the caller skips, unless `VLMPREP_REQUIRE_CXX=1` (set by `.ci/run`), which makes it a failure.

use std::ffi::c_void;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use vlmprep::backend::cuda::kernels::KernelFamily;

const HEADER: &str = include_str!("cuda_emu.h");

/// A kernel family compiled for the CPU and loaded.
pub struct EmuModule {
    lib: libloading::Library,
    name: String,
}

/// `family` compiled once per test binary (tests run on parallel threads; the emulator
/// serialises launches itself); `None` when there is no C++ compiler.
pub fn family(family: KernelFamily) -> Option<&'static EmuModule> {
    static CELLS: [OnceLock<Option<EmuModule>>; KernelFamily::ALL.len()] =
        [const { OnceLock::new() }; KernelFamily::ALL.len()];
    let at = KernelFamily::ALL.iter().position(|&f| f == family).unwrap();
    let cell = &CELLS[at];
    cell.get_or_init(|| EmuModule::compile(family.file_name(), family.source()))
        .as_ref()
}

/// The pointer to one kernel argument, as cuLaunchKernel takes it.
pub fn arg<T>(value: &T) -> *mut c_void {
    value as *const T as *mut c_void
}

impl EmuModule {
    /// Compiles `source` (a file of `cuda/`, named `name` in messages). Panics on a compile
    /// error, with the compiler's output; `None` when there is no C++ compiler (and it is not
    /// required).
    pub fn compile(name: &str, source: &str) -> Option<EmuModule> {
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let found = Command::new(&cxx)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("VLMPREP_REQUIRE_CXX").as_deref() != Ok("1"),
                "VLMPREP_REQUIRE_CXX=1 but no C++ compiler ({cxx})"
            );
            eprintln!("skipped: no C++ compiler ({cxx}) to emulate {name}");
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_emu");
        std::fs::create_dir_all(&dir).unwrap();
        // One file per process: a test binary must never overwrite a library another has mapped.
        let so = dir.join(format!(
            "{}-{}.so",
            name.replace('.', "_"),
            std::process::id()
        ));
        let cpp = dir.join(format!(
            "{}-{}.cpp",
            name.replace('.', "_"),
            std::process::id()
        ));
        std::fs::write(&cpp, translation_unit(source)).unwrap();
        let out = Command::new(&cxx)
            .args([
                "-std=c++20",
                "-O2",
                // kernels read bf16 pairs through 32-bit pointers, as CUDA code does
                "-fno-strict-aliasing",
                "-shared",
                "-fPIC",
                "-pthread",
                "-w",
                "-o",
            ])
            .arg(&so)
            .arg(&cpp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} does not compile for the emulator:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY: the library is ours, just built; its initialisers only set up globals.
        let lib = unsafe { libloading::Library::new(&so) }.unwrap();
        // Loaded, the files are no longer needed (the mapping outlives the name): nothing
        // piles up in the target folder from run to run.
        let _ = std::fs::remove_file(&so);
        let _ = std::fs::remove_file(&cpp);
        Some(EmuModule {
            lib,
            name: name.into(),
        })
    }

    /// Launches `kernel` over `grid` blocks of `block` threads with `shared` bytes of dynamic
    /// shared memory, block-synchronously (every thread of a block an OS thread: barriers and
    /// shuffles work), and returns when every thread has finished.
    ///
    /// # Safety
    /// As cuLaunchKernel: `args` must point at values of exactly the kernel's parameter types,
    /// in order, and every buffer the kernel touches must be large enough.
    pub unsafe fn launch(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared: usize,
        args: &[*mut c_void],
    ) {
        // SAFETY: the caller's contract.
        unsafe { self.run(kernel, grid, block, shared, args, false) }
    }

    /// [`launch`](Self::launch) for kernels whose threads never cooperate (no barrier, no
    /// shuffle, no shared memory): much faster, and a barrier or shuffle aborts the process.
    ///
    /// # Safety
    /// As [`launch`](Self::launch).
    pub unsafe fn launch_independent(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[*mut c_void],
    ) {
        // SAFETY: the caller's contract.
        unsafe { self.run(kernel, grid, block, 0, args, true) }
    }

    unsafe fn run(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared: usize,
        args: &[*mut c_void],
        independent: bool,
    ) {
        let threads = block.0 * block.1 * block.2;
        assert!(
            (1..=1024).contains(&threads) && grid.0 * grid.1 * grid.2 > 0,
            "{kernel}: bad launch shape {grid:?} x {block:?}"
        );
        type Entry = unsafe extern "C" fn(*const u32, *const u32, usize, *const *mut c_void, i32);
        let symbol = format!("emu_launch_{kernel}");
        // SAFETY: every `emu_launch_*` symbol is generated by `translation_unit` with `Entry`'s
        // signature.
        let entry: libloading::Symbol<Entry> = unsafe { self.lib.get(symbol.as_bytes()) }
            .unwrap_or_else(|e| panic!("{}: no kernel {kernel}: {e}", self.name));
        let grid = [grid.0, grid.1, grid.2];
        let block = [block.0, block.1, block.2];
        // SAFETY: the caller's contract.
        unsafe {
            entry(
                grid.as_ptr(),
                block.as_ptr(),
                shared,
                args.as_ptr(),
                i32::from(independent),
            )
        };
    }
}

/// The header, the kernel source with dynamic shared memory declarations made pointers into the
/// emulator's buffer, and one `emu_launch_<kernel>` entry point per `__global__` function.
fn translation_unit(source: &str) -> String {
    let dynamic_shared = regex::Regex::new(
        r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w+(?:\s+\w+)*?)\s+(\w+)\s*\[\s*\]\s*;",
    )
    .unwrap();
    let body =
        dynamic_shared.replace_all(source, "$1* $2 = static_cast<$1*>(emu::dynamic_shared());");
    let kernels = regex::Regex::new(r#"extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\("#).unwrap();
    let mut unit = format!("{HEADER}\n#line 1 \"kernel\"\n{body}\n");
    for k in kernels.captures_iter(source) {
        let name = &k[1];
        unit.push_str(&format!(
            "extern \"C\" void emu_launch_{name}(const unsigned* g, const unsigned* b, \
             std::size_t s, void** a, int independent) {{ \
             emu::launch(&{name}, g, b, s, a, independent != 0); }}\n"
        ));
    }
    unit
}

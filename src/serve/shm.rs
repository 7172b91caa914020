//! The shared memory of the sidecar: an anonymous memfd mapped by the server, handed to the
//! client over the Unix socket as an `SCM_RIGHTS` file descriptor. Nothing is left in /dev/shm
//! when a process dies: the memory goes away with the last descriptor and mapping.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::error::{Error, Result};

/// An anonymous shared-memory file of `len` bytes (`memfd_create`, close-on-exec).
pub fn memfd(name: &str, len: u64) -> Result<File> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| Error::Serve(format!("memfd name `{name}` holds a NUL byte")))?;
    // SAFETY: a valid NUL-terminated name and flags; the result is checked before use.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Serve(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len)
        .map_err(|e| Error::Serve(format!("sizing the {len}-byte shared ring: {e}")))?;
    Ok(file)
}

/// Sends `data` on `stream` with the descriptor `fd` attached (`SCM_RIGHTS`).
pub fn send_with_fd(stream: &mut UnixStream, data: &[u8], fd: RawFd) -> std::io::Result<()> {
    if data.is_empty() {
        return Err(std::io::Error::other("an fd needs at least one byte"));
    }
    let fd_len = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
    let (space, cmsg_len) = unsafe { (libc::CMSG_SPACE(fd_len), libc::CMSG_LEN(fd_len)) };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call, and
    // CMSG_FIRSTHDR is non-null because the control buffer holds one full cmsghdr.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(std::io::Error::other("no room for the control message"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = cmsg_len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
        libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The descriptor went with the first byte; the rest of a short send goes plainly.
    stream.write_all(&data[sent as usize..])
}

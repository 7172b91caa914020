//! NumPy `.npy` (format 1.0) writer: a little header naming dtype and shape, then raw C-order
//! data, so numpy (`np.load`) and torch read the tiles without vlmprep.

use std::io::Write;
use std::path::Path;

use crate::error::Result;

/// The `.npy` header for `descr` (e.g. `<f4`) and `shape`, padded so the data starts at a
/// multiple of 64 bytes (the format's alignment rule).
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("{one},"),
        _ => shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header_len = dict.len() + padding + 1;
    let mut out = Vec::with_capacity(10 + header_len);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    out
}

/// Writes one array to `path` (atomically).
pub fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<()> {
    let head = header(descr, shape);
    super::write_atomically(path, |out: &mut dyn Write| {
        out.write_all(&head)?;
        out.write_all(data)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_readable() {
        let h = header("|u1", &[2, 448, 448, 3]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(len + 10, h.len());
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(
            text.starts_with(
                "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 448, 448, 3), }"
            )
        );
        assert!(text.ends_with('\n'));
        let one = header("<f4", &[5]);
        assert!(
            std::str::from_utf8(&one[10..])
                .unwrap()
                .contains("'shape': (5,)")
        );
    }

    #[test]
    fn write_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.npy");
        write_npy(&path, "|u1", &[3], &[1, 2, 3]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[bytes.len() - 3..], &[1, 2, 3]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}

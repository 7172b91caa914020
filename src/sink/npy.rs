//! NumPy `.npy` (format 1.0) writer: a little header naming dtype and shape, then raw C-order
//! data, so numpy (`np.load`) and torch read the tiles without vlmprep. Also a reader for the
//! little-endian f32 arrays vlmprep itself wrote (embeddings, centroids).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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

/// The header padded with spaces to exactly `len` bytes (a multiple of 64), or `None` when it
/// does not fit: lets a streamed file reserve its header and fill in the shape at the end.
pub fn header_of_len(descr: &str, shape: &[usize], len: usize) -> Option<Vec<u8>> {
    let mut head = header(descr, shape);
    if head.len() > len || !len.is_multiple_of(64) || len - 10 > usize::from(u16::MAX) {
        return None;
    }
    let newline = head.pop();
    head.resize(len - 1, b' ');
    head.extend(newline);
    let header_len = (len - 10) as u16;
    head[8..10].copy_from_slice(&header_len.to_le_bytes());
    Some(head)
}

/// An `.npy` written as its rows arrive, when their number is known only at the end: a header
/// of fixed length is reserved and rewritten with the final first dimension by
/// [`NpyStream::finish`], then the file is renamed into place (no half-written file is left
/// under the final name).
pub struct NpyStream {
    path: PathBuf,
    partial: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    descr: &'static str,
    row_shape: Vec<usize>,
    row_bytes: usize,
    rows: usize,
}

/// Bytes reserved for a streamed header: room for any first dimension.
const STREAM_HEADER_LEN: usize = 128;

impl NpyStream {
    /// Starts `path` for rows of `row_shape` elements of `descr` (`elem_size` bytes each).
    pub fn create(
        path: &Path,
        descr: &'static str,
        row_shape: &[usize],
        elem_size: usize,
    ) -> Result<Self> {
        let mut partial = PathBuf::from(path);
        partial.as_mut_os_string().push(".partial");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let file = std::fs::File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[b' '; STREAM_HEADER_LEN])
            .map_err(|e| Error::io(&partial, e))?;
        Ok(NpyStream {
            path: path.to_path_buf(),
            partial,
            out,
            descr,
            row_shape: row_shape.to_vec(),
            row_bytes: row_shape.iter().product::<usize>() * elem_size,
            rows: 0,
        })
    }

    /// Appends whole rows; `data.len()` must be a multiple of the row size.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        if self.row_bytes == 0 || !data.len().is_multiple_of(self.row_bytes) {
            return Err(Error::Output {
                path: self.path.clone(),
                reason: format!(
                    "{} bytes is not a whole number of {}-byte rows",
                    data.len(),
                    self.row_bytes
                ),
            });
        }
        self.out
            .write_all(data)
            .map_err(|e| Error::io(&self.partial, e))?;
        self.rows += data.len() / self.row_bytes;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the final header and renames the file into place.
    pub fn finish(self) -> Result<()> {
        let mut shape = vec![self.rows];
        shape.extend(&self.row_shape);
        let head =
            header_of_len(self.descr, &shape, STREAM_HEADER_LEN).ok_or_else(|| Error::Output {
                path: self.path.clone(),
                reason: format!("npy header for shape {shape:?} exceeds {STREAM_HEADER_LEN} bytes"),
            })?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.partial, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&head))
            .and_then(|()| file.flush())
            .map_err(|e| Error::io(&self.partial, e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

/// Writes one array to `path` (atomically).
pub fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<()> {
    let head = header(descr, shape);
    super::write_atomically(path, |out: &mut dyn Write| {
        out.write_all(&head)?;
        out.write_all(data)
    })
}

/// Reads a C-order little-endian f32 `.npy` (format 1.x or 2.x): its shape and values.
pub fn read_f32_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |reason: String| Error::Table {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!(".npy version {v} is not supported"))),
    };
    let data_start = start + header_len;
    let dict = bytes
        .get(start..data_start)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("header runs past the end or is not text".into()))?;
    if !dict.contains("'descr': '<f4'") || !dict.contains("'fortran_order': False") {
        return Err(bad(format!(
            "expected a C-order <f4 array, header is {dict:?}"
        )));
    }
    let shape_text = dict
        .split("'shape': (")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .ok_or_else(|| bad(format!("no shape in header {dict:?}")))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("shape ({shape_text}): {e}")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let data = &bytes[data_start..];
    if Some(data.len()) != count.checked_mul(4) {
        return Err(bad(format!(
            "shape {shape:?} needs {count} f32 values, the file holds {} bytes",
            data.len()
        )));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, values))
}

/// Reads an f32 `.npy` that must have shape `[rows, cols]`.
pub fn read_f32_matrix(path: &Path, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let (shape, values) = read_f32_npy(path)?;
    if shape != [rows, cols] {
        return Err(Error::Table {
            path: path.to_path_buf(),
            reason: format!("expected shape [{rows}, {cols}], found {shape:?}"),
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {

    #[test]
    fn f32_arrays_read_back_and_wrong_shapes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.npy");
        let values = [1.5f32, -2.0, 0.0, 7.25, 3.0, 9.5];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_npy(&path, "<f4", &[3, 2], &bytes).unwrap();
        assert_eq!(read_f32_matrix(&path, 3, 2).unwrap(), values);
        let err = read_f32_matrix(&path, 2, 3).unwrap_err().to_string();
        assert!(err.contains("e.npy") && err.contains("[3, 2]"), "{err}");
        write_npy(&path, "<f4", &[4], &bytes[..16]).unwrap();
        assert_eq!(
            read_f32_npy(&path).unwrap(),
            (vec![4], values[..4].to_vec())
        );
        std::fs::write(&path, &bytes[..8]).unwrap();
        assert!(read_f32_npy(&path).is_err());
    }
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
    fn streamed_npy_gets_its_final_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npy");
        let mut stream = NpyStream::create(&path, "<i4", &[2], 4).unwrap();
        stream.append(&[1, 0, 0, 0, 2, 0, 0, 0]).unwrap();
        stream
            .append(&[3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0])
            .unwrap();
        assert!(stream.append(&[1, 2, 3]).is_err());
        assert_eq!(stream.rows(), 3);
        stream.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let expected_head = header_of_len("<i4", &[3, 2], 128).unwrap();
        assert_eq!(&bytes[..128], &expected_head[..]);
        assert!(
            std::str::from_utf8(&bytes[10..128])
                .unwrap()
                .contains("'shape': (3, 2)")
        );
        assert_eq!(bytes.len(), 128 + 24);
        assert_eq!(bytes[128 + 20], 6);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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

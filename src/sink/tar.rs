//! A minimal WebDataset tar writer (ustar, GNU long names for paths over 100 bytes): used by
//! `vlmprep demo` to build its sample pool and by tests; later by `curate --write-shards`.

use std::io::{self, Write};

/// Streams tar members to a writer; call [`TarWriter::finish`] to write the end-of-archive.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Appends a regular file `name` with `data`.
    pub fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        if name.len() > 100 {
            // GNU long name: a `././@LongLink` entry of type 'L' carrying the name.
            let mut long = name.as_bytes().to_vec();
            long.push(0);
            self.entry("././@LongLink", b'L', &long)?;
        }
        self.entry(name, b'0', data)
    }

    fn entry(&mut self, name: &str, kind: u8, data: &[u8]) -> io::Result<()> {
        self.out
            .write_all(&header_block(name, kind, data.len() as u64))?;
        self.out.write_all(data)?;
        let pad = (512 - data.len() % 512) % 512;
        self.out.write_all(&[0u8; 512][..pad])
    }

    /// Writes the two zero blocks that end an archive and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

/// One ustar header block; names longer than 100 bytes are cut (the caller adds a long name).
pub fn header_block(name: &str, kind: u8, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = name.as_bytes();
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    octal(&mut h[148..155], sum as u64);
    h[155] = b' ';
    h
}

/// Zero-padded octal digits filling `field` except its last byte (a NUL).
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    let text = &text.as_bytes()[text.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(text);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_is_valid() {
        let h = header_block("000001.jpg", b'0', 1234);
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, copy.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(&h[124..135], b"00000002322");
    }

    #[test]
    fn archive_is_block_aligned() {
        let mut w = TarWriter::new(Vec::new());
        w.append("a.txt", b"hello").unwrap();
        w.append(&"x".repeat(150), b"long").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(bytes.len(), 512 * 2 + 512 * 2 + 512 * 2 + 1024);
    }
}

//! Memory-mapped safetensors weights: one `model.safetensors`, or the shards listed by
//! `model.safetensors.index.json`.
//!
//! Files are mapped, their headers parsed once, and a tensor's bytes are read straight from the
//! mapping when the model asks for it, converted once to the f32 the compute uses (from f32,
//! f16 or bf16). Every failure names the file and the tensor: a missing tensor, a shape that is
//! not the one the config implies, an unsupported dtype, a corrupt header.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorInfo};

use crate::error::{Error, Result};

/// The tensors of a checkpoint, over one or several mapped files.
pub struct Weights {
    files: Vec<MappedFile>,
    /// Tensor name → (file index, its entry in that file's header).
    index: HashMap<String, (usize, TensorInfo)>,
}

struct MappedFile {
    path: PathBuf,
    map: Mmap,
    /// Where the data section starts (after the 8-byte length and the JSON header).
    data_start: usize,
}

/// The storage types vlmprep reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Weights {
    /// Opens a model folder's weights: `model.safetensors`, else the shards named by
    /// `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Weights> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            Weights::open_files(&[single])
        } else if index.is_file() {
            let shards = shard_list(&index)?;
            let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            Weights::open_files(&paths)
        } else {
            Err(Error::Model {
                path: dir.to_path_buf(),
                reason: "no model.safetensors or model.safetensors.index.json in the folder".into(),
            })
        }
    }

    /// Opens and indexes the given safetensors files. A tensor present in two files is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Weights> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the mapping is read-only; a checkpoint rewritten while vlmprep reads it
            // can give wrong numbers but not memory unsafety in safe code that copies out of it.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let (header_len, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| Error::Model {
                    path: path.clone(),
                    reason: format!("not a valid safetensors file: {e}"),
                })?;
            for (name, info) in meta.tensors() {
                if index.insert(name.clone(), (i, info.clone())).is_some() {
                    return Err(Error::Tensor {
                        path: path.clone(),
                        tensor: name,
                        reason: "stored in more than one file".into(),
                    });
                }
            }
            files.push(MappedFile {
                path: path.clone(),
                map,
                data_start: 8 + header_len,
            });
        }
        Ok(Weights { files, index })
    }

    /// True when the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape and storage type of a tensor.
    pub fn describe(&self, name: &str) -> Result<(Vec<usize>, WeightDtype)> {
        let (file, info) = self.entry(name)?;
        let dtype = weight_dtype(info.dtype).ok_or_else(|| Error::Tensor {
            path: file.path.clone(),
            tensor: name.into(),
            reason: format!("dtype {:?} is not supported (f32, f16, bf16)", info.dtype),
        })?;
        Ok((info.shape.clone(), dtype))
    }

    /// The tensor as f32, after checking that its shape is `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (file, info) = self.entry(name)?;
        let err = |reason: String| Error::Tensor {
            path: file.path.clone(),
            tensor: name.into(),
            reason,
        };
        if info.shape != shape {
            return Err(err(format!(
                "shape {:?}, expected {:?} from the config",
                info.shape, shape
            )));
        }
        let dtype = weight_dtype(info.dtype)
            .ok_or_else(|| err(format!("dtype {:?} is not supported", info.dtype)))?;
        let (start, end) = info.data_offsets;
        let bytes = file
            .map
            .get(file.data_start + start..file.data_start + end)
            .ok_or_else(|| err("data runs past the end of the file".into()))?;
        let count: usize = shape.iter().product();
        let width = match dtype {
            WeightDtype::F32 => 4,
            WeightDtype::F16 | WeightDtype::Bf16 => 2,
        };
        if bytes.len() != count * width {
            return Err(err(format!(
                "{} bytes of data for {count} elements",
                bytes.len()
            )));
        }
        Ok(to_f32(bytes, dtype))
    }

    /// A scalar tensor (stored with shape `[1]` or `[]`).
    pub fn scalar(&self, name: &str) -> Result<f32> {
        let (shape, _) = self.describe(name)?;
        let v = self.f32(name, &shape)?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(Error::Tensor {
                path: self.entry(name)?.0.path.clone(),
                tensor: name.into(),
                reason: format!("shape {shape:?}, expected a single value"),
            }),
        }
    }

    fn entry(&self, name: &str) -> Result<(&MappedFile, &TensorInfo)> {
        match self.index.get(name) {
            Some((i, info)) => Ok((&self.files[*i], info)),
            None => Err(Error::Tensor {
                path: self.origin(),
                tensor: name.into(),
                reason: "missing from the checkpoint".into(),
            }),
        }
    }

    /// The file (or, for shards, the folder) a missing tensor is reported against.
    fn origin(&self) -> PathBuf {
        match self.files.as_slice() {
            [one] => one.path.clone(),
            [first, ..] => first.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            [] => PathBuf::new(),
        }
    }
}

fn weight_dtype(d: StDtype) -> Option<WeightDtype> {
    match d {
        StDtype::F32 => Some(WeightDtype::F32),
        StDtype::F16 => Some(WeightDtype::F16),
        StDtype::BF16 => Some(WeightDtype::Bf16),
        _ => None,
    }
}

/// Little-endian storage to f32 (bf16 and f16 widen exactly).
fn to_f32(bytes: &[u8], dtype: WeightDtype) -> Vec<f32> {
    match dtype {
        WeightDtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        WeightDtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        WeightDtype::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// The distinct shard file names of a `model.safetensors.index.json`, in first-seen order.
fn shard_list(index: &Path) -> Result<Vec<String>> {
    let bad = |reason: String| Error::Model {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{tensor}] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(bad(format!("shard name `{file}` leaves the model folder")));
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    if shards.is_empty() {
        return Err(bad("`weight_map` lists no shard".into()));
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file with the given (name, dtype string, shape, raw bytes) tensors.
    fn write(dir: &Path, name: &str, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (tname, dtype, shape, bytes) in tensors {
            header.insert(
                tname.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape,
                    "data_offsets": [data.len(), data.len() + bytes.len()]}),
            );
            data.extend_from_slice(bytes);
        }
        let mut h = serde_json::to_vec(&header).unwrap();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        let path = dir.join(name);
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn reads_all_three_dtypes_and_checks_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [half::bf16::from_f32(0.75), half::bf16::from_f32(-3.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [half::f16::from_f32(0.5)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let p = write(
            dir.path(),
            "model.safetensors",
            &[
                ("a", "F32", vec![2], f32s),
                ("b", "BF16", vec![1, 2], bf16s),
                ("c", "F16", vec![1], f16s),
                ("i", "I64", vec![1], vec![0; 8]),
            ],
        );
        let w = Weights::open_dir(dir.path()).unwrap();
        assert_eq!(w.f32("a", &[2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(w.f32("b", &[1, 2]).unwrap(), vec![0.75, -3.0]);
        assert_eq!(w.scalar("c").unwrap(), 0.5);
        let e = w.f32("b", &[2, 1]).unwrap_err().to_string();
        assert!(
            e.contains("`b`") && e.contains("[1, 2]") && e.contains("[2, 1]"),
            "{e}"
        );
        let e = w.f32("zz", &[1]).unwrap_err().to_string();
        assert!(e.contains("`zz`") && e.contains("missing"), "{e}");
        let e = w.f32("i", &[1]).unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn corrupt_header_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = Weights::open_dir(dir.path()).err().unwrap().to_string();
        assert!(e.contains("no model.safetensors"), "{e}");
        let p = dir.path().join("model.safetensors");
        std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}").unwrap();
        let e = Weights::open_dir(dir.path()).err().unwrap().to_string();
        assert!(e.contains("not a valid safetensors"), "{e}");
        std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap();
        assert!(Weights::open_dir(dir.path()).is_err());
    }

    #[test]
    fn index_json_lists_shards_and_refuses_paths_outside() {
        let dir = tempfile::tempdir().unwrap();
        let one = [1.0f32]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>();
        write(
            dir.path(),
            "s1.safetensors",
            &[("x", "F32", vec![1], one.clone())],
        );
        write(dir.path(), "s2.safetensors", &[("y", "F32", vec![1], one)]);
        let index = dir.path().join("model.safetensors.index.json");
        std::fs::write(
            &index,
            r#"{"weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}}"#,
        )
        .unwrap();
        let w = Weights::open_dir(dir.path()).unwrap();
        assert_eq!(w.scalar("x").unwrap() + w.scalar("y").unwrap(), 2.0);
        std::fs::write(&index, r#"{"weight_map": {"x": "../s1.safetensors"}}"#).unwrap();
        let e = Weights::open_dir(dir.path()).err().unwrap().to_string();
        assert!(e.contains("leaves the model folder"), "{e}");
    }
}

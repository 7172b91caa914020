//! `plan.parquet`: one row per sample of a packing plan (key, shard, member offsets, image size,
//! tiles, token counts, pack id, placement, reason), written with the low-level parquet column
//! API (no Arrow) and read back by `vlmprep pack`. pandas/pyarrow/polars read it as a table.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::{LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::{Field, ListAccessor};
use parquet::schema::types::Type;

use crate::error::{Error, Result};

/// Rows per parquet row group: large enough for good compression of the columns, small enough
/// that a reader can stream the file.
const ROWS_PER_GROUP: usize = 1 << 20;

/// One sample of a plan, as stored in `plan.parquet`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanRow {
    /// Position of the sample in pool order (shards in input order, samples in shard order).
    pub sample: u64,
    /// WebDataset key.
    pub key: String,
    /// Shard path (or folder) the sample came from.
    pub shard: String,
    /// Byte offset of the sample's first tar header (0 for folders).
    pub offset: u64,
    /// Byte offsets of the sample's image members' data, in image order.
    pub image_offsets: Vec<u64>,
    /// Number of images.
    pub images: u32,
    /// Width and height of the first image after EXIF orientation, when it has one.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Tiles over all images (thumbnails included).
    pub tiles: u32,
    /// Image placeholder tokens (start, context, end) over all images.
    pub image_tokens: u32,
    /// Text tokens.
    pub text_tokens: u32,
    /// Sequence length as packed (after truncation when it was truncated).
    pub tokens: u32,
    /// Pack the sample is in; `None` when dropped or failed.
    pub pack_id: Option<u64>,
    /// Position of the sample inside its pack.
    pub slot: Option<u32>,
    /// `packed`, `truncated`, `alone`, `dropped` or `failed`.
    pub placement: String,
    /// Why a sample was truncated, dropped, packed alone or failed.
    pub reason: Option<String>,
}

fn column(name: &str, physical: PhysicalType, repetition: Repetition, string: bool) -> Arc<Type> {
    let mut builder = Type::primitive_type_builder(name, physical).with_repetition(repetition);
    if string {
        builder = builder.with_logical_type(Some(LogicalType::String));
    }
    Arc::new(builder.build().expect("static plan schema is valid"))
}

/// The plan schema, in column order.
fn schema() -> Arc<Type> {
    use parquet::basic::Type::{BYTE_ARRAY, INT32, INT64};
    const OPTIONAL: Repetition = Repetition::OPTIONAL;
    const REPEATED: Repetition = Repetition::REPEATED;
    const REQUIRED: Repetition = Repetition::REQUIRED;
    let fields = vec![
        column("sample", INT64, REQUIRED, false),
        column("key", BYTE_ARRAY, REQUIRED, true),
        column("shard", BYTE_ARRAY, REQUIRED, true),
        column("offset", INT64, REQUIRED, false),
        column("image_offsets", INT64, REPEATED, false),
        column("images", INT32, REQUIRED, false),
        column("width", INT32, OPTIONAL, false),
        column("height", INT32, OPTIONAL, false),
        column("tiles", INT32, REQUIRED, false),
        column("image_tokens", INT32, REQUIRED, false),
        column("text_tokens", INT32, REQUIRED, false),
        column("tokens", INT32, REQUIRED, false),
        column("pack_id", INT64, OPTIONAL, false),
        column("slot", INT32, OPTIONAL, false),
        column("placement", BYTE_ARRAY, REQUIRED, true),
        column("reason", BYTE_ARRAY, OPTIONAL, true),
    ];
    Arc::new(
        Type::group_type_builder("plan")
            .with_fields(fields)
            .build()
            .expect("static plan schema is valid"),
    )
}

/// Values and levels of one column, in buffers reused from column to column: a big plan's
/// columns are megabytes each, and building all sixteen at once in fresh memory made zeroing
/// new pages the largest cost of writing the plan (it runs after the parallel part of `plan`,
/// on one thread).
#[derive(Default)]
struct ColumnBuffers {
    i64s: Vec<i64>,
    i32s: Vec<i32>,
    bytes: Vec<ByteArray>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

/// Which buffers hold the column just filled, and whether it has levels.
#[derive(Clone, Copy)]
enum Filled {
    Int64 { def: bool, rep: bool },
    Int32 { def: bool },
    Bytes { def: bool },
}

impl ColumnBuffers {
    fn clear(&mut self) {
        self.i64s.clear();
        self.i32s.clear();
        self.bytes.clear();
        self.def.clear();
        self.rep.clear();
    }

    fn required_i64(&mut self, rows: &[PlanRow], f: impl Fn(&PlanRow) -> u64) -> Filled {
        self.i64s.extend(rows.iter().map(|r| f(r) as i64));
        Filled::Int64 {
            def: false,
            rep: false,
        }
    }

    fn required_i32(&mut self, rows: &[PlanRow], f: impl Fn(&PlanRow) -> u32) -> Filled {
        self.i32s.extend(rows.iter().map(|r| f(r) as i32));
        Filled::Int32 { def: false }
    }

    fn optional_i32(&mut self, rows: &[PlanRow], f: impl Fn(&PlanRow) -> Option<u32>) -> Filled {
        self.def
            .extend(rows.iter().map(|r| i16::from(f(r).is_some())));
        self.i32s
            .extend(rows.iter().filter_map(|r| f(r).map(|v| v as i32)));
        Filled::Int32 { def: true }
    }

    fn optional_i64(&mut self, rows: &[PlanRow], f: impl Fn(&PlanRow) -> Option<u64>) -> Filled {
        self.def
            .extend(rows.iter().map(|r| i16::from(f(r).is_some())));
        self.i64s
            .extend(rows.iter().filter_map(|r| f(r).map(|v| v as i64)));
        Filled::Int64 {
            def: true,
            rep: false,
        }
    }

    fn strings<'a>(
        &mut self,
        rows: &'a [PlanRow],
        f: impl Fn(&'a PlanRow) -> Option<&'a str>,
    ) -> Filled {
        self.def
            .extend(rows.iter().map(|r| i16::from(f(r).is_some())));
        self.bytes.extend(
            rows.iter()
                .filter_map(|r| f(r).map(|s| ByteArray::from(s.as_bytes().to_vec()))),
        );
        Filled::Bytes { def: true }
    }

    /// A required string column. A value equal to the previous row's shares its buffer:
    /// `shard` and `placement` repeat down whole runs of rows, and a copy per row was most of
    /// their cost.
    fn required_strings<'a>(
        &mut self,
        rows: &'a [PlanRow],
        f: impl Fn(&'a PlanRow) -> &'a str,
    ) -> Filled {
        let mut last: Option<(&str, ByteArray)> = None;
        for row in rows {
            let s = f(row);
            let value = match &last {
                Some((prev, bytes)) if *prev == s => bytes.clone(),
                _ => ByteArray::from(s.as_bytes().to_vec()),
            };
            last = Some((s, value.clone()));
            self.bytes.push(value);
        }
        Filled::Bytes { def: false }
    }

    /// A repeated column: an empty list is one level pair (def 0, rep 0) with no value; the
    /// k-th value of a list has def 1 and rep 0 for the first, 1 for the rest.
    fn repeated_i64(&mut self, rows: &[PlanRow], f: impl Fn(&PlanRow) -> &[u64]) -> Filled {
        for row in rows {
            let list = f(row);
            if list.is_empty() {
                self.def.push(0);
                self.rep.push(0);
            }
            for (i, &v) in list.iter().enumerate() {
                self.i64s.push(v as i64);
                self.def.push(1);
                self.rep.push(i16::from(i > 0));
            }
        }
        Filled::Int64 {
            def: true,
            rep: true,
        }
    }

    /// Fills the buffers with column `index` (schema order) of `rows`; `None` past the last.
    fn fill(&mut self, index: usize, rows: &[PlanRow]) -> Option<Filled> {
        self.clear();
        Some(match index {
            0 => self.required_i64(rows, |r| r.sample),
            1 => self.required_strings(rows, |r| &r.key),
            2 => self.required_strings(rows, |r| &r.shard),
            3 => self.required_i64(rows, |r| r.offset),
            4 => self.repeated_i64(rows, |r| &r.image_offsets),
            5 => self.required_i32(rows, |r| r.images),
            6 => self.optional_i32(rows, |r| r.width),
            7 => self.optional_i32(rows, |r| r.height),
            8 => self.required_i32(rows, |r| r.tiles),
            9 => self.required_i32(rows, |r| r.image_tokens),
            10 => self.required_i32(rows, |r| r.text_tokens),
            11 => self.required_i32(rows, |r| r.tokens),
            12 => self.optional_i64(rows, |r| r.pack_id),
            13 => self.optional_i32(rows, |r| r.slot),
            14 => self.required_strings(rows, |r| &r.placement),
            15 => self.strings(rows, |r| r.reason.as_deref()),
            _ => return None,
        })
    }
}

/// Encodes `rows` as a parquet file in memory.
pub fn encode_plan(
    rows: &[PlanRow],
) -> std::result::Result<Vec<u8>, parquet::errors::ParquetError> {
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema(), Default::default())?;
    let mut buffers = ColumnBuffers::default();
    for group in rows.chunks(ROWS_PER_GROUP.max(1)) {
        let mut group_writer = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut col) = group_writer.next_column()? {
            let b = &mut buffers;
            match b.fill(index, group) {
                Some(Filled::Int64 { def, rep }) => {
                    col.typed::<Int64Type>().write_batch(
                        &b.i64s,
                        def.then_some(&b.def[..]),
                        rep.then_some(&b.rep[..]),
                    )?;
                }
                Some(Filled::Int32 { def }) => {
                    col.typed::<Int32Type>().write_batch(
                        &b.i32s,
                        def.then_some(&b.def[..]),
                        None,
                    )?;
                }
                Some(Filled::Bytes { def }) => {
                    col.typed::<ByteArrayType>().write_batch(
                        &b.bytes,
                        def.then_some(&b.def[..]),
                        None,
                    )?;
                }
                None => unreachable!("one column per schema field"),
            }
            col.close()?;
            index += 1;
        }
        group_writer.close()?;
    }
    writer.close()?;
    Ok(out)
}

/// Writes `rows` to `path` (atomically).
pub fn write_plan(path: &Path, rows: &[PlanRow]) -> Result<()> {
    let bytes = encode_plan(rows).map_err(|e| Error::Output {
        path: path.to_path_buf(),
        reason: format!("encoding parquet: {e}"),
    })?;
    super::write_atomically(path, |w| w.write_all(&bytes))
}

fn plan_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::PlanFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// A nullable column's value: null → `None`, a value of the right type → `Some`, else `Err`.
fn optional<T>(field: &Field, value: Option<T>) -> std::result::Result<Option<T>, ()> {
    match (field, value) {
        (Field::Null, _) => Ok(None),
        (_, Some(v)) => Ok(Some(v)),
        (_, None) => Err(()),
    }
}

fn as_u64(field: &Field) -> Option<u64> {
    match field {
        Field::Long(v) => u64::try_from(*v).ok(),
        Field::Int(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

fn as_u32(field: &Field) -> Option<u32> {
    as_u64(field).and_then(|v| u32::try_from(v).ok())
}

/// Reads a plan written by [`write_plan`]. Unknown columns are ignored; a missing or mistyped
/// column is an error naming it.
pub fn read_plan(path: &Path) -> Result<Vec<PlanRow>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| plan_error(path, e))?;
    let expected = reader.metadata().file_metadata().num_rows();
    let mut rows = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    for (index, row) in reader.into_iter().enumerate() {
        let row = row.map_err(|e| plan_error(path, e))?;
        let mut out = PlanRow::default();
        let mut seen = 0u32;
        for (name, field) in row.get_column_iter() {
            let bad = || plan_error(path, format!("row {index}: column `{name}` has {field:?}"));
            match name.as_str() {
                "sample" => out.sample = as_u64(field).ok_or_else(bad)?,
                "key" | "shard" | "placement" => {
                    let Field::Str(s) = field else {
                        return Err(bad());
                    };
                    match name.as_str() {
                        "key" => out.key = s.clone(),
                        "shard" => out.shard = s.clone(),
                        _ => out.placement = s.clone(),
                    }
                }
                "reason" => {
                    out.reason = match field {
                        Field::Str(s) => Some(s.clone()),
                        Field::Null => None,
                        _ => return Err(bad()),
                    }
                }
                "offset" => out.offset = as_u64(field).ok_or_else(bad)?,
                "image_offsets" => {
                    let Field::ListInternal(list) = field else {
                        return Err(bad());
                    };
                    out.image_offsets = (0..list.len())
                        .map(|i| list.get_long(i).ok().and_then(|v| u64::try_from(v).ok()))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(bad)?;
                }
                "images" => out.images = as_u32(field).ok_or_else(bad)?,
                "tiles" => out.tiles = as_u32(field).ok_or_else(bad)?,
                "image_tokens" => out.image_tokens = as_u32(field).ok_or_else(bad)?,
                "text_tokens" => out.text_tokens = as_u32(field).ok_or_else(bad)?,
                "tokens" => out.tokens = as_u32(field).ok_or_else(bad)?,
                "width" => out.width = optional(field, as_u32(field)).map_err(|()| bad())?,
                "height" => out.height = optional(field, as_u32(field)).map_err(|()| bad())?,
                "pack_id" => out.pack_id = optional(field, as_u64(field)).map_err(|()| bad())?,
                "slot" => out.slot = optional(field, as_u32(field)).map_err(|()| bad())?,
                _ => continue,
            }
            seen += 1;
        }
        if seen < 16 {
            return Err(plan_error(
                path,
                format!("row {index} has {seen} of the 16 plan columns: not a vlmprep plan"),
            ));
        }
        rows.push(out);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rows() -> Vec<PlanRow> {
        vec![
            PlanRow {
                sample: 0,
                key: "a/000".into(),
                shard: "pool-000.tar".into(),
                offset: 0,
                image_offsets: vec![512],
                images: 1,
                width: Some(640),
                height: Some(480),
                tiles: 7,
                image_tokens: 1794,
                text_tokens: 12,
                tokens: 1806,
                pack_id: Some(3),
                slot: Some(0),
                placement: "packed".into(),
                reason: None,
            },
            PlanRow {
                sample: 1,
                key: "b".into(),
                shard: "pool-000.tar".into(),
                offset: 4096,
                image_offsets: vec![],
                images: 0,
                width: None,
                height: None,
                tiles: 0,
                image_tokens: 0,
                text_tokens: 9000,
                tokens: 9000,
                pack_id: None,
                slot: None,
                placement: "dropped".into(),
                reason: Some("9000 tokens > 8192".into()),
            },
            PlanRow {
                sample: 2,
                key: "c".into(),
                shard: "pool-001.tar".into(),
                offset: 1024,
                image_offsets: vec![1536, 99_000, 7],
                images: 3,
                width: Some(1),
                height: Some(2),
                tiles: 3,
                image_tokens: 774,
                text_tokens: 0,
                tokens: 774,
                pack_id: Some(0),
                slot: Some(1),
                placement: "truncated".into(),
                reason: Some("cut to 8192 tokens".into()),
            },
        ]
    }

    #[test]
    fn plan_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.parquet");
        let rows = sample_rows();
        write_plan(&path, &rows).unwrap();
        assert_eq!(read_plan(&path).unwrap(), rows);
    }

    #[test]
    fn empty_plan_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.parquet");
        write_plan(&path, &[]).unwrap();
        assert_eq!(read_plan(&path).unwrap(), Vec::<PlanRow>::new());
    }

    #[test]
    fn not_a_parquet_file_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.parquet");
        std::fs::write(&path, b"hello").unwrap();
        let err = read_plan(&path).unwrap_err().to_string();
        assert!(err.contains("plan.parquet"), "{err}");
    }
}

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

/// Values and levels of one column of a row group.
enum ColumnData {
    Int64 {
        values: Vec<i64>,
        def: Option<Vec<i16>>,
        rep: Option<Vec<i16>>,
    },
    Int32 {
        values: Vec<i32>,
        def: Option<Vec<i16>>,
    },
    Bytes {
        values: Vec<ByteArray>,
        def: Option<Vec<i16>>,
    },
}

fn required_i64(rows: &[PlanRow], f: impl Fn(&PlanRow) -> u64) -> ColumnData {
    ColumnData::Int64 {
        values: rows.iter().map(|r| f(r) as i64).collect(),
        def: None,
        rep: None,
    }
}

fn required_i32(rows: &[PlanRow], f: impl Fn(&PlanRow) -> u32) -> ColumnData {
    ColumnData::Int32 {
        values: rows.iter().map(|r| f(r) as i32).collect(),
        def: None,
    }
}

fn optional_i32(rows: &[PlanRow], f: impl Fn(&PlanRow) -> Option<u32>) -> ColumnData {
    let def = rows.iter().map(|r| i16::from(f(r).is_some())).collect();
    let values = rows.iter().filter_map(|r| f(r).map(|v| v as i32)).collect();
    ColumnData::Int32 {
        values,
        def: Some(def),
    }
}

fn optional_i64(rows: &[PlanRow], f: impl Fn(&PlanRow) -> Option<u64>) -> ColumnData {
    let def = rows.iter().map(|r| i16::from(f(r).is_some())).collect();
    let values = rows.iter().filter_map(|r| f(r).map(|v| v as i64)).collect();
    ColumnData::Int64 {
        values,
        def: Some(def),
        rep: None,
    }
}

fn strings<'a>(rows: &'a [PlanRow], f: impl Fn(&'a PlanRow) -> Option<&'a str>) -> ColumnData {
    let def = rows.iter().map(|r| i16::from(f(r).is_some())).collect();
    let values = rows
        .iter()
        .filter_map(|r| f(r).map(|s| ByteArray::from(s.as_bytes().to_vec())))
        .collect();
    ColumnData::Bytes {
        values,
        def: Some(def),
    }
}

/// A required string column. A value equal to the previous row's shares its buffer: `shard`
/// and `placement` repeat down whole runs of rows, and a copy per row was most of their cost.
fn required_strings<'a>(rows: &'a [PlanRow], f: impl Fn(&'a PlanRow) -> &'a str) -> ColumnData {
    let mut last: Option<(&str, ByteArray)> = None;
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let s = f(row);
        let value = match &last {
            Some((prev, bytes)) if *prev == s => bytes.clone(),
            _ => ByteArray::from(s.as_bytes().to_vec()),
        };
        last = Some((s, value.clone()));
        values.push(value);
    }
    ColumnData::Bytes { values, def: None }
}

/// A repeated column: an empty list is one level pair (def 0, rep 0) with no value; the k-th
/// value of a list has def 1 and rep 0 for the first, 1 for the rest.
fn repeated_i64(rows: &[PlanRow], f: impl Fn(&PlanRow) -> &[u64]) -> ColumnData {
    let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let list = f(row);
        if list.is_empty() {
            def.push(0);
            rep.push(0);
        }
        for (i, &v) in list.iter().enumerate() {
            values.push(v as i64);
            def.push(1);
            rep.push(i16::from(i > 0));
        }
    }
    ColumnData::Int64 {
        values,
        def: Some(def),
        rep: Some(rep),
    }
}

/// The columns of `rows`, in schema order.
fn columns(rows: &[PlanRow]) -> Vec<ColumnData> {
    vec![
        required_i64(rows, |r| r.sample),
        required_strings(rows, |r| &r.key),
        required_strings(rows, |r| &r.shard),
        required_i64(rows, |r| r.offset),
        repeated_i64(rows, |r| &r.image_offsets),
        required_i32(rows, |r| r.images),
        optional_i32(rows, |r| r.width),
        optional_i32(rows, |r| r.height),
        required_i32(rows, |r| r.tiles),
        required_i32(rows, |r| r.image_tokens),
        required_i32(rows, |r| r.text_tokens),
        required_i32(rows, |r| r.tokens),
        optional_i64(rows, |r| r.pack_id),
        optional_i32(rows, |r| r.slot),
        required_strings(rows, |r| &r.placement),
        strings(rows, |r| r.reason.as_deref()),
    ]
}

/// Encodes `rows` as a parquet file in memory.
pub fn encode_plan(
    rows: &[PlanRow],
) -> std::result::Result<Vec<u8>, parquet::errors::ParquetError> {
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema(), Default::default())?;
    for group in rows.chunks(ROWS_PER_GROUP.max(1)) {
        let mut group_writer = writer.next_row_group()?;
        let mut data = columns(group).into_iter();
        while let Some(mut col) = group_writer.next_column()? {
            match data.next() {
                Some(ColumnData::Int64 { values, def, rep }) => {
                    col.typed::<Int64Type>().write_batch(
                        &values,
                        def.as_deref(),
                        rep.as_deref(),
                    )?;
                }
                Some(ColumnData::Int32 { values, def }) => {
                    col.typed::<Int32Type>()
                        .write_batch(&values, def.as_deref(), None)?;
                }
                Some(ColumnData::Bytes { values, def }) => {
                    col.typed::<ByteArrayType>()
                        .write_batch(&values, def.as_deref(), None)?;
                }
                None => unreachable!("one ColumnData per schema column"),
            }
            col.close()?;
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

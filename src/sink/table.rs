//! Small columnar tables as parquet files: named, nullable columns of i64, f32, bool or string,
//! written and read whole through the low-level column API (no Arrow). Used for the curation
//! signals of each shard and the curation manifest; pandas/pyarrow/polars read them as tables.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::{LogicalType, Repetition, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, FloatType, Int64Type};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::error::{Error, Result};

/// Rows per row group: readers can stream a manifest of a billion rows group by group.
const ROWS_PER_GROUP: usize = 1 << 20;
/// Records asked of a column reader per call.
const READ_BATCH: usize = 1 << 16;

/// The values of one nullable column.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    I64(Vec<Option<i64>>),
    F32(Vec<Option<f32>>),
    Bool(Vec<Option<bool>>),
    Str(Vec<Option<String>>),
}

impl Values {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Values::I64(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn physical(&self) -> (PhysicalType, bool) {
        match self {
            Values::I64(_) => (PhysicalType::INT64, false),
            Values::F32(_) => (PhysicalType::FLOAT, false),
            Values::Bool(_) => (PhysicalType::BOOLEAN, false),
            Values::Str(_) => (PhysicalType::BYTE_ARRAY, true),
        }
    }

    /// The rows `range` of this column.
    fn slice(&self, range: std::ops::Range<usize>) -> Values {
        match self {
            Values::I64(v) => Values::I64(v[range].to_vec()),
            Values::F32(v) => Values::F32(v[range].to_vec()),
            Values::Bool(v) => Values::Bool(v[range].to_vec()),
            Values::Str(v) => Values::Str(v[range].to_vec()),
        }
    }
}

/// A table: columns in order, all of the same length.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub columns: Vec<(String, Values)>,
}

impl Table {
    /// Number of rows (0 for a table without columns).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, v)| v.len())
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Values> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Takes the column called `name` out of the table, checking its type with `pick`; a
    /// missing or mistyped column is an error naming it and `path`.
    pub fn take<T>(
        &mut self,
        path: &Path,
        name: &str,
        pick: impl FnOnce(Values) -> Option<T>,
    ) -> Result<T> {
        let bad = |reason: &str| Error::Table {
            path: path.to_path_buf(),
            reason: format!("column `{name}` {reason}"),
        };
        let index = self
            .columns
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| bad("is missing"))?;
        let (_, values) = self.columns.swap_remove(index);
        pick(values).ok_or_else(|| bad("has the wrong type"))
    }
}

fn schema(table: &Table) -> std::result::Result<Arc<Type>, parquet::errors::ParquetError> {
    let fields = table
        .columns
        .iter()
        .map(|(name, values)| {
            let (physical, string) = values.physical();
            let mut builder =
                Type::primitive_type_builder(name, physical).with_repetition(Repetition::OPTIONAL);
            if string {
                builder = builder.with_logical_type(Some(LogicalType::String));
            }
            builder.build().map(Arc::new)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Arc::new(
        Type::group_type_builder("table")
            .with_fields(fields)
            .build()?,
    ))
}

/// Definition levels and the dense non-null values of `column`.
fn levels<T: Clone>(column: &[Option<T>]) -> (Vec<i16>, Vec<T>) {
    let def = column.iter().map(|v| i16::from(v.is_some())).collect();
    let values = column.iter().flatten().cloned().collect();
    (def, values)
}

/// Encodes `table` as a parquet file in memory.
pub fn encode_table(table: &Table) -> std::result::Result<Vec<u8>, parquet::errors::ParquetError> {
    let rows = table.rows();
    if let Some((name, _)) = table.columns.iter().find(|(_, v)| v.len() != rows) {
        return Err(parquet::errors::ParquetError::General(format!(
            "column `{name}` does not have {rows} rows"
        )));
    }
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema(table)?, Default::default())?;
    let mut start = 0;
    // One (possibly empty) row group at least, so an empty table still has its schema.
    loop {
        let end = (start + ROWS_PER_GROUP).min(rows);
        let mut group = writer.next_row_group()?;
        let mut columns = table.columns.iter();
        while let Some(mut col) = group.next_column()? {
            let Some((_, values)) = columns.next() else {
                unreachable!("one column writer per schema column")
            };
            match values.slice(start..end) {
                Values::I64(v) => {
                    let (def, dense) = levels(&v);
                    col.typed::<Int64Type>()
                        .write_batch(&dense, Some(&def), None)?;
                }
                Values::F32(v) => {
                    let (def, dense) = levels(&v);
                    col.typed::<FloatType>()
                        .write_batch(&dense, Some(&def), None)?;
                }
                Values::Bool(v) => {
                    let (def, dense) = levels(&v);
                    col.typed::<BoolType>()
                        .write_batch(&dense, Some(&def), None)?;
                }
                Values::Str(v) => {
                    let (def, dense) = levels(&v);
                    let dense: Vec<ByteArray> = dense
                        .into_iter()
                        .map(|s| ByteArray::from(s.into_bytes()))
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&dense, Some(&def), None)?;
                }
            }
            col.close()?;
        }
        group.close()?;
        start = end;
        if start >= rows {
            break;
        }
    }
    writer.close()?;
    Ok(out)
}

/// Writes `table` to `path` (atomically).
pub fn write_table(path: &Path, table: &Table) -> Result<()> {
    let bytes = encode_table(table).map_err(|e| Error::Output {
        path: path.to_path_buf(),
        reason: format!("encoding parquet: {e}"),
    })?;
    super::write_atomically(path, |w| std::io::Write::write_all(w, &bytes))
}

/// Reads every row of one column chunk into `out`, expanding nulls from the definition levels.
fn read_column<T: DataType, U>(
    mut reader: ColumnReaderImpl<T>,
    rows: usize,
    out: &mut Vec<Option<U>>,
    convert: impl Fn(T::T) -> std::result::Result<U, String>,
) -> std::result::Result<(), String>
where
    T::T: Clone,
{
    let mut def: Vec<i16> = Vec::with_capacity(rows);
    let mut values: Vec<T::T> = Vec::with_capacity(rows);
    let mut read = 0;
    while read < rows {
        let (records, _, _) = reader
            .read_records(
                READ_BATCH.min(rows - read),
                Some(&mut def),
                None,
                &mut values,
            )
            .map_err(|e| e.to_string())?;
        if records == 0 {
            return Err(format!("column ends after {read} of {rows} rows"));
        }
        read += records;
    }
    if def.len() != rows {
        return Err(format!("{} levels for {rows} rows", def.len()));
    }
    let mut dense = values.into_iter();
    for d in def {
        out.push(if d > 0 {
            let v = dense.next().ok_or("fewer values than levels")?;
            Some(convert(v)?)
        } else {
            None
        });
    }
    Ok(())
}

/// Reads a table written by [`write_table`] (any flat parquet file of nullable or required
/// INT64, FLOAT, BOOLEAN and BYTE_ARRAY columns).
pub fn read_table(path: &Path) -> Result<Table> {
    let bad = |reason: String| Error::Table {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let mut columns: Vec<(String, Values)> = Vec::with_capacity(schema.num_columns());
    for i in 0..schema.num_columns() {
        let descr = schema.column(i);
        if descr.max_rep_level() > 0 {
            return Err(bad(format!("column `{}` is repeated", descr.name())));
        }
        let values = match descr.physical_type() {
            PhysicalType::INT64 => Values::I64(Vec::new()),
            PhysicalType::FLOAT => Values::F32(Vec::new()),
            PhysicalType::BOOLEAN => Values::Bool(Vec::new()),
            PhysicalType::BYTE_ARRAY => Values::Str(Vec::new()),
            other => {
                return Err(bad(format!(
                    "column `{}` has unsupported type {other}",
                    descr.name()
                )));
            }
        };
        columns.push((descr.name().to_string(), values));
    }
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| bad(e.to_string()))?;
        let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        for (i, (name, values)) in columns.iter_mut().enumerate() {
            let column = group.get_column_reader(i).map_err(|e| bad(e.to_string()))?;
            let result = match (column, values) {
                (ColumnReader::Int64ColumnReader(r), Values::I64(out)) => {
                    read_column(r, rows, out, Ok)
                }
                (ColumnReader::FloatColumnReader(r), Values::F32(out)) => {
                    read_column(r, rows, out, Ok)
                }
                (ColumnReader::BoolColumnReader(r), Values::Bool(out)) => {
                    read_column(r, rows, out, Ok)
                }
                (ColumnReader::ByteArrayColumnReader(r), Values::Str(out)) => {
                    read_column(r, rows, out, |b: ByteArray| {
                        String::from_utf8(b.data().to_vec()).map_err(|e| e.to_string())
                    })
                }
                _ => Err("reader type differs from the schema".to_string()),
            };
            result.map_err(|e| bad(format!("column `{name}`, row group {g}: {e}")))?;
        }
    }
    Ok(Table { columns })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table {
            columns: vec![
                ("id".into(), Values::I64(vec![Some(1), None, Some(-3)])),
                (
                    "score".into(),
                    Values::F32(vec![None, Some(0.5), Some(-1.25)]),
                ),
                (
                    "keep".into(),
                    Values::Bool(vec![Some(true), Some(false), None]),
                ),
                (
                    "key".into(),
                    Values::Str(vec![Some("a/b".into()), None, Some(String::new())]),
                ),
            ],
        }
    }

    #[test]
    fn tables_round_trip_with_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_table(&path, &sample()).unwrap();
        assert_eq!(read_table(&path).unwrap(), sample());
    }

    #[test]
    fn empty_tables_keep_their_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let empty = Table {
            columns: vec![
                ("id".into(), Values::I64(vec![])),
                ("key".into(), Values::Str(vec![])),
            ],
        };
        write_table(&path, &empty).unwrap();
        assert_eq!(read_table(&path).unwrap(), empty);
    }

    #[test]
    fn ragged_columns_and_missing_columns_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let ragged = Table {
            columns: vec![
                ("a".into(), Values::I64(vec![Some(1)])),
                ("b".into(), Values::I64(vec![])),
            ],
        };
        let err = write_table(&path, &ragged).unwrap_err().to_string();
        assert!(err.contains("`b`"), "{err}");
        write_table(&path, &sample()).unwrap();
        let mut table = read_table(&path).unwrap();
        let err = table
            .take(&path, "nope", |v| match v {
                Values::I64(v) => Some(v),
                _ => None,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope`") && err.contains("t.parquet"), "{err}");
        let err = table
            .take(&path, "key", |v| match v {
                Values::I64(v) => Some(v),
                _ => None,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong type"), "{err}");
    }
}

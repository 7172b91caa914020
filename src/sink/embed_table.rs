//! `embeds.parquet`: one row per embedded sample — key, shard, score, image and text embedding
//! (each a list of floats) — written one row group per batch of rows appended, so a run of any
//! size streams to disk. pandas/pyarrow read it as a table.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::error::{Error, Result};

/// One embedded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRow<'a> {
    /// Sample key.
    pub key: &'a str,
    /// Shard it came from.
    pub shard: &'a str,
    /// sigmoid(logit) of the image with its own caption.
    pub score: f32,
    /// Image features.
    pub image: &'a [f32],
    /// Caption features.
    pub text: &'a [f32],
}

/// Streams rows into a parquet file; [`EmbedTableWriter::finish`] closes and renames it.
pub struct EmbedTableWriter {
    path: PathBuf,
    partial: PathBuf,
    writer: SerializedFileWriter<File>,
}

fn field(name: &str, t: PhysicalType, rep: Repetition, string: bool) -> Arc<Type> {
    let mut b = Type::primitive_type_builder(name, t).with_repetition(rep);
    if string {
        b = b.with_logical_type(Some(LogicalType::String));
    }
    Arc::new(b.build().expect("static embed schema is valid"))
}

fn schema() -> Arc<Type> {
    use parquet::basic::Type::{BYTE_ARRAY, FLOAT};
    let fields = vec![
        field("key", BYTE_ARRAY, Repetition::REQUIRED, true),
        field("shard", BYTE_ARRAY, Repetition::REQUIRED, true),
        field("score", FLOAT, Repetition::REQUIRED, false),
        field("image_embed", FLOAT, Repetition::REPEATED, false),
        field("text_embed", FLOAT, Repetition::REPEATED, false),
    ];
    Arc::new(
        Type::group_type_builder("embeds")
            .with_fields(fields)
            .build()
            .expect("static embed schema is valid"),
    )
}

/// Values with repetition levels of a repeated float column (rows never empty: an embedding
/// has at least one value; an empty one is still written as an empty list).
fn repeated(lists: impl Iterator<Item = Vec<f32>>) -> (Vec<f32>, Vec<i16>, Vec<i16>) {
    let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
    for list in lists {
        if list.is_empty() {
            def.push(0);
            rep.push(0);
        }
        for (i, v) in list.into_iter().enumerate() {
            values.push(v);
            def.push(1);
            rep.push(i16::from(i > 0));
        }
    }
    (values, def, rep)
}

impl EmbedTableWriter {
    /// Creates `path` (written as `path.partial` until finished).
    pub fn create(path: &Path) -> Result<Self> {
        let mut partial = PathBuf::from(path);
        partial.as_mut_os_string().push(".partial");
        let file = File::create(&partial).map_err(|e| Error::io(&partial, e))?;
        let writer = SerializedFileWriter::new(file, schema(), Default::default())
            .map_err(|e| table_error(path, e))?;
        Ok(EmbedTableWriter {
            path: path.to_path_buf(),
            partial,
            writer,
        })
    }

    /// Appends `rows` as one row group.
    pub fn append(&mut self, rows: &[EmbedRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let bytes = |s: &str| ByteArray::from(s.as_bytes().to_vec());
        let keys: Vec<ByteArray> = rows.iter().map(|r| bytes(r.key)).collect();
        let shards: Vec<ByteArray> = rows.iter().map(|r| bytes(r.shard)).collect();
        let scores: Vec<f32> = rows.iter().map(|r| r.score).collect();
        let image = repeated(rows.iter().map(|r| r.image.to_vec()));
        let text = repeated(rows.iter().map(|r| r.text.to_vec()));
        let path = self.path.clone();
        let err = |e| table_error(&path, e);
        let mut group = self.writer.next_row_group().map_err(err)?;
        let mut index = 0;
        while let Some(mut col) = group.next_column().map_err(err)? {
            match index {
                0 => col.typed::<ByteArrayType>().write_batch(&keys, None, None),
                1 => col
                    .typed::<ByteArrayType>()
                    .write_batch(&shards, None, None),
                2 => col.typed::<FloatType>().write_batch(&scores, None, None),
                3 => col
                    .typed::<FloatType>()
                    .write_batch(&image.0, Some(&image.1), Some(&image.2)),
                _ => col
                    .typed::<FloatType>()
                    .write_batch(&text.0, Some(&text.1), Some(&text.2)),
            }
            .map_err(err)?;
            col.close().map_err(err)?;
            index += 1;
        }
        group.close().map_err(err)?;
        Ok(())
    }

    /// Writes the footer and renames the file into place.
    pub fn finish(self) -> Result<()> {
        self.writer
            .close()
            .map_err(|e| table_error(&self.path, e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

fn table_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        reason: format!("writing parquet: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::{ListAccessor, RowAccessor};

    #[test]
    fn rows_round_trip_through_two_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("embeds.parquet");
        let mut w = EmbedTableWriter::create(&path).unwrap();
        let a = [1.0f32, 2.0, 3.0];
        let b = [-1.0f32, 0.5, 0.25];
        w.append(&[EmbedRow {
            key: "k0",
            shard: "s.tar",
            score: 0.25,
            image: &a,
            text: &b,
        }])
        .unwrap();
        w.append(&[EmbedRow {
            key: "k1",
            shard: "s.tar",
            score: 0.75,
            image: &b,
            text: &a,
        }])
        .unwrap();
        w.finish().unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 2);
        let rows: Vec<parquet::record::Row> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        let floats = |list: &parquet::record::List| -> Vec<f32> {
            (0..list.len())
                .map(|i| list.get_float(i).unwrap())
                .collect()
        };
        assert_eq!(rows[0].get_string(0).unwrap(), "k0");
        assert_eq!(rows[0].get_string(1).unwrap(), "s.tar");
        assert_eq!(rows[0].get_float(2).unwrap(), 0.25);
        assert_eq!(floats(rows[0].get_list(3).unwrap()), a);
        assert_eq!(floats(rows[0].get_list(4).unwrap()), b);
        assert_eq!(rows[1].get_string(0).unwrap(), "k1");
        assert_eq!(rows[1].get_float(2).unwrap(), 0.75);
        assert_eq!(floats(rows[1].get_list(3).unwrap()), b);
    }
}
